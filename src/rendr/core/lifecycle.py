"""A flow's lifecycle: its states and their legal transitions, deadlines, and guards.

States (:class:`~rendr.core.types.State`)::

    HANDSHAKING --first path--> ACTIVE <--path / no path--> MIGRATING
         |                        |                            |
         +------- close() --------+--------> CLOSING <---------+
                                                |
    any state --- CLOSE, abort, budget, zombie, linger ---> CLOSED

:data:`TRANSITIONS` is the whole table; :meth:`Lifecycle.to` refuses anything
else (a bug, not a peer's doing).  Deadlines: the *migration budget* runs while
no path is alive; *linger* bounds ``close()``.  :class:`ZombieGuard` ends a flow
whose outages (paths lost together count as one) keep failing to move any data.
"""

from __future__ import annotations

import logging
from typing import Final

from ..errors import RendrError
from .types import State

__all__ = ["TRANSITIONS", "Lifecycle", "ZombieGuard"]

logger: Final = logging.getLogger("rendr.flow")

TRANSITIONS: Final[dict[State, frozenset[State]]] = {
    State.HANDSHAKING: frozenset({State.ACTIVE, State.CLOSING, State.CLOSED}),
    State.ACTIVE: frozenset({State.MIGRATING, State.CLOSING, State.CLOSED}),
    State.MIGRATING: frozenset({State.ACTIVE, State.CLOSING, State.CLOSED}),
    State.CLOSING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}
"""Every legal state change (anything else is an engine bug)."""


LATE_TIMER: Final = 0.1
"""Seconds: a deadline handled more than this after it passed was handled late: the
event loop lagged (uvloop runs due timers before it polls for input), so what would
have met it may be waiting unread in a socket."""
LATE_GRACE: Final = 0.1
"""Seconds: the one extension a deadline that would end the flow (confirmation,
linger) gets when it is handled late, so the loop reads its pending input first."""


class Lifecycle:
    """The state of one flow and its flow-wide deadlines.

    Attributes:
        state: the current :class:`State`.
        error: why the flow failed (None: open, or ended cleanly).
        close_requested: the application called ``close()``.
        peer_closed: the peer sent CLOSE.
        budget_at: when the migration budget runs out (None: a path is alive).
        linger_at: when ``close()`` gives up waiting for the peer's ACK.
        confirm_at: listener: when the flow is aborted if the dialer has still sent
            nothing after the HELLO_ACK (None: it has, or no limit).
        unconfirmed: listener: the dialer has not proved its keys yet (no
            authenticated bytes since the HELLO_ACK).
    """

    __slots__ = ("budget_at", "close_requested", "confirm_at", "error", "graced",
                 "linger_at", "name", "peer_closed", "state", "unconfirmed")

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = State.HANDSHAKING
        self.error: RendrError | None = None
        self.close_requested = False
        self.peer_closed = False
        self.budget_at: float | None = None
        self.linger_at: float | None = None
        self.confirm_at: float | None = None
        self.unconfirmed = False
        self.graced = 0  # bit 1: the confirmation deadline, bit 2: linger (see expired)

    @property
    def closed(self) -> bool:
        """The flow ended."""
        return self.state is State.CLOSED

    def to(self, state: State) -> None:
        """Move to ``state`` (no-op if already there).

        Raises:
            RuntimeError: the transition is not in :data:`TRANSITIONS`.
        """
        current = self.state
        if state is current:
            return
        if state not in TRANSITIONS[current]:
            raise RuntimeError(f"illegal flow state change {current} -> {state}")
        logger.debug("flow %s: state %s -> %s", self.name, current, state)
        self.state = state

    def check_open(self) -> None:
        """Raise the flow's error (or "closed") if it ended."""
        if self.state is State.CLOSED:
            raise self.error if self.error is not None else RendrError("flow is closed")

    def path_up(self) -> None:
        """A path is alive: stop the budget; leave HANDSHAKING/MIGRATING."""
        self.budget_at = None
        if self.state is State.HANDSHAKING or self.state is State.MIGRATING:
            self.to(State.ACTIVE)

    def no_path(self, now: float, budget: float) -> None:
        """No path is alive: run the migration budget (once)."""
        if self.state is State.CLOSED:
            return
        if self.budget_at is None:
            self.budget_at = now + budget
        if self.state is not State.CLOSING:
            self.to(State.MIGRATING)

    def request_close(self, now: float, linger: float) -> bool:
        """``close()``: go CLOSING with a linger deadline; False if already asked or ended."""
        if self.state is State.CLOSED or self.close_requested:
            return False
        self.close_requested = True
        self.linger_at = now + linger
        self.to(State.CLOSING)
        return True

    def finish(self, error: RendrError | None) -> bool:
        """Go CLOSED with ``error``; False if it already was."""
        if self.state is State.CLOSED:
            return False
        self.error = error
        self.to(State.CLOSED)
        self.budget_at = self.linger_at = self.confirm_at = None
        return True

    def deadline(self) -> float | None:
        """The earliest of the budget, linger and confirmation deadlines."""
        at = self.budget_at  # no tuple to loop over: this runs after every engine input
        t = self.linger_at
        if t is not None and (at is None or t < at):
            at = t
        t = self.confirm_at
        if t is not None and (at is None or t < at):
            at = t
        return at

    def confirmed(self) -> bool:
        """Listener: the dialer's first authenticated bytes arrived.  True the first
        time only (the flow may then be handed to ``accept()``)."""
        if self.unconfirmed:
            self.unconfirmed = False
            self.confirm_at = None
            return True
        return False

    def expired(self, now: float) -> str | None:
        """Which flow-wide deadline ran out at ``now``: ``"budget"``, ``"confirm"``,
        ``"linger"`` (in that order of precedence), or None.

        The confirmation and linger deadlines end the flow although what would meet
        them may already be waiting unread: checked more than :data:`LATE_TIMER` late
        (a lagging loop), each is moved :data:`LATE_GRACE` ahead, once."""
        if self.budget_at is not None and now >= self.budget_at:
            return "budget"
        if self.confirm_at is not None and now >= self.confirm_at:
            if now - self.confirm_at > LATE_TIMER and not self.graced & 1:
                self.graced |= 1
                self.confirm_at = now + LATE_GRACE
            else:
                return "confirm"
        if self.linger_at is not None and now >= self.linger_at:
            if now - self.linger_at > LATE_TIMER and not self.graced & 2:
                self.graced |= 2
                self.linger_at = now + LATE_GRACE
            else:
                return "linger"
        return None


