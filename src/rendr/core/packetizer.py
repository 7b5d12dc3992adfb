"""Frames in datagrams: packing to an MTU, and parsing one datagram.

Stream carriers (TCP) carry frames back to back (:mod:`.framing`).  Datagram
carriers (UDP, a QUIC datagram) carry whole frames in packets of at most ``mtu``
bytes: a frame never straddles two packets, so every packet parses on its own
and a lost packet loses only the frames in it.  DATA payloads larger than the
room left are split (data is addressed by offset, so each part stands alone).

The wire format of each frame is the same as on a stream carrier
(``docs/wire.md``); a packet is one or more frames, nothing else.
"""

from __future__ import annotations

from typing import Final

from ..errors import ProtocolError
from .framing import DataCallback, FrameCallback
from .wire import DATA_HEADER, HEADER, FrameType, data_header

__all__ = ["MIN_MTU", "DatagramDeframer", "DatagramPacketizer", "parse_datagram"]

_DATA: Final = int(FrameType.DATA)
_HEADER_SIZE: Final = HEADER.size
_DATA_HEADER_SIZE: Final = DATA_HEADER.size

MIN_MTU: Final = 64
"""The smallest MTU a packetizer accepts (a DATA header plus some payload)."""

Buffer = bytes | memoryview


class DatagramPacketizer:
    """Packs frames into packets of at most ``mtu`` bytes, in the order given.

    Example::

        p = DatagramPacketizer(1200)
        p.push_frame(encode_ack(...))
        p.push_data(offset, payload)          # may split over several packets
        for packet in p.packets():            # each <= 1200 bytes
            transport.sendto(packet)

    Raises:
        ValueError: ``mtu`` below :data:`MIN_MTU`.
    """

    __slots__ = ("_current", "_packets", "_size", "mtu")

    def __init__(self, mtu: int) -> None:
        if mtu < MIN_MTU:
            raise ValueError(f"mtu {mtu} is below {MIN_MTU}")
        self.mtu = mtu
        self._packets: list[bytes] = []
        self._current: list[Buffer] = []
        self._size = 0

    @property
    def room(self) -> int:
        """Bytes left in the packet being filled."""
        return self.mtu - self._size

    def _close_packet(self) -> None:
        if self._current:
            self._packets.append(b"".join(self._current))
            self._current = []
            self._size = 0

    def push_frame(self, frame: bytes) -> None:
        """Add one encoded control frame (it goes whole into a packet).

        Raises:
            ValueError: the frame is larger than the MTU.
        """
        n = len(frame)
        if n > self.mtu:
            raise ValueError(f"a {n}-byte frame does not fit a {self.mtu}-byte packet")
        if n > self.room:
            self._close_packet()
        self._current.append(frame)
        self._size += n

    def push_data(self, offset: int, data: Buffer) -> None:
        """Add stream bytes ``data`` at ``offset`` as DATA frames, split over packets."""
        view = memoryview(data)
        total = len(view)
        taken = 0
        while taken < total:
            room = self.room - _DATA_HEADER_SIZE
            if room <= 0:
                self._close_packet()
                continue
            n = min(room, total - taken)
            self._current.append(data_header(offset + taken, n))
            self._current.append(view[taken : taken + n])
            self._size += _DATA_HEADER_SIZE + n
            taken += n

    def packets(self) -> list[bytes]:
        """Take every packet filled so far (and the one being filled)."""
        self._close_packet()
        out = self._packets
        self._packets = []
        return out


def parse_datagram(packet: Buffer, on_data: DataCallback, on_frame: FrameCallback,
                   now: float = 0.0) -> int:
    """Parse one packet of whole frames, calling back as :class:`StreamDeframer` does;
    return the callbacks' flags ORed together.

    Raises:
        ProtocolError: a truncated frame, or a DATA frame without payload.
    """
    mv = memoryview(packet)
    n = len(mv)
    pos = 0
    flags = 0
    while pos < n:
        if n - pos < _HEADER_SIZE:
            raise ProtocolError("truncated frame header in a datagram")
        (word,) = HEADER.unpack_from(mv, pos)
        ftype = word >> 24
        length = word & 0xFFFFFF
        start = pos + _HEADER_SIZE
        end = start + length
        if end > n:
            raise ProtocolError(f"frame 0x{ftype:02x} runs past the end of its datagram")
        if ftype == _DATA:
            if length <= 8:
                raise ProtocolError("DATA frame without payload")
            offset = int.from_bytes(mv[start : start + 8], "big")
            flags |= on_data(offset, mv[start + 8 : end], now)
        else:
            flags |= on_frame(ftype, mv[start:end], now)
        pos = end
    return flags


class DatagramDeframer:
    """The deframer of a datagram path: each piece fed is one datagram of whole
    frames (the counterpart of :class:`~rendr.core.framing.StreamDeframer`)."""

    __slots__ = ("_on_data", "_on_frame")

    def __init__(self, on_data: DataCallback, on_frame: FrameCallback) -> None:
        self._on_data = on_data
        self._on_frame = on_frame

    def feed(self, data: Buffer, now: float = 0.0) -> int:
        """Parse one datagram; return the callbacks' flags ORed together.

        Raises:
            ProtocolError: a truncated frame, or a DATA frame without payload.
        """
        return parse_datagram(data, self._on_data, self._on_frame, now)
