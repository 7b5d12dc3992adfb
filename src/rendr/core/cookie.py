"""Stateless HELLO cookies: the listener's RETRY answer under load, sans-I/O.

Under load (see :class:`rendr.core.fairness.LoadMeter`) a listener answers a HELLO
without a valid cookie with ``HELLO_ACK(result=RETRY)`` carrying a cookie, before any
X25519 work and without keeping anything (QUIC's Retry, WireGuard's cookie reply):
the dialer sends the same HELLO again, with the cookie, and the listener checks it
with one HMAC.  A cookie proves that whoever sends the HELLO receives what the
listener sends to its source address, so per-source limits (token buckets) count
real sources: on a datagram carrier the source address can be spoofed, on TCP the
connection already proved it and the cookie only costs the dialer one more round
trip.

Cookie (20 bytes): ``ts`` (u32, the listener's clock in milliseconds, modulo 2^32) ||
``HMAC-SHA256(secret, "cookie", source, flow_id, key_share, ts)[:16]`` (parts
length-prefixed, :func:`rendr.core.crypto.mac`).  ``secret`` is 32 random bytes,
replaced every :data:`ROTATION` seconds; the previous one still verifies, so a
cookie minted just before a rotation is good.  A cookie is valid for ``lifetime``
seconds after it was minted (and never for a ``ts`` in the future).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Final

from .crypto import mac, verify_mac

__all__ = ["COOKIE_LEN", "ROTATION", "CookieJar"]

COOKIE_LEN: Final = 20
"""Bytes of a cookie: a u32 timestamp and a 16-byte MAC."""
ROTATION: Final = 120.0
"""Seconds between two secret rotations (a cookie lifetime may not exceed it)."""
_WRAP: Final = 1 << 32


def _ms(now: float) -> int:
    return int(now * 1000) % _WRAP


def _random_secret() -> bytes:
    return os.urandom(32)


class CookieJar:
    """Mints and checks the cookies of one listener.

    Args:
        lifetime: seconds a cookie stays valid (at most :data:`ROTATION`).
        secret: where fresh secrets come from (32 random bytes; tests inject theirs).

    The first secret rotation is :data:`ROTATION` seconds after the first use.
    """

    __slots__ = ("_current", "_lifetime_ms", "_new_secret", "_previous", "_rotate_at")

    def __init__(self, lifetime: float, secret: Callable[[], bytes] = _random_secret
                 ) -> None:
        self._lifetime_ms = int(min(lifetime, ROTATION) * 1000)
        self._new_secret = secret
        self._current = secret()
        self._previous = secret()
        self._rotate_at: float | None = None

    def _rotate(self, now: float) -> None:
        if self._rotate_at is None:
            self._rotate_at = now + ROTATION
        if now < self._rotate_at:
            return
        # after two periods or more, the old current secret has expired too
        stale = now >= self._rotate_at + ROTATION
        self._previous = self._new_secret() if stale else self._current
        self._current = self._new_secret()
        self._rotate_at = now + ROTATION

    def make(self, source: bytes, flow_id: bytes, share: bytes, now: float) -> bytes:
        """A cookie for this HELLO (its flow id and key share) from ``source``."""
        self._rotate(now)
        ts = _ms(now).to_bytes(4, "big")
        return ts + mac(self._current, b"cookie", source, flow_id, share, ts)

    def verify(self, cookie: bytes, source: bytes, flow_id: bytes, share: bytes,
               now: float) -> bool:
        """Whether ``cookie`` was minted by :meth:`make` for the same source, flow id
        and share, within the lifetime.  Never raises (any bytes are just invalid)."""
        if len(cookie) != COOKIE_LEN:
            return False
        ts = bytes(cookie[:4])
        age = (_ms(now) - int.from_bytes(ts, "big")) % _WRAP
        if age > self._lifetime_ms:
            return False  # expired, or minted "in the future" (forged)
        self._rotate(now)
        tag = bytes(cookie[4:])
        return (verify_mac(self._current, tag, b"cookie", source, flow_id, share, ts)
                or verify_mac(self._previous, tag, b"cookie", source, flow_id, share, ts))
