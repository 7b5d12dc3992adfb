"""The listener side of the ``quic`` carrier: one UDP socket for every QUIC
connection, demultiplexed by destination connection ID (see
:mod:`rendr.carriers.quic`).

A connection is routed by every connection ID it issued (its first one, those of
``ConnectionIdIssued`` events, until ``ConnectionIdRetired``) and, until the
handshake ends, by the client's original destination ID, so a client that moves
to another address (QUIC migration, NAT rebinding) keeps its path: qh3 validates
the new address (PATH_CHALLENGE) before it sends there.  A connection becomes a
carrier for the listener once its QUIC handshake completed; one that does not
complete within :data:`HANDSHAKE_TIMEOUT` is dropped, and at most
:data:`MAX_PENDING` may be in their handshake at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from qh3._hazmat import pull_quic_header
from qh3.quic import events
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.connection import QuicConnection
from qh3.quic.packet import QuicErrorCode, QuicPacketType

from .address import format_address
from .base import Carrier
from .quic import QuicCarrier, open_endpoint, send_batch
from .quic_tls import certificate_binding, server_configuration
from .udpbase import bound_socket

__all__ = ["QuicServer", "QuicServerCarrier", "listen_quic"]

logger = logging.getLogger("rendr.carriers.quic")

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a new QUIC connection may take to complete its handshake."""
MAX_PENDING = 256
"""QUIC connections in their handshake at once; more Initial packets are dropped."""
_MIN_INITIAL = 1200  # RFC 9000 14.1: a client's Initial datagram is at least this big


class QuicServerCarrier(QuicCarrier):
    """The listener's end of one QUIC path (connection IDs on a shared socket)."""

    def __init__(self, server: QuicServer, quic: QuicConnection, addr: Any) -> None:
        super().__init__(server.loop, quic)
        self._server = server
        self.cids: set[bytes] = set()
        self.local_addr = server.local_addr
        self.remote_addr = format_address(addr)
        self.binding = server.binding
        self._deadline: asyncio.TimerHandle | None = server.loop.call_later(
            HANDSHAKE_TIMEOUT, self._handshake_expired)

    def _send_many(self, datagrams: list[tuple[bytes, Any]]) -> None:
        self._server.send_many(datagrams)

    def _on_handshake(self, event: events.HandshakeCompleted) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._server.handshake_done(self)

    def _handshake_expired(self) -> None:
        self._deadline = None
        logger.info("quic %s: no QUIC handshake within %g s (dropped)", self.remote_addr,
                    HANDSHAKE_TIMEOUT)
        self._done = True
        self._close_quic(QuicErrorCode.NO_ERROR, "handshake timeout")

    def _on_cid(self, cid: bytes, issued: bool) -> None:
        self._server.route(self, cid, issued)

    def _release(self) -> None:
        if self._released:
            return
        super()._release()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._server.unregister(self)


