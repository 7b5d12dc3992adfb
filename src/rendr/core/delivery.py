"""How fast each path delivers: the measure BOND stripes by.

Every byte a path carried is counted when the peer's cumulative ACK covers it
(:meth:`DeliveryRate.on_delivered`).  Samples of at least :data:`MIN_INTERVAL`
(and at least one RTT) give a rate; the rate kept is the largest of the last
:data:`SAMPLES` samples (BBR's windowed maximum: a path is rarely kept busy all
the time, and an idle spell must not make it look slow).

:meth:`DeliveryRate.allowance` turns it into the bytes a path may have in flight:
``GAIN`` (3) times rate x (minimum RTT + twice the peer's ACK delay), never below
:data:`MIN_ALLOWANCE`.  With no sample yet a path starts at
:data:`START_ALLOWANCE`; since a path can deliver at most its allowance per RTT,
the allowance grows at most ``GAIN``-fold per RTT until the path is full, and a
slow path never holds more than about three of its own bandwidth-delay products:
what the receiver must hold back to reorder stays small.  (``GAIN`` 2 left a
50 Mbit/s path behind a TCP relay and a tbf queue idle a tenth of the time: bond
reached 0.93 of that path alone next to a 5 Mbit/s one; 3 gives 1.09.)
"""

from __future__ import annotations

from collections import deque
from typing import Final

__all__ = ["DeliveryRate"]

MIN_INTERVAL: Final = 0.05
SAMPLES: Final = 4
GAIN: Final = 3.0
MIN_ALLOWANCE: Final = 64 * 1024
START_ALLOWANCE: Final = 256 * 1024


class DeliveryRate:
    """The delivery rate of one path (bytes per second) and its in-flight allowance.

    Attributes:
        delivered: bytes this path carried that the peer acknowledged.
        rate: the windowed-maximum delivery rate (0.0: no sample yet).
    """

    __slots__ = ("_d0", "_last_at", "_samples", "_t0", "delivered", "latest", "rate")

    def __init__(self, now: float) -> None:
        self.delivered = 0
        self.rate = 0.0
        self.latest = 0.0
        """The latest sample (a cautious estimate where overrating the path costs:
        BOND's earliest-completion check of a slower path)."""
        self._samples: deque[float] = deque(maxlen=SAMPLES)
        self._t0 = now
        self._d0 = 0
        self._last_at = now  # when bytes were last delivered

    def on_delivered(self, nbytes: int, now: float, rtt: float | None) -> None:
        """``nbytes`` sent on this path were acknowledged at ``now``."""
        self.delivered += nbytes
        self._last_at = now
        elapsed = now - self._t0
        if elapsed < MIN_INTERVAL or (rtt is not None and elapsed < 2 * rtt):
            return
        self.latest = (self.delivered - self._d0) / elapsed
        self._samples.append(self.latest)
        self._t0 = now
        self._d0 = self.delivered
        self.rate = max(self._samples)

    def idle(self, now: float) -> None:
        """Data goes out on this path with nothing of it in flight: if the path was
        idle for a while (not merely waiting for the ACK that emptied it), restart
        the sample interval (time with nothing to deliver says nothing of its speed)."""
        if now - self._last_at > MIN_INTERVAL:
            self._t0 = now
            self._d0 = self.delivered

    def allowance(self, min_rtt: float | None, ack_delay: float) -> int:
        """The bytes this path may have in flight now."""
        if not self.rate or min_rtt is None:
            return START_ALLOWANCE
        return max(MIN_ALLOWANCE, int(GAIN * self.rate * (min_rtt + 2 * ack_delay)))
