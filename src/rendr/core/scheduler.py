"""Schedulers: which paths carry what this end sends, and when the dialer should move.

A :class:`Scheduler` is asked which paths may take data now
(:meth:`Scheduler.senders`) and then fills them (:meth:`Scheduler.fill` for the
stream, :meth:`Scheduler.fill_packets` for a packet flow); it also names the paths
an ACK goes on, and, on the dialer, periodically, whether a better path should
become the active one (:meth:`Scheduler.switch_to`).  Failover on a path's death
is not the scheduler's business: the flow moves to :meth:`PathSet.best_alive` at
once.  Receiving is the same in every mode (the stream reassembles by offset and
drops copies; packets are de-duplicated by number).

- :class:`PrimeScheduler` (PRIME): one active path carries everything; the dialer
  moves to a clearly better path by score (RTT, jitter, loss).
- :class:`RaceScheduler` (RACE): every frame, and every ACK, on every live path;
  the first copy wins.
- :class:`BondScheduler` (BOND): frames striped over the live paths, fastest
  (lowest minimum RTT) first, each path up to its in-flight allowance from its
  measured delivery rate (:mod:`.delivery`): min-RTT spill-over, so a slow path
  takes only what the fast one cannot, and never more than about three of its own
  bandwidth-delay products.  Packets (never acknowledged) are striped in proportion
  to what the peer reports each path delivers (:mod:`.pathreport`).
"""

from __future__ import annotations

import abc
from typing import Final

from ..config import FlowConfig
from .builder import fill_race, fill_stream
from .delivery import MIN_ALLOWANCE
from .packets import PacketSender
from .path import PathState
from .paths import PathSet
from .reliability import PathReliability
from .sender import StreamSender
from .types import Mode, PathStatus

__all__ = ["BondScheduler", "PrimeScheduler", "RaceScheduler", "Scheduler", "make_scheduler"]

Reliable = dict[int, PathReliability]

ACK_RTT_FLOOR: Final = 0.02
"""BOND moves its ACKs off the active path only to a path whose round trip is less than
half the active one's and this much (seconds) shorter: paths of about the same round
trip keep them where PRIME has them."""

STUCK_RATIO: Final = 4.0
STUCK_FLOOR: Final = 0.2
STUCK_LOSS: Final = 0.1
"""BOND skips a path whose minimum RTT is above ``STUCK_RATIO`` times the best
path's and ``STUCK_FLOOR`` seconds more, or that loses more than ``STUCK_LOSS`` of
its PINGs while the fastest path does not: what it would carry arrives so late (or
must be re-sent so often) that the receiver holds everything sent meanwhile on the
good path back (counted: ``BondScheduler.stuck_skips``).  A packet flow holds
nothing back and learns each path's loss from the peer's reports: only the RTT
applies to it (a lost PING or two took a path with 2 % loss out, and its packets
overflowed the other)."""


class Scheduler(abc.ABC):
    """Chooses the paths data goes on (see the module docstring)."""

    mode: Mode = Mode.PRIME

    @abc.abstractmethod
    def senders(self, paths: PathSet, active: int | None,
                sender: StreamSender) -> list[PathState]:
        """The paths to fill with data now, in order (none blocked or down); ``sender``
        is the flow's stream sender (what waits to be sent)."""

    def fill(self, senders: list[PathState], sender: StreamSender, with_retx: bool,
             config: FlowConfig, reliable: Reliable, now: float) -> None:
        """Queue stream data (and the FIN) on ``senders``: each takes the next ranges."""
        for path in senders:
            fill_stream(path, sender, with_retx, config,
                        reliable.get(path.id) if reliable else None, now)

    def fill_packets(self, packets: PacketSender, senders: list[PathState],
                     budget: int, now: float) -> None:
        """Queue the application's packets on ``senders`` (every one gets a copy)."""
        packets.fill(senders, budget)

    def ack_paths(self, paths: PathSet, active: int | None) -> list[PathState]:
        """The paths an ACK goes on: the active one (or the first live one)."""
        path = paths.ack_path(active)
        return [] if path is None else [path]

    def switch_to(self, paths: PathSet, active: int | None, now: float) -> int | None:
        """A path the dialer should make active now (None: stay)."""
        return None

    def on_switch(self, now: float) -> None:  # noqa: B027 (optional hook)
        """The active path changed (for any reason) at ``now``."""


def _usable(paths: PathSet) -> list[PathState]:
    return [p for p in paths.by_id.values() if p.status is PathStatus.UP and not p.blocked]


