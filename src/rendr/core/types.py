"""Enumerations shared by the engine and the public API."""

from __future__ import annotations

import enum

__all__ = ["Cause", "Mode", "PathStatus", "Role", "State"]


class Mode(enum.IntEnum):
    """How a flow uses its paths. The integer values are carried on the wire."""

    PRIME = 1
    """One active path at a time; failover to the best live path."""
    BOND = 2
    """Stripe data over every path (sum of bandwidth)."""
    RACE = 3
    """Send every frame on every path; the first copy wins."""

    def __str__(self) -> str:
        return self.name.lower()


class State(enum.Enum):
    """Lifecycle of a flow."""

    INIT = "init"
    HANDSHAKING = "handshaking"
    ACTIVE = "active"
    MIGRATING = "migrating"
    CLOSING = "closing"
    CLOSED = "closed"

    def __str__(self) -> str:
        return self.value


class Role(enum.Enum):
    """Which end of the flow an engine is. The dialer decides the active path."""

    DIALER = "dialer"
    LISTENER = "listener"


class PathStatus(enum.Enum):
    """Lifecycle of one path."""

    UP = "up"
    RETIRING = "retiring"
    """remove_path() in progress: no new data, waiting for the peer to agree."""
    DOWN = "down"
    """Died (transport error, timeout) and was failed over."""
    REMOVED = "removed"
    """Retired cleanly by remove_path() or by the flow's end."""

    def __str__(self) -> str:
        return self.value


class Cause(enum.Enum):
    """Why a path went down (the engine's classification of carrier trouble)."""

    RESET = "reset"
    """The carrier was reset (TCP RST) or failed with an OS error."""
    EOF = "eof"
    """The carrier ended unexpectedly (EOF without a path close or flow close)."""
    TIMEOUT = "timeout"
    """Liveness: the peer stopped answering on this path (blackhole)."""
    PEER = "peer"
    """The peer declared the path dead (its liveness check fired first)."""
    PROTOCOL = "protocol"
    """The carrier delivered something that is not valid rendr framing."""
    AUTH = "auth"
    """A record on the carrier failed authentication (tampered, injected or replayed
    bytes): the carrier is not the peer's; the flow goes on over its other paths."""
    REMOVED = "removed"
    """Removed on purpose (remove_path)."""
    CLOSED = "closed"
    """The flow ended."""

    def __str__(self) -> str:
        return self.value
