"""Reliable streams over a datagram path: loss recovery, congestion control, pacing.

A stream carrier (TCP) loses bytes only with the path (:mod:`.recovery` re-sends
them elsewhere).  A datagram path (udpflow) drops, duplicates and reorders while it
lives, so each one gets a :class:`PathReliability` that joins three parts:

- :class:`~rendr.core.loss.LossDetector`: which ranges were lost (RFC 9002 packet
  and time thresholds over byte ranges, from the peer's cumulative ACK and SACK
  ranges) and when to probe (PTO);
- a congestion controller (:class:`~rendr.core.bbr.Bbr` by default, or
  :class:`~rendr.core.congestion.NewReno`): how many bytes may be in flight, and
  how fast they may leave;
- :class:`~rendr.core.congestion.Pacer`: how fast they may leave (no bursts that
  would overflow a socket buffer on the way).

The flow calls :meth:`PathReliability.budget` before filling the path, ``on_sent``
for each DATA range, ``on_ack`` for every ACK (whichever path brought it), and
``on_timer`` at :meth:`deadline`.  Lost ranges go back to the
:class:`~rendr.core.sender.StreamSender` (``on_lost``: it skips what the peer has
acknowledged since); a probe re-queues the oldest outstanding ranges (or the FIN).
What the path carried stays recorded in ``PathState.inflight`` too, so a path that
dies is replayed like a stream path.
"""

from __future__ import annotations

from typing import Final

from .bbr import Bbr
from .congestion import CongestionController, NewReno, Pacer
from .loss import LossDetector, LossReport
from .path import PathState
from .paths import PathSet
from .sender import StreamSender
from .types import PathStatus
from .wire import DATA_HEADER

__all__ = ["PathReliability", "any_room", "earliest", "run_timers"]

_DATA_OVERHEAD: Final = DATA_HEADER.size
FIN_WAIT_MAX: Final = 1.0
"""Seconds: the longest wait between two sends of an unacknowledged FIN on a datagram
path, unless the path's probe timeout is longer (a FIN is one small datagram)."""


