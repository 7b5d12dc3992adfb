"""The ``quic`` carrier: rendr paths over QUIC (RFC 9000), driven by qh3.

One QUIC connection carries one rendr path.  Which part of it carries the path's
frames depends on the flow the path joins, and both ends agree on it because both
flows have the same kind:

- **Stream flows** ride the client's first bidirectional stream (stream 0): the
  carrier is a byte stream (``mtu`` None) and QUIC's own loss recovery and flow
  control carry the bytes, so rendr runs no per-path reliability on it.
- **Packet flows** ride QUIC DATAGRAM frames (RFC 9221), one rendr datagram per
  frame: the carrier is a datagram carrier (``mtu`` = :data:`DATAGRAM_MTU`).

rendr's handshake always travels on stream 0; then :meth:`QuicCarrier.prepare`
tells the carrier the flow's kind.  DATAGRAM frames that overtake the handshake's
answer are held (at most :data:`EARLY_DATAGRAMS`) until the carrier has its flow.

- **Liveness** is rendr's PING/PONG.  QUIC's idle timeout is set to
  :data:`IDLE_TIMEOUT`, above rendr's largest migration budget (90 s), so a QUIC
  timeout never pre-empts the engine's decision that a path is dead.
- **Backpressure.**  A stream carrier pauses its sink when more than
  :data:`STREAM_HIGH` bytes wait in qh3's stream send buffer (not yet sent, held
  back by QUIC flow or congestion control) and resumes it below :data:`STREAM_LOW`;
  both carrier kinds also pause while the UDP socket's write buffer is full.
- **Loss** (CONNECTION_CLOSE, a stream FIN or reset, a socket error, QUIC's idle
  timeout) is reported with ``carrier_lost``, never raised.
- **Sockets.**  A dialed path owns one unconnected UDP socket (so
  :meth:`QuicClientCarrier.rebind` can move it to another one: QUIC connection
  migration with a fresh connection ID, the server validating the new address);
  a listener serves every connection from one socket, demultiplexed by QUIC
  connection ID (:mod:`rendr.carriers.quic_listen`).  Socket buffers are asked for
  4 MiB; the kernel caps them at ``net.core.rmem_max`` / ``wmem_max`` (raise those
  sysctls for high datagram rates).  TLS set-up: :mod:`rendr.carriers.quic_tls`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from typing import Any, cast

from qh3.quic import events
from qh3.quic.connection import QuicConnection, QuicConnectionError
from qh3.quic.packet import QuicErrorCode

from ..errors import HandshakeError
from .address import format_address, parse_address
from .base import Buffer, Carrier
from .quic_tls import (
    ALPN,
    IDLE_TIMEOUT,
    MAX_DATAGRAM_SIZE,
    certificate_binding,
    check_certificate,
    client_configuration,
    development_certificate,
    flag,
    is_ip,
    server_configuration,
)
from .udpbase import _tune

try:  # qh3's own UDP transport: recvmmsg (GRO) and GSO sends through quinn-udp
    from qh3.asyncio._transport import (
        create_optimized_datagram_transport as _qh3_transport,
    )
except ImportError:  # pragma: no cover - another qh3 version: the loop's transport
    _qh3_transport = None  # type: ignore[assignment]

__all__ = [
    "ALPN",
    "DATAGRAM_MTU",
    "IDLE_TIMEOUT",
    "QuicCarrier",
    "QuicClientCarrier",
    "client_configuration",
    "connect_quic",
    "development_certificate",
    "server_configuration",
]

logger = logging.getLogger("rendr.carriers.quic")

_DATAGRAM_OVERHEAD = 1 + 20 + 4 + 16 + 1 + 4
# short header byte + longest connection ID + longest packet number + AEAD tag +
# DATAGRAM frame type + its length varint (generous: qh3 fails the whole connection
# when a DATAGRAM frame does not fit in a packet)
DATAGRAM_MTU = MAX_DATAGRAM_SIZE - _DATAGRAM_OVERHEAD
"""The largest rendr datagram one QUIC DATAGRAM frame carries."""
STREAM_HIGH = 512 * 1024
"""Bytes waiting in qh3's stream send buffer above which the carrier pauses its sink."""
STREAM_LOW = 128 * 1024
"""... and below which it resumes it."""
EARLY_DATAGRAMS = 1024
"""DATAGRAM frames held while the carrier has no flow yet (more are dropped)."""
CLOSE_LINGER = 3.0
"""Seconds a closed carrier waits for the peer's FIN before closing the QUIC connection."""
OLD_SOCKET_LINGER = 2.0
"""Seconds the socket a rebind left keeps reading (the server's datagrams sent before
it validated the new address)."""
_STREAM = 0  # the client's first bidirectional stream
_ABORTED = 0x1  # application error code of an aborted carrier


