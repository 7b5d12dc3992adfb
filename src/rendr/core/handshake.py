"""Carrier handshake: the preface and the first frame in each direction.

The dialer writes ``PREFACE + HELLO`` (new flow) or ``PREFACE + JOIN`` (another
path for a flow); the listener answers ``PREFACE + HELLO_ACK`` or
``PREFACE + JOIN_ACK``.  :class:`HandshakeParser` collects those bytes on either
side; whatever follows the first frame is kept as :attr:`HandshakeParser.leftover`
and belongs to the flow.
"""

from __future__ import annotations

from typing import Final

from ..errors import HandshakeError
from .wire import HEADER, MAX_CONTROL_BODY, PREFACE_STRUCT, parse_preface

__all__ = ["HandshakeParser"]

_PREFACE_SIZE: Final = PREFACE_STRUCT.size


class HandshakeParser:
    """Collect a carrier's preface and first frame."""

    __slots__ = ("_buf", "_extra", "_preface_ok", "frame", "max_leftover")

    def __init__(self, max_leftover: int = 0) -> None:
        self._buf = bytearray()
        self._extra = bytearray()
        self._preface_ok = False
        self.max_leftover = max_leftover  # 0: unbounded
        self.frame: tuple[int, bytes] | None = None

    @property
    def leftover(self) -> bytes:
        """What followed the first frame (it belongs to the flow)."""
        return bytes(self._extra)

    def feed(self, data: bytes | bytearray | memoryview) -> tuple[int, bytes] | None:
        """Add bytes; return ``(frame_type, body)`` once the first frame is complete.

        Bytes fed after completion are appended to :attr:`leftover`, at most
        ``max_leftover`` of them (a peer must wait for the answer to its first frame).

        Raises:
            HandshakeError: not a rendr peer, another wire version, or an oversized frame.
        """
        if self.frame is not None:
            if self.max_leftover and len(self._extra) + len(data) > self.max_leftover:
                raise HandshakeError(f"more than {self.max_leftover} B sent before the "
                                     "answer to the first frame")
            self._extra += data
            return None
        buf = self._buf
        buf += data
        if not self._preface_ok:
            if len(buf) < _PREFACE_SIZE:
                return None
            parse_preface(buf)
            self._preface_ok = True
        head_end = _PREFACE_SIZE + HEADER.size
        if len(buf) < head_end:
            return None
        (word,) = HEADER.unpack_from(buf, _PREFACE_SIZE)
        ftype, length = word >> 24, word & 0xFFFFFF
        if length > MAX_CONTROL_BODY:
            raise HandshakeError(f"handshake frame too large ({length} B)")
        if len(buf) < head_end + length:
            return None
        self.frame = (ftype, bytes(buf[head_end : head_end + length]))
        self._extra += buf[head_end + length :]
        if self.max_leftover and len(self._extra) > self.max_leftover:
            raise HandshakeError(f"more than {self.max_leftover} B sent before the "
                                 "answer to the first frame")
        buf.clear()
        return self.frame
