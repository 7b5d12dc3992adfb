"""Tests for rendr.testing.relay.TcpRelay (the userspace TCP fault relay)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from rendr.testing.relay import TcpRelay

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A loopback asyncio server that remembers (and finally closes) its connections."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.errors: list[BaseException] = []
        self.accepted = 0
        self.tasks: set[asyncio.Task[Any]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self._handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self.errors.append(exc)
        finally:
            writer.close()

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in self.writers:
            w.close()
        # closing the writers ends the handlers; cancel only as a last resort
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=5)
            for t in pending:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self._server.wait_closed()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.write_eof()


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(1 << 20):
        pass


@pytest.fixture
async def echo_server() -> AsyncIterator[Server]:
    srv = Server(_echo)
    await srv.start()
    yield srv
    await srv.close()


@pytest.fixture
async def echo_relay(echo_server: Server) -> AsyncIterator[TcpRelay]:
    assert echo_server._server is not None
    host, port = echo_server._server.sockets[0].getsockname()[:2]
    async with TcpRelay((host, port)) as relay:
        yield relay


class Client:
    """Async context manager for a stream connection that is always closed."""

    def __init__(self, addr: tuple[str, int]) -> None:
        self.addr = addr

    async def __aenter__(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.reader, self.writer = await asyncio.open_connection(*self.addr)
        return self.reader, self.writer

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


async def _roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> float:
    t0 = time.monotonic()
    writer.write(payload)
    await writer.drain()
    got = await asyncio.wait_for(reader.readexactly(len(payload)), 5)
    assert got == payload
    return time.monotonic() - t0


async def _assert_silent(reader: asyncio.StreamReader, seconds: float) -> None:
    """Nothing (not even EOF) arrives within *seconds*."""
    with pytest.raises(asyncio.TimeoutError):
        data = await asyncio.wait_for(reader.read(100), seconds)
        pytest.fail(f"expected silence, got {data!r}")
    assert not reader.at_eof()


# --------------------------------------------------------------------------- basics


async def test_forward_echo(echo_relay: TcpRelay) -> None:
    host, port = echo_relay.addr
    assert host == "127.0.0.1" and port != 0
    async with Client(echo_relay.addr) as (reader, writer):
        await _roundtrip(reader, writer, b"hello relay")
        assert echo_relay.connections == 1
        # half-close is relayed: echo server answers with EOF
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b""
    for _ in range(100):
        if echo_relay.connections == 0:
            break
        await asyncio.sleep(0.01)
    assert echo_relay.connections == 0
    assert echo_relay.total_connections == 1


async def test_bulk_transfer_integrity(echo_relay: TcpRelay) -> None:
    size = 16 * 1024 * 1024
    payload = os.urandom(size)
    async with Client(echo_relay.addr) as (reader, writer):

        async def send() -> None:
            view = memoryview(payload)
            for off in range(0, size, 1 << 20):
                writer.write(view[off : off + (1 << 20)])
                await writer.drain()
            writer.write_eof()

        async def recv() -> bytes:
            h = hashlib.sha256()
            n = 0
            while chunk := await reader.read(1 << 20):
                h.update(chunk)
                n += len(chunk)
            assert n == size
            return h.digest()

        _, digest = await asyncio.wait_for(asyncio.gather(send(), recv()), 30)
    assert digest == hashlib.sha256(payload).digest()


async def test_upstream_refused_closes_client() -> None:
    # grab a free port, then close it so nothing listens there
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with TcpRelay(("127.0.0.1", port)) as relay, Client(relay.addr) as (reader, _w):
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(100), 5)


# --------------------------------------------------------------------------- blackhole


async def test_blackhole_holds_then_forward_delivers(echo_relay: TcpRelay) -> None:
    async with Client(echo_relay.addr) as (reader, writer):
        await _roundtrip(reader, writer, b"before")
        echo_relay.blackhole()
        assert echo_relay.blackholed
        writer.write(b"held-bytes")
        await writer.drain()
        await _assert_silent(reader, 0.3)
        echo_relay.forward()
        got = await asyncio.wait_for(reader.readexactly(len(b"held-bytes")), 5)
        assert got == b"held-bytes"
        await _roundtrip(reader, writer, b"after")


async def test_blackhole_applies_to_new_connections(
    echo_server: Server, echo_relay: TcpRelay
) -> None:
    echo_relay.blackhole()
    async with Client(echo_relay.addr) as (reader, writer):
        writer.write(b"ping")
        await writer.drain()
        await _assert_silent(reader, 0.3)
        assert echo_server.accepted == 0  # upstream not even connected
        echo_relay.forward()
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
        assert echo_server.accepted == 1


async def test_blackhole_applies_to_delayed_bytes_in_flight(echo_relay: TcpRelay) -> None:
    echo_relay.set_delay(0.2)
    async with Client(echo_relay.addr) as (reader, writer):
        writer.write(b"in-flight")
        await writer.drain()
        await asyncio.sleep(0.05)  # chunk is now queued inside the relay
        echo_relay.blackhole()
        await _assert_silent(reader, 0.6)
        echo_relay.forward()
        assert await asyncio.wait_for(reader.readexactly(9), 5) == b"in-flight"


# --------------------------------------------------------------------------- kill


async def test_kill_resets_both_sides(echo_server: Server, echo_relay: TcpRelay) -> None:
    async with Client(echo_relay.addr) as (reader, writer):
        await _roundtrip(reader, writer, b"x")
        assert echo_relay.connections == 1
        echo_relay.kill()
        with pytest.raises(ConnectionResetError):
            data = await asyncio.wait_for(reader.read(100), 5)
            pytest.fail(f"expected RST, got {data!r} (clean EOF)" if not data else repr(data))
    assert echo_relay.connections == 0
    # the upstream side was reset too
    for _ in range(200):
        if echo_server.errors:
            break
        await asyncio.sleep(0.01)
    assert any(isinstance(e, ConnectionResetError) for e in echo_server.errors)
    # the relay keeps accepting and forwarding new connections
    async with Client(echo_relay.addr) as (reader, writer):
        await _roundtrip(reader, writer, b"again")


async def test_kill_during_blackhole_resets(echo_relay: TcpRelay) -> None:
    async with Client(echo_relay.addr) as (reader, writer):
        await _roundtrip(reader, writer, b"x")
        echo_relay.blackhole()
        echo_relay.kill()
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(100), 5)
    echo_relay.forward()


# --------------------------------------------------------------------------- delay


async def test_delay_adds_to_round_trip(echo_relay: TcpRelay) -> None:
    delay = 0.1
    async with Client(echo_relay.addr) as (reader, writer):
        await _roundtrip(reader, writer, b"warmup")
        echo_relay.set_delay(delay)
        assert echo_relay.delay == delay
        rtt = await _roundtrip(reader, writer, b"delayed")
        # one-way delay in each direction: the round trip pays it twice
        assert rtt >= 2 * delay * 0.95
        echo_relay.set_delay(0)
        await _roundtrip(reader, writer, b"undelayed")


async def test_delay_preserves_order(echo_relay: TcpRelay) -> None:
    echo_relay.set_delay(0.05)
    async with Client(echo_relay.addr) as (reader, writer):
        parts = [f"{i:05d};".encode() for i in range(500)]
        for i, p in enumerate(parts):
            writer.write(p)
            if i % 50 == 0:
                await writer.drain()
                await asyncio.sleep(0.002)
                # changing the delay mid-stream must not reorder anything
                echo_relay.set_delay(0.05 if (i // 50) % 2 else 0.0)
        await writer.drain()
        expected = b"".join(parts)
        got = await asyncio.wait_for(reader.readexactly(len(expected)), 5)
        assert got == expected


def test_invalid_arguments() -> None:
    relay = TcpRelay(("127.0.0.1", 1))
    with pytest.raises(ValueError):
        relay.set_delay(-1)
    with pytest.raises(ValueError):
        relay.set_delay(float("nan"))
    with pytest.raises(ValueError):
        relay.set_rate(0)
    with pytest.raises(RuntimeError):
        _ = relay.addr


# --------------------------------------------------------------------------- rate


@pytest.mark.parametrize("direction", ["upload", "download"])
async def test_rate_limit_lower_bound(direction: str) -> None:
    n = 512 * 1024
    rate = 1_000_000.0
    done = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if direction == "upload":
            got = 0
            while chunk := await reader.read(1 << 20):
                got += len(chunk)
                if got >= n and not done.done():
                    done.set_result(time.monotonic())
        else:
            await reader.readexactly(1)  # go signal
            writer.write(b"d" * n)
            await writer.drain()
            await reader.read()

    srv = Server(handler)
    upstream = await srv.start()
    try:
        async with TcpRelay(upstream) as relay, Client(relay.addr) as (reader, writer):
            relay.set_rate(rate)
            assert relay.rate == rate
            t0 = time.monotonic()
            if direction == "upload":
                writer.write(b"u" * n)
                t1 = await asyncio.wait_for(done, 10)
            else:
                writer.write(b"g")
                await asyncio.wait_for(reader.readexactly(n), 10)
                t1 = time.monotonic()
            elapsed = t1 - t0
            # the bucket allows a burst of 20 ms; leave generous slack anyway
            assert elapsed >= 0.8 * n / rate, elapsed
            relay.set_rate(None)
    finally:
        await srv.close()


async def test_rate_limit_applies_backpressure() -> None:
    """A fast sender behind a slow limit must be held in TCP, not in relay memory."""
    srv = Server(_sink)
    upstream = await srv.start()
    max_buffer = 256 * 1024
    try:
        async with TcpRelay(upstream, max_buffer=max_buffer) as relay:
            relay.set_rate(500_000)
            async with Client(relay.addr) as (_reader, writer):
                writer.write(b"z" * (32 * 1024 * 1024))  # far more than kernel buffers
                peak = 0
                for _ in range(25):
                    await asyncio.sleep(0.02)
                    peak = max(peak, relay.queued_bytes)
                # bounded by max_buffer plus at most one read chunk of overshoot
                assert 0 < peak <= max_buffer + 512 * 1024, peak
                # the sender sees backpressure: most of its data is still unsent
                transport = writer.transport
                assert transport.get_write_buffer_size() > 16 * 1024 * 1024
                transport.abort()
    finally:
        await srv.close()


# --------------------------------------------------------------------------- fin


class _Exchange:
    """Upstream handler: sends ``down`` at once, then records what it reads until EOF."""

    def __init__(self, down: bytes) -> None:
        self.down = down
        self.got = bytearray()
        self.eof = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.down)
        await writer.drain()
        while chunk := await reader.read(65536):
            self.got += chunk
        self.eof.set()
        writer.write(b"after-eof")  # discarded by the relay after its FIN toward us
        await writer.drain()


async def _read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything until a clean EOF (a reset raises)."""
    parts = []
    while chunk := await reader.read(65536):
        parts.append(chunk)
    return b"".join(parts)


