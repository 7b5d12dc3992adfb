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
from typing import Any

from ..carriers.address import parse_address
from ..carriers.base import Carrier
from ..carriers.streams import StreamsCarrier
from ..carriers.tcp import TcpCarrier
from ..config import FlowConfig
from ..core.flow import Flow
from ..core.types import Mode, PathStatus, Role, State
from ..core.wire import PREFACE, VERSION, FrameType, Hello, Join, JoinAck, Kind, Result
from ..errors import ConnClosed, HandshakeError, ProtocolError
from ..spec import ListenSpec
from .conn import Conn
from .handshake import HandshakeCollector

__all__ = ["Listener", "listen", "listen_tcp"]

logger = logging.getLogger("rendr.listener")


class Listener:
    """Accepts rendr connections on one or more addresses (see :func:`listen`).

    Use ``await accept()`` or ``async for conn in listener``.
    """

    def __init__(self, config: FlowConfig, backlog: int = 128) -> None:
        self.config = config
        self._loop = asyncio.get_running_loop()
        self._servers: list[asyncio.AbstractServer] = []
        self._flows: dict[bytes, Conn] = {}
        self._join_waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._queue: asyncio.Queue[Conn | None] = asyncio.Queue(backlog)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.addrs: list[tuple[str, int]] = []

    async def _bind(self, spec: ListenSpec) -> None:
        if spec.transport != "tcp":
            raise ValueError(f"cannot listen on transport {spec.transport!r} (only 'tcp'; "
                             "other carriers can be handed in with handle_stream())")
        host, port = parse_address(spec.address)
        server = await self._loop.create_server(
            lambda: TcpCarrier(on_connect=self._on_carrier), host or None, port,
            reuse_address=True)
        self._servers.append(server)
        name = server.sockets[0].getsockname()
        self.addrs.append((name[0], name[1]))

    def _on_carrier(self, carrier: Carrier) -> None:
        if self._closed:
            carrier.abort()
            return
        task = self._loop.create_task(self._handshake(carrier))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def handle_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      transport: str = "stream") -> None:
        """Serve a carrier that the embedder accepted itself (TLS, SSH channel, relay...)."""
        self._on_carrier(StreamsCarrier(reader, writer, transport=transport))

    async def _handshake(self, carrier: Carrier) -> None:
        collector = HandshakeCollector(self._loop)
        carrier.set_sink(collector)
        try:
            ftype, body = await asyncio.wait_for(collector.future,
                                                 self.config.handshake_timeout)
            if ftype == FrameType.HELLO:
                self._on_hello(carrier, collector, Hello.decode(body))
            elif ftype == FrameType.JOIN:
                await self._on_join(carrier, collector, Join.decode(body))
            else:
                raise ProtocolError(f"carrier opened with frame type 0x{ftype:02x}")
        except HandshakeError as exc:
            if exc.peer_version is not None:
                carrier.write([PREFACE])  # let the peer see which version we speak
            logger.info("rejected carrier from %s: %s", carrier.remote_addr, exc)
            carrier.close()
        except (ProtocolError, asyncio.TimeoutError) as exc:
            logger.info("rejected carrier from %s: %r", carrier.remote_addr, exc)
            carrier.abort()

    def _on_hello(self, carrier: Carrier, collector: HandshakeCollector, hello: Hello) -> None:
        cfg = self.config
        result = Result.OK
        if self._closed:
            result = Result.BUSY
        elif hello.mode != Mode.PRIME:
            result = Result.BAD_MODE
        elif hello.kind != Kind.STREAM:
            result = Result.BAD_KIND
        elif hello.flow_id in self._flows:
            result = Result.DUPLICATE_PATH
        elif self._queue.full():
            result = Result.BUSY
        ack = Hello(hello.flow_id, hello.path_id, hello.mode, hello.kind, 0, cfg.recv_window,
                    result)
        carrier.write([PREFACE, ack.encode(ack=True)])
        if result != Result.OK:
            logger.info("refused flow %s: %s", hello.flow_id.hex()[:8], result.name)
            carrier.close()
            return
        flow = Flow(role=Role.LISTENER, flow_id=hello.flow_id, mode=Mode(hello.mode),
                    config=cfg, now=self._loop.time(), peer_window=hello.recv_window)
        conn = Conn(flow, self._loop)
        flow_id = hello.flow_id
        self._flows[flow_id] = conn
        conn._close_hooks.append(lambda: self._forget(flow_id))
        conn._attach(hello.path_id, carrier, collector)
        for waiter in self._join_waiters.pop(flow_id, []):
            if not waiter.done():
                waiter.set_result(None)
        self._queue.put_nowait(conn)

    def _forget(self, flow_id: bytes) -> None:
        self._flows.pop(flow_id, None)

    async def _on_join(self, carrier: Carrier, collector: HandshakeCollector,
                       join: Join) -> None:
        conn = self._flows.get(join.flow_id)
        if conn is None:
            # the JOIN may have overtaken its flow's HELLO: wait a little for it
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._join_waiters.setdefault(join.flow_id, []).append(waiter)
            try:
                await asyncio.wait_for(waiter, self.config.join_wait)
            except asyncio.TimeoutError:
                pass
            finally:
                waiters = self._join_waiters.get(join.flow_id, [])
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    self._join_waiters.pop(join.flow_id, None)
            conn = self._flows.get(join.flow_id)
        flow = conn._flow if conn is not None else None
        if conn is None or flow is None:
            result = Result.UNKNOWN_FLOW
        elif flow.state is State.CLOSED:
            result = Result.FLOW_CLOSED
        elif join.path_id in flow.paths:
            result = Result.DUPLICATE_PATH
        elif sum(p.status is PathStatus.UP for p in flow.paths.values()) >= self.config.max_paths:
            result = Result.TOO_MANY_PATHS
        else:
            result = Result.OK
        carrier.write([PREFACE, JoinAck(join.flow_id, join.path_id, result).encode()])
        if result != Result.OK or conn is None:
            logger.info("refused JOIN of path %d to flow %s: %s", join.path_id,
                        join.flow_id.hex()[:8], result.name)
            carrier.close()
            return
        conn._attach(join.path_id, carrier, collector)

    async def accept(self) -> Conn:
        """Wait for the next new connection.

        Raises:
            ConnClosed: the listener is closed.
        """
        if self._closed and self._queue.empty():
            raise ConnClosed("listener is closed")
        conn = await self._queue.get()
        if conn is None:
            self._queue.put_nowait(None)  # wake other acceptors too
            raise ConnClosed("listener is closed")
        return conn

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
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        while not self._queue.empty():
            conn = self._queue.get_nowait()
            if conn is not None:
                conn.abort(reason="listener closed")
        self._queue.put_nowait(None)
        for server in self._servers:
            await server.wait_closed()

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<rendr.Listener {self.addrs} v{VERSION} flows={len(self._flows)}>"


async def listen(*specs: ListenSpec, config: FlowConfig | None = None, backlog: int = 128,
                 **knobs: Any) -> Listener:
    """Listen on every spec, with one bridge table (so one flow can span them all).

    Keyword arguments override :class:`~rendr.FlowConfig` fields.
    """
    if not specs:
        raise ValueError("listen() needs at least one ListenSpec")
    cfg = (config or FlowConfig()).replace(**knobs) if knobs else (config or FlowConfig())
    listener = Listener(cfg, backlog)
    try:
        for spec in specs:
            await listener._bind(spec)
    except BaseException:
        await listener.close()
        raise
    return listener


async def listen_tcp(address: str, *, config: FlowConfig | None = None, backlog: int = 128,
                     **knobs: Any) -> Listener:
    """Listen for rendr connections over TCP on ``"host:port"``."""
    return await listen(ListenSpec("tcp", address), config=config, backlog=backlog, **knobs)
