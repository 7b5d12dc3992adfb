"""Delivery reports of packet flows: how BOND learns what each path delivers.

A stream flow measures each path by the ACKs of its bytes (:mod:`.delivery`);
packets are never acknowledged, so for a packet flow in BOND the *receiver* reports
and the sender turns the reports into shares (docs/wire.md, PATH_REPORT):

- :class:`Reporter` (the receiving end): every :data:`REPORT_INTERVAL` while packets
  arrive, one PATH_REPORT frame naming every live path with the packets and payload
  bytes received on it since it attached (``PathState.pkts_in`` and
  ``pkt_bytes_in``, two counter increments per packet: its only per-packet cost).
  The counters are cumulative, so a lost report costs only time.  The frame goes on
  the ACK path (the active one), for every path at once: a report about a slow or
  lossy path must not be lost, or held in a queue, with that path's packets.
- :class:`PathRates` (the sending end): checks each report against what was sent on
  each path (``pkts_out``, ``pkt_bytes_out``; a claim beyond it is clamped and
  counted, an unknown path or a stale or malformed report ignored and counted) and
  takes, every :data:`MIN_SAMPLE` seconds of the reporter's clock, a sample per
  path: its delivery rate and its loss (the bytes it received against those sent
  meanwhile).  Each path gets a **share**, in bytes per second: a path whose loss
  (smoothed) is :data:`LOSS_HIGH` above its own floor (the least of its last
  :data:`LOSS_SAMPLES` samples: random loss is not load), or whose latest RTT sample
  says its queue fills (:data:`QUEUE_DELAY`), is saturated, and its share is what it
  delivered; any other path is not full, and its share grows by :data:`PROBE` per
  sample, up to :data:`HEADROOM` times what it delivered.  So a rate-limited path
  that drops gets what it delivers and the others take the rest; while no path is
  full the shares keep their ratio.  BOND stripes packets in proportion to the
  shares (:meth:`PathRates.shares`); a path not measured yet is weighed by
  ``PathSpec.weight`` (the prior), a path that delivered nothing keeps
  :data:`MIN_SHARE` of the total so it is measured again, and without a report for
  :data:`STALE` seconds the weights alone decide again.  BOND leaves a path far
  slower by RTT out of packets as out of streams (not one losing PINGs: the
  reports measure its loss, and a packet flow holds nothing back).
"""

from __future__ import annotations

from collections import deque
from typing import Final

from ..errors import ProtocolError
from .path import PathState
from .paths import PathSet
from .types import PathStatus
from .wire import MAX_REPORT_PATHS, decode_path_report, encode_path_report

__all__ = ["REPORT_INTERVAL", "PathRates", "Reporter"]

REPORT_INTERVAL: Final = 0.05
"""Seconds between two reports while packets arrive (a rate sample needs
:data:`MIN_SAMPLE` anyway: a shorter interval would only cost frames)."""
MIN_SAMPLE: Final = 0.08
"""Seconds of the reporter's clock a rate sample spans at least (two reports)."""
LOSS_HIGH: Final = 0.02
"""A path losing this fraction of a sample more than its least loss of the last
:data:`LOSS_SAMPLES` samples (the loss it has anyway, not from its load) is
saturated."""
LOSS_SAMPLES: Final = 8
QUEUE_DELAY: Final = 0.015
"""A path whose latest RTT sample exceeds its recent minimum by this much (or by half
of it, if more) is queueing: full too, though it drops nothing yet."""
PROBE: Final = 1.05
"""Per sample, the growth of the share of a path that is not saturated."""
HEADROOM: Final = 2.0
"""A path's share is at most this many times what it delivered in its last sample."""
MIN_SHARE: Final = 0.02
"""The smallest fraction of the packets a path gets (it must keep being measured)."""
STALE: Final = 1.0
"""Seconds without a report after which the weights decide alone again."""
LOSS_GAIN: Final = 0.25
"""The weight of each sample in a path's loss estimate (an EWMA)."""


class Reporter:
    """The receiving end's reports (see the module docstring).

    Attributes:
        sent_at: when the latest report was made (or the flow began).
        reports: reports made.
    """

    __slots__ = ("_last", "origin", "reports", "sent_at")

    def __init__(self, now: float) -> None:
        self.origin = now
        self.sent_at = now
        self._last = -1  # the packets counted in the latest report
        self.reports = 0

    def due(self, last_packet_at: float) -> float | None:
        """When the next report is due: None while no packet arrived since the last."""
        if last_packet_at <= self.sent_at:
            return None
        return self.sent_at + REPORT_INTERVAL

    def build(self, paths: PathSet, now: float) -> bytes | None:
        """The report to send now (None: nothing new arrived)."""
        self.sent_at = now
        entries: list[tuple[int, int, int]] = []
        total = 0
        for p in paths:
            if p.status is PathStatus.UP and len(entries) < MAX_REPORT_PATHS:
                entries.append((p.id, p.pkts_in, p.pkt_bytes_in))
                total += p.pkts_in
        if total == self._last:
            return None
        self._last = total
        self.reports += 1
        return encode_path_report(int((now - self.origin) * 1e6), entries)


