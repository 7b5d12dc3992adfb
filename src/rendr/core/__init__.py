"""The sans-I/O core of rendr: wire format, framing and the flow engine.

Nothing in this package touches sockets, asyncio or the clock: time is passed
in, bytes go in and out.  See :class:`rendr.core.flow.Flow`.

A build may compile these modules with mypyc (see ``rendr._native`` and
``rendr.__compiled__``); the sources here are always complete on their own.
"""

from .. import _native

# Before any engine module is imported: a compiled engine built from other sources
# than the .py files here (an edited editable install) must not shadow them (``rendr``
# ran the guard already; this returns its result).
_native.guard()

from .events import Event, EventKind  # noqa: E402
from .flow import Flow  # noqa: E402
from .stats import ConnStats, PathStats  # noqa: E402
from .types import Cause, Mode, PathStatus, Role, State  # noqa: E402

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
