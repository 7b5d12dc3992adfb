"""rendr as an anyio ByteStream: byte-exact round trips (across a path kill), EOF and
close semantics, anyio's TLS over a rendr flow, and anyio's buffered reader.

Runs on anyio's asyncio backend (the default loop and uvloop, like every loopback
test here); skipped when anyio is not installed."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl

import pytest

anyio = pytest.importorskip("anyio")

from anyio.abc import SocketAttribute  # noqa: E402
from anyio.streams.buffered import BufferedByteReceiveStream  # noqa: E402
from anyio.streams.text import TextStream  # noqa: E402
from anyio.streams.tls import TLSAttribute, TLSStream  # noqa: E402

import rendr  # noqa: E402
from rendr.aio.anyio_stream import ConnByteStream, RendrAttribute  # noqa: E402

from .conftest import Pair  # noqa: E402

MIB = 1 << 20


def _streams(pair: Pair) -> tuple[ConnByteStream, ConnByteStream]:
    return rendr.anyio_stream(pair.client), rendr.anyio_stream(pair.server)


async def _receive_all(stream: anyio.abc.ByteReceiveStream, max_bytes: int = 65536
                       ) -> bytes:
    parts = []
    while True:
        try:
            chunk = await stream.receive(max_bytes)
        except anyio.EndOfStream:
            return b"".join(parts)
        assert 1 <= len(chunk) <= max_bytes
        parts.append(chunk)


async def _echo(stream: anyio.abc.ByteStream) -> None:
    while True:
        try:
            data = await stream.receive()
        except anyio.EndOfStream:
            break
        await stream.send(data)
    await stream.send_eof()


async def test_round_trip_is_byte_exact_across_a_path_kill(pair: Pair) -> None:
    """4 MiB out and echoed back through the anyio streams while the active path is
    reset halfway; every byte back, in order; receive() never exceeds max_bytes."""
    client, server = _streams(pair)
    payload = os.urandom(4 * MIB)
    received = bytearray()

    async def send() -> None:
        for i in range(0, len(payload), 100_000):
            await client.send(payload[i:i + 100_000])
            if i == 2_000_000:
                pair.relay_of(pair.client.active_path).kill()
        await client.send_eof()

    async def receive() -> None:
        received.extend(await _receive_all(client, 7_777))

    async with anyio.create_task_group() as tg:
        tg.start_soon(_echo, server)
        tg.start_soon(send)
        tg.start_soon(receive)
    assert len(received) == len(payload)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    assert pair.client.migration_count >= 1
    await client.aclose()
    await server.aclose()


async def test_eof_is_end_of_stream_and_half_close_keeps_the_other_way(pair: Pair) -> None:
    client, server = _streams(pair)
    await client.send(b"last words")
    await client.send_eof()
    await client.send_eof()  # idempotent
    assert await _receive_all(server) == b"last words"
    with pytest.raises(anyio.EndOfStream):  # and again: EOF stays EOF
        await server.receive()
    with pytest.raises(anyio.ClosedResourceError):
        await client.send(b"after eof")
    await server.send(b"reply after the peer's EOF")
    await server.send_eof()
    assert await _receive_all(client) == b"reply after the peer's EOF"
    await client.aclose()
    await server.aclose()


async def test_aclose_makes_the_stream_closed(pair: Pair) -> None:
    """After aclose(): ClosedResourceError for receive/send/send_eof, also for a task
    that was already waiting in receive(); the peer sees a clean EndOfStream."""
    client, server = _streams(pair)
    waiting = asyncio.ensure_future(client.receive())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    for relay in pair.relays:  # the peer cannot acknowledge: the close must linger
        relay.blackhole()
    closing = asyncio.ensure_future(client.aclose())
    # the parked reader is woken, not left waiting until the close's linger ends
    with anyio.fail_after(0.5), pytest.raises(anyio.ClosedResourceError):
        await waiting
    assert not closing.done()
    for relay in pair.relays:
        relay.forward()
    with anyio.fail_after(10):
        await closing
    await client.aclose()  # idempotent
    with pytest.raises(anyio.ClosedResourceError):
        await client.receive()
    with pytest.raises(anyio.ClosedResourceError):
        await client.send(b"x")
    with pytest.raises(anyio.ClosedResourceError):
        await client.send_eof()
    with anyio.fail_after(5), pytest.raises(anyio.EndOfStream):
        await server.receive()
    await server.aclose()


async def test_aclose_wakes_a_blocked_send(pair: Pair) -> None:
    """A send() held back by a full send buffer (the peer acknowledges nothing) ends
    with ClosedResourceError as soon as another task closes the stream."""
    client = rendr.anyio_stream(pair.client)
    for relay in pair.relays:
        relay.blackhole()
    chunk = bytes(MIB)

    async def flood() -> None:
        while True:
            await client.send(chunk)

    sending = asyncio.ensure_future(flood())
    await asyncio.sleep(0.3)
    assert not sending.done()  # blocked by backpressure
    closing = asyncio.ensure_future(client.aclose())
    with anyio.fail_after(0.5), pytest.raises(anyio.ClosedResourceError):
        await sending
    for relay in pair.relays:
        relay.forward()
    closing.cancel()  # (the rest of the buffer is not needed: abort)
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert pair.client.is_closed
    # (the server end is aborted by the fixture: the blackholes broke its paths)


async def test_a_failed_flow_is_a_broken_resource(pair: Pair) -> None:
    """The peer aborts: receive() first returns what arrived, then raises
    BrokenResourceError caused by ConnAborted; send() raises it too."""
    client, server = _streams(pair)
    await server.send(b"before the abort")
    await pair.server.drain()
    pair.server.abort(reason="test abort")
    got = b""
    with anyio.fail_after(5), pytest.raises(anyio.BrokenResourceError) as info:
        while True:
            got += await client.receive()
    assert got == b"before the abort"
    assert isinstance(info.value.__cause__, rendr.ConnAborted)
    with pytest.raises(anyio.BrokenResourceError):
        await client.send(b"into the void")
    await client.aclose()


async def test_concurrent_receives_are_refused(pair: Pair) -> None:
    client, server = _streams(pair)
    first = asyncio.ensure_future(client.receive())
    await asyncio.sleep(0.01)
    with pytest.raises(anyio.BusyResourceError):
        await client.receive()
    await server.send(b"one")
    assert await first == b"one"
    await client.aclose()
    await server.aclose()


async def test_extra_attributes_follow_the_active_path(pair: Pair) -> None:
    client, server = _streams(pair)
    assert client.extra(RendrAttribute.conn) is pair.client
    assert client.extra(RendrAttribute.flow_id) == server.extra(RendrAttribute.flow_id)
    assert client.extra(SocketAttribute.family) == socket.AF_INET
    with pytest.raises(anyio.TypedAttributeLookupError):
        client.extra(SocketAttribute.raw_socket)
    port = client.extra(SocketAttribute.remote_port)
    assert port == pair.relay_of(pair.client.active_path).addr[1]
    assert client.extra(SocketAttribute.remote_address) == ("127.0.0.1", port)
    other = next(p.id for p in pair.client.stats().paths if p.id != pair.client.active_path)
    await pair.client.migrate(other)
    new_port = client.extra(SocketAttribute.remote_port)
    assert new_port != port
    assert new_port == pair.relay_of(other).addr[1]
    await client.aclose()
    await server.aclose()


# ------------------------------------------------------------------ TLS over rendr


def _tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for the name ``rendr.test``, from a throwaway CA."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("rendr.test").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


async def test_tls_over_a_rendr_stream(pair: Pair) -> None:
    """anyio's TLSStream on both ends of a flow: handshake with certificate and host
    name checks, 1 MiB echoed byte-exact through TLS, and rendr's attributes reachable
    through the TLS stream."""
    server_ctx, client_ctx = _tls_contexts()
    client_raw, server_raw = _streams(pair)
    results: dict[str, TLSStream] = {}

    async def server_side() -> None:
        results["server"] = await TLSStream.wrap(server_raw, server_side=True,
                                                 ssl_context=server_ctx)

    async def client_side() -> None:
        results["client"] = await TLSStream.wrap(client_raw, hostname="rendr.test",
                                                 ssl_context=client_ctx)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(server_side)
            tg.start_soon(client_side)
    tls_client, tls_server = results["client"], results["server"]
    assert tls_client.extra(TLSAttribute.tls_version) in ("TLSv1.2", "TLSv1.3")
    assert tls_client.extra(TLSAttribute.peer_certificate) is not None
    assert tls_client.extra(RendrAttribute.conn) is pair.client

    payload = os.urandom(MIB)
    echoed = bytearray()

    async def serve() -> None:
        while True:
            try:
                data = await tls_server.receive()
            except anyio.EndOfStream:  # the client's close_notify: answer it
                await tls_server.aclose()
                return
            await tls_server.send(data)

    async def send() -> None:
        for i in range(0, len(payload), 64 * 1024):
            await tls_client.send(payload[i:i + 64 * 1024])

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            tg.start_soon(send)
            while len(echoed) < len(payload):
                echoed.extend(await tls_client.receive())
            await tls_client.aclose()  # close_notify both ways (unwrap), then the flow
    assert bytes(echoed) == payload
    assert pair.client.is_closed and pair.server.is_closed


async def test_tls_rejects_the_wrong_host_name(pair: Pair) -> None:
    """The certificate check really runs over rendr: a name the certificate does not
    carry fails the client's handshake."""
    server_ctx, client_ctx = _tls_contexts()
    client_raw, server_raw = _streams(pair)

    async def server_side() -> None:
        with pytest.raises((ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream)):
            await TLSStream.wrap(server_raw, server_side=True, ssl_context=server_ctx)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(server_side)
            with pytest.raises(ssl.SSLCertVerificationError):
                await TLSStream.wrap(client_raw, hostname="not-rendr.test",
                                     ssl_context=client_ctx)
            await client_raw.aclose()


