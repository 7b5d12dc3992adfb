"""Exceptions raised by rendr.

Every exception derives from :class:`RendrError`::

    RendrError
    ├── MigrationBudgetExceeded   every path was gone longer than the migration budget
    ├── ZombieFlow                migrations keep happening but no application data moves
    ├── ModeSwitchIllegal         a mode change that the protocol forbids
    ├── LastPathError             remove_path() on the only remaining path
    ├── PacketTooLarge            a datagram larger than the path can carry
    ├── ProtocolError             the peer broke the wire protocol
    ├── HandshakeError            a carrier could not be set up (wrong peer, version, refusal)
    ├── ConnClosed                the connection was closed (locally, or cleanly by the peer)
    ├── ConnAborted               the peer (or rendr) aborted the flow with an error code
    └── ModeUnavailable           the requested mode is not implemented yet

Transport errors (resets, EOF on one carrier, timeouts) are never raised to the
application: they make rendr migrate.  Application code only sees the errors
above, and only when the whole flow is finished.
"""

from __future__ import annotations

__all__ = [
    "ConnAborted",
    "ConnClosed",
    "HandshakeError",
    "LastPathError",
    "MigrationBudgetExceeded",
    "ModeSwitchIllegal",
    "ModeUnavailable",
    "PacketTooLarge",
    "ProtocolError",
    "RendrError",
    "ZombieFlow",
]


class RendrError(Exception):
    """Base class of every rendr exception."""


class MigrationBudgetExceeded(RendrError):
    """Every path was down for longer than the migration budget."""


class ZombieFlow(RendrError):
    """The flow migrates again and again without moving application data,
    or the peer no longer knows the flow."""


class ModeSwitchIllegal(RendrError):
    """The requested mode transition is not allowed."""


class ModeUnavailable(RendrError, NotImplementedError):
    """The requested mode is not available in this version of rendr."""


class LastPathError(RendrError):
    """The path to remove is the last one the connection has."""


class PacketTooLarge(RendrError):
    """A datagram does not fit in one frame on the path."""


class ProtocolError(RendrError):
    """The peer violated the rendr wire protocol."""


class HandshakeError(RendrError):
    """A carrier handshake failed: not a rendr peer, wrong version, or refused.

    Attributes:
        peer_version: the peer's wire version when that was the problem, else None.
    """

    peer_version: int | None = None


class ConnClosed(RendrError):
    """The connection is closed: it was used after ``close()``, or the peer
    finished the flow and it can no longer carry data."""


class ConnAborted(RendrError):
    """The flow was aborted with an error code.

    Attributes:
        code: the abort code carried on the wire (see ``docs/wire.md``).
        reason: a human-readable reason sent with the code.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection aborted (code {code}){': ' + reason if reason else ''}")
        self.code = code
        self.reason = reason