class PrimeScheduler(Scheduler):
    """PRIME: everything on the active path.

    With ``config.prime_switch``, the dialer moves to another live path whose quality
    (:meth:`PathState.quality`: recent minimum RTT plus jitter plus PING loss) beats
    the active one's by ``prime_hysteresis`` (a fraction) and by at least
    ``prime_floor`` seconds, for ``prime_dwell`` seconds in a row, at most once per
    ``prime_cooldown``: this is also how it fails back to a better path that
    recovered.
    """

    __slots__ = ("_challenger", "_challenger_since", "config", "last_switch_at")

    def __init__(self, config: FlowConfig, now: float) -> None:
        self.config = config
        self._challenger: int | None = None
        self._challenger_since = now
        self.last_switch_at = now

    def on_switch(self, now: float) -> None:
        self.last_switch_at = now

    mode = Mode.PRIME

    def senders(self, paths: PathSet, active: int | None,
                sender: StreamSender) -> list[PathState]:
        path = paths.get(active)
        if path is None or path.blocked or path.status is not PathStatus.UP:
            return []
        return [path]

    def switch_to(self, paths: PathSet, active: int | None, now: float) -> int | None:
        cfg = self.config
        if not cfg.prime_switch:
            return None
        current_path = paths.get(active)
        current = (current_path.quality()
                   if current_path is not None and current_path.alive else None)
        best: PathState | None = None
        best_q = 0.0
        for p in paths:
            q = p.quality()
            if (p.alive and not p.suspect and p is not current_path and q is not None
                    and (best is None or q < best_q)):
                best, best_q = p, q
        if (current is None or best is None or best_q > current * (1 - cfg.prime_hysteresis)
                or current - best_q < cfg.prime_floor):
            self._challenger = None
            return None
        if self._challenger != best.id:
            self._challenger = best.id
            self._challenger_since = now
        elif (now - self._challenger_since >= cfg.prime_dwell
              and now - self.last_switch_at >= cfg.prime_cooldown):
            self._challenger = None
            return best.id
        return None


class RaceScheduler(Scheduler):
    """RACE: the whole stream (every packet) on every live path, each path at its own
    pace (a blocked or slow one catches up later, skipping what was acknowledged
    meanwhile: :func:`~rendr.core.builder.fill_race`), and every ACK on every live
    path, so the return direction races too."""

    mode = Mode.RACE

    def senders(self, paths: PathSet, active: int | None,
                sender: StreamSender) -> list[PathState]:
        return _usable(paths)

    def fill(self, senders: list[PathState], sender: StreamSender, with_retx: bool,
             config: FlowConfig, reliable: Reliable, now: float) -> None:
        fill_race(senders, sender, with_retx, config, reliable, now)

    def ack_paths(self, paths: PathSet, active: int | None) -> list[PathState]:
        return paths.alive()


