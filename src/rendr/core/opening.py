"""What both sides of opening a path share: the listener's :class:`Decision`, result
names, the retry limit (:mod:`rendr.core.session` is the overview)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .flow import Flow
from .wire import Result

__all__ = ["MAX_RETRIES", "Decision", "result_name", "u32"]

logger = logging.getLogger("rendr.session")

MAX_RETRIES = 2
"""RETRY answers a dialer follows for one HELLO (a cookie can expire in transit)."""

def result_name(code: int) -> str:
    """The name of a :class:`Result` code (or its number, if unknown)."""
    try:
        return Result(code).name
    except ValueError:
        return f"result {code}"


@dataclass
class Decision:
    """The listener's answer to a carrier's first frame.

    Attributes:
        result: OK or why the carrier is refused.
        reply: the bytes to write back (always: a refused dialer learns why).
        flow: the flow the carrier becomes a path of (None when refused).
        path_id: the path id the dialer chose.
        new: the flow was created by this HELLO (queue it for ``accept()``).
    """

    result: Result
    reply: list[bytes] = field(default_factory=list)
    flow: Flow | None = None
    path_id: int = 0
    new: bool = False

    @property
    def ok(self) -> bool:
        """The carrier is accepted."""
        return self.result == Result.OK


def u32(value: int) -> bytes:
    """``value`` as 4 big-endian bytes (path ids in MACs)."""
    return value.to_bytes(4, "big")


def bound(binding: bytes) -> tuple[bytes, ...]:
    """The extra parts a carrier's channel binding adds to a handshake transcript or
    MAC (none without one, so carriers without a binding keep the v1 handshake)."""
    return (b"channel-binding", binding) if binding else ()


def flagged(flags: int) -> tuple[bytes, ...]:
    """The extra parts a JOIN / JOIN_ACK's path flags add to its MAC (none when 0, so
    a JOIN without flags keeps the v1 MAC)."""
    return (b"path-flags", bytes([flags])) if flags else ()