class _Sample:
    """One path's latest report and share (the sending end)."""

    __slots__ = ("at", "loss", "losses", "measured", "nbytes", "packets", "rate", "sent",
                 "share", "t")

    def __init__(self, t: float, packets: int, nbytes: int, sent: int, at: float) -> None:
        self.t = t  # the reporter's clock (seconds) when the sample began
        self.packets = packets
        self.nbytes = nbytes
        self.sent = sent  # payload bytes sent on the path, at ``at`` (our clock)
        self.at = at
        self.rate = 0.0  # delivered, bytes/s (0.0: no sample yet)
        self.loss = 0.0  # EWMA of the samples' loss
        self.share = 0.0  # bytes/s
        self.measured = False  # a sample was taken (rate, loss and share are known)
        self.losses: deque[float] = deque(maxlen=LOSS_SAMPLES)  # of the latest samples


class PathRates:
    """The sending end's view of what each path delivers (see the module docstring).

    Attributes:
        reports: reports taken.
        clamped: path entries that claimed more than was sent (clamped to it), or
            less than an earlier report (ignored).
        ignored: reports malformed or stale (not newer than the latest), and entries
            for paths this end does not have.
    """

    __slots__ = ("_by_path", "_last_at", "_last_t", "clamped", "ignored", "reports")

    def __init__(self) -> None:
        self._by_path: dict[int, _Sample] = {}
        self._last_t = -1
        self._last_at: float | None = None
        self.reports = 0
        self.clamped = 0
        self.ignored = 0

    def on_report(self, body: memoryview | bytes, paths: PathSet, now: float) -> None:
        """A PATH_REPORT frame arrived (never an error: an extension frame)."""
        try:
            t_us, entries = decode_path_report(body)
        except ProtocolError:
            self.ignored += 1
            return
        if t_us <= self._last_t:
            self.ignored += 1  # reordered behind a newer one (or a replayed clock)
            return
        self._last_t = t_us
        self._last_at = now
        self.reports += 1
        t = t_us / 1e6
        by_path = self._by_path
        for pid, packets, nbytes in entries:
            path = paths.get(pid)
            if path is None:
                self.ignored += 1
                continue
            if packets > path.pkts_out or nbytes > path.pkt_bytes_out:
                self.clamped += 1
                packets = min(packets, path.pkts_out)
                nbytes = min(nbytes, path.pkt_bytes_out)
            s = by_path.get(pid)
            if s is None:
                if len(by_path) >= MAX_REPORT_PATHS:  # forget paths that left
                    for gone in [k for k in by_path if k not in paths]:
                        del by_path[gone]
                by_path[pid] = _Sample(t, packets, nbytes, path.pkt_bytes_out, now)
                continue
            if packets < s.packets or nbytes < s.nbytes:
                self.clamped += 1  # counters only grow
                continue
            if t - s.t >= MIN_SAMPLE and now - s.at >= MIN_SAMPLE / 2:
                self._sample(s, path, t, packets, nbytes, now)

    @staticmethod
    def _sample(s: _Sample, path: PathState, t: float, packets: int, nbytes: int,
                now: float) -> None:
        span = t - s.t
        local = now - s.at  # the reporter's clock is the peer's word: keep it near ours
        span = min(max(span, 0.5 * local), 2.0 * local)
        got = nbytes - s.nbytes
        sent = path.pkt_bytes_out - s.sent
        s.t, s.packets, s.nbytes, s.sent, s.at = t, packets, nbytes, path.pkt_bytes_out, now
        if sent <= 0:
            return  # nothing sent on it meanwhile: nothing learnt
        rate = got / span
        loss = max(0.0, 1.0 - got / sent)
        s.rate = rate
        s.loss = loss if not s.measured else s.loss + LOSS_GAIN * (loss - s.loss)
        s.measured = True
        s.losses.append(s.loss)
        if s.loss > min(s.losses) + LOSS_HIGH or _queueing(path):
            s.share = rate
        else:
            s.share = min(max(s.share, rate) * PROBE, HEADROOM * rate)

    def shares(self, paths: list[PathState], now: float) -> list[float] | None:
        """What each of ``paths`` should get, in proportion; None: by weight alone (no
        report yet, or none for :data:`STALE` seconds)."""
        if self._last_at is None or now - self._last_at > STALE:
            return None
        by_path = self._by_path
        out: list[float] = []
        measured = weights = 0.0
        for p in paths:
            s = by_path.get(p.id)
            if s is not None and s.measured:
                measured += s.share
                weights += p.weight
        if not weights:
            return None
        per_weight = measured / weights  # a path not measured yet: its weight's worth
        for p in paths:
            s = by_path.get(p.id)
            out.append(s.share if s is not None and s.measured else p.weight * per_weight)
        floor = MIN_SHARE * sum(out)
        if floor <= 0:
            return None
        return [max(x, floor) for x in out]

    def measured(self, path_id: int) -> bool:
        """Whether a report measured the path yet."""
        return path_id in self._by_path

    def rate(self, path_id: int) -> float:
        """The latest delivery rate sample of a path (bytes/s; 0.0 without one)."""
        s = self._by_path.get(path_id)
        return 0.0 if s is None else s.rate

    def loss(self, path_id: int) -> float:
        """A path's loss estimate (the fraction of its packets lost, an EWMA)."""
        s = self._by_path.get(path_id)
        return 0.0 if s is None else s.loss

    def share(self, path_id: int) -> float:
        """A path's share (bytes/s; 0.0 while not measured)."""
        s = self._by_path.get(path_id)
        return 0.0 if s is None else s.share


def _queueing(path: PathState) -> bool:
    """Whether ``path``'s latest RTT sample says its queue is filling."""
    rtt = path.rtt
    low = rtt.recent_min()
    return low is not None and rtt.latest - low > max(QUEUE_DELAY, low / 2)