class BondScheduler(Scheduler):
    """BOND: stripe over the live paths by measured delivery rate (min-RTT
    spill-over; see the module docstring).

    Attributes:
        stuck_skips: times a path was left out for an RTT far above the best one's.
    """

    mode = Mode.BOND

    def __init__(self, config: FlowConfig, reliable: Reliable | None = None,
                 packets: bool = False) -> None:
        self.config = config
        self.packets = packets  # a packet flow: PING loss is no reason to skip a path
        self._reliable: Reliable = {} if reliable is None else reliable
        self.stuck_skips = 0
        self._stuck: set[int] = set()  # the paths being skipped now
        self._fastest: PathState | None = None  # of the latest senders() call

    def senders(self, paths: PathSet, active: int | None,
                sender: StreamSender) -> list[PathState]:
        usable = _usable(paths)
        if len(usable) > 1:
            usable.sort(key=_min_rtt)
            best = _min_rtt(usable[0])
            kept = []
            for p in usable:
                r = _min_rtt(p)
                if ((r > STUCK_RATIO * best and r - best > STUCK_FLOOR)
                        or (p.ping_loss > STUCK_LOSS >= usable[0].ping_loss
                            and not self.packets)):
                    if p.id not in self._stuck:  # count each time a path starts being skipped
                        self._stuck.add(p.id)
                        self.stuck_skips += 1
                    continue
                self._stuck.discard(p.id)
                kept.append(p)
            usable = kept
        fast = self._fastest = usable[0] if usable else None
        return [p for p in usable if self._room(p, fast, sender) > 0]

    def ack_paths(self, paths: PathSet, active: int | None) -> list[PathState]:
        """The active path, unless another live (not suspect) path's round trip is
        clearly shorter (half and :data:`ACK_RTT_FLOOR` less): then that one.  Every
        path's sending waits for ACKs, and ACKs on a slow active path held the fast
        path to what the slow round trip allows."""
        chosen = paths.ack_path(active)
        best: PathState | None = None
        best_rtt = 1e9
        for p in paths.by_id.values():
            if p.status is PathStatus.UP and not p.blocked and not p.suspect:
                r = _min_rtt(p)
                if r < best_rtt:
                    best, best_rtt = p, r
        if best is not None and (chosen is None or (
                2 * best_rtt < _min_rtt(chosen) and _min_rtt(chosen) - best_rtt > ACK_RTT_FLOOR)):
            chosen = best
        return [] if chosen is None else [chosen]

    def _outstanding(self, path: PathState) -> int:
        """Bytes ``path`` carries that may still arrive: on a datagram path what its
        loss detector holds in flight (neither acknowledged nor declared lost: a lost
        range stays in ``path.inflight`` until the cumulative ACK passes it, and
        counting it there deadlocked BOND: no path had room to re-send what held the
        cumulative ACK back); else what it carried that was not acknowledged."""
        rel = self._reliable.get(path.id)
        if rel is not None:
            return rel.loss.bytes_in_flight
        return path.inflight_bytes - path.sacked

    def _room(self, path: PathState, fast: PathState | None, sender: StreamSender) -> int:
        """What ``path`` may take now: its allowance, and for a slower path no more
        than arrives before the fastest one would deliver everything waiting; at least
        what a probe timeout asks it to send (RFC 9002 6.2.4: a probe is never held)."""
        outstanding = self._outstanding(path)
        room = path.delivery.allowance(path.rtt.min_rtt, self.config.ack_delay) - outstanding
        if fast is not None and path is not fast and room > 0:
            ecf = _earliest_completion_room(fast, path, sender, outstanding,
                                            self._outstanding(fast))
            if ecf < room:
                room = ecf
        rel = self._reliable.get(path.id)
        if rel is not None and rel.probe_credit > room:
            room = rel.probe_credit
        return room

    def fill(self, senders: list[PathState], sender: StreamSender, with_retx: bool,
             config: FlowConfig, reliable: Reliable, now: float) -> None:
        fast = self._fastest
        for path in senders:
            room = self._room(path, fast, sender)
            if room > 0:
                fill_stream(path, sender, with_retx, config,
                            reliable.get(path.id) if reliable else None, now, room)

    def fill_packets(self, packets: PacketSender, senders: list[PathState],
                     budget: int, now: float) -> None:
        packets.stripe(senders, budget, now)


def _earliest_completion_room(fast: PathState, path: PathState, sender: StreamSender,
                              outstanding: int, fast_outstanding: int) -> int:
    """How much a slower ``path`` may take now so that it arrives no later than the
    fastest path would deliver everything still waiting (ECF, "earliest completion
    first"): near the end of a transfer, or while the fast path keeps up, a slow
    path's bytes would only hold the receiver back.  A path not measured yet may
    take :data:`~rendr.core.delivery.MIN_ALLOWANCE` to get measured."""
    rate = path.delivery.latest  # cautious for the slow path, generous for the fast one
    fast_rate = fast.delivery.rate
    if not rate or not fast_rate:
        return MIN_ALLOWANCE - outstanding
    waiting = sender.written - sender.next_new + sender.retx_bytes
    fast_done = ((fast_outstanding + waiting) / fast_rate
                 + _min_rtt(fast) / 2)
    # what this path may hold in flight to finish by then
    limit = (fast_done - _min_rtt(path) / 2) * rate
    return int(limit) - outstanding


def _min_rtt(path: PathState) -> float:
    r = path.rtt.recent_min()
    return 1e9 if r is None else r


def make_scheduler(mode: Mode, config: FlowConfig, now: float,
                   reliable: Reliable | None = None, packets: bool = False) -> Scheduler:
    """The scheduler for ``mode`` (``reliable``: the flow's datagram paths' loss
    recovery, which BOND reads for what each path has in flight; ``packets``: a packet
    flow)."""
    if mode is Mode.RACE:
        return RaceScheduler()
    if mode is Mode.BOND:
        return BondScheduler(config, reliable, packets)
    return PrimeScheduler(config, now)