class PathReliability:
    """Loss recovery, congestion control and pacing of one datagram path.

    Attributes:
        lost_bytes: stream bytes declared lost on this path (re-sent).
        probes: probe timeouts that fired.
        wait_until: the pacer holds data until then (None: not waiting).
    """

    __slots__ = ("_fin_at", "_fin_wait", "_path", "cc", "loss", "lost_bytes", "pacer",
                 "probe_credit", "probes", "wait_until")

    def __init__(self, path: PathState, datagram_size: int,
                 congestion: str = "bbr") -> None:
        self._path = path
        self.loss = LossDetector(path.rtt)
        self.cc: CongestionController = (
            Bbr(path.rtt, max_datagram_size=datagram_size) if congestion == "bbr"
            else NewReno(max_datagram_size=datagram_size))
        self.pacer = Pacer(self.cc, path.rtt)
        self.lost_bytes = 0
        self.probes = 0
        self.probe_credit = 0  # bytes a probe may send beyond the window (RFC 9002 7.5)
        self.wait_until: float | None = None
        self._fin_at: float | None = None  # when to re-send a FIN sent alone
        self._fin_wait = 0.0

    def on_fin_sent(self, now: float) -> None:
        """The FIN went out on this path: re-send it if unacknowledged after a probe
        timeout, even when no data is in flight to arm the PTO.  The wait doubles up
        to ``FIN_WAIT_MAX`` (or the probe timeout, if longer), not beyond: ``close()``
        waits at most ``linger`` (10 s) for the FIN's ACK, and a lossy path must get
        more than four tries in that time (doubling from a first probe timeout of 1 s
        -- before any RTT sample -- gave it 4; with 30 % loss each way one close in ten
        then ran out of linger and aborted, though every byte had arrived)."""
        wait = self._fin_wait
        pto = self.loss.pto_period
        self._fin_wait = pto if not wait else min(2 * wait, max(FIN_WAIT_MAX, pto))
        self._fin_at = now + self._fin_wait

    @property
    def can_send(self) -> bool:
        """Whether the window has room and the pacer is not holding data."""
        return self.probe_credit > 0 or (
            self.wait_until is None and self.cc.room(self.loss.bytes_in_flight) > 0)

    def budget(self, now: float) -> int:
        """Bytes of DATA the path may take now (0: window full, or paced: see
        :attr:`wait_until`); a probe goes beyond the window, unpaced."""
        if self.probe_credit > 0:
            return self.probe_credit
        cc = self.cc
        room = cc.room(self.loss.bytes_in_flight)
        if room <= 0:
            cc.on_limited()
            return 0
        at = self.pacer.next_send_time(now)
        if at is not None:
            cc.on_limited()
            self.wait_until = at
            return 0
        self.wait_until = None
        return min(room, max(int(self.pacer.tokens), self.cc.max_datagram_size))

    def on_sent(self, start: int, end: int, now: float, resend: bool,
                copy: bool = False) -> None:
        """``[start, end)`` went out on the path in one DATA frame (``resend``: it was
        sent before; ``copy``: RACE's copy of a range another path sent first)."""
        wire = end - start + _DATA_OVERHEAD
        if self.probe_credit > 0:
            self.probe_credit = max(0, self.probe_credit - wire)
        self.loss.on_sent(start, end, now, wire, resend or copy, copy)
        self.cc.on_sent(wire)
        self.pacer.on_sent(now, wire)

    def on_ack(self, cum: int, ranges: list[tuple[int, int]], now: float,
               sender: StreamSender) -> None:
        """The peer's ACK (from any path): take what it acknowledges, feed the RTT
        sample and the window, and re-queue what it shows lost."""
        if not self.loss.in_flight:
            return
        out = self.loss.on_ack(cum, ranges, now)
        if out.rtt_sample is not None:
            self._path.rtt.update(out.rtt_sample, now)
        sent_at = out.largest_acked_sent_at
        if out.acked_bytes and sent_at is not None:
            self.cc.on_acked(out.acked_bytes, sent_at, now,
                             first_sent_at=out.oldest_acked_sent_at)
        self._lost(out, now, sender)

    def deadline(self) -> float | None:
        """When :meth:`on_timer` is due (loss timer, probe timeout or pacing)."""
        at = self.loss.deadline()
        for t in (self.wait_until, self._fin_at):
            if t is not None and (at is None or t < at):
                at = t
        return at

    def on_timer(self, now: float, sender: StreamSender) -> None:
        """Run the deadlines due at ``now``."""
        w = self.wait_until
        if w is not None and now >= w:
            self.wait_until = None  # the next fill asks the pacer again
        f = self._fin_at
        if f is not None and now >= f:
            self._fin_at = None
            path = self._path
            if path.fin_sent and not sender.fin_acked:
                path.fin_sent = False  # the FIN (alone in its datagram) may be lost
                sender.fin_lost()
        at = self.loss.deadline()
        if at is None or now < at:
            return
        out = self.loss.on_timer(now)
        self._lost(out, now, sender)
        if out.probe:
            self.probes += 1
            requeued = 0
            for s, e in self.loss.oldest(out.probes):
                requeued += sender.on_lost(s, e)
            path = self._path
            if not requeued and path.fin_sent and not sender.fin_acked:
                path.fin_sent = False  # the FIN may have been in a lost datagram
                sender.fin_lost()
            self.wait_until = None  # a probe is not paced, nor held by the window
            self.probe_credit = out.probes * (self.cc.max_datagram_size - _DATA_OVERHEAD)

    def _lost(self, out: LossReport, now: float, sender: StreamSender) -> None:
        if not out.lost:
            return
        for s, e in out.lost:
            self.lost_bytes += sender.on_lost(s, e)
        self._path.retransmits += out.lost_bytes
        sent_at = out.lost_largest_sent_at
        if sent_at is not None:
            self.cc.on_lost(out.lost_bytes, sent_at, now)
        if out.persistent_congestion:
            self.cc.on_persistent_congestion()

    def on_path_dead(self) -> None:
        """The path died (its ranges are replayed from ``PathState.inflight``)."""
        self.loss.on_path_dead()
        self.wait_until = None


def any_room(reliable: dict[int, PathReliability], senders: list[PathState]) -> bool:
    """Whether some path of ``senders`` can take data now: a stream path, or a datagram
    path whose window and pacer allow."""
    for path in senders:
        rel = reliable.get(path.id)
        if rel is None or rel.can_send:
            return True
    return False


def earliest(reliable: dict[int, PathReliability], at: float | None) -> float | None:
    """The earlier of ``at`` and every path's :meth:`PathReliability.deadline`."""
    for rel in reliable.values():
        t = rel.deadline()
        if t is not None and (at is None or t < at):
            at = t
    return at


def run_timers(reliable: dict[int, PathReliability], paths: PathSet, now: float,
               sender: StreamSender) -> None:
    """Run every path's deadlines; forget the paths that died or left (what they
    carried is replayed from their inflight record, as on a stream path)."""
    for pid in list(reliable):
        path = paths.get(pid)
        rel = reliable[pid]
        if path is None or path.status is PathStatus.DOWN or (
                path.status is PathStatus.REMOVED):
            rel.on_path_dead()
            del reliable[pid]
        else:
            rel.on_timer(now, sender)
