"""Congestion control and pacing of one datagram path (RFC 9002 section 7, appendix B).

A :class:`CongestionController` decides how many bytes a path may have in flight
(its congestion window); the :class:`~rendr.core.loss.LossDetector` of the path
counts the bytes in flight and reports what was acknowledged and lost, and the
caller passes that on:

- ``on_sent(n)`` for every datagram that counts in flight;
- ``on_acked(acked_bytes, largest_acked_sent_at, now, app_limited)`` per ACK that
  acknowledged something;
- ``on_lost(lost_bytes, lost_largest_sent_at, now)`` per event that declared losses,
  then ``on_persistent_congestion()`` if the event said so;
- ``room(bytes_in_flight)``: how many more bytes may be sent now.

:class:`NewReno` is RFC 9002's controller: slow start (7.3.1: the window grows by
the bytes acknowledged), congestion avoidance (7.3.3: by one maximum datagram per
window acknowledged), a halving on loss at most once per recovery period (7.3.2:
losses of segments sent before the period began do not count again), the minimum
window on persistent congestion (7.6.2), and no growth while the sender is not
using its window (7.8: the caller says so with ``app_limited``).  ACKs are taken
whole: the send time of the newest segment an ACK acknowledged decides whether it
ends a recovery period.

:class:`Pacer` spreads a window over an RTT (7.7): a token bucket filled at
``1.25 * cwnd / srtt`` bytes per second, holding at most ``burst`` datagrams.
"""

from __future__ import annotations

from typing import Final, Protocol

from .loss import RttSource

__all__ = ["CongestionController", "NewReno", "Pacer"]

MAX_DATAGRAM_SIZE: Final = 1200
"""Default maximum datagram size (the payload a path carries per datagram), bytes."""
INITIAL_WINDOW_DATAGRAMS: Final = 10
MINIMUM_WINDOW_DATAGRAMS: Final = 2
LOSS_REDUCTION_FACTOR: Final = 0.5
PACING_GAIN: Final = 1.25
"""RFC 9002 7.7: pace at 5/4 of cwnd per RTT so the pacer never limits slow start."""
PACING_BURST_DATAGRAMS: Final = 10
_MIN_SRTT: Final = 1e-6  # a zero RTT sample (loopback) must not divide by zero


class CongestionController(Protocol):
    """What the engine calls on a congestion controller (:class:`NewReno`, or
    :class:`~rendr.core.bbr.Bbr`).

    Attributes:
        cwnd: the congestion window, bytes.
        max_datagram_size: bytes per datagram the window is counted in.
    """

    @property
    def cwnd(self) -> int: ...

    @property
    def max_datagram_size(self) -> int: ...

    def on_sent(self, nbytes: int) -> None:
        """``nbytes`` went out and count in flight."""

    def on_acked(self, nbytes: int, sent_at: float, now: float,
                 app_limited: bool = False) -> None:
        """An ACK newly acknowledged ``nbytes``; the newest of them was sent at
        ``sent_at``; ``app_limited``: the sender was not using its window."""

    def on_lost(self, nbytes: int, largest_lost_sent_at: float, now: float) -> None:
        """``nbytes`` were declared lost; the newest of them was sent at
        ``largest_lost_sent_at``."""

    def on_persistent_congestion(self) -> None:
        """The loss detector found persistent congestion."""

    def room(self, bytes_in_flight: int) -> int:
        """Bytes that may be sent now with ``bytes_in_flight`` outstanding."""

    def on_limited(self) -> None:
        """The sender had data that the window or the pacer held back."""

    def pacing_rate(self, srtt: float) -> float:
        """Bytes per second the pacer lets out, given the smoothed RTT."""


