"""rendr where asyncio programs already live: transports, streams, and splicing.

- :class:`ConnTransport`: an :class:`asyncio.Transport` over a :class:`~rendr.Conn`,
  so any :class:`asyncio.Protocol`-based library runs on a migrating connection
  (:func:`create_connection`, :func:`create_server`).
- :func:`open_connection` / :func:`start_server`: the standard
  :class:`asyncio.StreamReader` / :class:`asyncio.StreamWriter` pair over rendr
  (``writer.get_extra_info("rendr_conn")`` is the Conn, with its admin surface).
- :func:`splice`: pump a Conn and any asyncio stream pair into each other (both
  directions, half-close passed on, a failed flow reaching the other side as a
  reset and a reset as an abort) — what a port forwarder is made of.

Everything here is a thin layer over the public Conn API: no second implementation of
the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import RendrError
from .conn import Conn
from .dialer import Dialer
from .listener import Listener

__all__ = ["ConnTransport", "create_connection", "create_server", "open_connection",
           "splice", "start_server"]

logger = logging.getLogger("rendr.streams")

HIGH_WATER = 256 * 1024
"""Bytes a :class:`ConnTransport` buffers before it asks its protocol to pause writing."""
READ_SIZE = 256 * 1024


class ConnTransport(asyncio.Transport):
    """An asyncio transport whose bytes travel over a rendr :class:`~rendr.Conn`.

    ``write()`` never blocks: bytes are buffered and written to the Conn in order by a
    task; past ``HIGH_WATER`` buffered bytes the protocol's ``pause_writing()`` is
    called (and ``resume_writing()`` below a quarter of it).  Reading calls
    ``data_received`` / ``eof_received`` as the Conn delivers; ``pause_reading()``
    stops reading (the Conn's flow control then holds the peer back).  The flow's
    failure reaches ``connection_lost(exc)``; a clean close ``connection_lost(None)``.
    """

    def __init__(self, conn: Conn, protocol: asyncio.Protocol) -> None:
        super().__init__({"rendr_conn": conn})
        self._conn = conn
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self._out: deque[bytes] = deque()
        self._buffered = 0
        self._paused_writing = False
        self._eof_asked = False
        self._closing = False
        self._lost = False
        self._reading = asyncio.Event()
        self._reading.set()
        self._wake_writer = asyncio.Event()
        self._tasks = {self._loop.create_task(self._read_loop()),
                       self._loop.create_task(self._write_loop())}
        protocol.connection_made(self)

    # ---------------------------------------------------------------- transport API

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in ("peername", "sockname"):
            return self._address(name)
        return super().get_extra_info(name, default)

    def _address(self, name: str) -> Any:
        stats = self._conn.stats()
        for path in stats.paths:
            if path.id == stats.active_path:
                return path.remote_addr if name == "peername" else path.local_addr
        return None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof_asked or self._closing:
            raise RuntimeError("write after write_eof() or close()")
        if not data:
            return
        self._out.append(bytes(data))
        self._buffered += len(data)
        self._wake_writer.set()
        if not self._paused_writing and self._buffered > HIGH_WATER:
            self._paused_writing = True
            self._protocol.pause_writing()

    def write_eof(self) -> None:
        self._eof_asked = True
        self._wake_writer.set()

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return self._buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return HIGH_WATER // 4, HIGH_WATER

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Write what is buffered, then close the flow gracefully."""
        if not self._closing:
            self._closing = True
            self._wake_writer.set()

    def abort(self) -> None:
        """End the flow at once (the peer sees an abort); buffered bytes are dropped."""
        self._closing = True
        self._out.clear()
        self._buffered = 0
        self._conn.abort(reason="transport aborted")
        self._connection_lost(None)

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    def is_reading(self) -> bool:
        return self._reading.is_set()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        if not isinstance(protocol, asyncio.Protocol):
            raise TypeError("a ConnTransport runs an asyncio.Protocol")
        self._protocol = protocol

    def get_protocol(self) -> asyncio.Protocol:
        return self._protocol

    # ---------------------------------------------------------------- pumps

    async def _read_loop(self) -> None:
        protocol = self._protocol
        try:
            while True:
                await self._reading.wait()
                data = await self._conn.read(READ_SIZE)
                if not data:
                    if not protocol.eof_received():
                        self.close()
                    return
                protocol.data_received(data)
        except (RendrError, OSError) as exc:
            # after our own close() the Conn refuses reads: that is not a failure
            self._connection_lost(None if self._closing and not self._lost else exc)

    async def _write_loop(self) -> None:
        conn = self._conn
        try:
            while True:
                while self._out:
                    chunk = self._out.popleft()
                    await conn.write(chunk)
                    self._buffered -= len(chunk)
                    if self._paused_writing and self._buffered <= HIGH_WATER // 4:
                        self._paused_writing = False
                        self._protocol.resume_writing()
                if self._closing:
                    await conn.close()
                    self._connection_lost(None)
                    return
                if self._eof_asked:
                    await conn.write_eof()
                    self._eof_asked = False  # done; writing stays refused
                    self._out.clear()
                self._wake_writer.clear()
                await self._wake_writer.wait()
        except (RendrError, OSError) as exc:
            self._connection_lost(exc)

    def _connection_lost(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._loop.call_soon(self._protocol.connection_lost,
                             exc if isinstance(exc, Exception) else None)


async def create_connection(protocol_factory: Callable[[], asyncio.Protocol],
                            dialer: Dialer) -> tuple[ConnTransport, asyncio.Protocol]:
    """Dial a flow and run ``protocol_factory()``'s protocol on it (as
    ``loop.create_connection`` does on TCP)."""
    conn = await dialer.dial()
    protocol = protocol_factory()
    return ConnTransport(conn, protocol), protocol


async def create_server(protocol_factory: Callable[[], asyncio.Protocol],
                        listener: Listener) -> asyncio.Task[None]:
    """Run ``protocol_factory()``'s protocol on every flow ``listener`` accepts (as
    ``loop.create_server`` does on TCP).  Returns the accepting task: cancel it, or
    close the listener, to stop accepting."""
    async def serve() -> None:
        async for conn in listener:
            ConnTransport(conn, protocol_factory())

    return asyncio.get_running_loop().create_task(serve())


async def open_connection(dialer: Dialer, *, limit: int = 2**16
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Dial a flow and return the standard asyncio stream pair over it (as
    :func:`asyncio.open_connection` does on TCP)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await create_connection(lambda: protocol, dialer)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


ClientConnected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None]


async def start_server(client_connected_cb: ClientConnected, listener: Listener, *,
                       limit: int = 2**16) -> asyncio.Task[None]:
    """Call ``client_connected_cb(reader, writer)`` for every flow ``listener`` accepts
    (as :func:`asyncio.start_server` does on TCP).  Returns the accepting task: cancel
    it, or close the listener, to stop."""
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.Protocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return await create_server(factory, listener)


_LINGER_RST = struct.pack("ii", 1, 0)


async def splice(conn: Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                 ) -> None:
    """Pump ``conn`` and a stream pair into each other until both directions end.

    EOF on either side becomes a half-close of the other (``write_eof``); when the flow
    fails, the stream's socket is reset (``SO_LINGER`` 0), not closed with a FIN, so the
    application behind it sees the failure; when the stream side is reset, the flow is
    aborted.  A clean end closes both."""
    failed: BaseException | None = None

    async def to_conn() -> None:
        while data := await reader.read(READ_SIZE):
            await conn.write(data)
        await conn.write_eof()

    async def to_stream() -> None:
        # uncopied views: the transport sends or buffers them (a view it keeps keeps its
        # receive memory from reuse); dropped before the next read
        while view := await conn.read_view(READ_SIZE):
            writer.write(view)
            del view
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    tasks = [asyncio.ensure_future(to_conn()), asyncio.ensure_future(to_stream())]
    try:
        for done in asyncio.as_completed(tasks):
            try:
                await done
            except RendrError as exc:  # the flow failed: reset the stream side
                failed = exc
                _reset(writer)
                break
            except OSError as exc:  # the stream side failed: abort the flow
                failed = exc
                conn.abort(reason=f"forwarded connection failed: {exc}")
                break
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, RendrError, OSError):
            await asyncio.gather(*tasks, return_exceptions=True)
    if failed is None:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        with contextlib.suppress(RendrError):
            await conn.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    writer.transport.abort()
