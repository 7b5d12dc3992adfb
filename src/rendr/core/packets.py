"""Packet mode: datagrams with preserved boundaries over a flow's paths.

A packet flow (``Kind.PACKET`` in HELLO) carries the application's datagrams as
DGRAM frames (``u64 packet number | payload``) instead of a byte stream:

- :class:`PacketSender` queues what the application sends (bounded: ``send`` waits
  when it is full) and puts each packet, whole, in one DGRAM frame on every path the
  scheduler names (PRIME: the active path; RACE: all of them).  Packets are numbered
  from 0 per direction.  Nothing is re-sent: a packet lost with its path (or its
  datagram) is lost, as with UDP.
- :class:`PacketReceiver` delivers each packet number at most once, in arrival order
  (a late packet is delivered, not held back), remembering the last
  :data:`DEDUP_WINDOW` numbers behind the highest seen; older ones are dropped
  (counted).  What the application has not read is bounded in bytes: beyond it, new
  packets are dropped (counted), as a full socket buffer drops datagrams.

A planned migration loses nothing: the old path delivers what it already carries.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from ..errors import PacketTooLarge
from .path import PathState
from .pathreport import PathRates
from .paths import PathSet
from .window import NEW, TOO_OLD, SeenWindow
from .wire import DGRAM_HEADER, MAX_CONTROL_BODY, dgram_header

__all__ = ["DEDUP_WINDOW", "MAX_PACKET", "PacketReceiver", "PacketSender", "max_payload",
           "packet_stats"]

DEDUP_WINDOW: Final = 1 << 16
"""Packet numbers remembered behind the highest one received."""
MAX_PACKET: Final = MAX_CONTROL_BODY - 8
"""The largest payload on a stream carrier (a DGRAM frame is a control frame there)."""
_FRAME_OVERHEAD: Final = DGRAM_HEADER.size


class PacketSender:
    """The application's packets waiting for a path.

    Args:
        max_bytes: the most payload bytes queued (``push`` refuses beyond it).
    """

    __slots__ = ("_credit", "_queue", "dropped", "max_bytes", "next_number", "queued_bytes",
                 "rates", "sent")

    def __init__(self, max_bytes: int) -> None:
        self._queue: deque[bytes] = deque()
        self._credit: dict[int, float] = {}  # BOND's smooth weighted round robin
        self.rates = PathRates()
        """What the peer reports each path delivers (BOND stripes by it)."""
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self.next_number = 0
        self.sent = 0
        self.dropped = 0
        """Packets dropped because no path could take them (too large for every path
        that was up when they were sent)."""

    @property
    def pending(self) -> bool:
        """Packets are waiting."""
        return bool(self._queue)

    @property
    def space(self) -> int:
        """Bytes that may be queued now: 0 while the queue is more than half full
        (then any packet is taken again once it drained to half), so a waiting
        sender is woken only when its packet fits, whatever its size."""
        left = self.max_bytes - self.queued_bytes
        return left if self.queued_bytes <= self.max_bytes // 2 else 0

    def room(self, size: int) -> bool:
        """Whether a ``size``-byte packet is taken now."""
        return self.queued_bytes + size <= self.max_bytes or self.space > 0

    def push_checked(self, data: bytes, most: int) -> bool:
        """Queue one packet of at most ``most`` bytes; False when the queue is full.

        Raises:
            PacketTooLarge: ``data`` is larger than ``most``.
        """
        if len(data) > most:
            raise PacketTooLarge(f"{len(data)}-byte packet, at most {most} fit every path")
        return self.push(data)

    def push(self, data: bytes) -> bool:
        """Queue one packet; False when the queue is full."""
        if not self.room(len(data)):
            return False
        self._queue.append(data)
        self.queued_bytes += len(data)
        return True

    def fill(self, paths: list[PathState], budget: int) -> None:
        """Move queued packets, up to ``budget`` payload bytes, into DGRAM frames on
        every path of ``paths`` (each gets a copy of the same frames)."""
        queue = self._queue
        frames: list[bytes] = []
        taken = 0
        number = self.next_number
        while queue and taken < budget:
            data = queue.popleft()
            taken += len(data)
            frames.append(dgram_header(number, len(data)))
            frames.append(data)  # (an empty packet: an empty buffer, skipped by writers)
            number += 1
        count = number - self.next_number
        self.queued_bytes -= taken
        self.sent += count
        self.next_number = number
        for path in paths:
            limit = path.max_frame
            if limit is None:
                path.outbox.extend(frames)
                path.pkts_out += count
                path.pkt_bytes_out += taken
                continue
            outbox = path.outbox
            for i in range(0, len(frames), 2):  # a packet no datagram of it can carry
                size = len(frames[i + 1])
                if size + _FRAME_OVERHEAD <= limit:
                    outbox.append(frames[i])
                    outbox.append(frames[i + 1])
                    path.pkts_out += 1
                    path.pkt_bytes_out += size
                else:
                    self.dropped += 1


    def stripe(self, paths: list[PathState], budget: int, now: float) -> None:
        """BOND: move queued packets, up to ``budget`` payload bytes, each into one
        DGRAM frame on ONE path of ``paths``, shared in proportion to what the peer
        reports each path delivers (:attr:`rates`; before the first report, and when
        reports stop, in proportion to ``PathSpec.weight``), by smooth weighted round
        robin: the path furthest behind its share takes the next packet."""
        if not paths:
            return
        queue = self._queue
        credit = self._credit
        shares = self.rates.shares(paths, now)
        weights = [p.weight for p in paths] if shares is None else shares
        total = 0.0
        for w in weights:
            total += w
        weights = [w / total for w in weights]
        taken = 0
        number = self.next_number
        while queue and taken < budget:
            data = queue.popleft()
            size = len(data)
            taken += size
            best: PathState | None = None
            for i, p in enumerate(paths):
                c = credit.get(p.id, 0.0) + weights[i]
                credit[p.id] = c
                limit = p.max_frame
                if (limit is None or size + _FRAME_OVERHEAD <= limit) and (
                        best is None or c > credit[best.id]):
                    best = p
            if best is None:
                self.dropped += 1
            else:
                credit[best.id] -= 1.0
                best.outbox.append(dgram_header(number, size))
                best.outbox.append(data)
                best.pkts_out += 1
                best.pkt_bytes_out += size
            number += 1
        if len(credit) > 4 * len(paths):  # forget paths that left
            self._credit = {p.id: credit.get(p.id, 0.0) for p in paths}
        self.queued_bytes -= taken
        self.sent += number - self.next_number
        self.next_number = number


class PacketReceiver:
    """Packets received, de-duplicated, waiting for the application.

    Args:
        max_bytes: the most unread payload bytes held (beyond it packets are dropped).

    Attributes:
        received: packets delivered to the queue.
        dups: packets dropped as copies of one already received (RACE sends every
            packet on every path).
        too_old: packets dropped as older than the de-duplication window.
        overflow: packets dropped because the application did not read fast enough.
    """

    __slots__ = ("_ready", "_window", "dups", "max_bytes", "overflow", "ready_bytes",
                 "received", "too_old")

    def __init__(self, max_bytes: int) -> None:
        self._ready: deque[bytes] = deque()
        self.max_bytes = max_bytes
        self.ready_bytes = 0
        self._window = SeenWindow(DEDUP_WINDOW)
        self.received = 0
        self.dups = 0
        self.too_old = 0
        self.overflow = 0

    @property
    def readable(self) -> bool:
        """A packet is waiting."""
        return bool(self._ready)

    def on_packet(self, number: int, payload: memoryview) -> bool:
        """One DGRAM frame arrived; True if its packet was queued for the application."""
        window = self._window
        seen = window.check(number)
        if seen != NEW:
            if seen == TOO_OLD:
                self.too_old += 1
            else:
                self.dups += 1
            return False
        window.mark(number)
        n = len(payload)
        if self._ready and self.ready_bytes + n > self.max_bytes:
            self.overflow += 1
            return False
        self._ready.append(payload.tobytes())
        self.ready_bytes += n
        self.received += 1
        return True

    def pop(self) -> bytes | None:
        """The next packet, or None."""
        if not self._ready:
            return None
        data = self._ready.popleft()
        self.ready_bytes -= len(data)
        return data


def max_payload(paths: PathSet) -> int:
    """The largest packet every live path of ``paths`` carries whole."""
    most = MAX_PACKET
    for path in paths:
        if path.alive and path.max_frame is not None:
            most = min(most, path.max_frame - _FRAME_OVERHEAD)
    return most


def packet_stats(out: PacketSender | None, into: PacketReceiver | None
                 ) -> tuple[int, int, int, int, int, int]:
    """``(sent, received, dups, too_old, overflow, dropped)`` (zeros without packets)."""
    if out is None or into is None:
        return (0, 0, 0, 0, 0, 0)
    return (out.sent, into.received, into.dups, into.too_old, into.overflow, out.dropped)