class NewReno:
    """RFC 9002's NewReno congestion controller (see the module docstring).

    Attributes:
        max_datagram_size: bytes per datagram.
        initial_window: the window at the start, 10 datagrams unless given.
        min_window: the window never goes below it: 2 datagrams.
        cwnd: the congestion window, bytes.
        ssthresh: the slow start threshold (None: infinite, never reduced yet).
        recovery_start: when the current recovery period began (None: never, or
            reset by persistent congestion).
        sent_bytes / acked_bytes / lost_bytes: totals, for stats.
    """

    __slots__ = ("_ca_acked", "acked_bytes", "cwnd", "initial_window", "lost_bytes",
                 "max_datagram_size", "min_window", "recovery_start", "sent_bytes",
                 "ssthresh")

    def __init__(self, max_datagram_size: int = MAX_DATAGRAM_SIZE,
                 initial_window: int | None = None) -> None:
        if max_datagram_size <= 0:
            raise ValueError(f"max_datagram_size {max_datagram_size} is not positive")
        self.max_datagram_size = max_datagram_size
        self.min_window = MINIMUM_WINDOW_DATAGRAMS * max_datagram_size
        iw = INITIAL_WINDOW_DATAGRAMS * max_datagram_size if initial_window is None \
            else initial_window
        self.initial_window = max(iw, self.min_window)
        self.cwnd = self.initial_window
        self.ssthresh: int | None = None
        self.recovery_start: float | None = None
        self._ca_acked = 0  # bytes acknowledged toward the next congestion-avoidance step
        self.sent_bytes = 0
        self.acked_bytes = 0
        self.lost_bytes = 0

    @property
    def in_slow_start(self) -> bool:
        """The window is below the slow start threshold."""
        return self.ssthresh is None or self.cwnd < self.ssthresh

    def in_recovery(self, sent_at: float) -> bool:
        """A segment sent at ``sent_at`` belongs to the current recovery period."""
        return self.recovery_start is not None and sent_at <= self.recovery_start

    def on_sent(self, nbytes: int) -> None:
        """``nbytes`` went out (counted for stats; the window needs nothing else)."""
        self.sent_bytes += nbytes

    def on_acked(self, nbytes: int, sent_at: float, now: float,
                 app_limited: bool = False) -> None:
        """Grow the window for ``nbytes`` newly acknowledged (RFC 9002 7.3, B.5),
        unless the newest of them was sent in the current recovery period or the
        sender is ``app_limited``."""
        self.acked_bytes += nbytes
        if nbytes <= 0 or self.in_recovery(sent_at) or app_limited:
            return
        if self.in_slow_start:
            self.cwnd += nbytes
            return
        # congestion avoidance: one datagram per window acknowledged (byte counting)
        self._ca_acked += nbytes
        if self._ca_acked >= self.cwnd:
            self._ca_acked -= self.cwnd
            self.cwnd += self.max_datagram_size

    def on_lost(self, nbytes: int, largest_lost_sent_at: float, now: float) -> None:
        """Losses: halve the window and start a recovery period at ``now``, unless
        the newest lost segment was sent in the current one (RFC 9002 7.3.2, B.6)."""
        self.lost_bytes += nbytes
        if self.in_recovery(largest_lost_sent_at):
            return
        self.recovery_start = now
        self.cwnd = max(int(self.cwnd * LOSS_REDUCTION_FACTOR), self.min_window)
        self.ssthresh = self.cwnd
        self._ca_acked = 0

    def on_persistent_congestion(self) -> None:
        """Collapse the window to the minimum (RFC 9002 7.6.2, B.8)."""
        self.cwnd = self.min_window
        self.recovery_start = None
        self._ca_acked = 0

    def room(self, bytes_in_flight: int) -> int:
        """Bytes that may be sent now: what is left of the window."""
        return max(self.cwnd - bytes_in_flight, 0)

    def on_limited(self) -> None:
        """Nothing to do (growth stops only for ``app_limited`` ACKs)."""

    def pacing_rate(self, srtt: float) -> float:
        """RFC 9002 7.7: 5/4 of the window per smoothed RTT."""
        return PACING_GAIN * self.cwnd / max(srtt, _MIN_SRTT)


TIMER_SLACK: Final = 0.002
"""Seconds of pacing the bucket can hold beyond ``burst`` (see ``Pacer._fill``):
two ticks of a millisecond event-loop timer."""


class Pacer:
    """A token bucket spreading the congestion window over an RTT (RFC 9002 7.7).

    It asks ``cc`` for its pacing rate given the smoothed RTT from ``rtt`` at each call
    (NewReno: ``PACING_GAIN * cwnd / srtt``), filling at that many bytes per second up
    to ``burst`` datagrams of ``cc.max_datagram_size``; without an RTT sample it does
    not pace (the window alone bounds the first flight).

    Attributes:
        tokens: bytes that may go at once (negative: a debt to wait out).
        burst: the bucket's size, bytes.
    """

    __slots__ = ("_filled_at", "burst", "cc", "rtt", "tokens")

    def __init__(self, cc: CongestionController, rtt: RttSource,
                 burst_datagrams: int = PACING_BURST_DATAGRAMS) -> None:
        if burst_datagrams < 1:
            raise ValueError("burst_datagrams must be at least 1")
        self.cc = cc
        self.rtt = rtt
        self.burst = burst_datagrams * cc.max_datagram_size
        self.tokens = float(self.burst)
        self._filled_at: float | None = None

    def rate(self) -> float | None:
        """The pacing rate, bytes per second (None: no RTT sample, no pacing)."""
        srtt = self.rtt.srtt
        if srtt is None:
            return None
        return self.cc.pacing_rate(srtt)

    def _fill(self, now: float, rate: float) -> None:
        then = self._filled_at
        if then is not None and now > then:
            # the bucket holds at least what the rate makes in TIMER_SLACK: a timer of
            # the event loop fires a millisecond late (uvloop ticks in ms), and a
            # bucket smaller than that would cap the rate at burst per tick
            cap = max(float(self.burst), rate * TIMER_SLACK)
            self.tokens = min(self.tokens + (now - then) * rate, cap)
        if then is None or now > then:
            self._filled_at = now

    def next_send_time(self, now: float) -> float | None:
        """None: a datagram may go now; else when the bucket holds one again."""
        rate = self.rate()
        if rate is None:
            return None
        self._fill(now, rate)
        need = self.cc.max_datagram_size - self.tokens
        if need <= 0:
            return None
        at = now + need / rate
        return None if at <= now else at  # a wait below the clock's resolution

    def on_sent(self, now: float, nbytes: int) -> None:
        """``nbytes`` went out at ``now``: take them from the bucket."""
        rate = self.rate()
        if rate is None:
            return
        self._fill(now, rate)
        self.tokens -= nbytes
