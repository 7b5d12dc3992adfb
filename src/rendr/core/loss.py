"""Per-path loss detection for datagram carriers: RFC 9002 adapted to byte ranges.

A datagram path (UDP) may drop, delay and reorder what it carries, so a path needs
the machinery of QUIC's loss recovery (RFC 9002).  Here the unit is a *segment*:
one stream range ``[start, end)`` put in a datagram, numbered in send order (the
number plays the part of QUIC's packet number; a re-sent range is a new segment
with a new number).  The peer's ACK does not name segments: it carries a
cumulative offset and up to 16 SACK ranges (``wire.decode_ack``), and a segment
counts as acknowledged when its whole range is below the cumulative offset or
inside one SACK range.

Rules followed (section numbers of RFC 9002):

- RTT samples (5.1): only when the newest newly acknowledged segment is newer than
  every segment acknowledged before, and never from a re-sent one (Karn).  Nor does
  an acknowledged re-sent segment count as the largest acknowledged for the packet
  threshold (the ACK may be for its original); for the time threshold it does, if
  acknowledged at least a minimum RTT after it went (RACK's test, RFC 8985), and then
  only for what was sent a loss delay before *it* (RACK's rule: the ACK may still be
  for a late original, and what was sent shortly before the re-send may still be
  queued on the path; a lost tail, sent a probe timeout before, is found).  There is
  no ack-delay field: ``max_ack_delay`` is the constant bound the PTO adds.  The
  detector reads an RTT source (``srtt``, ``rttvar``, ``latest``; the engine's
  :class:`~rendr.core.path.RttEstimator`) and reports the sample for the caller to
  feed it; the ACK that produced the sample already uses it.
- Loss (6.1): a segment older than the newest acknowledged one is lost when a
  segment sent at least 3 later (``PACKET_THRESHOLD``) was acknowledged, or when it
  was sent more than ``9/8 * max(srtt, latest)`` ago (``TIME_THRESHOLD``); otherwise
  the loss timer is armed for the moment it would be.
- Probe timeout (6.2): ``srtt + max(4 * rttvar, GRANULARITY) + max_ack_delay`` after
  the last segment sent, doubled per consecutive PTO, reset by an ACK acknowledging
  something.  A PTO asks for probes; it never declares anything lost.
- Persistent congestion (7.6): lost segments, all sent after the first RTT sample,
  whose send times span more than 3 PTO periods (without backoff) with nothing
  acknowledged in between.

Cost: outstanding segments sit in a deque in send order (loss detection works at
its front: each segment is looked at once there) and in a list sorted by start
offset (the cumulative offset and each SACK range are found by bisection and what
they acknowledge is cut out).  An ACK examines O(what it acknowledges, declares
lost or drops + segments straddling a range's end), plus O(log n) per range
(:attr:`LossDetector.examined` counts).  Sending appends to the list, or inserts
(a memmove) when re-sending below the highest offset outstanding.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Sequence
from typing import Final, Protocol

__all__ = ["AckOutcome", "LossDetector", "LossReport", "RttSource", "TimerOutcome"]

# RFC 9002 6.1.1, 6.1.2, 6.2.2, 7.6.1, 6.2.4; times in seconds
PACKET_THRESHOLD: Final = 3  # a segment this many older than one acknowledged is lost
TIME_THRESHOLD: Final = 9 / 8  # loss delay, in RTTs
GRANULARITY: Final = 0.001  # timer granularity
INITIAL_RTT: Final = 0.333  # the RTT assumed before any sample
MAX_ACK_DELAY: Final = 0.025  # default bound on the peer's ACK delay
PERSISTENT_CONGESTION_THRESHOLD: Final = 3  # PTO periods of consecutive losses
PTO_PROBES: Final = 2  # probe datagrams per PTO
MAX_PTO: Final = 60.0  # bound on a backed-off PTO period and on ``rto``
MIN_RTO: Final = 1.0  # RFC 6298 (2.4): lower bound of ``rto``

_IN_FLIGHT: Final = 0
_ACKED: Final = 1
_LOST: Final = 2
_COMPACT: Final = 1024  # dead entries before the sorted index is compacted
_NEVER: Final = float("inf")  # no re-send is the time threshold's reference


class RttSource(Protocol):
    """What the detector reads of an RTT estimator (``RttEstimator`` has it)."""

    @property
    def srtt(self) -> float | None: ...  # None: no sample yet
    @property
    def rttvar(self) -> float: ...
    @property
    def latest(self) -> float: ...
    @property
    def min_rtt(self) -> float | None: ...  # None: no sample yet


class _Segment:
    __slots__ = ("copy", "end", "num", "retransmit", "sent_at", "start", "state", "wire")

    def __init__(self, num: int, start: int, end: int, sent_at: float, wire: int,
                 retransmit: bool, copy: bool) -> None:
        self.num = num
        self.start = start
        self.end = end
        self.sent_at = sent_at
        self.wire = wire
        self.retransmit = retransmit
        self.copy = copy
        self.state = _IN_FLIGHT


class LossReport:
    """Segments declared lost by one event, for re-sending and congestion control.

    Attributes:
        lost: the lost ranges ``(start, end)``, in send order (give each to
            ``StreamSender.on_lost``).
        lost_bytes: their wire bytes.
        lost_largest_sent_at: send time of the newest lost one (None: nothing lost).
        persistent_congestion: the losses make persistent congestion (RFC 9002 7.6).
    """

    __slots__ = ("lost", "lost_bytes", "lost_largest_sent_at", "persistent_congestion")

    def __init__(self) -> None:
        self.lost: list[tuple[int, int]] = []
        self.lost_bytes = 0
        self.lost_largest_sent_at: float | None = None
        self.persistent_congestion = False


class AckOutcome(LossReport):
    """What one ACK did (and the :class:`LossReport` of the losses it revealed).

    Attributes:
        acked_bytes: wire bytes newly acknowledged.
        acked_segments: segments newly acknowledged.
        largest_acked_sent_at: send time of the newest newly acknowledged segment
            (None: nothing new).
        rtt_sample: an RTT sample to feed the path's estimator, or None.
        oldest_acked_sent_at: send time of the oldest newly acknowledged segment.
    """

    __slots__ = ("acked_bytes", "acked_segments", "largest_acked_sent_at",
                 "oldest_acked_sent_at", "rtt_sample")

    def __init__(self) -> None:
        super().__init__()
        self.acked_bytes = 0
        self.acked_segments = 0
        self.largest_acked_sent_at: float | None = None
        self.oldest_acked_sent_at: float | None = None
        self.rtt_sample: float | None = None


class TimerOutcome(LossReport):
    """What :meth:`LossDetector.on_timer` found: losses (the time threshold) or a PTO.

    Attributes:
        probe: the PTO fired: send ``probes`` ack-eliciting datagrams now, new data
            or else the oldest outstanding ranges (:meth:`LossDetector.oldest`),
            even beyond the congestion window.
        probes: how many (0 without a PTO).
    """

    __slots__ = ("probe", "probes")

    def __init__(self) -> None:
        super().__init__()
        self.probe = False
        self.probes = 0


class LossDetector:
    """Loss detection and probe timeout of one path (see the module docstring).

    Attributes:
        rtt: the RTT source read for thresholds and timers.
        max_ack_delay: bound on the peer's ACK delay, added to the PTO.
        initial_rtt: the RTT assumed before any sample.
        bytes_in_flight: wire bytes sent and neither acknowledged nor declared lost.
        pto_count: consecutive PTOs without an acknowledgement (the backoff exponent).
        loss_time: when the time threshold will declare a segment lost (or None).
        examined: segments looked at so far (a cost counter: tests and stats).
        ambiguous: re-sent segments acknowledged sooner than a minimum RTT after
            they went (their original arrived: the re-send was spurious).
    """

    __slots__ = ("_first_sample_at", "_head", "_in_flight", "_index",
                 "_largest_acked", "_largest_any", "_largest_any_sent_at",
                 "_last_sent_at", "_newest",
                 "_newest_clean", "_next_num", "_pc_start", "_segs", "_starts",
                 "ambiguous", "bytes_in_flight", "examined", "initial_rtt",
                 "loss_time", "max_ack_delay", "max_pto", "min_rto",
                 "pto_count", "rtt")

    def __init__(self, rtt: RttSource, *, max_ack_delay: float = MAX_ACK_DELAY,
                 initial_rtt: float = INITIAL_RTT, min_rto: float = MIN_RTO,
                 max_pto: float = MAX_PTO) -> None:
        self.rtt = rtt
        self.max_ack_delay = max_ack_delay
        self.initial_rtt = initial_rtt
        self.min_rto = min_rto
        self.max_pto = max_pto
        self.bytes_in_flight = 0
        self.pto_count = 0
        self.loss_time: float | None = None
        self.examined = 0
        self._segs: deque[_Segment] = deque()  # send order; acked/lost ones drop at the front
        self._starts: list[int] = []  # sorted start offsets of _index (from _head on)
        self._index: list[_Segment] = []
        self._head = 0  # entries below it are dead
        self._in_flight = 0  # segments
        self._next_num = 0
        self._largest_acked = -1  # of first transmissions (the packet threshold)
        self._largest_any = -1  # also of re-sends (the time threshold; see on_ack)
        self._largest_any_sent_at = _NEVER  # when that one went, if a re-send set it
        self.ambiguous = 0
        self._last_sent_at = 0.0
        self._first_sample_at: float | None = None
        self._pc_start: float | None = None  # send time opening a run of losses
        self._newest: _Segment | None = None  # newest newly acked, during on_ack
        self._newest_clean: _Segment | None = None  # the same, first transmissions only

    # ------------------------------------------------------------------ sending

    def on_sent(self, start: int, end: int, now: float, wire_bytes: int,
                retransmit: bool, copy: bool = False) -> None:
        """``[start, end)`` went out at ``now`` in ``wire_bytes`` bytes of datagram;
        ``retransmit``: the range (or part of it) was sent before, here or elsewhere;
        ``copy`` (with ``retransmit``): a copy of what another path is carrying (RACE),
        not a re-send of something lost.

        Raises:
            ValueError: an empty range.
        """
        if end <= start:
            raise ValueError(f"empty segment [{start}, {end})")
        seg = _Segment(self._next_num, start, end, now, wire_bytes, retransmit, copy)
        self._next_num += 1
        self._segs.append(seg)
        starts = self._starts
        index = self._index
        if self._head == len(starts):
            starts.clear()
            index.clear()
            self._head = 0
        if not starts or start >= starts[-1]:
            starts.append(start)
            index.append(seg)
        else:
            i = bisect_right(starts, start, self._head)
            starts.insert(i, start)
            index.insert(i, seg)
        self.bytes_in_flight += wire_bytes
        self._in_flight += 1
        self._last_sent_at = now
        if self._first_sample_at is None and self.rtt.srtt is not None:
            self._first_sample_at = now

    # ----------------------------------------------------------------- the peer's ACK

    def on_ack(self, cum: int, sack: Sequence[tuple[int, int]], now: float) -> AckOutcome:
        """The peer's ACK: every byte below ``cum`` and the ``sack`` ranges (ascending,
        disjoint, above ``cum``, as ``wire.decode_ack`` checks) arrived.  Returns what
        was newly acknowledged and what is now known lost."""
        out = AckOutcome()
        j = bisect_left(self._starts, cum, self._head)
        if j > self._head:
            keep = self._ack_slice(self._head, j, cum, out)
            head = j - len(keep)  # the kept ones move to the top of the dead prefix
            for n, seg in enumerate(keep):
                self._index[head + n] = seg
                self._starts[head + n] = seg.start
            self._head = head
        for s, e in sack:
            i = bisect_left(self._starts, s, self._head)
            j = bisect_left(self._starts, e, i)
            if j > i:
                keep = self._ack_slice(i, j, e, out)
                if len(keep) < j - i:
                    self._starts[i:j] = [seg.start for seg in keep]
                    self._index[i:j] = keep
        head = self._head
        if head > _COMPACT and 2 * head > len(self._starts):
            del self._starts[:head]
            del self._index[:head]
            self._head = 0
        sample: float | None = None
        if out.acked_segments:
            self.pto_count = 0
            newest = self._newest
            clean = self._newest_clean
            self._newest = self._newest_clean = None
            if newest is not None:
                out.largest_acked_sent_at = newest.sent_at
            # a re-sent range's ACK is ambiguous (the original may be what arrived:
            # the ACK names bytes, not segments), so only a first transmission moves
            # the largest acknowledged that the packet threshold counts from: else one
            # spurious re-send, acknowledged by its late original, declared everything
            # sent before the re-send lost at once (a cascade)
            if clean is not None and clean.num > self._largest_acked:
                self._largest_acked = clean.num
                if clean is newest:
                    sample = max(now - clean.sent_at, 0.0)
                    out.rtt_sample = sample
                    if self._first_sample_at is None:
                        self._first_sample_at = now
            # a re-sent segment acknowledged at least a minimum RTT after it went
            # (RACK, RFC 8985 6.2: sooner, it must be the original that arrived) still
            # moves the time threshold's reference: what was sent a loss delay before
            # it is lost (a burst lost at the tail is found when the probe's ACK
            # comes, not one probe timeout per segment; see _detect)
            if newest is not None and newest.num > self._largest_any:
                min_rtt = self.rtt.min_rtt
                if not newest.retransmit or min_rtt is None or (
                        now - newest.sent_at >= min_rtt):
                    self._largest_any = newest.num
                    self._largest_any_sent_at = (newest.sent_at if newest.retransmit
                                                 and not newest.copy else _NEVER)
                else:
                    self.ambiguous += 1
            if self._largest_any < self._largest_acked:
                self._largest_any = self._largest_acked
                self._largest_any_sent_at = _NEVER
        self._detect(now, sample, out)
        return out

    def _ack_slice(self, lo: int, hi: int, limit: int, out: AckOutcome) -> list[_Segment]:
        """Acknowledge the in-flight segments of ``_index[lo:hi]`` ending at or below
        ``limit``; return the in-flight ones that do not (in order)."""
        keep: list[_Segment] = []
        index = self._index
        newest = self._newest
        clean = self._newest_clean
        for k in range(lo, hi):
            seg = index[k]
            if seg.state != _IN_FLIGHT:
                continue  # acked or lost before: dropped from the index here
            if seg.end > limit:
                keep.append(seg)
                continue
            seg.state = _ACKED
            self.bytes_in_flight -= seg.wire
            self._in_flight -= 1
            out.acked_bytes += seg.wire
            out.acked_segments += 1
            oldest = out.oldest_acked_sent_at
            if oldest is None or seg.sent_at < oldest:
                out.oldest_acked_sent_at = seg.sent_at
            if newest is None or seg.num > newest.num:
                newest = seg
            if not seg.retransmit and (clean is None or seg.num > clean.num):
                clean = seg
        self._newest = newest
        self._newest_clean = clean
        self.examined += hi - lo
        return keep

    # ------------------------------------------------------------------ loss rules

    def _rtt_view(self, sample: float | None) -> tuple[float, float, float]:
        """``(srtt, rttvar, latest)`` counting ``sample`` (not fed to the source yet)."""
        rtt = self.rtt
        srtt = rtt.srtt
        if srtt is None:
            if sample is None:
                return self.initial_rtt, self.initial_rtt / 2, 0.0
            return sample, sample / 2, sample
        return srtt, rtt.rttvar, (rtt.latest if sample is None else sample)

    def _pto_base(self, srtt: float, rttvar: float) -> float:
        return srtt + max(4 * rttvar, GRANULARITY) + self.max_ack_delay

    def _detect(self, now: float, sample: float | None, out: LossReport) -> None:
        """Declare lost what the packet and time thresholds say (RFC 9002 6.1) and
        re-arm the loss timer; ``sample``: an RTT sample this ACK produced."""
        srtt, rttvar, latest = self._rtt_view(sample)
        loss_delay = max(TIME_THRESHOLD * max(srtt, latest), GRANULARITY)
        pc_duration = self._pto_base(srtt, rttvar) * PERSISTENT_CONGESTION_THRESHOLD
        first_sample = self._first_sample_at
        largest = self._largest_acked
        largest_any = self._largest_any
        # the newest acknowledged re-send (if newer than every first transmission
        # acknowledged) may have been acknowledged by its late original: what went
        # shortly before it may still be on its way, whatever its age now (RACK's rule,
        # RFC 8985 6.2 step 5: lost only if sent a loss delay before the re-send)
        resent_ref = self._largest_any_sent_at
        if resent_ref != _NEVER:
            resent_ref -= loss_delay
        segs = self._segs
        self.loss_time = None
        while segs:
            seg = segs[0]
            self.examined += 1
            if seg.state != _IN_FLIGHT:
                segs.popleft()
                if seg.state == _ACKED:
                    self._pc_start = None  # acknowledged between losses: no run
                continue
            if seg.num >= largest_any:
                break
            if seg.num >= largest and resent_ref != _NEVER:
                if seg.sent_at > resent_ref:  # only the re-send's evidence: no timer
                    break
            else:
                lost_at = seg.sent_at + loss_delay  # the same sum as loss_time: no livelock
                if seg.num + PACKET_THRESHOLD > largest and lost_at > now:
                    self.loss_time = lost_at
                    break
            segs.popleft()
            seg.state = _LOST
            self.bytes_in_flight -= seg.wire
            self._in_flight -= 1
            out.lost.append((seg.start, seg.end))
            out.lost_bytes += seg.wire
            out.lost_largest_sent_at = seg.sent_at
            if first_sample is not None and seg.sent_at >= first_sample:
                if self._pc_start is None:
                    self._pc_start = seg.sent_at
                elif seg.sent_at - self._pc_start > pc_duration:
                    out.persistent_congestion = True
                    self._pc_start = None

    # ------------------------------------------------------------------ timers

    @property
    def pto_period(self) -> float:
        """The current PTO period: RFC 9002 6.2.1, backed off by :attr:`pto_count`
        (at most :attr:`max_pto`)."""
        srtt, rttvar, _ = self._rtt_view(None)
        return min(self._pto_base(srtt, rttvar) * (1 << min(self.pto_count, 30)),
                   self.max_pto)

    @property
    def rto(self) -> float:
        """An RFC 6298 retransmission timeout for callers: ``srtt + max(GRANULARITY,
        4 * rttvar)`` (1 s before a sample), at least :attr:`min_rto`, backed off by
        :attr:`pto_count`, at most :attr:`max_pto`."""
        srtt = self.rtt.srtt
        base = 1.0 if srtt is None else srtt + max(GRANULARITY, 4 * self.rtt.rttvar)
        return min(max(base, self.min_rto) * (1 << min(self.pto_count, 30)), self.max_pto)

    def deadline(self) -> float | None:
        """When :meth:`on_timer` is due: the loss timer if armed, else the PTO if
        anything is in flight, else None."""
        if self.loss_time is not None:
            return self.loss_time
        if not self._in_flight:
            return None
        return self._last_sent_at + self.pto_period

    def on_timer(self, now: float) -> TimerOutcome:
        """The timer of :meth:`deadline` (a call before it does nothing): declare
        losses by the time threshold, or else report that the PTO fired."""
        out = TimerOutcome()
        if self.loss_time is not None:
            if now >= self.loss_time:
                self._detect(now, None, out)
            return out
        if self._in_flight and now >= self._last_sent_at + self.pto_period:
            self.pto_count += 1
            out.probe = True
            out.probes = PTO_PROBES
        return out

    # ------------------------------------------------------------------ the rest

    @property
    def in_flight(self) -> int:
        """Segments in flight."""
        return self._in_flight

    def oldest(self, most: int) -> list[tuple[int, int]]:
        """The ``most`` in-flight ranges of the lowest offsets, in offset order (what a
        probe re-sends).  The oldest *data*, not the oldest segments: the receiver
        delivers in order, so the lowest bytes outstanding are the ones it may lack,
        while the oldest segments may be ranges it holds but could not report (an ACK
        names at most 16 ranges): probing those, the sender got ACKs that acknowledged
        nothing and backed off for good, its one lost re-send never probed."""
        out: list[tuple[int, int]] = []
        index = self._index
        for k in range(self._head, len(index)):
            if len(out) >= most:
                break
            seg = index[k]
            if seg.state == _IN_FLIGHT and (not out or seg.start >= out[-1][1]):
                out.append((seg.start, seg.end))
        return out

    def on_path_dead(self) -> list[tuple[int, int]]:
        """The path died: forget everything outstanding and return its ranges, in send
        order, for re-sending elsewhere (``StreamSender.on_lost``)."""
        out: list[tuple[int, int]] = []
        for seg in self._segs:
            if seg.state == _IN_FLIGHT:
                seg.state = _LOST
                out.append((seg.start, seg.end))
        self._segs.clear()
        self._starts.clear()
        self._index.clear()
        self._head = 0
        self._in_flight = 0
        self.bytes_in_flight = 0
        self.loss_time = None
        self.pto_count = 0
        self._pc_start = None
        return out
