"""Incremental parser for frames on byte-stream carriers.

A :class:`StreamDeframer` is fed whatever the carrier delivered and calls back
for each DATA payload piece and each complete control frame; the callbacks
return flags (ints) that :meth:`StreamDeframer.feed` ORs together and returns,
so what a feed changed comes back as a value, not as state left on the receiver.  DATA payloads are
handed out *as they arrive* — a 256 KiB frame split over several reads becomes
several ``on_data(offset, piece)`` calls — so payload bytes are never copied or
reassembled here: because data is sequenced by byte offset, every piece is
meaningful on its own.  Headers and control bodies that straddle reads are
gathered in a small side buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from ..errors import ProtocolError
from .wire import DATA_HEADER, HEADER, MAX_CONTROL_BODY, FrameType

__all__ = ["StreamDeframer"]

# Final: a compiled build (mypyc) reads these as native constants, not module globals
_DATA: Final = int(FrameType.DATA)
_HEADER_SIZE: Final = HEADER.size
_unpack_word: Final = HEADER.unpack_from
_DATA_HEADER_SIZE: Final = DATA_HEADER.size
_unpack_data_header: Final = DATA_HEADER.unpack_from

# parser stages
_HEAD: Final = 0
_DATA_OFFSET: Final = 1
_BODY: Final = 2
_PAYLOAD: Final = 3

_COPY_PIECE: Final = 2048
"""A DATA payload of at most this many bytes, whole in ``bytes`` input, is handed on as
a ``bytes`` copy: cheaper than a view (and the view's copy when it is read)."""

DataCallback = Callable[[int, "bytes | memoryview", float], int]
"""``on_data(offset, piece, now) -> flags``"""
FrameCallback = Callable[[int, memoryview, float], int]
"""``on_frame(frame_type, body, now) -> flags``"""


class StreamDeframer:
    """Parse the frames of one stream carrier (after its preface).

    Args:
        on_data: called with ``(offset, payload_piece, now)`` for DATA payload bytes.
        on_frame: called with ``(frame_type, body, now)`` for every other frame.

    The memoryviews passed to the callbacks are only valid during the call
    unless the caller keeps a reference to the underlying buffer (pieces of
    ``bytes`` input stay valid; pieces of the side buffer are copies).  A small
    DATA payload of ``bytes`` input comes as ``bytes`` (see :data:`_COPY_PIECE`).
    """

    __slots__ = ("_acc", "_data_left", "_data_offset", "_ftype", "_need", "_on_data",
                 "_on_frame", "_stage")

    def __init__(self, on_data: DataCallback, on_frame: FrameCallback) -> None:
        self._on_data = on_data
        self._on_frame = on_frame
        self._stage = _HEAD
        self._need = _HEADER_SIZE
        self._acc = bytearray()
        self._ftype = 0
        self._data_left = 0
        self._data_offset = 0

    def feed(self, data: bytes | bytearray | memoryview, now: float = 0.0) -> int:
        """Consume ``data``, calling back for every piece and frame it completes, with
        ``now``; return the callbacks' flags ORed together.

        Raises:
            ProtocolError: the bytes are not valid rendr framing.
        """
        n = len(data)
        pos = 0
        flags = 0
        on_data = self._on_data
        mv: memoryview | None = None  # made when first needed (a small message needs none)
        while pos < n:
            stage = self._stage
            if stage == _HEAD and not self._acc and n - pos >= _DATA_HEADER_SIZE:
                # fast path: a whole header in hand, no partial state
                header: tuple[int, int] = _unpack_data_header(data, pos)  # typed: native ints
                word, offset = header
                ftype = word >> 24
                length = word & 0xFFFFFF
                if ftype == _DATA and length > 8:
                    start = pos + _DATA_HEADER_SIZE
                    size = length - 8
                    take = n - start
                    if take >= size:
                        take = size
                    else:
                        self._stage = _PAYLOAD
                        self._data_left = size - take
                        self._data_offset = offset + take
                    pos = start + take
                    if take and take <= _COPY_PIECE and isinstance(data, bytes):
                        flags |= on_data(offset, data[start:pos], now)
                    elif take:
                        if mv is None:
                            mv = memoryview(data)
                        flags |= on_data(offset, mv[start:pos], now)
                    continue
                if ftype != _DATA and n - pos - _HEADER_SIZE >= length:
                    start = pos + _HEADER_SIZE
                    pos = start + length
                    if length > MAX_CONTROL_BODY:
                        raise ProtocolError(f"control frame 0x{ftype:02x} too large ({length} B)")
                    if mv is None:
                        mv = memoryview(data)
                    flags |= self._on_frame(ftype, mv[start:pos], now)
                    continue
            if mv is None:
                mv = memoryview(data)
            if stage == _PAYLOAD:
                take = min(self._data_left, n - pos)
                offset = self._data_offset
                self._data_offset = offset + take
                self._data_left -= take
                if self._data_left == 0:
                    self._stage = _HEAD
                    self._need = _HEADER_SIZE
                flags |= on_data(offset, mv[pos : pos + take], now)
                pos += take
                continue
            need = self._need
            if self._acc:
                take = min(need - len(self._acc), n - pos)
                self._acc += mv[pos : pos + take]
                pos += take
                if len(self._acc) < need:
                    return flags
                unit = memoryview(bytes(self._acc))
                self._acc.clear()
                flags |= self._unit(unit, now)
            elif n - pos >= need:
                unit = mv[pos : pos + need]
                pos += need
                flags |= self._unit(unit, now)
            else:
                self._acc += mv[pos:]
                return flags
        return flags

    def _unit(self, unit: memoryview, now: float) -> int:
        stage = self._stage
        if stage == _HEAD:
            head: tuple[int] = _unpack_word(unit, 0)
            (word,) = head
            ftype = word >> 24
            length = word & 0xFFFFFF
            self._ftype = ftype
            if ftype == _DATA:
                if length <= 8:
                    raise ProtocolError("DATA frame without payload")
                self._data_left = length - 8
                self._stage = _DATA_OFFSET
                self._need = 8
            elif length == 0:
                return self._on_frame(ftype, unit[:0], now)
            else:
                if length > MAX_CONTROL_BODY:
                    raise ProtocolError(f"control frame 0x{ftype:02x} too large ({length} B)")
                self._stage = _BODY
                self._need = length
        elif stage == _DATA_OFFSET:
            self._data_offset = int.from_bytes(unit, "big")
            self._stage = _PAYLOAD
        else:  # _BODY
            self._stage = _HEAD
            self._need = _HEADER_SIZE
            return self._on_frame(self._ftype, unit, now)
        return 0