# ------------------------------------------------------------------ stream utilities


async def test_buffered_receive_until_and_exactly(pair: Pair) -> None:
    """BufferedByteReceiveStream: a line protocol whose lines arrive split and merged
    arbitrarily (tiny sends on one side, any chunking on the other)."""
    client, server = _streams(pair)
    lines = [f"line {i} ".encode() + os.urandom(8).hex().encode() for i in range(200)]
    blob = b"".join(line + b"\r\n" for line in lines) + b"TAIL" + bytes(range(256))

    async def send() -> None:
        for i in range(0, len(blob), 7):
            await client.send(blob[i:i + 7])
        await client.send_eof()

    buffered = BufferedByteReceiveStream(server)
    got = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            for _ in lines:
                got.append(await buffered.receive_until(b"\r\n", 1024))
            tail = await buffered.receive_exactly(4 + 256)
            with pytest.raises(anyio.EndOfStream):
                await buffered.receive()
    assert got == lines
    assert tail == b"TAIL" + bytes(range(256))
    await client.aclose()
    await buffered.aclose()


async def test_text_stream(pair: Pair) -> None:
    client, server = _streams(pair)
    text_client, text_server = TextStream(client), TextStream(server)
    message = "größer als 𝄞 " * 1000  # multi-byte characters cut anywhere
    await text_client.send(message)
    await text_client.send_eof()
    got = []
    with anyio.fail_after(5):
        while True:
            try:
                got.append(await text_server.receive())
            except anyio.EndOfStream:
                break
    assert "".join(got) == message
    await text_client.aclose()
    await text_server.aclose()