class ZombieGuard:
    """Counts outages after which no application data moved.

    An *outage* starts when the active path is lost (:meth:`lost`); every further loss
    within ``settle`` seconds of that first one belongs to it (paths that share a route
    fail together, and an end learns of their deaths one after the other).  The first
    death-driven migration that answers an outage is a *strike* (:meth:`strike`); the
    later ones of the same outage (a failover onto a path lost next, the attach of a
    re-dialled path after a total outage) cost nothing.  Any progress (bytes delivered
    to the application, or acknowledged by the peer) clears the strikes and ends the
    outage.  ``limit`` strikes within ``window`` seconds, and the next one ends the
    flow (0 disables the guard).

    A path that keeps dying still costs a strike at least every ``settle`` seconds, so
    a zombie ends whatever its pace.  The state is a few numbers and at most ``limit``
    strike times: no cost grows with the flow's history.
    """

    __slots__ = ("_charged", "_outage_at", "_strikes", "_unanswered", "limit", "settle",
                 "window")

    def __init__(self, limit: int, window: float, settle: float = 0.0) -> None:
        self.limit = limit
        self.window = window
        self.settle = settle
        self._strikes: list[float] = []
        self._outage_at: float | None = None  # when the current outage began
        self._charged = False  # the current outage already cost a strike
        self._unanswered = False  # a loss that no death-driven migration answered yet

    def progress(self) -> None:
        """Data moved: forget the strikes; the outage (if any) is over."""
        if self._strikes:
            self._strikes.clear()
        self._outage_at = None
        self._charged = False

    def lost(self, now: float) -> None:
        """The active path was lost at ``now``: a new outage, unless within ``settle``
        seconds of the current one's start."""
        start = self._outage_at
        if start is None or now - start >= self.settle:
            self._outage_at = now
            self._charged = False
        self._unanswered = True

    def strike(self, now: float) -> int:
        """A death-driven migration at ``now``: return 0, or the number of strikes
        within the window if that is too many (the flow is a zombie)."""
        if not self.limit:
            return 0
        answers, self._unanswered = self._unanswered, False
        if answers:
            if self._charged:
                return 0  # the outage already counted
            self._charged = True
        strikes = [t for t in self._strikes if now - t < self.window]
        if len(strikes) >= self.limit:
            return len(strikes) + 1
        strikes.append(now)
        self._strikes = strikes
        return 0