class QuicCarrier(Carrier):
    """One QUIC connection as a carrier (the part shared by both ends).

    Subclasses say how datagrams leave (:meth:`_send_many`) and what ending releases
    (:meth:`_release`).
    """

    transport = "quic"

    def __init__(self, loop: asyncio.AbstractEventLoop, quic: QuicConnection) -> None:
        super().__init__()
        self._loop = loop
        self.quic = quic
        self._packets: bool | None = None  # the flow's kind, once prepare() told it
        self._early: list[bytes] = []
        self._flow_sink = False  # the sink is the flow's (set after prepare())
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._stream_paused = False
        self._socket_paused = False
        self._fin_sent = False
        self._fin_received = False
        self._linger: asyncio.TimerHandle | None = None
        self._transmit_pending = False
        self.transmit_errors = 0
        self._done = False  # reported loss or was closed: reports nothing further
        self._released = False
        self.handshake_done = False
        self.closed_by_peer: events.ConnectionTerminated | None = None

    # ------------------------------------------------------------------ Carrier

    def prepare(self, *, packets: bool) -> None:
        """The flow this carrier joins carries datagrams (``packets``) or a byte stream:
        packet flows ride DATAGRAM frames (``mtu`` set), stream flows stream 0."""
        self._packets = packets
        self.mtu = DATAGRAM_MTU if packets else None

    def set_sink(self, sink: Any) -> None:
        super().set_sink(sink)
        self._flow_sink = self._packets is not None
        if self._packets and self._early and not self._done:
            early, self._early = self._early, []
            for data in early:
                self._sink.carrier_data(data)

    def write(self, buffers: Sequence[Buffer]) -> None:
        if self._done or self._fin_sent:
            return
        quic = self.quic
        try:
            if self._packets:
                mtu = DATAGRAM_MTU
                send = quic.send_datagram_frame
                for buf in buffers:
                    if len(buf) > mtu:  # the engine never does this; qh3 would fail
                        logger.warning("quic %s: dropped a %d-byte datagram (mtu %d)",
                                       self.remote_addr, len(buf), mtu)
                        continue
                    send(buf if type(buf) is bytes else bytes(buf))
                # one transmit per loop iteration, not per write: the engine writes a
                # burst in several flushes, and QUIC packs the frames into fewer packets
                self._transmit_soon()
                return
            if len(buffers) == 1:
                quic.send_stream_data(_STREAM, buffers[0])
            elif buffers:
                quic.send_stream_data(_STREAM, b"".join(buffers))
        except QuicConnectionError as exc:  # qh3 closed it (its event is on the way)
            self._lost(ConnectionResetError(f"quic {self.remote_addr}: {exc}"))
            return
        self.transmit()

    def close(self) -> None:
        """Send a FIN on stream 0; the QUIC connection closes once the peer's FIN came
        (everything sent before it was received) or after :data:`CLOSE_LINGER`."""
        if self._done:
            return
        self._done = True
        if not self.handshake_done:
            self._close_quic(QuicErrorCode.NO_ERROR, "closed")
            return
        if not self._fin_sent:
            self._fin_sent = True
            self.quic.send_stream_data(_STREAM, b"", end_stream=True)
            self.transmit()
        if self._fin_received:
            self._close_quic(QuicErrorCode.NO_ERROR, "closed")
        elif self._linger is None:
            self._linger = self._loop.call_later(
                CLOSE_LINGER, self._close_quic, QuicErrorCode.NO_ERROR, "closed")

    def abort(self) -> None:
        self._done = True
        self._close_quic(_ABORTED, "aborted")

    # ------------------------------------------------------------------ QUIC

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Feed one UDP datagram from ``addr`` to the QUIC connection."""
        if self._released:
            return
        self.quic.receive_datagram(data, addr, self._loop.time())
        self._process_events()
        self._transmit_soon()

    def datagrams_received(self, datagrams: list[bytes], addr: Any) -> None:
        """Feed a batch of UDP datagrams from ``addr`` (one socket read) to the QUIC
        connection: one pass of qh3, one transmit (its ACKs) for the whole batch."""
        if self._released:
            return
        self.quic.receive_many_datagrams(datagrams, addr, self._loop.time())
        self._process_events()
        self._transmit_soon()

    def _transmit_soon(self) -> None:
        """:meth:`transmit` once, later in this loop iteration (after the other
        callbacks that are ready: more input, the application's next sends)."""
        if not self._transmit_pending and not self._released:
            self._transmit_pending = True
            self._loop.call_soon(self._transmit_now)

    def _transmit_now(self) -> None:
        self._transmit_pending = False
        self.transmit()

    def transmit(self) -> None:
        """Send what QUIC wants sent, re-arm its timer and update backpressure."""
        if self._released:
            return
        quic = self.quic
        now = self._loop.time()
        try:
            out = quic.datagrams_to_send(now)
        except Exception as exc:  # qh3 2.1 can raise "packet builder capacity exhausted"
            self.transmit_errors += 1  # its state holds: the next transmit sends the rest
            logger.log(logging.WARNING if self.transmit_errors == 1 else logging.DEBUG,
                       "quic %s: qh3 could not build packets: %r", self.remote_addr, exc)
            out = []
        if out:
            self._send_many(out)
        at = quic.get_timer()
        if at != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None if at is None else self._loop.call_at(at, self._on_timer)
            self._timer_at = at
        if self._packets is False and not self._done:
            waiting = quic.get_send_buffer_size(_STREAM)
            if not self._stream_paused and waiting > STREAM_HIGH:
                self._stream_paused = True
                self._update_pause(was=self._socket_paused)
            elif self._stream_paused and waiting < STREAM_LOW:
                self._stream_paused = False
                self._update_pause(was=True)

    def _on_timer(self) -> None:
        at = self._timer_at
        self._timer = None
        self._timer_at = None
        if self._released:
            return
        self.quic.handle_timer(max(at or 0.0, self._loop.time()))
        self._process_events()
        self.transmit()

    def _process_events(self) -> None:
        quic = self.quic
        while (event := quic.next_event()) is not None:
            if isinstance(event, events.StreamDataReceived):
                self._on_stream_data(event)
            elif isinstance(event, events.DatagramFrameReceived):
                if not event.data or self._done:
                    # rendr never sends an empty datagram (its frames have headers)
                    continue
                if self._packets:
                    self._sink.carrier_data(event.data)
                elif self._packets is None and len(self._early) < EARLY_DATAGRAMS:
                    self._early.append(event.data)
            elif isinstance(event, events.HandshakeCompleted):
                self.handshake_done = True
                self._on_handshake(event)
            elif isinstance(event, events.ConnectionIdIssued):
                self._on_cid(event.connection_id, True)
            elif isinstance(event, events.ConnectionIdRetired):
                self._on_cid(event.connection_id, False)
            elif isinstance(event, events.ConnectionTerminated):
                self._on_terminated(event)
            elif isinstance(event, events.StreamReset) and event.stream_id == _STREAM:
                self._lost(ConnectionResetError(
                    f"quic {self.remote_addr}: stream reset (code {event.error_code})"))

    def _on_stream_data(self, event: events.StreamDataReceived) -> None:
        if event.stream_id != _STREAM:
            return  # a peer speaking something else: ignored
        if event.data and not self._done:
            if self._packets and self._flow_sink:
                logger.debug("quic %s: %d stream bytes on a packet path (ignored)",
                             self.remote_addr, len(event.data))
            else:
                self._sink.carrier_data(event.data)
        if event.end_stream:
            self._fin_received = True
            if self._done:  # our close() waits for this FIN
                if self._fin_sent:
                    self._close_quic(QuicErrorCode.NO_ERROR, "closed")
            else:
                self._lost(None)

    def _on_terminated(self, event: events.ConnectionTerminated) -> None:
        self.closed_by_peer = event
        if event.error_code == QuicErrorCode.NO_ERROR and self._fin_received:
            exc: BaseException | None = None
        else:
            exc = ConnectionResetError(
                f"quic {self.remote_addr}: connection closed "
                f"(code {event.error_code:#x}: {event.reason_phrase or 'no reason'})")
        self._lost(exc)
        self._release()

    def _lost(self, exc: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        self._sink.carrier_lost(exc)

    def _close_quic(self, code: int, reason: str) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._released:
            return
        self.quic.close(error_code=code, reason_phrase=reason)
        self.transmit()
        self._release()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = None

    def socket_paused(self, paused: bool) -> None:
        """The UDP socket's write buffer filled up (True) or drained (False)."""
        was = self._socket_paused or self._stream_paused
        self._socket_paused = paused
        self._update_pause(was=was)

    def _update_pause(self, *, was: bool) -> None:
        now = self._socket_paused or self._stream_paused
        if now != was and not self._done:
            if now:
                self._sink.carrier_pause()
            else:
                self._sink.carrier_resume()

    # ------------------------------------------------------------------ subclasses

    def _send_many(self, datagrams: list[tuple[bytes, Any]]) -> None:
        """Send ``(data, addr)`` pairs (what ``datagrams_to_send()`` gave)."""
        raise NotImplementedError

    def _release(self) -> None:
        """Give up the socket (or the listener's routes); no more input."""
        self._released = True
        self._stop_timer()

    def _on_handshake(self, event: events.HandshakeCompleted) -> None:
        pass

    def _on_cid(self, cid: bytes, issued: bool) -> None:
        pass


def send_batch(transport: asyncio.DatagramTransport,
               datagrams: list[tuple[bytes, Any]]) -> None:
    """Send ``(data, addr)`` pairs, runs to one address in one call where the transport
    can (qh3's: one GSO ``sendmsg`` for a run of equal-sized packets)."""
    many = getattr(transport, "sendto_many", None)
    if many is None or len(datagrams) == 1:
        for data, addr in datagrams:
            transport.sendto(data, addr)
        return
    run: list[bytes] = []
    to: Any = None
    for data, addr in datagrams:
        if run and addr != to:
            many(run, to)
            run = []
        run.append(data)
        to = addr
    if run:
        many(run, to)


async def open_endpoint(loop: asyncio.AbstractEventLoop, protocol: asyncio.DatagramProtocol,
                        sock: socket.socket) -> asyncio.DatagramTransport:
    """The datagram transport of ``sock``: qh3's (batched reads handed to the
    protocol's ``datagrams_received``; GSO sends) where it can, else the loop's."""
    if _qh3_transport is not None:
        transport, _ = await _qh3_transport(loop, lambda: protocol, sock)
        return transport
    made, _ = await loop.create_datagram_endpoint(  # pragma: no cover
        lambda: protocol, sock=sock)
    return made  # pragma: no cover


class _ClientSocket(asyncio.DatagramProtocol):
    """The UDP socket of one dialed path (replaced by :meth:`QuicClientCarrier.rebind`)."""

    def __init__(self, carrier: QuicClientCarrier) -> None:
        self.carrier = carrier
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    # a socket a rebind left still reads, for OLD_SOCKET_LINGER: what the server sent
    # before it moved to the new address is the connection's too
    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.carrier.datagram_received(data, addr)

    def datagrams_received(self, datagrams: list[bytes], addr: Any) -> None:
        self.carrier.datagrams_received(datagrams, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors are not authenticated: rendr's PING/PONG decides
        logger.debug("quic %s: %r (ignored)", self.carrier.remote_addr, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.carrier.socket is self and exc is not None:
            self.carrier._lost(exc)
            self.carrier._release()

    def pause_writing(self) -> None:
        if self.carrier.socket is self:
            self.carrier.socket_paused(True)

    def resume_writing(self) -> None:
        if self.carrier.socket is self:
            self.carrier.socket_paused(False)


class QuicClientCarrier(QuicCarrier):
    """The dialer's end of one QUIC path: its own UDP socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop, quic: QuicConnection,
                 family: int) -> None:
        super().__init__(loop, quic)
        self.family = family
        self.socket: _ClientSocket | None = None
        self._lingering: list[asyncio.DatagramTransport] = []
        self.ready: asyncio.Future[None] = loop.create_future()
        self.rebinds = 0
        """Times :meth:`rebind` moved this path to a new socket."""

    def _send_many(self, datagrams: list[tuple[bytes, Any]]) -> None:
        if self.socket is not None and self.socket.transport is not None:
            send_batch(self.socket.transport, datagrams)

    def _on_handshake(self, event: events.HandshakeCompleted) -> None:
        cert = self.quic.get_peercert()
        if cert is not None:
            self.binding = certificate_binding(cert.public_bytes())
        if not self.ready.done():
            self.ready.set_result(None)

    def _on_terminated(self, event: events.ConnectionTerminated) -> None:
        if not self.ready.done():
            self.ready.set_exception(HandshakeError(
                f"quic {self.remote_addr}: QUIC handshake failed "
                f"({event.reason_phrase or f'error {event.error_code:#x}'})"))
            self._done = True
            self._release()
            return
        super()._on_terminated(event)

    def _release(self) -> None:
        if self._released:
            return
        super()._release()
        if not self.ready.done():
            self.ready.set_exception(HandshakeError(f"quic {self.remote_addr}: closed"))
        if self.socket is not None and self.socket.transport is not None:
            self.socket.transport.close()
        for transport in self._lingering:
            transport.close()
        self._lingering.clear()

    def _close_lingering(self, transport: asyncio.DatagramTransport) -> None:
        if transport in self._lingering:
            self._lingering.remove(transport)
            transport.close()

    async def open_socket(self, local: tuple[str, int] | None) -> None:
        """Make a new UDP socket (bound to ``local``, else any port) the path's.

        Raises:
            OSError: the socket could not be made or bound.
        """
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            _tune(sock)
            if local is not None:
                sock.bind(local)
            elif self.family == socket.AF_INET6:
                sock.bind(("::", 0))
            else:
                sock.bind(("0.0.0.0", 0))
        except BaseException:
            sock.close()
            raise
        protocol = _ClientSocket(self)
        await open_endpoint(self._loop, protocol, sock)
        old, self.socket = self.socket, protocol
        self.local_addr = format_address(sock.getsockname())
        if old is not None and old.transport is not None:
            # datagrams the server sent before it saw the new address still arrive
            # there: read them for a while (QUIC routes them by connection ID)
            self._lingering.append(old.transport)
            self._loop.call_later(OLD_SOCKET_LINGER, self._close_lingering, old.transport)
        if self._socket_paused:
            self.socket_paused(False)

    async def rebind(self, local: str | None = None) -> None:
        """Move this QUIC connection to a new local UDP socket (``local``:
        ``"host:port"`` to bind, else a fresh port): QUIC connection migration with a
        new connection ID; the server validates the new address (PATH_CHALLENGE).

        Raises:
            OSError: the new socket could not be bound.
            RuntimeError: the connection is not established or already ended.
        """
        if self._released or not self.handshake_done:
            raise RuntimeError(f"quic {self.remote_addr}: not connected")
        bind = None
        if local:
            host, port = parse_address(local)
            bind = (host or ("::" if self.family == socket.AF_INET6 else "0.0.0.0"), port)
        try:
            self.quic.change_connection_id()
        except ValueError as exc:  # the server has not issued a spare one (yet)
            raise RuntimeError(f"quic {self.remote_addr}: no unused connection ID "
                               f"from the server yet ({exc})") from None
        before = self.local_addr
        await self.open_socket(bind)
        self.quic.send_ping(self.rebinds)  # something to send from the new address
        self.rebinds += 1
        self.transmit()
        logger.info("quic path %s: moved from %s to %s", self.remote_addr, before,
                    self.local_addr)


async def connect_quic(address: str, *, server_name: str | None = None,
                       ca: str | None = None, insecure: bool | str = False,
                       alpn: str | None = None, local: str | None = None,
                       idle_timeout: float | str = IDLE_TIMEOUT, pin: str | None = None
                       ) -> QuicClientCarrier:
    """Open a QUIC carrier to ``"host:port"`` (the ``PathSpec("quic", ...)`` options:
    see :func:`client_configuration`; ``local``: the ``"host:port"`` to bind), once
    the QUIC handshake completed.

    Raises:
        HandshakeError: the QUIC/TLS handshake failed (a certificate that does not
            verify or match the pin, a wrong server name, no common ALPN...).
        OSError: the socket could not be made.
    """
    host, port = parse_address(address)
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host or "127.0.0.1", port, type=socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = infos[0]
    if server_name is None and host and not is_ip(host):
        server_name = host
    config = client_configuration(server_name, ca, flag(insecure), alpn,
                                  float(idle_timeout), pin)
    if server_name is None:
        config.verify_hostname = False  # an IP address: the CA check still holds
    quic = QuicConnection(configuration=config)
    carrier = QuicClientCarrier(loop, quic, family)
    bind = None
    if local:
        lhost, lport = parse_address(local)
        bind = (lhost or ("::" if family == socket.AF_INET6 else "0.0.0.0"), lport)
    await carrier.open_socket(bind)
    carrier.remote_addr = format_address(sockaddr)
    try:
        quic.connect(sockaddr[:2] if family == socket.AF_INET else sockaddr, loop.time())
        carrier.transmit()
        await carrier.ready
        carrier.verified = check_certificate(config, carrier.binding, pin)
    except BaseException:
        carrier.abort()
        raise
    return carrier
