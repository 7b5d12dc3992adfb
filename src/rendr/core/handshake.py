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

    __slots__ = ("_buf", "_preface_ok", "frame", "leftover")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._preface_ok = False
        self.frame: tuple[int, bytes] | None = None
        self.leftover = b""

    def feed(self, data: bytes | bytearray | memoryview) -> tuple[int, bytes] | None:
        """Add bytes; return ``(frame_type, body)`` once the first frame is complete.

        Bytes fed after completion are appended to :attr:`leftover`.

        Raises:
            HandshakeError: not a rendr peer, another wire version, or an oversized frame.
        """
        if self.frame is not None:
            self.leftover += bytes(data)
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
        self.leftover = bytes(buf[head_end + length :])
        buf.clear()
        return self.frame
