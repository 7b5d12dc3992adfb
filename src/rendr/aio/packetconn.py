"""``PacketConn``: a stable connection of datagrams with preserved boundaries.

Returned by ``Dialer.dial_packet()`` and ``Listener.accept_packet()``.  Each
:meth:`PacketConn.send` becomes exactly one packet and each :meth:`PacketConn.recv`
returns exactly one sent payload.  Semantics (like UDP, over migrating paths):

- delivered at most once, in arrival order (a late packet is delivered, not held
  back), de-duplicated over a bounded window of packet numbers;
- never re-sent: a packet lost with its datagram or with a dying path is lost;
- a planned migration (``migrate()``) loses nothing: the old path delivers what it
  already carries;
- unread packets are bounded (``FlowConfig.packet_queue``): beyond it new ones are
  dropped and counted, as a full socket buffer drops datagrams.

The end of the flow and the administrative surface (:class:`~rendr.AdminConn`) are
the same as :class:`~rendr.Conn`'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Coroutine
from typing import Any

from .endpoint import Endpoint, mark_coroutine_methods

__all__ = ["PacketConn", "PacketStats"]


class PacketStats:
    """Packet counters of one end (:meth:`PacketConn.packet_stats`).

    Attributes:
        sent: packets handed to a path.
        received: packets delivered to the application's queue.
        dups: copies dropped (RACE sends every packet on every path).
        too_old: packets dropped as older than the de-duplication window.
        overflow: packets dropped because the application did not read in time.
        dropped: packets that no path could carry (larger than a new path's MTU).
    """

    __slots__ = ("dropped", "dups", "overflow", "received", "sent", "too_old")

    def __init__(self, sent: int, received: int, dups: int, too_old: int, overflow: int,
                 dropped: int) -> None:
        self.sent = sent
        self.received = received
        self.dups = dups
        self.too_old = too_old
        self.overflow = overflow
        self.dropped = dropped

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)}" for k in self.__slots__)
        return f"PacketStats({fields})"




class PacketConn(Endpoint):
    """One stable rendr connection of datagrams (see the module docstring).

    Not safe for concurrent ``recv()`` calls from several tasks (nor concurrent
    ``send()`` calls).  Also an async iterator of received packets that ends at the
    peer's clean close::

        async for packet in pc:
            ...
    """

    @property
    def max_payload(self) -> int:
        """The largest payload :meth:`send` takes now: what fits one datagram of every
        live path (1155 bytes on a default udpflow path, 65 528 on TCP)."""
        return self._flow.max_payload

    def send(self, data: bytes | bytearray | memoryview) -> Coroutine[Any, Any, None]:
        """Send ``data`` as one packet; the coroutine waits while the send queue is full
        (``await pc.send(data)``).

        Raises:
            PacketTooLarge: ``data`` is larger than :attr:`max_payload`.
            ConnClosed: after ``close()`` or the peer's close.
            MigrationBudgetExceeded, ZombieFlow, ConnAborted: the flow failed.
        """
        # send and recv return the driver's coroutines (compiled with the engine in a
        # compiled build): no interpreted frame per packet
        return self._driver.send_packet(data)

    def send_nowait(self, data: bytes | bytearray | memoryview) -> bool:
        """Send ``data`` as one packet if the queue has room now; False (nothing sent)
        when it is full: for applications that would rather drop than wait.

        Raises:
            PacketTooLarge: ``data`` is larger than :attr:`max_payload`.
            ConnClosed: after ``close()`` or the peer's close.
            MigrationBudgetExceeded, ZombieFlow, ConnAborted: the flow failed (as
                :meth:`send`).
        """
        self._raise_if_unusable()
        return self._driver.try_send_packet(data if type(data) is bytes else bytes(data))

    def recv(self) -> Coroutine[Any, Any, bytes]:
        """Receive one packet (exactly one sent payload, possibly empty); a coroutine:
        ``await pc.recv()``.

        Raises:
            EOFError: the peer closed cleanly and every packet before was received.
            ConnClosed: used after ``close()``.
            MigrationBudgetExceeded, ZombieFlow, ConnAborted: the flow failed (packets
                that arrived before the failure are returned first).
        """
        return self._driver.recv_packet()

    async def sendto(self, data: bytes | bytearray | memoryview, addr: object = None) -> None:
        """:meth:`send` under its socket name (``addr`` must be None: the connection
        has one peer, wherever its paths lead)."""
        if addr is not None:
            raise ValueError("a PacketConn is connected: sendto() takes no address")
        await self.send(data)

    async def recvfrom(self) -> tuple[bytes, str]:
        """:meth:`recv` under its socket name: ``(packet, peer)``, the peer named by
        the flow id in hex (its network address changes as paths move)."""
        return await self.recv(), self.flow_id.hex()

    def recv_nowait(self) -> bytes | None:
        """A packet that already arrived, or None (raises like :meth:`recv`)."""
        self._raise_if_unusable()
        return self._flow.recv_packet()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._packets()

    async def _packets(self) -> AsyncIterator[bytes]:
        while True:
            try:
                packet = await self.recv()
            except EOFError:
                return
            yield packet

    def packet_stats(self) -> PacketStats:
        """Packet counters (sent, received, dups, too_old, overflow, dropped)."""
        return PacketStats(*self._flow.packet_stats())

    def __repr__(self) -> str:
        return "Packet" + super().__repr__()


mark_coroutine_methods(PacketConn, "send", "recv")
