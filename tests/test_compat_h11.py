"""HTTP/1.1 (h11, sans-I/O) over a rendr stream: an h11 server and an h11 client, each
on one end of a flow with two relayed loopback TCP paths.  The server streams a
4 MiB response body (Content-Length, 64 KiB ``Data`` events, a small send buffer so
the body is really in motion); half-way through, the client moves the flow: its
active path is reset by the relay (RST both ways, a failover) or it migrates on
purpose (``conn.migrate``).  The client hashes the body: status 200, the server's
SHA-256, a migration in the stats, and a second request on the same (keep-alive)
connection afterwards.  Runs on the default loop and on uvloop.  Skipped when h11
is not installed."""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass, field

import pytest

pytest.importorskip("h11")

import h11

import rendr
from rendr.testing.relay import TcpRelay

MIB = 1 << 20
BODY_SIZE = 4 * MIB
CHUNK = 64 * 1024
PSK = b"h11-over-rendr-test-psk-0123456789"

pytestmark = pytest.mark.timeout(30)


@dataclass
class Fetched:
    """What the client got for one request."""

    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    size: int = 0
    sha256: str = ""


async def _read_event(h: h11.Connection, conn: rendr.Conn) -> object:
    """The next h11 event, reading from the flow as h11 needs more bytes."""
    while True:
        event = h.next_event()
        if event is not h11.NEED_DATA:
            return event
        h.receive_data(await conn.read(256 * 1024))  # b"" (the peer's EOF) is h11's EOF too


async def _serve(conn: rendr.Conn, bodies: dict[bytes, bytes]) -> int:
    """An h11 server on ``conn``: answers GET ``target`` with ``bodies[target]``,
    keep-alive, until the client closes.  Returns how many requests it answered."""
    h = h11.Connection(our_role=h11.SERVER)
    answered = 0
    while True:
        event = await _read_event(h, conn)
        if isinstance(event, h11.ConnectionClosed):
            return answered
        assert isinstance(event, h11.Request), event
        assert event.method == b"GET"
        while not isinstance(await _read_event(h, conn), h11.EndOfMessage):
            pass
        body = bodies[event.target]
        await conn.write(h.send(h11.Response(status_code=200, headers=[
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(len(body))),
            ("X-Body-SHA256", hashlib.sha256(body).hexdigest())])))
        for i in range(0, len(body), CHUNK):
            await conn.write(h.send(h11.Data(data=body[i:i + CHUNK])))
        await conn.write(h.send(h11.EndOfMessage()))
        answered += 1
        h.start_next_cycle()


async def _get(h: h11.Connection, conn: rendr.Conn, target: str, got: Fetched,
               halfway: asyncio.Event | None = None) -> Fetched:
    """One GET on the client's h11 connection, filling ``got`` as the response comes
    in; ``halfway`` is set once half of the announced body arrived."""
    await conn.write(h.send(h11.Request(method="GET", target=target, headers=[
        ("Host", "rendr.test"), ("User-Agent", "h11-over-rendr")])))
    await conn.write(h.send(h11.EndOfMessage()))
    digest = hashlib.sha256()
    length = 0
    while True:
        event = await _read_event(h, conn)
        if isinstance(event, h11.Response):
            got.status = event.status_code
            got.headers = dict(event.headers)
            length = int(got.headers[b"content-length"])
        elif isinstance(event, h11.Data):
            digest.update(event.data)
            got.size += len(event.data)
            if halfway is not None and got.size >= length // 2:
                halfway.set()
        elif isinstance(event, h11.EndOfMessage):
            got.sha256 = digest.hexdigest()
            h.start_next_cycle()
            return got
        else:  # pragma: no cover - nothing else is expected
            raise AssertionError(f"unexpected h11 event {event!r}")


async def _both_paths_up(conn: rendr.Conn) -> None:
    while True:
        if sum(p.state == "up" for p in conn.stats().paths) >= 2:
            return
        await asyncio.sleep(0.01)


