"""The flow's paths: registry, choice of the best one, and liveness (PING/PONG).

:class:`PathSet` holds every :class:`PathState` of a flow by id and answers the
questions the rest of the engine asks about them: which are alive, which live
path is best (lowest smoothed RTT plus jitter), when the next liveness deadline
is, and which paths stopped answering.  A path is *suspect* when its oldest
unanswered PING (with nothing else heard since) is older than its suspect time
(``suspect_timeout``, or more on a slow path), and dead when it is older than its
dead time (``dead_timeout``, or more): the application's own traffic pattern
never kills a path, and anything arriving on it (an ACK of a saturated path)
clears both.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterator
from typing import Final

from ..config import FlowConfig
from .path import PathState
from .rangeset import RangeSet
from .types import PathStatus
from .wire import FrameType, encode_u64

__all__ = ["HISTORY", "PathSet"]

HISTORY: Final = 32
"""Paths that left the flow kept for statistics (the latest ones)."""

_U64: Final = (1 << 64) - 1
_TOKEN_MUL: Final = 0x9E3779B97F4A7C15  # odd: tokens of one flow never repeat


class PathSet:
    """Every path of one flow, by id (ids are never reused)."""

    __slots__ = ("_gone", "_ping_seq", "_token_key", "_used", "by_id", "close_pending",
                 "config", "history")

    def __init__(self, config: FlowConfig) -> None:
        # PING tokens are opaque (they used to be our clock in microseconds)
        self._token_key = int.from_bytes(os.urandom(8), "big")
        self._ping_seq = 0
        self.config = config
        self.by_id: dict[int, PathState] = {}
        """The paths the engine still works with: up, retiring, or gone with work left."""
        self.history: deque[PathState] = deque(maxlen=HISTORY)
        """The latest paths that left (for statistics), at most :data:`HISTORY`."""
        self.close_pending = False
        """Some path's ``close_requested`` is set: the driver has carriers to close."""
        self._gone = False
        self._used = RangeSet()  # every id ever attached (ids are mostly consecutive)

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[PathState]:
        return iter(self.by_id.values())

    def __contains__(self, path_id: int) -> bool:
        return path_id in self.by_id

    def get(self, path_id: int | None) -> PathState | None:
        """The path with this id, or None."""
        return None if path_id is None else self.by_id.get(path_id)

    def add(self, path: PathState) -> None:
        """Register a new path."""
        self.by_id[path.id] = path
        self._used.add(path.id, path.id + 1)

    def used(self, path_id: int) -> bool:
        """Whether ``path_id`` was ever attached (ids are never reused)."""
        return self._used.contains(path_id)

    def gone(self) -> None:
        """A path went down or was removed: prune at the next :meth:`take_closes`."""
        self._gone = True

    def _prune(self) -> None:
        """Move paths that need no more work (down or removed, carrier closed, nothing
        in flight) out of :attr:`by_id` into the bounded :attr:`history`: per-event
        work then depends on the live paths, not on every path the flow ever had."""
        self._gone = False
        by_id = self.by_id
        for pid in [pid for pid, p in by_id.items()
                    if (p.status is PathStatus.DOWN or p.status is PathStatus.REMOVED)
                    and p.close_requested is None and not p.inflight]:
            self.history.append(by_id.pop(pid))

    def alive(self) -> list[PathState]:
        """The paths that can carry new data, in id order of attachment."""
        return [p for p in self.by_id.values() if p.status is PathStatus.UP]

    def any_alive(self) -> bool:
        """Whether at least one path can carry data."""
        return any(p.status is PathStatus.UP for p in self.by_id.values())

    def count_alive(self) -> int:
        """How many paths can carry data."""
        return sum(p.status is PathStatus.UP for p in self.by_id.values())

    def best_alive(self, exclude: int | None = None) -> PathState | None:
        """The live path with the lowest score (RTT plus jitter), other than ``exclude``."""
        best: PathState | None = None
        best_score = 0.0
        for p in self.by_id.values():
            if p.status is PathStatus.UP and p.id != exclude:
                score = p.score()
                if best is None or score < best_score:
                    best, best_score = p, score
        return best

    def take_closes(self) -> list[tuple[int, bool]]:
        """The carriers to close now, ``[(path_id, abort), ...]``, each once."""
        if not self.close_pending:
            if self._gone:
                self._prune()
            return []
        self.close_pending = False
        out: list[tuple[int, bool]] = []
        for path in self.by_id.values():
            if path.close_requested:
                out.append((path.id, path.close_requested == "abort"))
                path.close_requested = None
        if self._gone:
            self._prune()
        return out

    def find(self, path_id: int) -> PathState | None:
        """A path by id, here or among the latest that left (:attr:`history`)."""
        path = self.by_id.get(path_id)
        if path is None:
            path = next((p for p in self.history if p.id == path_id), None)
        return path

    def ack_path(self, active: int | None) -> PathState | None:
        """Where an ACK goes: the active path if it is up, else the first live one."""
        path = self.by_id.get(active) if active is not None else None
        if path is None or path.status is not PathStatus.UP:
            path = next((p for p in self.by_id.values() if p.status is PathStatus.UP), None)
        return path

    def broadcast(self, frame: bytes) -> None:
        """Queue ``frame`` (a CLOSE) on every path that can still carry it."""
        for path in self.closable():
            path.outbox.append(frame)

    def end_all(self, cause: str) -> None:
        """The flow ended: every live or retiring path is removed, its carrier closed."""
        for path in self.by_id.values():
            if path.status is PathStatus.UP or path.status is PathStatus.RETIRING:
                path.status = PathStatus.REMOVED
                path.down_cause = cause
                path.close_requested = "graceful"
                self.close_pending = True

    def closable(self) -> list[PathState]:
        """Paths a CLOSE frame can still reach (live, or retiring)."""
        return [p for p in self.by_id.values()
                if p.status is PathStatus.UP or p.status is PathStatus.RETIRING]

    # ------------------------------------------------------------------ liveness

    def dead_time(self, path: PathState) -> float:
        """How long ``path``'s oldest PING may go unanswered before it is dead."""
        rtt = path.rtt
        # a path that loses PINGs (a lossy datagram path) needs more silence before it
        # is called dead: up to 3x the time at 100 % measured loss
        scale = 1.0 + 2.0 * path.ping_loss
        if rtt.srtt is None:
            dead = self.config.dead_timeout * scale
        else:
            dead = max(self.config.dead_timeout, 3 * rtt.srtt + 4 * rtt.rttvar) * scale
        if path.mtu is not None and not path.authentic:
            # a datagram path not heard from since its handshake: our answer may have
            # been lost, and the dialer's carrier re-sends its opening (and drops what
            # we send) until an answer arrives: wait out the dialer's handshake time
            dead = max(dead, self.config.handshake_timeout)
        return dead

    def suspect_time(self, path: PathState) -> float:
        """How long ``path``'s oldest PING may go unanswered before it is suspect.
        Without an RTT sample yet (a long path may not have answered its first PING),
        it is the dead time: no early suspicion of a path not yet measured."""
        rtt = path.rtt
        if rtt.srtt is None:
            return self.dead_time(path)
        return min(max(self.config.suspect_timeout, 2 * rtt.srtt + 4 * rtt.rttvar)
                   * (1.0 + 2.0 * path.ping_loss), self.dead_time(path))

    def newly_suspect(self, path: PathState, now: float) -> bool:
        """Whether ``path`` becomes suspect at ``now`` (it is marked so)."""
        since = path.unanswered_since
        if path.suspect or since is None or now - since < self.suspect_time(path):
            return False
        path.suspect = True
        return True

    def probe_quiet(self, now: float) -> None:
        """The flow goes from idle to busy: PING every live path that has been quiet
        for a busy PING interval, so a path that died while the flow was idle is found
        about ``dead_timeout`` after this write, not a keepalive later.  A path heard
        from just now is not probed again (chatty request/response traffic would
        otherwise send a PING with every request)."""
        interval = self.config.ping_interval
        for path in self.by_id.values():
            if path.status is PathStatus.UP:
                due = path.last_recv_at + interval
                if due < path.next_ping_at:
                    path.next_ping_at = due if due > now else now

    def restart_waits(self, now: float) -> None:
        """Our own event loop stalled: what the peer sent may be waiting unread in
        socket buffers, so restart every liveness wait rather than kill healthy paths."""
        for path in self.by_id.values():
            if path.unanswered_since is not None:
                path.unanswered_since = now

    def check(self, path: PathState, now: float, interval: float) -> bool:
        """Run ``path``'s liveness deadlines at ``now``: return True if it is dead;
        otherwise queue a PING on it when one is due (every ``interval``)."""
        if (path.unanswered_since is not None
                and now - path.unanswered_since >= self.dead_time(path)):
            return True
        if (now >= path.next_ping_at or path.next_ping_at - now > interval
                or now >= self._retry_at(path)):
            self._ping_seq += 1
            token = (self._ping_seq * _TOKEN_MUL + self._token_key) & _U64
            path.pings.append((token, now))
            path.outbox.append(encode_u64(FrameType.PING, token))
            if path.unanswered_since is None:
                path.unanswered_since = now
            path.next_ping_at = now + interval
        return False

    def _retry_at(self, path: PathState) -> float:
        """When to PING again while a PING is unanswered (a datagram path may have lost
        it, or its PONG): after twice the RTT, at least the busy PING interval, so an
        idle lossy path gets several tries before its dead time, not one a second."""
        pings = path.pings
        if path.unanswered_since is None or not pings:
            return math.inf
        srtt = path.rtt.srtt
        wait = self.config.ping_interval
        if srtt is not None and 2 * srtt > wait:
            wait = 2 * srtt
        return pings[-1][1] + wait

    def deadline(self) -> float | None:
        """The earliest liveness or retirement deadline of any path."""
        at: float | None = None
        for path in self.by_id.values():
            if path.status is not PathStatus.UP:
                if ((path.status is PathStatus.RETIRING
                     or (path.status is PathStatus.REMOVED and path.inflight))
                        and (at is None or path.retire_by < at)):
                    at = path.retire_by
                continue
            t = path.next_ping_at
            since = path.unanswered_since
            if since is not None:  # a PING is unanswered (else no retry, no suspicion)
                retry = self._retry_at(path)
                if retry < t:
                    t = retry
                wait = self.dead_time(path) if path.suspect else self.suspect_time(path)
                t = min(t, since + wait)
            if at is None or t < at:
                at = t
        return at
