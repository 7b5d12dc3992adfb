"""``AdminConn``: the administrative surface of a rendr connection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from .core.events import Event
from .core.stats import ConnStats
from .core.types import Mode, State
from .spec import PathSpec

__all__ = ["AdminConn", "AdminPacketConn"]


@runtime_checkable
class AdminConn(Protocol):
    """What ``isinstance(conn, rendr.AdminConn)`` promises: path control and statistics."""

    async def migrate(self, path_id: int) -> None:
        """Make ``path_id`` the active path."""

    @property
    def active_path(self) -> int:
        """The active path's id."""

    async def add_path(self, spec: PathSpec) -> int:
        """Dial and attach another path; return its id."""

    async def remove_path(self, path_id: int) -> None:
        """Retire a path (``LastPathError`` for the last one)."""

    async def rebind_path(self, path_id: int, local: str | None = None) -> None:
        """Move a QUIC path to a new local UDP socket (QUIC connection migration)."""

    @property
    def state(self) -> State:
        """The flow's state."""

    @property
    def mode(self) -> Mode:
        """The flow's mode."""

    @property
    def recv_queue_hwm(self) -> int:
        """Reorder-buffer high-water mark in bytes."""

    @property
    def recv_dups(self) -> int:
        """Duplicate pieces received."""

    @property
    def bond_stuck_skips(self) -> int:
        """Bond stuck-path skips."""

    @property
    def migration_count(self) -> int:
        """Active-path changes after the first."""

    def stats(self) -> ConnStats:
        """Counters snapshot."""

    def on_event(self, callback: Callable[[Event], object]) -> Callable[[], None]:
        """Subscribe to events."""


@runtime_checkable
class AdminPacketConn(AdminConn, Protocol):
    """What ``isinstance(pc, rendr.AdminPacketConn)`` promises: the
    :class:`AdminConn` surface of a packet connection, and its packet limits."""

    @property
    def max_payload(self) -> int:
        """The largest packet every live path carries whole."""
