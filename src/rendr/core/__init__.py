"""The sans-I/O core of rendr: wire format, framing and the flow engine.

Nothing in this package touches sockets, asyncio or the clock: time is passed
in, bytes go in and out.  See :class:`rendr.core.flow.Flow`.
"""

from .events import Event, EventKind
from .flow import Flow
from .stats import ConnStats, PathStats
from .types import Cause, Mode, PathStatus, Role, State

__all__ = [
    "Cause",
    "ConnStats",
    "Event",
    "EventKind",
    "Flow",
    "Mode",
    "PathStats",
    "PathStatus",
    "Role",
    "State",
]
