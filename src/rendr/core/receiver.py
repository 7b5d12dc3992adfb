"""The receiving half of the stream: reorder, flow control, and when to acknowledge.

A :class:`StreamReceiver` takes DATA pieces by offset (from any path, in any
order, duplicated or overlapping), hands the application each byte once and in
order, enforces the flow-control window it advertised and the peer's FIN, and
decides when an ACK is due: after ``ack_delay``, after ``recv_window/8`` bytes,
on reaching the FIN, when reading opened the window by a quarter, or when the
peer asked for one (ACK_PROBE).
"""

from __future__ import annotations

from typing import Final

from ..config import FlowConfig
from ..errors import ProtocolError
from .memory import MemoryBudget
from .recvbuf import ReceiveBuffer
from .wire import ACK_FIN, ACK_PROBE, MAX_ACK_RANGES, encode_ack

__all__ = ["MUST_FLUSH", "NEW_BYTES", "StreamReceiver"]

NEW_BYTES: Final = 1
"""``on_data`` flag: the piece made new bytes ready for the application (in order)."""
MUST_FLUSH: Final = 2
"""``on_data`` flag: an ACK is due or a deadline was set (not only readable data)."""
DATAGRAM_ACK_EVERY: Final = 2400
"""Bytes of DATA from datagram paths between ACKs (every second full datagram, as
RFC 9000 13.2.2 recommends)."""


