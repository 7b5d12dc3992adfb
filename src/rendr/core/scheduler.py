"""Schedulers: which path carries the next frame, and when the dialer should move.

A :class:`Scheduler` is asked two things by the flow: which paths to fill with
data now (:meth:`Scheduler.senders`), and, on the dialer, periodically, whether a
better path should become the active one (:meth:`Scheduler.switch_to`).  Failover
on a path's death is not the scheduler's business: the flow moves to
:meth:`PathSet.best_alive` at once.

:class:`PrimeScheduler` is PRIME mode: one active path carries everything; the
dialer moves to a clearly better path when ``prime_switch`` is on.  RACE
(every frame on every path) and BOND (frames striped over paths) plug in here.
"""

from __future__ import annotations

import abc

from ..config import FlowConfig
from ..errors import ModeUnavailable
from .path import PathState
from .paths import PathSet
from .types import Mode, PathStatus

__all__ = ["PrimeScheduler", "Scheduler", "make_scheduler"]


class Scheduler(abc.ABC):
    """Chooses the paths data goes on."""

    @abc.abstractmethod
    def senders(self, paths: PathSet, active: int | None) -> list[PathState]:
        """The paths to fill with data now, in order (none blocked or down)."""

    def switch_to(self, paths: PathSet, active: int | None, now: float) -> int | None:
        """A path the dialer should make active now (None: stay)."""
        return None

    def on_switch(self, now: float) -> None:  # noqa: B027 (optional hook)
        """The active path changed (for any reason) at ``now``."""


class PrimeScheduler(Scheduler):
    """PRIME: everything on the active path.

    With ``config.prime_switch``, the dialer moves to another live path whose recent
    minimum RTT beats the active one's by ``prime_hysteresis`` (a fraction) and by at
    least ``prime_floor`` seconds, for ``prime_dwell`` seconds in a row, at most once
    per ``prime_cooldown``.
    """

    __slots__ = ("_challenger", "_challenger_since", "config", "last_switch_at")

    def __init__(self, config: FlowConfig, now: float) -> None:
        self.config = config
        self._challenger: int | None = None
        self._challenger_since = now
        self.last_switch_at = now

    def on_switch(self, now: float) -> None:
        self.last_switch_at = now

    def senders(self, paths: PathSet, active: int | None) -> list[PathState]:
        path = paths.get(active)
        if path is None or path.blocked or path.status is not PathStatus.UP:
            return []
        return [path]

    def switch_to(self, paths: PathSet, active: int | None, now: float) -> int | None:
        cfg = self.config
        if not cfg.prime_switch:
            return None
        current_path = paths.get(active)
        current = (current_path.rtt.recent_min()
                   if current_path is not None and current_path.alive else None)
        best: PathState | None = None
        best_rtt = 0.0
        for p in paths:
            r = p.rtt.recent_min()
            if (p.alive and not p.suspect and p is not current_path and r is not None
                    and (best is None or r < best_rtt)):
                best, best_rtt = p, r
        if (current is None or best is None or best_rtt > current * (1 - cfg.prime_hysteresis)
                or current - best_rtt < cfg.prime_floor):
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


def make_scheduler(mode: Mode, config: FlowConfig, now: float) -> Scheduler:
    """The scheduler for ``mode``.

    Raises:
        ModeUnavailable: a mode without a scheduler yet (RACE, BOND).
    """
    if mode is Mode.PRIME:
        return PrimeScheduler(config, now)
    raise ModeUnavailable(f"mode {mode} is not available yet (only prime)")
