"""asyncio's own faces over rendr: StreamReader/StreamWriter, Protocol/Transport, and
splicing a Conn with a TCP connection (a port forwarder), across a path kill."""

from __future__ import annotations

import asyncio
import hashlib
import os

import rendr
from rendr.testing.relay import TcpRelay

MIB = 1 << 20


async def _two_paths() -> tuple[rendr.Listener, list[TcpRelay], rendr.Dialer]:
    listener = await rendr.listen_tcp("127.0.0.1:0")
    port = listener.addrs[0][1]
    relays = [TcpRelay(("127.0.0.1", port)) for _ in range(2)]
    for relay in relays:
        await relay.start()
    dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{r.addr[1]}")
                                 for r in relays])
    return listener, relays, dialer


async def _teardown(listener: rendr.Listener, relays: list[TcpRelay]) -> None:
    await listener.close()
    for relay in relays:
        await relay.close()


def _relay_of_active(conn: rendr.Conn, relays: list[TcpRelay]) -> TcpRelay:
    stats = conn.stats()
    active = next(p for p in stats.paths if p.id == stats.active_path)
    return next(r for r in relays if active.remote_addr.endswith(f":{r.addr[1]}"))


async def test_stream_pair_echo_survives_a_path_kill() -> None:
    """open_connection/start_server: an echo server written with asyncio streams,
    4 MiB through it while the active path is reset; every byte back, in order."""
    listener, relays, dialer = await _two_paths()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert isinstance(writer.get_extra_info("rendr_conn"), rendr.Conn)
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await rendr.start_server(echo, listener)
    try:
        reader, writer = await rendr.open_connection(dialer)
        conn = writer.get_extra_info("rendr_conn")
        payload = os.urandom(4 * MIB)

        async def send() -> None:
            for i in range(0, len(payload), 256 * 1024):
                writer.write(payload[i:i + 256 * 1024])
                await writer.drain()
                if i == MIB:
                    _relay_of_active(conn, relays).kill()
            writer.write_eof()

        sender = asyncio.create_task(send())
        got = await asyncio.wait_for(reader.read(), 30)  # to EOF
        await sender
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        assert conn.migration_count >= 1
        writer.close()
        await writer.wait_closed()
    finally:
        server.cancel()
        await _teardown(listener, relays)


class _Collect(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        self.eof.set_result(None)
        return True  # keep the write side open (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def test_protocol_transport_half_close_and_clean_close() -> None:
    listener, relays, dialer = await _two_paths()
    servers: list[_Collect] = []

    def factory() -> _Collect:
        servers.append(_Collect())
        return servers[-1]

    task = await rendr.create_server(factory, listener)
    try:
        transport, client = await rendr.create_connection(_Collect, dialer)
        assert isinstance(transport, asyncio.Transport)
        transport.write(b"hello ")
        transport.write(b"world")
        transport.write_eof()  # half-close: the server may still answer
        for _ in range(100):
            if servers and servers[0].eof.done():
                break
            await asyncio.sleep(0.02)
        srv = servers[0]
        assert bytes(srv.data) == b"hello world"
        assert srv.transport is not None
        srv.transport.write(b"answer")
        srv.transport.close()  # after its bytes, a clean close
        assert await asyncio.wait_for(client.eof, 10) is None
        assert bytes(client.data) == b"answer"
        transport.close()
        assert await asyncio.wait_for(client.lost, 10) is None  # clean
        assert await asyncio.wait_for(srv.lost, 10) is None
    finally:
        task.cancel()
        await _teardown(listener, relays)


async def test_splice_forwards_both_ways_and_resets_on_failure() -> None:
    """A forwarder: TCP client -> splice -> rendr -> splice -> TCP server.  Bytes both
    ways with half-close; then a flow abort reaches the TCP client as a reset."""
    listener, relays, dialer = await _two_paths()
    tasks: set[asyncio.Task[None]] = set()

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # to the client's half-close
        writer.write(hashlib.sha256(data).digest())
        await writer.drain()
        writer.close()

    back = await asyncio.start_server(backend, "127.0.0.1", 0)
    back_port = back.sockets[0].getsockname()[1]

    async def serve_flows() -> None:
        async for conn in listener:
            r, w = await asyncio.open_connection("127.0.0.1", back_port)
            tasks.add(asyncio.create_task(splice_quiet(conn, r, w)))

    async def splice_quiet(conn: rendr.Conn, r: asyncio.StreamReader,
                           w: asyncio.StreamWriter) -> None:
        await rendr.splice(conn, r, w)

    conns: list[rendr.Conn] = []

    async def front(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = await dialer.dial()
        conns.append(conn)
        await rendr.splice(conn, reader, writer)

    front_srv = await asyncio.start_server(front, "127.0.0.1", 0)
    front_port = front_srv.sockets[0].getsockname()[1]
    acceptor = asyncio.create_task(serve_flows())
    try:
        payload = os.urandom(2 * MIB)
        r, w = await asyncio.open_connection("127.0.0.1", front_port)
        w.write(payload)
        await w.drain()
        w.write_eof()
        assert await asyncio.wait_for(r.read(), 20) == hashlib.sha256(payload).digest()
        w.close()

        # a flow that fails reaches the TCP side as a reset, not a clean EOF
        r, w = await asyncio.open_connection("127.0.0.1", front_port)
        w.write(b"x")
        await w.drain()
        for _ in range(100):
            if len(conns) == 2:
                break
            await asyncio.sleep(0.02)
        conns[1].abort(reason="test")
        try:
            data = await asyncio.wait_for(r.read(), 10)
            reset = False
        except ConnectionResetError:
            reset = True
            data = b""
        assert reset, f"expected a reset, got a clean EOF after {data!r}"
        w.close()
    finally:
        acceptor.cancel()
        for task in tasks:
            task.cancel()
        front_srv.close()
        back.close()
        await _teardown(listener, relays)