class StreamReceiver:
    """Receive side of one stream direction.

    Attributes:
        ack_needed: an ACK should go out with the next transmit.
        ack_at: when the delayed ACK is due (None: none pending).
        final_offset: the peer's FIN offset, once known.
        last_data_at: when the last DATA piece arrived.
    """

    __slots__ = ("_ack_probe", "_ack_threshold", "_advertised_max", "_buf", "_dgram_unacked",
                 "_memory",
                 "_unacked", "_window", "ack_at", "ack_delay", "ack_needed", "final_offset",
                 "last_data_at")

    def __init__(self, config: FlowConfig, now: float,
                 memory: MemoryBudget | None = None) -> None:
        # out-of-order data may cost (payload plus per-fragment overhead) two windows
        self._buf = ReceiveBuffer(reorder_budget=2 * config.recv_window)
        self._window = config.recv_window
        self.ack_delay = config.ack_delay
        self._memory = memory
        self._advertised_max = (config.recv_window if memory is None
                                else memory.grant(config.recv_window, memory.floor))
        self._ack_threshold = max(1, min(config.recv_window // 8, 1 << 20))
        self._unacked = 0
        self._dgram_unacked = 0
        self._ack_probe = False
        self.ack_needed = False
        self.ack_at: float | None = None
        self.final_offset: int | None = None
        self.last_data_at = now

    # ----------------------------------------------------------------- from the peer

    def on_data(self, offset: int, piece: bytes | memoryview, now: float) -> int:
        """A DATA piece.  Returns flags: :data:`NEW_BYTES` if it made bytes ready for
        the application, :data:`MUST_FLUSH` if it changed more than what is readable
        (an ACK is due now, or a new deadline was set).

        Raises:
            ProtocolError: beyond the advertised window or the peer's FIN.
        """
        end = offset + len(piece)
        if end > self._advertised_max:
            raise ProtocolError(f"peer sent beyond the flow-control window ({end})")
        final = self.final_offset
        if final is not None and end > final:
            raise ProtocolError("peer sent data beyond its FIN")
        self.last_data_at = now
        buf = self._buf
        flags = NEW_BYTES if buf.receive(offset, piece) > 0 else 0
        self._unacked += len(piece)
        if self._unacked >= self._ack_threshold:
            self.ack_needed = True
            flags |= MUST_FLUSH
        elif self.ack_at is None:
            self.ack_at = now + self.ack_delay
            flags |= MUST_FLUSH  # a new deadline
        if final is not None and buf.offset == final:
            self.ack_needed = True
            flags |= MUST_FLUSH
        return flags

    def on_datagram_data(self, offset: int, nbytes: int) -> int:
        """After :meth:`on_data` for a piece that came in a datagram (a lossy path):
        acknowledge every :data:`DATAGRAM_ACK_EVERY` bytes, and at once when the piece
        lies beyond a gap (the sender's loss detection waits for that ACK).  Returns
        :data:`MUST_FLUSH` when an ACK is due."""
        self._dgram_unacked += nbytes
        if self._dgram_unacked >= DATAGRAM_ACK_EVERY or offset > self._buf.offset:
            self.ack_needed = True
            return MUST_FLUSH
        return 0

    def on_fin(self, final: int) -> None:
        """The peer's FIN at ``final``.

        Raises:
            ProtocolError: it contradicts data received or an earlier FIN.
        """
        if final < self._buf.highest or (
            self.final_offset is not None and final != self.final_offset
        ):
            raise ProtocolError("inconsistent FIN offset")
        self.final_offset = final
        if self._buf.offset == final:
            self.ack_needed = True

    def request_probe(self) -> None:
        """Ask the peer for a prompt ACK with ours (after a failover)."""
        self._ack_probe = self.ack_needed = True

    # ----------------------------------------------------------------- to the peer

    def build_ack(self) -> bytes:
        """The ACK frame to send now (clears what made it due)."""
        buf = self._buf
        max_offset = self._advertised_max
        grow = buf.read_offset + self._window - max_offset
        if grow > 0:
            memory = self._memory
            if memory is not None:
                grow = memory.grant(grow, buf.read_offset + memory.floor - max_offset)
            max_offset += grow
            self._advertised_max = max_offset
        flags = 0
        if self.final_offset is not None and buf.offset == self.final_offset:
            flags |= ACK_FIN
        if self._ack_probe:
            flags |= ACK_PROBE
            self._ack_probe = False
        self.ack_needed = False
        self.ack_at = None
        self._unacked = 0
        self._dgram_unacked = 0
        return encode_ack(buf.offset, max_offset, flags, buf.sack_ranges(MAX_ACK_RANGES))

    def on_timer(self, now: float) -> None:
        """Run the delayed-ACK deadline."""
        if self.ack_at is not None and now >= self.ack_at:
            self.ack_needed = True

    # ---------------------------------------------------------- application side

    @property
    def readable(self) -> bool:
        """Bytes are ready, or the FIN was reached."""
        return bool(self._buf.ready_bytes) or self.at_eof

    @property
    def at_eof(self) -> bool:
        """The reader reached the peer's FIN."""
        return self.final_offset is not None and self._buf.read_offset >= self.final_offset

    @property
    def read_offset(self) -> int:
        """Bytes read by the application so far."""
        return self._buf.read_offset

    @property
    def dups(self) -> int:
        """Pieces that carried already-received bytes."""
        return self._buf.dups

    @property
    def reorder_hwm(self) -> int:
        """The most bytes ever held out of order."""
        return self._buf.reorder_hwm

    def read(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` ready bytes (``b""``: none ready)."""
        data = self._buf.read(max_bytes)
        if data:
            self._after_read(len(data))
        return data

    def read_view(self, max_bytes: int) -> memoryview:
        """Up to ``max_bytes`` ready bytes as a read-only view, uncopied (empty: none
        ready)."""
        view = self._buf.read_view(max_bytes)
        n = len(view)
        if n:
            self._after_read(n)
        return view

    def readinto(self, dest: memoryview) -> int:
        """Copy ready bytes into ``dest``; return how many (0: none ready)."""
        n = self._buf.readinto(dest)
        if n:
            self._after_read(n)
        return n

    @property
    def advertised_window(self) -> int:
        """The window advertised so far, beyond what the application read."""
        return self._advertised_max - self._buf.read_offset

    def release_memory(self) -> None:
        """The flow ended: give its promised memory back to the shared budget."""
        memory = self._memory
        if memory is not None:
            memory.release(self._advertised_max - self._buf.read_offset)
            self._memory = None

    def _after_read(self, n: int) -> None:
        if self._memory is not None:
            self._memory.release(n)
        window = self._window
        if self._buf.read_offset + window - self._advertised_max >= window // 4:
            self.ack_needed = True  # the read opened the window by a quarter