async def _scenario(how: str) -> None:
    body = os.urandom(BODY_SIZE)
    small = b"after the migration\n"
    bodies = {b"/big": body, b"/small": small}
    # the server's small send buffer keeps the response streaming while the path moves
    listener = await rendr.listen(rendr.ListenSpec("tcp", "127.0.0.1:0"),
                                  rendr.ListenSpec("tcp", "127.0.0.1:0"), psk=PSK,
                                  send_buffer=256 * 1024, send_buffer_min=256 * 1024)
    relays = [TcpRelay((host, port)) for host, port, *_ in listener.addrs]
    client: rendr.Conn | None = None
    server: rendr.Conn | None = None
    try:
        for relay in relays:
            await relay.start()
        by_addr = {f"{r.addr[0]}:{r.addr[1]}": r for r in relays}
        client = await rendr.Dialer(paths=[rendr.PathSpec("tcp", a) for a in by_addr],
                                    psk=PSK).dial()
        server = await asyncio.wait_for(listener.accept(), 5)
        await asyncio.wait_for(_both_paths_up(client), 5)
        serving = asyncio.create_task(_serve(server, bodies))

        halfway = asyncio.Event()
        first_path = client.active_path
        got = Fetched()
        migrations: list[tuple[rendr.Event, int]] = []  # (event, body bytes read by then)
        downs: list[rendr.Event] = []

        def on_event(event: rendr.Event) -> None:
            if event.kind is rendr.EventKind.MIGRATION:
                migrations.append((event, got.size))
            elif event.kind is rendr.EventKind.PATH_DOWN:
                downs.append(event)

        client.on_event(on_event)

        async def move() -> None:
            await halfway.wait()
            assert client is not None
            if how == "kill":  # the active path is reset under the response: failover
                remote = next(p.remote_addr for p in client.stats().paths
                              if p.id == first_path)
                by_addr[remote].kill()
            else:  # a planned move to the other path
                other = next(p.id for p in client.stats().paths
                             if p.id != first_path and p.state == "up")
                await client.migrate(other)

        mover = asyncio.create_task(move())
        h = h11.Connection(our_role=h11.CLIENT)
        await asyncio.wait_for(_get(h, client, "/big", got, halfway), 15)
        await mover

        assert got.status == 200
        assert got.size == BODY_SIZE
        assert got.sha256 == hashlib.sha256(body).hexdigest()
        assert got.headers[b"x-body-sha256"].decode() == got.sha256
        # the flow moved off the first path while the body was streaming
        assert client.migration_count >= 1 and client.stats().migration_count >= 1
        assert client.active_path != first_path
        event, read_by_then = migrations[0]
        assert event.old_path == first_path and event.new_path == client.active_path
        assert 0 < read_by_then < BODY_SIZE, read_by_then
        if how == "kill":
            assert event.cause == "death", event
            assert any(d.path_id == first_path and d.cause == "reset" for d in downs), downs
        else:
            assert event.cause == "explicit", event
            assert client.recv_dups == 0  # a planned move sends nothing twice

        # the same HTTP/1.1 connection goes on over the new path
        again = await asyncio.wait_for(_get(h, client, "/small", Fetched()), 10)
        assert again.status == 200
        assert again.sha256 == hashlib.sha256(small).hexdigest()

        h.send(h11.ConnectionClosed())  # h11 has nothing to send for it: our EOF is it
        await client.write_eof()
        assert await asyncio.wait_for(serving, 10) == 2
        assert server.migration_count >= 1
    finally:
        for end in (client, server):
            if end is not None and not end.is_closed:
                end.abort()
        await listener.close()
        for relay in relays:
            await relay.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("how", ["kill", "migrate"])
def test_h11_response_survives_migration(how: str, loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    rendr.run(_scenario(how), use_uvloop=loop == "uvloop")
