"""Events a flow emits: what an application may want to observe or log."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .types import Mode

__all__ = ["Event", "EventKind"]


class EventKind(enum.Enum):
    """What happened."""

    PATH_UP = "path_up"
    PATH_DOWN = "path_down"
    PATH_SUSPECT = "path_suspect"
    PATH_RESUMED = "path_resumed"
    MIGRATION = "migration"
    MODE_CHANGE = "mode_change"
    CLOSED = "closed"
    CONFIRMED = "confirmed"
    """Listener: the dialer's first authenticated bytes arrived (it holds the flow's
    keys); only then is the flow handed to ``accept()``."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Event:
    """One flow event (passed to ``Conn.on_event`` callbacks).

    Attributes:
        kind: what happened.
        at: engine time (the event loop's clock, seconds).
        path_id: the path concerned (PATH_UP, PATH_DOWN, PATH_SUSPECT: it stopped
            answering for ``suspect_timeout``; PATH_RESUMED: a suspect path was heard
            from again).
        old_path: the previous active path (MIGRATION; None if there was none).
        new_path: the new active path (MIGRATION).
        cause: why: a :class:`~rendr.core.types.Cause` value for PATH_DOWN
            ("reset", "eof", "timeout", ...); for MIGRATION "explicit" (migrate()),
            "death" (failover), "suspect" (the active path stopped answering and
            another path took over before it was declared dead), "quality" (PRIME
            found a clearly better path) or "peer" (the listener following the dialer).
        detail: free text (an OS error, a close reason).
        mode: the new mode (MODE_CHANGE).
        error: the exception the flow ended with (CLOSED; None for a clean close).
    """

    kind: EventKind
    at: float
    path_id: int | None = None
    old_path: int | None = None
    new_path: int | None = None
    cause: str | None = None
    detail: str = ""
    mode: Mode | None = None
    error: BaseException | None = None
