"""The listener: accepts carriers, runs their handshake, and pairs them with flows.

One bridge table (flow id → connection) serves every address of a listener, so
one flow can have paths on several of them.  A HELLO creates a flow and queues
its connection for :meth:`Listener.accept`; a JOIN attaches the carrier to the
flow it names.  A JOIN may overtake its flow's HELLO (they travel on different
carriers): it is held for ``join_wait`` seconds before being refused.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..carriers.base import Carrier, CarrierServer, get_listen_factory
from ..carriers.streams import StreamsCarrier
from ..config import FlowConfig
from ..core.events import Event, EventKind
from ..core.memory import MemoryBudget
from ..core.session import ListenerHandshake
from ..core.wire import PREFACE, VERSION, FrameType, Join, Kind
from ..errors import ConnClosed, HandshakeError, ProtocolError, RendrError
from ..keys import check_authentication
from ..spec import ListenSpec, PathSpec
from .conn import Conn
from .driver import EventCallback, FlowDriver
from .handshake import HandshakeCollector
from .packetconn import PacketConn
from .timeouts import wait_for

__all__ = ["Listener", "listen", "listen_quic", "listen_quic_packet", "listen_tcp"]

logger = logging.getLogger("rendr.listener")

_MAX_EARLY = 64 * 1024  # bytes a carrier may send after its first frame, before our answer


def _host_of(address: str) -> str:
    """The host part of ``"host:port"`` / ``"[v6]:port"`` (the whole text otherwise)."""
    host, sep, port = address.rpartition(":")
    return host.strip("[]") if sep and port.isdigit() else address


class _Accepted:
    """The listener as the :class:`~rendr.aio.driver.PathOwner` of one accepted flow."""

    def __init__(self, listener: Listener, flow_id: bytes) -> None:
        self._listener = listener
        self._flow_id = flow_id

    def on_event(self, event: Event) -> None:
        if event.kind is EventKind.CONFIRMED:
            self._listener._confirmed(self._flow_id)
        elif event.kind is EventKind.CLOSED:
            self._listener._forget(self._flow_id)

    async def add_path(self, spec: PathSpec) -> int:
        raise RendrError("only the dialer opens paths (the listener never dials)")

    def forget(self, path_id: int) -> None:
        pass  # the listener never re-dials

    def stop(self) -> None:
        pass


class Listener:
    """Accepts rendr connections on one or more addresses (see :func:`listen`).

    Use ``await accept()`` or ``async for conn in listener``.
    """

    def __init__(self, config: FlowConfig, backlog: int = 128,
                 on_event: EventCallback | None = None, *, psk: bytes | None = None,
                 server_key: X25519PrivateKey | None = None) -> None:
        self._on_event = on_event
        self.config = config
        self._loop = asyncio.get_running_loop()
        self._servers: list[CarrierServer] = []
        self._session = ListenerHandshake(config, psk=psk, static_key=server_key)
        self._drivers: dict[bytes, FlowDriver] = {}
        self._join_waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._queue: asyncio.Queue[Conn | None] = asyncio.Queue(backlog)
        self._packet_queue: asyncio.Queue[PacketConn | None] = asyncio.Queue(backlog)
        # new flows until their dialer confirms
        self._unconfirmed: dict[bytes, Conn | PacketConn] = {}
        self._backlog = backlog
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.addrs: list[tuple[str, int]] = []

    async def _bind(self, spec: ListenSpec) -> None:
        listen = get_listen_factory(spec.transport)
        server, addr = await listen(spec.address, self._on_carrier, self._backlog,
                                    **spec.options)
        self._servers.append(server)
        self.addrs.append(addr)

    def _on_carrier(self, carrier: Carrier) -> None:
        source = _host_of(carrier.remote_addr)
        if self._closed or not self._session.admit(source):
            carrier.abort()
            return
        task = self._loop.create_task(self._handshake(carrier, source))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def handle_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      transport: str = "stream") -> None:
        """Serve a carrier that the embedder accepted itself (TLS, SSH channel, relay...)."""
        self._on_carrier(StreamsCarrier(reader, writer, transport=transport))

    async def _handshake(self, carrier: Carrier, source: str) -> None:
        try:
            await self._answer(carrier, source)
        finally:
            self._session.handshake_done(source)

    async def _answer(self, carrier: Carrier, source: str) -> None:
        # a dialer waits for our answer before sending more: bound what may come early
        collector = HandshakeCollector(self._loop, max_leftover=_MAX_EARLY)
        carrier.set_sink(collector)
        try:
            ftype, body = await wait_for(collector.future, self.config.first_frame_timeout)
            if ftype == FrameType.JOIN and not self._session.knows(Join.decode(body).flow_id):
                await self._wait_for_hello(Join.decode(body).flow_id)
            decision = self._session.decide(ftype, body, self._loop.time(),
                                            queue_full=self._queue.full(), source=source,
                                            binding=carrier.binding)
        except HandshakeError as exc:
            if exc.peer_version is not None:
                carrier.write([PREFACE])  # let the peer see which version we speak
            logger.info("rejected carrier from %s: %s", carrier.remote_addr, exc)
            carrier.close()
            return
        except (ProtocolError, asyncio.TimeoutError) as exc:
            logger.info("rejected carrier from %s: %r", carrier.remote_addr, exc)
            carrier.abort()
            return
        carrier.write(decision.reply)
        flow = decision.flow
        if flow is None:
            carrier.close()
            return
        if decision.new:
            driver = FlowDriver(flow, self._loop, _Accepted(self, flow.flow_id))
            if self._on_event is not None:  # before the first path: it sees PATH_UP
                driver.callbacks.append(self._on_event)
            self._drivers[flow.flow_id] = driver
            driver.attach(decision.path_id, carrier, collector)
            for waiter in self._join_waiters.pop(flow.flow_id, []):
                if not waiter.done():
                    waiter.set_result(None)
            # accept() gets it once the dialer proved its keys (EventKind.CONFIRMED):
            # a replayed or half-open HELLO never reaches the application
            self._unconfirmed[flow.flow_id] = (
                PacketConn(driver) if flow.kind is Kind.PACKET else Conn(driver))
        else:
            self._drivers[flow.flow_id].attach(decision.path_id, carrier, collector)

    async def _wait_for_hello(self, flow_id: bytes) -> None:
        """A JOIN may overtake its flow's HELLO: wait (``join_wait``) for the flow."""
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._join_waiters.setdefault(flow_id, []).append(waiter)
        try:
            await wait_for(waiter, self.config.join_wait)
        except asyncio.TimeoutError:
            pass
        finally:
            waiters = self._join_waiters.get(flow_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._join_waiters.pop(flow_id, None)

    def _confirmed(self, flow_id: bytes) -> None:
        """The dialer of a new flow proved its keys: hand the flow to ``accept()`` (or
        abort it if the application has let ``backlog`` flows wait already).  Flows
        awaiting confirmation do not take room in the accept queue (``max_flows`` and
        the per-source caps bound them), or a HELLO flood would fill it."""
        self._session.confirmed(flow_id)
        conn = self._unconfirmed.pop(flow_id, None)
        if conn is None or self._closed:
            return
        queue: asyncio.Queue[Any] = (
            self._packet_queue if isinstance(conn, PacketConn) else self._queue)
        if queue.full():
            logger.info("accept queue full (%d): flow %s aborted", self._backlog,
                        flow_id.hex()[:8])
            conn.abort(reason="accept queue full")
            return
        queue.put_nowait(conn)

    def _forget(self, flow_id: bytes) -> None:
        self._session.forget(flow_id)
        self._drivers.pop(flow_id, None)
        self._unconfirmed.pop(flow_id, None)

    async def accept(self) -> Conn:
        """Wait for the next new connection (a byte stream; packet flows go to
        :meth:`accept_packet`).

        Raises:
            ConnClosed: the listener is closed.
        """
        return await _next(self._queue, self._closed)

    async def accept_packet(self) -> PacketConn:
        """Wait for the next new packet connection (``Dialer.dial_packet()``).

        Raises:
            ConnClosed: the listener is closed.
        """
        return await _next(self._packet_queue, self._closed)

    @property
    def memory(self) -> MemoryBudget:
        """The receive-memory budget this listener's flows share (``promised`` bytes
        now, out of ``limit``; see ``FlowConfig.listener_memory``)."""
        return self._session.memory

    def __aiter__(self) -> Listener:
        return self

    async def __anext__(self) -> Conn:
        try:
            return await self.accept()
        except ConnClosed:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        """Stop listening.  Accepted connections stay open; queued ones are aborted."""
        if self._closed:
            return
        self._closed = True
        self._session.closed = True
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        queues: tuple[asyncio.Queue[Any], ...] = (self._queue, self._packet_queue)
        for queue in queues:
            while not queue.empty():
                conn = queue.get_nowait()
                if conn is not None:
                    conn.abort(reason="listener closed")
            queue.put_nowait(None)
        for waiting in list(self._unconfirmed.values()):
            waiting.abort(reason="listener closed")
        self._unconfirmed.clear()
        for server in self._servers:
            await server.wait_closed()

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<rendr.Listener {self.addrs} v{VERSION} flows={len(self._drivers)}>"


_T = TypeVar("_T")


async def _next(queue: asyncio.Queue[_T | None], closed: bool) -> _T:
    if closed and queue.empty():
        raise ConnClosed("listener is closed")
    conn = await queue.get()
    if conn is None:
        queue.put_nowait(None)  # wake other acceptors too
        raise ConnClosed("listener is closed")
    return conn


async def listen(*specs: ListenSpec, config: FlowConfig | None = None, backlog: int = 128,
                 on_event: EventCallback | None = None, psk: bytes | None = None,
                 server_key: X25519PrivateKey | bytes | None = None,
                 **knobs: Any) -> Listener:
    """Listen on every spec, with one bridge table (so one flow can span them all).

    ``on_event`` is called with every :class:`~rendr.Event` of every accepted flow, from
    its first PATH_UP on.  ``psk``: a pre-shared key every dialer must hold.
    ``server_key``: this listener's static X25519 private key (32 raw bytes or a
    ``cryptography`` key; :func:`rendr.generate_server_key`), for dialers that pin
    its public half.  Keyword arguments override :class:`~rendr.FlowConfig` fields.
    """
    if not specs:
        raise ValueError("listen() needs at least one ListenSpec")
    cfg = (config or FlowConfig()).replace(**knobs) if knobs else (config or FlowConfig())
    if isinstance(server_key, (bytes, bytearray)):
        server_key = X25519PrivateKey.from_private_bytes(bytes(server_key))
    check_authentication("listener", psk, server_key, cfg.records)
    listener = Listener(cfg, backlog, on_event, psk=psk, server_key=server_key)
    try:
        for spec in specs:
            await listener._bind(spec)
    except BaseException:
        await listener.close()
        raise
    return listener


async def listen_tcp(address: str, *, config: FlowConfig | None = None, backlog: int = 128,
                     on_event: EventCallback | None = None, psk: bytes | None = None,
                     server_key: X25519PrivateKey | bytes | None = None,
                     **knobs: Any) -> Listener:
    """Listen for rendr connections over TCP on ``"host:port"`` (see :func:`listen`)."""
    return await listen(ListenSpec("tcp", address), config=config, backlog=backlog,
                        on_event=on_event, psk=psk, server_key=server_key, **knobs)


async def listen_udpflow(*addresses: str, config: FlowConfig | None = None,
                         backlog: int = 128, on_event: EventCallback | None = None,
                         psk: bytes | None = None,
                         server_key: X25519PrivateKey | bytes | None = None,
                         **knobs: Any) -> Listener:
    """Listen for rendr connections over plain UDP (the ``udpflow`` carrier) on each
    ``"host:port"``, one socket per address for every flow (see :func:`listen`)."""
    specs = [ListenSpec("udpflow", a) for a in addresses]
    return await listen(*specs, config=config, backlog=backlog, on_event=on_event,
                        psk=psk, server_key=server_key, **knobs)


class PacketListener:
    """A listener for packet connections (:func:`listen_udpflow_packet`): ``accept()``
    returns :class:`~rendr.PacketConn`; ``async for pc in listener`` works too.

    Attributes:
        listener: the underlying :class:`Listener` (stream flows too: its ``accept()``).
    """

    def __init__(self, listener: Listener) -> None:
        self.listener = listener

    @property
    def addrs(self) -> list[tuple[str, int]]:
        """The bound addresses (``(host, port)``), in the order given."""
        return self.listener.addrs

    async def accept(self) -> PacketConn:
        """Wait for the next packet connection (``ConnClosed`` once closed)."""
        return await self.listener.accept_packet()

    accept_packet = accept

    def __aiter__(self) -> PacketListener:
        return self

    async def __anext__(self) -> PacketConn:
        try:
            return await self.accept()
        except ConnClosed:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        """Stop listening (accepted connections stay open)."""
        await self.listener.close()

    async def __aenter__(self) -> PacketListener:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<rendr.PacketListener {self.addrs}>"


async def listen_udpflow_packet(*addresses: str, **kwargs: Any) -> PacketListener:
    """Listen for packet connections over plain UDP on each ``"host:port"``
    (arguments as :func:`listen_udpflow`)::

        pln = await rendr.listen_udpflow_packet("0.0.0.0:5555")
        pc = await pln.accept()
    """
    return PacketListener(await listen_udpflow(*addresses, **kwargs))


def quic_specs(addresses: tuple[str, ...], tls: str | tuple[str, str] | None,
               alpn: str | None = None) -> list[ListenSpec]:
    """``ListenSpec("quic", ...)`` for each address, with the TLS options."""
    options: dict[str, str | int] = {}
    if isinstance(tls, tuple):
        options["certfile"], options["keyfile"] = tls
    elif tls is not None:
        options["certfile"] = tls
    if alpn is not None:
        options["alpn"] = alpn
    return [ListenSpec("quic", a, options=dict(options)) for a in addresses]


async def listen_quic(*addresses: str, tls: str | tuple[str, str] | None = None,
                      alpn: str | None = None, config: FlowConfig | None = None,
                      backlog: int = 128, on_event: EventCallback | None = None,
                      psk: bytes | None = None,
                      server_key: X25519PrivateKey | bytes | None = None,
                      **knobs: Any) -> Listener:
    """Listen for rendr connections over QUIC (the ``quic`` carrier, needs ``qh3``) on
    each ``"host:port"``, one UDP socket per address for every flow (see
    :func:`listen`).  Stream flows ride a QUIC stream, packet flows QUIC DATAGRAM
    frames.

    Args:
        tls: a PEM file with the certificate chain and key, or ``(certfile,
            keyfile)``; None: a self-signed development certificate (a warning is
            logged; dialers then need ``options={"insecure": "1"}``).
        alpn: the ALPN protocol to accept (default ``"rendr/1"``).
    """
    return await listen(*quic_specs(addresses, tls, alpn), config=config, backlog=backlog,
                        on_event=on_event, psk=psk, server_key=server_key, **knobs)


async def listen_quic_packet(*addresses: str, **kwargs: Any) -> PacketListener:
    """Listen for packet connections over QUIC DATAGRAM frames on each
    ``"host:port"`` (arguments as :func:`listen_quic`)::

        pln = await rendr.listen_quic_packet("0.0.0.0:5556")
        pc = await pln.accept()
    """
    return PacketListener(await listen_quic(*addresses, **kwargs))