class QuicServer(asyncio.DatagramProtocol):
    """One listening UDP socket serving every QUIC connection that arrives on it
    (a :class:`~rendr.carriers.base.CarrierServer`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, config: QuicConfiguration,
                 on_carrier: Callable[[Carrier], None]) -> None:
        self.loop = loop
        self._config = config
        self._on_carrier = on_carrier
        self._transport: asyncio.DatagramTransport | None = None
        self._routes: dict[bytes, QuicServerCarrier] = {}
        self._carriers: set[QuicServerCarrier] = set()
        self._pending = 0
        self._closed = False
        self._waiter: asyncio.Future[None] = loop.create_future()
        self.local_addr = ""
        cert = config.certificate
        self.binding = b"" if cert is None else certificate_binding(cert.public_bytes())
        """What every carrier binds into its path's handshake (SHA-256 of our leaf
        certificate: the one the dialer's QUIC saw, unless someone is in the middle)."""
        self.dropped = 0
        """Datagrams dropped before QUIC: unparsable, unknown connection ID, over a cap."""

    @property
    def carriers(self) -> int:
        """QUIC connections this socket serves now."""
        return len(self._carriers)

    # asyncio.DatagramProtocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        self.local_addr = format_address(self._transport.get_extra_info("sockname"))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        carrier = self._route(data, addr)
        if carrier is not None:
            carrier.datagram_received(data, addr)

    def datagrams_received(self, datagrams: list[bytes], addr: Any) -> None:
        """A batch from one socket read, all from ``addr``: runs for one connection
        go to it in one call (usually the whole batch)."""
        if len(datagrams) == 1:
            self.datagram_received(datagrams[0], addr)
            return
        run: list[bytes] = []
        to: QuicServerCarrier | None = None
        for data in datagrams:
            carrier = self._route(data, addr)
            if carrier is None:
                continue
            if run and carrier is not to:
                self._deliver(to, run, addr)
                run = []
            run.append(data)
            to = carrier
        if run:
            self._deliver(to, run, addr)

    @staticmethod
    def _deliver(carrier: QuicServerCarrier | None, run: list[bytes], addr: Any) -> None:
        if carrier is None:
            return
        if len(run) == 1 or not carrier.handshake_done:
            for data in run:  # handshake packets one by one (qh3 wants them so)
                carrier.datagram_received(data, addr)
        else:
            carrier.datagrams_received(run, addr)

    def _route(self, data: bytes, addr: Any) -> QuicServerCarrier | None:
        try:
            header = pull_quic_header(data, 0, self._config.connection_id_length)
        except ValueError:
            self.dropped += 1
            return None
        carrier = self._routes.get(header[3])
        if carrier is None:
            carrier = self._accept(data, header, addr)
            if carrier is None:
                self.dropped += 1
        return carrier

    def _accept(self, data: bytes, header: Any, addr: Any) -> QuicServerCarrier | None:
        """A datagram for no known connection: an Initial opens a new one."""
        if (self._closed or len(data) < _MIN_INITIAL or header[1] != int(QuicPacketType.INITIAL)
                or header[0] not in self._config.supported_versions
                or self._pending >= MAX_PENDING):
            return None
        quic = QuicConnection(configuration=self._config,
                              original_destination_connection_id=header[3])
        carrier = QuicServerCarrier(self, quic, addr)
        self._carriers.add(carrier)
        self._pending += 1
        self.route(carrier, header[3], True)
        self.route(carrier, quic.host_cid, True)
        return carrier

    def error_received(self, exc: Exception) -> None:
        logger.debug("quic listener %s: %r (ignored)", self.local_addr, exc)

    def pause_writing(self) -> None:
        for carrier in list(self._carriers):
            carrier.socket_paused(True)

    def resume_writing(self) -> None:
        for carrier in list(self._carriers):
            carrier.socket_paused(False)

    # for the carriers
    def send_many(self, datagrams: list[tuple[bytes, Any]]) -> None:
        if self._transport is not None and not self._transport.is_closing():
            send_batch(self._transport, datagrams)

    def route(self, carrier: QuicServerCarrier, cid: bytes, issued: bool) -> None:
        if issued:
            self._routes[cid] = carrier
            carrier.cids.add(cid)
        elif self._routes.get(cid) is carrier:
            del self._routes[cid]
            carrier.cids.discard(cid)

    def handshake_done(self, carrier: QuicServerCarrier) -> None:
        self._pending -= 1
        if self._closed:
            carrier.abort()
        else:
            self._on_carrier(carrier)

    def unregister(self, carrier: QuicServerCarrier) -> None:
        if carrier not in self._carriers:
            return
        self._carriers.discard(carrier)
        if not carrier.handshake_done:
            self._pending -= 1
        for cid in carrier.cids:
            if self._routes.get(cid) is carrier:
                del self._routes[cid]
        carrier.cids.clear()
        if self._closed and not self._carriers:
            self._shut()

    # CarrierServer
    def close(self) -> None:
        """Stop accepting new connections.  Paths already attached go on until their
        flows end (the socket closes with the last of them)."""
        if self._closed:
            return
        self._closed = True
        if not self._waiter.done():
            self._waiter.set_result(None)
        for carrier in [c for c in self._carriers if not c.handshake_done]:
            carrier.abort()
        if not self._carriers:
            self._shut()

    def _shut(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` was called."""
        await self._waiter


async def listen_quic(address: str, on_carrier: Callable[[Carrier], None],
                      backlog: int = 128, *, tls: str | tuple[str, str] | None = None,
                      certfile: str | None = None, keyfile: str | None = None,
                      alpn: str | None = None, idle_timeout: float | str | None = None
                      ) -> tuple[QuicServer, tuple[str, int]]:
    """Accept QUIC carriers on ``"host:port"`` (port 0: any free port); TLS as
    :func:`~rendr.carriers.quic_tls.server_configuration` (``tls=None``: a self-signed
    development certificate, logged as a warning).

    Raises:
        OSError: the address could not be bound.
    """
    from .quic_tls import IDLE_TIMEOUT

    config = server_configuration(tls, certfile=certfile, keyfile=keyfile, alpn=alpn,
                                  idle_timeout=float(idle_timeout or IDLE_TIMEOUT))
    sock = await bound_socket(address)
    loop = asyncio.get_running_loop()
    server = QuicServer(loop, config, on_carrier)
    await open_endpoint(loop, server, sock)
    name = sock.getsockname()
    return server, (name[0], name[1])
