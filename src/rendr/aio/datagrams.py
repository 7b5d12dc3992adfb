"""asyncio's own datagram face over a :class:`~rendr.PacketConn`.

A UDP application written against ``loop.create_datagram_endpoint()`` — a
:class:`asyncio.DatagramProtocol` with ``datagram_received(data, addr)`` and a
transport with ``sendto(data)`` — moves onto rendr by swapping the endpoint::

    transport, protocol = await rendr.create_datagram_endpoint(
        MyProtocol, rendr.Dialer(paths=[rendr.PathSpec("udpflow", "h1:5555"),
                                        rendr.PathSpec("udpflow", "h2:5555")]))
    transport.sendto(b"hello")        # one packet (PacketTooLarge above max_payload)

The transport is "connected" (like a UDP socket after ``connect()``): ``sendto``
takes no address or the peer's, and ``datagram_received`` gets the peer's name as
``addr`` (the flow id in hex: the peer's network address changes as paths move).
Sending never blocks: when rendr's packet queue is full the packet is dropped and
counted (:attr:`PacketTransport.dropped`), as a full socket buffer drops a UDP
datagram; ``pause_writing``/``resume_writing`` are not used.  The peer's clean
close calls ``connection_lost(None)``; a failed flow ``error_received(exc)`` and
then ``connection_lost(exc)``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import ConnClosed, RendrError
from .dialer import Dialer
from .packetconn import PacketConn

__all__ = ["PacketTransport", "create_datagram_endpoint"]

logger = logging.getLogger("rendr.datagrams")

_P = TypeVar("_P", bound=asyncio.DatagramProtocol)


class PacketTransport(asyncio.DatagramTransport):
    """An :class:`asyncio.DatagramTransport` over one :class:`~rendr.PacketConn`."""

    def __init__(self, conn: PacketConn, protocol: asyncio.DatagramProtocol) -> None:
        super().__init__()
        self.conn = conn
        self._protocol = protocol
        self._closing = False
        self._lost = False
        self.dropped = 0
        """Packets dropped because rendr's send queue was full."""
        self._peer = conn.flow_id.hex()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        exc: BaseException | None = None
        try:
            while True:
                data = await self.conn.recv()
                self._protocol.datagram_received(data, self._peer)  # type: ignore[arg-type]
        except EOFError:
            pass
        except ConnClosed:
            pass
        except RendrError as err:
            exc = err
            self._protocol.error_received(err)
        except asyncio.CancelledError:
            raise
        self._closing = True
        self._connection_lost(exc if isinstance(exc, Exception) else None)

    def _connection_lost(self, exc: Exception | None) -> None:
        if not self._lost:
            self._lost = True
            self._protocol.connection_lost(exc)

    def sendto(self, data: Any, addr: Any = None) -> None:
        """Send one packet to the peer (``addr``: None or the peer's name)."""
        if addr is not None and addr != self._peer:
            raise ValueError(f"a rendr packet transport is connected to {self._peer}")
        if self._closing:
            return
        if not self.conn.send_nowait(data):
            self.dropped += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``peername`` (the peer's name), ``rendr_conn`` (the PacketConn)."""
        if name == "peername":
            return self._peer
        if name == "rendr_conn":
            return self.conn
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Close the connection gracefully (queued packets go first)."""
        if self._closing:
            return
        self._closing = True
        task = asyncio.get_running_loop().create_task(self.conn.close())
        task.add_done_callback(lambda _t: self._reader.cancel())
        task.add_done_callback(lambda _t: self._connection_lost(None))

    def abort(self) -> None:
        """End the connection at once."""
        if self._closing:
            return
        self._closing = True
        self.conn.abort()
        self._reader.cancel()
        self._connection_lost(None)

    def get_write_buffer_size(self) -> int:
        return 0

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.DatagramProtocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol


async def create_datagram_endpoint(protocol_factory: Callable[[], _P],
                                   conn: PacketConn | Dialer) -> tuple[PacketTransport, _P]:
    """Run ``protocol_factory()`` over a packet connection (an open
    :class:`~rendr.PacketConn`, or a :class:`~rendr.Dialer` to ``dial_packet()``
    with), as ``loop.create_datagram_endpoint`` does over a UDP socket."""
    pc = await conn.dial_packet() if isinstance(conn, Dialer) else conn
    protocol = protocol_factory()
    transport = PacketTransport(pc, protocol)
    protocol.connection_made(transport)
    return transport, protocol
