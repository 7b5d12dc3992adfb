"""Which path is active, and what happens when paths come, die, move or retire.

:class:`Migration` owns the active path and the dialer's ACTIVATE epoch.  It is
where every path event ends up: a new path, a carrier that failed, the peer's
ACTIVATE and PATH_CLOSE, an explicit ``migrate()`` or ``remove_path()``, and the
retirement deadlines.  Each event funnels into four steps written once here:
:meth:`~Migration.activate` (with its MIGRATION event, ACTIVATE frame, FIN re-send,
zombie guard and replay hold), :meth:`~Migration.fail_over` (to the best live
path), :meth:`~Migration.path_died` (re-send what it carried) and
:meth:`~Migration.retire` (a clean exit), and the migration budget starts when
no live path is left.

Only the dialer chooses the active path; the listener follows ACTIVATE frames
(the newest epoch wins) and fails over on its own only when its active path dies.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Final

from ..config import FlowConfig
from ..errors import LastPathError, ProtocolError, RendrError, ZombieFlow
from .events import Event, EventKind
from .lifecycle import Lifecycle, ZombieGuard
from .modeswitch import ModeSwitch
from .path import PathState
from .paths import PathSet
from .receiver import StreamReceiver
from .recovery import Recovery
from .sender import StreamSender
from .types import Cause, PathStatus, Role
from .wire import decode_activate, decode_path_close, encode_activate, encode_path_close

__all__ = ["Migration"]

logger: Final = logging.getLogger("rendr.flow")

# why a path became active (MIGRATION events' ``cause``)
FIRST: Final = "first"
DEATH: Final = "death"
PEER: Final = "peer"
EXPLICIT: Final = "explicit"
QUALITY: Final = "quality"
SUSPECT: Final = "suspect"

MAX_EPOCH_STEP: Final = 1024
"""How far one ACTIVATE may move the epoch ahead.  A dialer advances it by 1 per
activation; the listener misses only those lost with their paths.  A jump beyond
this is a protocol error: no ACTIVATE can pin the epoch near 2^32 and make every
later (genuine) one look stale."""
ACTIVATE_REPEATS: Final = 3
"""Copies of an ACTIVATE a dialer sends after the first on a datagram path."""


def _repeat_gap(path: PathState) -> float:
    srtt = path.rtt.srtt
    return max(2 * srtt, 0.01) if srtt is not None else 0.1


ZombieHandler = Callable[[ZombieFlow, float], None]


class Migration:
    """The active path of one flow and every path event (see the module docstring).

    Args:
        on_zombie: called when the zombie guard ends the flow (the flow aborts).
    """

    def __init__(self, *, role: Role, name: str, config: FlowConfig, paths: PathSet,
                 sender: StreamSender, receiver: StreamReceiver, recovery: Recovery,
                 modes: ModeSwitch, life: Lifecycle, events: deque[Event],
                 on_zombie: ZombieHandler) -> None:
        self.role = role
        self.name = name
        self.config = config
        self.paths = paths
        self.sender = sender
        self.receiver = receiver
        self.recovery = recovery
        self.modes = modes
        self.life = life
        self.events = events
        self.on_zombie = on_zombie
        self.zombie = ZombieGuard(config.zombie_max_migrations, config.zombie_window,
                                  config.zombie_settle)
        self.active: int | None = None
        self.had_active = False
        self.epoch = 0
        self.count = 0
        # the dialer's ACTIVATE on a datagram path, to repeat (it may be lost):
        # (epoch, path id, dead, suspect, when next, repeats left)
        self._repeat: tuple[int, int, int, int, float, int] | None = None

    def emit(self, kind: EventKind, now: float, **fields: object) -> None:
        """Queue an event for the driver."""
        self.events.append(Event(kind, now, **fields))  # type: ignore[arg-type]

    # --------------------------------------------------------------- path events

    def attached(self, path: PathState, now: float) -> None:
        """A new path is up: use it if no live path is active."""
        self.receiver.ack_needed = True
        self.emit(EventKind.PATH_UP, now, path_id=path.id,
                  detail=f"{path.transport} {path.local_addr} -> {path.remote_addr}")
        logger.debug("flow %s: path %d up (%s %s -> %s)", self.name, path.id, path.transport,
                     path.local_addr, path.remote_addr)
        current = self.paths.get(self.active)
        if current is None or not current.alive:
            self.activate(path.id, DEATH if self.had_active else FIRST, now)
        elif current.suspect:
            self._leave_suspect(current, path, now)
        self.life.path_up()

    def carrier_failed(self, path_id: int, cause: Cause, now: float, detail: str) -> None:
        """A carrier ended (reset, EOF, OS error): never the flow's end, a path's."""
        path = self.paths.get(path_id)
        if path is None or path.status is PathStatus.DOWN:
            return
        if self.life.closed:
            self.retire(path, now)
            return
        if path.status is PathStatus.RETIRING or path.status is PathStatus.REMOVED:
            # A retired path's carrier ended.  After a clean EOF everything sent on it
            # before the PATH_CLOSE exchange was delivered (the stream is ordered); after
            # a reset it may not have been: re-send what is still unacknowledged.
            self.retire(path, now)
            if cause is not Cause.EOF:
                Recovery.on_path_lost(path, self.sender)
            return
        self.path_died(path, cause, now, detail)

    def migrate(self, path_id: int, now: float) -> None:
        """Make ``path_id`` active (dialer only); the old path delivers what it carries.

        Raises:
            RendrError: not the dialer, flow closed, or the path is not up.
        """
        if self.role is not Role.DIALER:
            raise RendrError("only the dialer chooses the active path")
        self.life.check_open()
        path = self.paths.get(path_id)
        if path is None or not path.alive:
            raise RendrError(f"path {path_id} is not up")
        if path_id != self.active:
            self.activate(path_id, EXPLICIT, now)

    def remove(self, path_id: int, now: float) -> None:
        """Retire a path cleanly (PATH_CLOSE); move away first if it is active.

        Raises:
            LastPathError: it is the only live path.
            RendrError: the path is not up or the flow is closed.
        """
        self.life.check_open()
        path = self.paths.get(path_id)
        if path is None or not path.alive:
            raise RendrError(f"path {path_id} is not up")
        best = self.paths.best_alive(exclude=path_id)
        if best is None:
            raise LastPathError(f"path {path_id} is the last path")
        if self.active == path_id:
            self.activate(best.id, EXPLICIT, now)
        self._start_retiring(path, now)
        path.outbox.append(encode_path_close(path.id))

    def _start_retiring(self, path: PathState, now: float) -> None:
        path.status = PathStatus.RETIRING
        path.retire_by = now + 2 * self.paths.dead_time(path)
        path.path_close_sent = True

    def on_activate(self, body: memoryview, now: float) -> None:
        """The dialer's ACTIVATE frame (the listener follows the newest epoch)."""
        path_id, epoch, dead_path, suspect_path = decode_activate(body)
        if self.role is Role.DIALER:
            raise ProtocolError("ACTIVATE sent to the dialer")
        suspect = self.paths.get(suspect_path) if suspect_path else None
        if (suspect is not None and suspect.alive and suspect_path != path_id
                and suspect.inflight):
            # the dialer left this path because it stopped answering: what we sent
            # on it may never arrive; re-send it (after the replay hold) on the new one
            Recovery.on_path_lost(suspect, self.sender)
            self._hold_replay(path_id, now)
        dead = self.paths.get(dead_path) if dead_path else None
        if dead is not None and dead.alive and dead_path != path_id:
            # the dialer found this path dead first: fail over now, re-send what we
            # had in flight there, rather than wait for our own liveness timer
            self.path_died(dead, Cause.PEER, now, "declared dead by the dialer")
            if self.life.closed:
                return
        if epoch <= self.epoch:
            return  # stale: a later ACTIVATE already arrived on another path
        if epoch - self.epoch > MAX_EPOCH_STEP:
            raise ProtocolError(f"ACTIVATE epoch {epoch} jumps more than {MAX_EPOCH_STEP} "
                                f"past {self.epoch}")
        self.epoch = epoch
        target = self.paths.get(path_id)
        if target is not None and target.alive and path_id != self.active:
            self.activate(path_id, PEER, now)

    def on_path_close(self, path: PathState, body: memoryview, now: float) -> None:
        """The peer's PATH_CLOSE on ``path``: answer (if it asked first), then retire."""
        if decode_path_close(body) != path.id:
            raise ProtocolError("PATH_CLOSE for another path")
        if path.status is PathStatus.UP:
            # Peer retires this path: acknowledge everything first, on this same path, so
            # the peer does not re-send what it carried, then answer and close.
            self._start_retiring(path, now)
            path.outbox.append(self.receiver.build_ack())
            path.outbox.append(encode_path_close(path.id))
        self.retire(path, now)

    def on_timer(self, now: float, interval: float) -> None:
        """Run the paths' deadlines: liveness (PING every ``interval``; a path whose
        oldest PING went unanswered too long is dead), retirement, and the dialer's
        quality moves."""
        paths = self.paths
        # Every path's verdict first, then the moves: never fail over onto a path this
        # same pass finds dead, nor leave a suspect path for one found suspect too.
        dead: list[tuple[PathState, float]] = []
        suspects: list[PathState] = []
        for path in list(paths):
            if path.status is PathStatus.UP:
                since = path.unanswered_since
                if paths.check(path, now, interval):
                    dead.append((path, 0.0 if since is None else now - since))
                elif paths.newly_suspect(path, now):
                    suspects.append(path)
            else:
                self._retirement_timer(path, now)
        if dead:
            active = self.active
            for path, waited in dead:
                self.path_died(path, Cause.TIMEOUT, now, f"no answer for {waited:.3f}s",
                               choose=False)
            if any(path.id == active for path, _ in dead):
                self.fail_over(active, DEATH, now)
            self._check_no_paths(now)
            if self.life.closed:
                return
        for path in suspects:
            self._suspected(path, now)
        if self.role is Role.DIALER:
            better = self.modes.scheduler.switch_to(paths, self.active, now)
            if better is not None:
                self.activate(better, QUALITY, now)

    def _retirement_timer(self, path: PathState, now: float) -> None:
        """Run the retirement deadline of a path that is not up."""
        if path.status is PathStatus.RETIRING and now >= path.retire_by:
            # the peer never answered our PATH_CLOSE: the path is dead, not retired
            path.close_requested = "abort"
            self.paths.close_pending = True
            self.retire(path, now)
            Recovery.on_path_lost(path, self.sender)
        elif path.status is PathStatus.REMOVED and path.inflight and now >= path.retire_by:
            logger.debug("flow %s: path %d retired with data never acknowledged",
                         self.name, path.id)
            Recovery.on_path_lost(path, self.sender)

    def _suspected(self, path: PathState, now: float) -> None:
        """``path`` stopped answering for its suspect time: if it is active, move to a
        path that still answers (the suspect one stays up: it may come back)."""
        waited = 0.0 if path.unanswered_since is None else now - path.unanswered_since
        self.emit(EventKind.PATH_SUSPECT, now, path_id=path.id,
                  detail=f"no answer for {waited:.3f}s")
        logger.info("flow %s: path %d suspect (no answer for %.3fs)", self.name, path.id,
                    waited)
        if path.id == self.active:
            best = self.paths.best_alive(exclude=path.id)
            if best is not None and not best.suspect:
                self._leave_suspect(path, best, now)

    def _leave_suspect(self, path: PathState, to: PathState, now: float) -> None:
        """Move off the suspect active ``path`` to ``to``; re-send what ``path`` carried
        (after the replay hold: the peer's ACK tells what did arrive)."""
        Recovery.on_path_lost(path, self.sender)
        self.activate(to.id, SUSPECT, now)

    def resumed(self, path: PathState, now: float) -> None:
        """Something arrived on the suspect ``path``: it is a backup like any other."""
        path.suspect = False
        self.emit(EventKind.PATH_RESUMED, now, path_id=path.id)
        logger.info("flow %s: path %d answers again", self.name, path.id)

    # ------------------------------------------------------------------- steps

    def activate(self, path_id: int, cause: str, now: float) -> None:
        """Make ``path_id`` the active path because of ``cause``."""
        old = self.active
        old_path = self.paths.get(old)
        self.active = path_id
        self.had_active = True
        self.modes.scheduler.on_switch(now)
        if cause != FIRST:
            self.count += 1
            self.emit(EventKind.MIGRATION, now, old_path=old, new_path=path_id, cause=cause)
            logger.info("flow %s: migration %s -> %d (%s)", self.name, old, path_id, cause)
            if self.role is Role.DIALER:
                self.epoch += 1
                dead = old if old_path is not None and old_path.status is PathStatus.DOWN else 0
                suspect = old if cause == SUSPECT else 0
                new = self.paths.by_id[path_id]
                new.outbox.append(encode_activate(path_id, self.epoch, dead or 0, suspect or 0))
                self._repeat = None if new.mtu is None else (
                    self.epoch, path_id, dead or 0, suspect or 0,
                    now + _repeat_gap(new), ACTIVATE_REPEATS)
        self.receiver.ack_needed = True
        sender = self.sender
        if sender.eof_offset is not None and (old_path is None or not old_path.alive):
            sender.fin_lost()
        if cause == SUSPECT:
            self._hold_replay(path_id, now)
        elif cause == DEATH:
            exceeded = self.zombie.strike(now)
            if exceeded:
                window = self.config.zombie_window
                self.on_zombie(ZombieFlow(f"{exceeded} death-driven migrations within "
                                          f"{window:g} s moved no application data"), now)
            else:
                self._hold_replay(path_id, now)

    def repeat_activate(self, now: float) -> None:
        """Dialer: repeat the latest ACTIVATE on a datagram path (a lost one would
        leave the listener sending on the path the dialer left), at most
        :data:`ACTIVATE_REPEATS` times, two RTTs apart; the listener ignores copies
        of an epoch it has (called on every transmit; nothing to do is one test)."""
        r = self._repeat
        if r is None or now < r[4]:
            return
        epoch, path_id, dead, suspect, _, left = r
        path = self.paths.get(path_id)
        if epoch != self.epoch or self.active != path_id or path is None or not path.alive:
            self._repeat = None
            return
        path.outbox.append(encode_activate(path_id, epoch, dead, suspect))
        self._repeat = None if left <= 1 else (epoch, path_id, dead, suspect,
                                               now + _repeat_gap(path), left - 1)

    def _hold_replay(self, path_id: int, now: float) -> None:
        """Re-sending after a failover waits for the peer's ACK (asked for now)."""
        if self.sender.retx_queued:
            path = self.paths.get(path_id)
            srtt = None if path is None else path.rtt.srtt
            self.recovery.hold(now, srtt, self.config.ack_delay)
            self.receiver.request_probe()

    def fail_over(self, from_id: int | None, cause: str, now: float) -> None:
        """``from_id`` stops carrying data: make the best live path active, if any."""
        if from_id is not None and self.active == from_id:
            best = self.paths.best_alive()
            if best is not None:
                self.activate(best.id, cause, now)

    def path_died(self, path: PathState, cause: Cause, now: float, detail: str, *,
                  choose: bool = True) -> None:
        """``path`` is dead: abort its carrier, re-send what it carried, fail over
        (``choose`` False: the caller fails over once it has buried every dead path)."""
        if path.id == self.active:
            self.zombie.lost(now)
        path.status = PathStatus.DOWN
        path.down_cause = str(cause)
        path.outbox = []
        path.close_requested = "abort"
        self.paths.close_pending = True
        self.paths.gone()
        requeued = Recovery.on_path_lost(path, self.sender)
        logger.info("flow %s: path %d down (%s%s), %d bytes to re-send", self.name, path.id,
                    cause, f": {detail}" if detail else "", requeued)
        self.emit(EventKind.PATH_DOWN, now, path_id=path.id, cause=str(cause), detail=detail)
        self.receiver.ack_needed = True
        if choose:
            self.fail_over(path.id, DEATH, now)
            self._check_no_paths(now)

    def retire(self, path: PathState, now: float) -> None:
        """The path leaves the flow cleanly.  What it carried stays attributed to it: it
        was (or will be) delivered before the PATH_CLOSE exchange; see carrier_failed()."""
        if path.status is PathStatus.REMOVED:
            return
        path.status = PathStatus.REMOVED
        path.down_cause = str(Cause.REMOVED)
        self.paths.gone()
        # What it carried should be acknowledged soon; if not (the carrier died after
        # the PATH_CLOSE exchange, with data still in flight), re-send it then.
        path.retire_by = now + 2 * self.paths.dead_time(path)
        if path.close_requested is None:
            path.close_requested = "graceful"
            self.paths.close_pending = True
        self.emit(EventKind.PATH_DOWN, now, path_id=path.id, cause=str(Cause.REMOVED))
        self.fail_over(path.id, PEER, now)
        self._check_no_paths(now)

    def _check_no_paths(self, now: float) -> None:
        """With no live path left, run the migration budget."""
        if not self.paths.any_alive():
            self.life.no_path(now, self.config.migration_budget)
