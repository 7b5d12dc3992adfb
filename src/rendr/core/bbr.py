"""A delivery-rate congestion controller for datagram paths, modelled on BBR.

NewReno (:mod:`rendr.core.congestion`) reads every loss as congestion and halves its
window: on a path that drops datagrams at random (Wi-Fi, a cellular handover, a
lossy relay) it collapses to its two-datagram floor and a stream crawls.  This
controller follows BBR (Cardwell et al., "BBR: Congestion-Based Congestion
Control", ACM Queue 2016; draft-cardwell-iccrg-bbr-congestion-control) instead: it
measures the path's bottleneck bandwidth and its minimum RTT and paces at the
bandwidth, keeping about two bandwidth-delay products in flight, so random loss
costs only the re-sent bytes.

Simplifications, each chosen for an engine that sees byte ranges, not packets:

- **Rate samples per round trip**, not per packet.  A round starts when an ACK
  acknowledges a segment sent after the previous round began; its sample is the
  bytes delivered in it over the longer of its ACK interval and its send interval
  (the second guards against ACK compression; it reaches back to the oldest segment
  the round acknowledged, so data settled late, after a filled hole, does not look
  fast).  No per-segment state.
- **Windowed maximum** of the round samples of the last :data:`BW_ROUNDS` rounds
  (and at least :data:`BW_WINDOW` seconds).  A round that ends without the
  controller holding the sender back since the previous ACK (``on_limited`` not
  called: the application is not filling the path) is application-limited: its
  sample only counts if it raises the estimate.  The window never forgets its last
  sample, so an application that paused finds its estimate when it resumes.
- **ACK aggregation** (as BBR v2's ``extra_acked``): ACKs come in bursts (the peer
  delays them, an event loop handles a batch per turn), so the window holds two BDPs
  plus the most a burst ACKed beyond what the estimate explains (the largest over
  the bandwidth window), else a window sized by a sub-millisecond minimum RTT starves
  the pipe and the samples with it.
- **Phases** as BBR v1: STARTUP (gain 2/ln 2 until the bandwidth grew less than 25 %
  in three limited rounds, or, as BBR v3, until a round lost more than
  :data:`STARTUP_LOSS_SHARE` of what it settled: the queue is full), DRAIN (pace
  below the estimate until in flight is at most one BDP), PROBE_BW (a gain cycle
  1.25, 0.75, then six rounds at 1), PROBE_RTT (four datagrams in flight for 200 ms
  and a round when the minimum RTT was not renewed for 10 s).
- **A loss ceiling** (after BBR v2's): an interval of at least :data:`BW_WINDOW` that
  lost more than :data:`LOSS_CEILING` of what it settled scales the estimate down by
  :data:`LOSS_BETA`, so a path whose buffer overflows from our own sending is not
  driven ever harder; random loss below the ceiling is ignored.  Only what was sent
  after the last reaction (a cut, or STARTUP's end) is judged: the losses of an
  overshoot are declared for a round or two after it ended.  STARTUP's own losses
  end it without a cut (its delivery rate is the path's).  Persistent
  congestion (RFC 9002 7.6) forgets the estimate and starts over.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from typing import Final

from .loss import RttSource

__all__ = ["Bbr", "Phase"]

STARTUP_GAIN: Final = 2.885  # 2 / ln 2: doubles the sending rate per round
DRAIN_GAIN: Final = 1 / STARTUP_GAIN
CWND_GAIN: Final = 2.0
PROBE_BW_GAINS: tuple[float, ...] = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
BW_ROUNDS: Final = 10
"""Round trips the bandwidth estimate is the maximum over..."""
BW_WINDOW: Final = 0.1
"""...and at least this many seconds (a loopback round trip is a fraction of a
millisecond, shorter than the event loop's own hiccups)."""
EXTRA_ACKED_CAP: Final = 0.1
"""The ACK-aggregation allowance is at most this many seconds of the estimate."""
FULL_BW_GROWTH: Final = 1.25
FULL_BW_ROUNDS: Final = 3
MIN_RTT_WINDOW: Final = 10.0
PROBE_RTT_TIME: Final = 0.2
MIN_WINDOW_DATAGRAMS: Final = 4
INITIAL_WINDOW_DATAGRAMS: Final = 10
LOSS_CEILING: Final = 0.3
"""A round losing more than this share of the bytes it settled is congestion."""
LOSS_MIN_DATAGRAMS: Final = 32
"""The loss share is judged over at least this many datagrams settled (and at least
:data:`BW_WINDOW`): at a low rate one random loss among two or three datagrams is over
the ceiling, each cut lowers the rate further, and the estimate collapses (at 20 %
random loss: a cut after ~1 in 11 intervals of 32 datagrams, not 1 in 2 of three)."""
LOSS_BETA: Final = 0.7
STARTUP_LOSS_SHARE: Final = 0.3
"""A STARTUP round that settled at least :data:`LOSS_MIN_DATAGRAMS` and lost more than
this share of them has filled the pipe and its queue: leave STARTUP at once (as BBR
v3's high-loss exit, with a share well above random loss: 0.2 ended STARTUP early on
paths with 20 % random loss) instead of after :data:`FULL_BW_ROUNDS` more rounds of
doubling into a full queue, or after the loss ceiling's :data:`BW_WINDOW`."""
_MIN_INTERVAL: Final = 1e-6


class Phase(enum.Enum):
    """The controller's phase."""

    STARTUP = "startup"
    DRAIN = "drain"
    PROBE_BW = "probe_bw"
    PROBE_RTT = "probe_rtt"


class Bbr:
    """BBR-style congestion control of one datagram path (see the module docstring).

    Implements :class:`~rendr.core.congestion.CongestionController`.

    Attributes:
        max_datagram_size: bytes per datagram.
        phase: the current :class:`Phase`.
        btl_bw: the bandwidth estimate, bytes per second (0.0: no sample yet).
        min_rtt: the minimum RTT seen in the last 10 s (None: no sample yet).
        rounds: round trips counted so far.
        sent_bytes / acked_bytes / lost_bytes: totals, for stats.
    """

    __slots__ = (
        "_ack_t0",
        "_cycle",
        "_cycle_at",
        "_d0",
        "_epoch_acked",
        "_epoch_at",
        "_extra",
        "_full_bw",
        "_full_rounds",
        "_inflight",
        "_limited",
        "_loss_t0",
        "_min_rtt_at",
        "_now",
        "_probe_rtt_done",
        "_react_at",
        "_round_acked",
        "_round_first_sent",
        "_round_lost",
        "_round_start",
        "_rt_acked",
        "_rt_lost",
        "_rtt",
        "_samples",
        "_send_t0",
        "acked_bytes",
        "btl_bw",
        "delivered",
        "extra_acked",
        "lost_bytes",
        "max_datagram_size",
        "min_rtt",
        "phase",
        "rounds",
        "sent_bytes",
    )

    def __init__(self, rtt: RttSource, max_datagram_size: int = 1200) -> None:
        if max_datagram_size <= 0:
            raise ValueError(f"max_datagram_size {max_datagram_size} is not positive")
        self._rtt = rtt
        self.max_datagram_size = max_datagram_size
        self.phase = Phase.STARTUP
        self.btl_bw = 0.0
        self.min_rtt: float | None = None
        self.rounds = 0
        self.delivered = 0
        self.sent_bytes = 0
        self.acked_bytes = 0
        self.lost_bytes = 0
        self._samples: deque[tuple[int, float, float]] = deque(maxlen=256)
        # (round, time, sample) of the bandwidth window
        self._extra: deque[tuple[int, float, int]] = deque(maxlen=256)  # same, extra_acked
        self._epoch_at: float | None = None  # the ACK-aggregation epoch
        self._epoch_acked = 0
        self.extra_acked = 0
        self._min_rtt_at = 0.0
        self._round_start: float | None = None  # segments sent after it end the round
        self._d0 = 0
        self._ack_t0 = 0.0
        self._send_t0 = 0.0
        self._round_first_sent = math.inf  # oldest send time acknowledged this round
        self._rt_acked = 0  # settled this round
        self._rt_lost = 0
        self._limited = False
        self._round_acked = 0  # settled since _loss_t0
        self._round_lost = 0
        self._loss_t0 = 0.0
        self._react_at = -math.inf  # the last reaction to loss (cut, or STARTUP's end)
        self._full_bw = 0.0
        self._full_rounds = 0
        self._cycle = 0
        self._cycle_at = 0.0
        self._probe_rtt_done: float | None = None
        self._inflight = 0
        self._now = 0.0  # the latest ACK's time

    # ------------------------------------------------------------------ the model

    @property
    def bdp(self) -> int | None:
        """The bandwidth-delay product, bytes (None: no estimate yet)."""
        if not self.btl_bw or self.min_rtt is None:
            return None
        return int(self.btl_bw * self.min_rtt)

    @property
    def pacing_gain(self) -> float:
        """How much faster than the estimate the path is paced now."""
        phase = self.phase
        if phase is Phase.STARTUP:
            return STARTUP_GAIN
        if phase is Phase.DRAIN:
            return DRAIN_GAIN
        if phase is Phase.PROBE_BW:
            return PROBE_BW_GAINS[self._cycle]
        return 1.0

    @property
    def cwnd(self) -> int:
        """Bytes that may be in flight."""
        floor = MIN_WINDOW_DATAGRAMS * self.max_datagram_size
        if self.phase is Phase.PROBE_RTT:
            return floor
        bdp = self.bdp
        if bdp is None:
            return INITIAL_WINDOW_DATAGRAMS * self.max_datagram_size
        gain = STARTUP_GAIN if self.phase is Phase.STARTUP else CWND_GAIN
        return max(int(gain * bdp) + self.extra_acked, floor)

    def pacing_rate(self, srtt: float) -> float:
        """Bytes per second the pacer lets out: the gain times the estimate (before
        the first estimate: the window over the smoothed RTT, at the startup gain)."""
        if self.btl_bw:
            return self.pacing_gain * self.btl_bw
        return STARTUP_GAIN * self.cwnd / max(srtt, _MIN_INTERVAL)

    # --------------------------------------------------------------- the engine's calls

    def on_sent(self, nbytes: int) -> None:
        """``nbytes`` went out."""
        self.sent_bytes += nbytes

    def on_limited(self) -> None:
        """The sender had data the window or the pacer held back."""
        self._limited = True

    def on_acked(self, nbytes: int, sent_at: float, now: float,
                 app_limited: bool = False, first_sent_at: float | None = None) -> None:
        """``nbytes`` newly acknowledged; the newest of them was sent at ``sent_at``,
        the oldest at ``first_sent_at`` (default: ``sent_at``)."""
        first = sent_at if first_sent_at is None else first_sent_at
        if first < self._round_first_sent:
            self._round_first_sent = first
        self.acked_bytes += nbytes
        self.delivered += nbytes
        if sent_at >= self._react_at:  # the loss share judges what went since
            self._round_acked += nbytes
        self._rt_acked += nbytes
        self._now = now
        latest = self._rtt.latest
        if latest > 0:
            if self.min_rtt is None or latest <= self.min_rtt:
                self.min_rtt = latest
                self._min_rtt_at = now
            elif now - self._min_rtt_at > MIN_RTT_WINDOW:
                # not renewed for 10 s: take the new sample, and drain the queue to
                # see the true minimum (PROBE_RTT) unless still starting up
                self.min_rtt = latest
                self._min_rtt_at = now
                if self.phase is not Phase.STARTUP and self.phase is not Phase.PROBE_RTT:
                    self.phase = Phase.PROBE_RTT
                    self._probe_rtt_done = None
        self._aggregation(nbytes, now)
        start = self._round_start
        if start is None:
            self._begin_round(now, sent_at)
        elif sent_at >= start:
            self._end_round(now, sent_at, app_limited)
        self._limited = False  # from here: held back since this ACK?
        self._advance(now)

    def on_lost(self, nbytes: int, largest_lost_sent_at: float, now: float) -> None:
        """``nbytes`` were declared lost (counted toward the round's loss share)."""
        self.lost_bytes += nbytes
        if largest_lost_sent_at >= self._react_at:
            self._round_lost += nbytes
        self._rt_lost += nbytes

    def on_persistent_congestion(self) -> None:
        """Forget the estimate and start over (RFC 9002 7.6.2's collapse, in BBR terms)."""
        self._samples.clear()
        self._extra.clear()
        self.btl_bw = 0.0
        self.extra_acked = 0
        self.phase = Phase.STARTUP
        self._full_bw = 0.0
        self._full_rounds = 0

    def room(self, bytes_in_flight: int) -> int:
        """Bytes that may be sent now with ``bytes_in_flight`` outstanding."""
        self._inflight = bytes_in_flight
        if self.phase is Phase.DRAIN:
            bdp = self.bdp
            if bdp is not None and bytes_in_flight <= bdp:
                self._enter_probe_bw(self._now)
        return max(self.cwnd - bytes_in_flight, 0)

    # ------------------------------------------------------------------ rounds

    def _begin_round(self, now: float, sent_at: float) -> None:
        self._round_start = now
        self._d0 = self.delivered
        self._ack_t0 = now
        self._send_t0 = sent_at
        self._round_first_sent = math.inf
        self._rt_acked = self._rt_lost = 0

    def _end_round(self, now: float, sent_at: float, app_limited: bool) -> None:
        self.rounds += 1
        # the sample's bytes were sent from the oldest of them on: an ACK that
        # settles old data at last (a hole filled under many SACK ranges) must not
        # count it as sent within this round
        interval = max(now - self._ack_t0, sent_at - min(self._send_t0,
                                                         self._round_first_sent))
        limited = self._limited and not app_limited
        # the window forgets old samples, but never its last one: an application
        # that sends little for a while (whose samples do not count) finds the
        # estimate it left when it sends in bulk again
        samples = self._samples
        while len(samples) > 1 and self.rounds - samples[0][0] > BW_ROUNDS and (
                now - samples[0][1] > BW_WINDOW):
            samples.popleft()
        extra = self._extra
        while len(extra) > 1 and self.rounds - extra[0][0] > BW_ROUNDS and (
                now - extra[0][1] > BW_WINDOW):
            extra.popleft()
        if interval > _MIN_INTERVAL:
            sample = (self.delivered - self._d0) / interval
            if limited or sample > self.btl_bw:
                samples.append((self.rounds, now, sample))
        self.btl_bw = max((s for _r, _t, s in samples), default=0.0)
        self.extra_acked = max((x for _r, _t, x in extra), default=0)
        settled = self._round_acked + self._round_lost
        if now - self._loss_t0 >= BW_WINDOW and (  # the loss share of the last interval
                settled >= LOSS_MIN_DATAGRAMS * self.max_datagram_size):
            if self._round_lost > LOSS_CEILING * settled and self.btl_bw:
                if self.phase is Phase.STARTUP:
                    # STARTUP's own overshoot: its delivery rate is the path's, and
                    # DRAIN takes the excess out; nothing to cut
                    self._leave_startup(now)
                else:
                    cap = self.btl_bw * LOSS_BETA
                    self._samples = deque(((r, t, min(x, cap)) for r, t, x in samples),
                                          maxlen=256)
                    self.btl_bw = cap
                    self._react_at = now
            self._loss_t0 = now
            self._round_acked = self._round_lost = 0
        if self.phase is Phase.STARTUP:
            settled = self._rt_acked + self._rt_lost
            if settled >= LOSS_MIN_DATAGRAMS * self.max_datagram_size and (
                    self._rt_lost > STARTUP_LOSS_SHARE * settled):
                self._leave_startup(now)  # the pipe and its queue are full
        if self.phase is Phase.STARTUP and limited:
            if self.btl_bw >= self._full_bw * FULL_BW_GROWTH:
                self._full_bw = self.btl_bw
                self._full_rounds = 0
            else:
                self._full_rounds += 1
                if self._full_rounds >= FULL_BW_ROUNDS:
                    self._leave_startup(now)
        self._begin_round(now, sent_at)

    def _leave_startup(self, now: float) -> None:
        """STARTUP is over: DRAIN, and what it sent is not judged by the loss ceiling
        (losses of its overshoot are still being declared for a round or two)."""
        self.phase = Phase.DRAIN
        self._react_at = now
        self._loss_t0 = now
        self._round_acked = self._round_lost = 0

    def _aggregation(self, nbytes: int, now: float) -> None:
        """Measure how far ACKs run ahead of the estimate (BBR v2's extra_acked)."""
        bw = self.btl_bw
        at = self._epoch_at
        expected = 0.0 if at is None else bw * (now - at)
        if at is None or self._epoch_acked <= expected:
            self._epoch_at = now  # ACKs fell back to the estimate: a new epoch
            self._epoch_acked = 0
            expected = 0.0
        self._epoch_acked += nbytes
        extra = int(self._epoch_acked - expected)
        if bw:
            extra = min(extra, int(bw * EXTRA_ACKED_CAP))
        if extra > self.extra_acked:
            self.extra_acked = extra
            self._extra.append((self.rounds, now, extra))

    def _advance(self, now: float) -> None:
        phase = self.phase
        min_rtt = self.min_rtt
        if phase is Phase.PROBE_BW and min_rtt is not None and (
                now - self._cycle_at > min_rtt):
            self._cycle = (self._cycle + 1) % len(PROBE_BW_GAINS)
            self._cycle_at = now
        if phase is Phase.PROBE_RTT:
            done = self._probe_rtt_done
            if done is None and self._inflight <= self.cwnd:
                self._probe_rtt_done = now + PROBE_RTT_TIME
            elif done is not None and now >= done:
                self._probe_rtt_done = None
                self._enter_probe_bw(now)

    def _enter_probe_bw(self, now: float) -> None:
        self.phase = Phase.PROBE_BW
        self._cycle = 2  # start cruising (BBR picks a random phase other than 0.75)
        self._cycle_at = now
