"""Who gets the listener's handshake CPU under a HELLO flood, sans-I/O.

- :class:`LoadMeter`: HELLOs per second over a sliding second; above
  ``FlowConfig.hello_load_rate`` the listener is *under load* (it then asks for
  cookies and rations key exchanges per source).
- :class:`SourceBuckets`: one token bucket per source (an IP address, or its prefix:
  ``source_prefix_v4`` / ``source_prefix_v6``): a HELLO that costs an X25519 exchange
  under load takes a token; a source without one is answered BUSY.  A flood from one
  source then spends its own tokens, not those of a client elsewhere (WireGuard's
  per-IP rate limiter under load).
- :func:`source_key`: the bucket (and per-source flow count) a source address falls in.
"""

from __future__ import annotations

import ipaddress
from typing import Final

__all__ = ["LoadMeter", "SourceBuckets", "source_key"]

MAX_SOURCES: Final = 4096
"""Buckets kept at most; beyond, full buckets (no different from a missing one) are
dropped first, then the least recently used down to 7/8 of it (a source dropped
with tokens spent starts full again: bounded by the listener-wide load)."""


def source_key(source: str, prefix_v4: int = 32, prefix_v6: int = 64) -> str:
    """The prefix ``source`` belongs to (``"192.0.2.0/24"``), or ``source`` itself when
    it is not an IP address (an embedder's carrier) or the prefix is the whole
    address."""
    try:
        addr = ipaddress.ip_address(source)
    except ValueError:
        return source
    bits = prefix_v4 if addr.version == 4 else prefix_v6
    if bits >= addr.max_prefixlen:
        return source
    return str(ipaddress.ip_network(f"{source}/{bits}", strict=False))


class LoadMeter:
    """Events per second over a sliding ``window`` (two fixed windows, the older one
    weighted by how much of it still overlaps the sliding one)."""

    __slots__ = ("_count", "_previous", "_start", "window")

    def __init__(self, window: float = 1.0) -> None:
        self.window = window
        self._start = 0.0
        self._count = 0
        self._previous = 0

    def _advance(self, now: float) -> None:
        elapsed = now - self._start
        if elapsed < self.window:
            return
        self._previous = self._count if elapsed < 2 * self.window else 0
        self._count = 0
        self._start = now - (elapsed % self.window)

    def hit(self, now: float) -> None:
        """Count one event at ``now``."""
        self._advance(now)
        self._count += 1

    def rate(self, now: float) -> float:
        """Events per second over the last ``window``."""
        self._advance(now)
        overlap = 1.0 - (now - self._start) / self.window
        return (self._count + self._previous * max(0.0, overlap)) / self.window


class SourceBuckets:
    """A token bucket per source key.

    Args:
        rate: tokens per second each bucket gains.
        burst: tokens a bucket holds at most (and starts with).
        max_sources: buckets kept at most (see :data:`MAX_SOURCES`).
    """

    __slots__ = ("_buckets", "burst", "max_sources", "rate")

    def __init__(self, rate: float, burst: float, max_sources: int = MAX_SOURCES) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.max_sources = max_sources
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def tokens(self, key: str, now: float) -> float:
        """Tokens ``key`` holds at ``now``."""
        tokens, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + max(0.0, now - at) * self.rate)

    def take(self, key: str, now: float) -> bool:
        """Take one token from ``key``'s bucket; False (nothing taken) if it has none."""
        tokens = self.tokens(key, now)
        self._buckets.pop(key, None)  # re-inserted last: most recently used
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self.max_sources:
            self._evict(now)
        return True

    def _evict(self, now: float) -> None:
        full = [k for k in self._buckets if self.tokens(k, now) >= self.burst]
        for k in full:
            del self._buckets[k]
        keep = self.max_sources * 7 // 8  # amortise the scan over the next arrivals
        while len(self._buckets) > keep:
            del self._buckets[next(iter(self._buckets))]

    def clear(self) -> None:
        """Forget every bucket (all full again)."""
        self._buckets.clear()