async def test_fin_delivers_held_bytes_then_clean_eof_both_ways() -> None:
    up, down = os.urandom(300_000), os.urandom(200_000)
    handler = _Exchange(down)
    srv = Server(handler)
    upstream = await srv.start()
    try:
        async with TcpRelay(upstream) as relay, Client(relay.addr) as (reader, writer):
            relay.set_delay(0.2)  # everything below is still held in the relay at the FIN
            writer.write(up)
            await writer.drain()
            await asyncio.sleep(0.05)
            assert relay.queued_bytes > 0
            relay.fin()
            assert await asyncio.wait_for(_read_to_eof(reader), 5) == down  # EOF, not RST
            await asyncio.wait_for(handler.eof.wait(), 5)
            assert handler.got == up
            assert srv.errors == []
            writer.write(b"late")  # we still may send: the relay reads and discards it
            await writer.drain()
            assert relay.connections == 1  # kept until this end closes its side too
            writer.write_eof()
            for _ in range(200):
                if relay.connections == 0:
                    break
                await asyncio.sleep(0.01)
            assert relay.connections == 0
            assert handler.got == up  # nothing after the FIN reached the upstream
    finally:
        await srv.close()


async def test_fin_toward_one_end_is_a_half_close() -> None:
    handler = _Exchange(b"hello")
    srv = Server(handler)
    upstream = await srv.start()
    try:
        async with TcpRelay(upstream) as relay, Client(relay.addr) as (reader, writer):
            assert await asyncio.wait_for(reader.readexactly(5), 5) == b"hello"
            relay.fin(toward="client")
            assert await asyncio.wait_for(reader.read(100), 5) == b""  # clean EOF
            writer.write(b"still forwarded")  # the other direction still works
            await writer.drain()
            await asyncio.sleep(0.1)
            assert not handler.eof.is_set()  # the upstream got no FIN
            writer.write_eof()  # our own FIN is relayed as usual
            await asyncio.wait_for(handler.eof.wait(), 5)
            assert handler.got == b"still forwarded"
            for _ in range(200):
                if relay.connections == 0:
                    break
                await asyncio.sleep(0.01)
            assert relay.connections == 0
        with pytest.raises(ValueError):
            relay.fin(toward="sideways")
    finally:
        await srv.close()


async def test_fin_toward_upstream_then_both_ends_close(echo_server: Server,
                                                       echo_relay: TcpRelay) -> None:
    async with Client(echo_relay.addr) as (reader, writer):
        await _roundtrip(reader, writer, b"x")
        echo_relay.fin(toward="upstream")
        # the echo server reads a clean EOF and half-closes back: relayed as usual
        assert await asyncio.wait_for(reader.read(100), 5) == b""
        assert echo_relay.connections == 1  # we have not finished sending yet
        writer.write_eof()
        for _ in range(200):
            if echo_relay.connections == 0:
                break
            await asyncio.sleep(0.01)
        assert echo_relay.connections == 0
    assert echo_server.errors == []
