"""Loopback integration tests: real sockets, faults from the TCP relay; every test runs
on the default event loop and on uvloop (tests/aio/conftest.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time

import pytest

import rendr
from rendr.core.wire import VERSION
from rendr.testing.relay import TcpRelay

from .conftest import Pair, close_pair, drain_all, make_pair, pump


async def test_dial_accept_basics(pair: Pair) -> None:
    c, s = pair.client, pair.server
    assert isinstance(c, rendr.AdminConn) and isinstance(s, rendr.AdminConn)
    assert c.flow_id == s.flow_id and len(c.flow_id) == 16
    assert c.state is rendr.State.ACTIVE and s.state is rendr.State.ACTIVE
    assert c.mode is rendr.Mode.PRIME
    assert c.active_path == s.active_path
    await c.write(b"x")
    assert await s.read(10) == b"x"
    await s.write(b"y")
    assert await c.readexactly(1) == b"y"


async def test_multi_mib_both_directions(pair: Pair) -> None:
    up = os.urandom(3 << 20)
    down = os.urandom(5 << 20)

    async def side(conn: rendr.Conn, out: bytes) -> bytes:
        async def send() -> None:
            await pump(conn, out)
            await conn.write_eof()

        task = asyncio.create_task(send())
        got = await drain_all(conn)
        await task
        return got

    got_s, got_c = await asyncio.gather(side(pair.server, down), side(pair.client, up))
    assert got_s == up and got_c == down
    assert pair.client.recv_dups == 0 and pair.server.recv_dups == 0


async def test_echo_small_messages(pair: Pair) -> None:
    async def echo() -> None:
        while data := await pair.server.read(4096):
            await pair.server.write(data)

    task = asyncio.create_task(echo())
    for i in range(200):
        msg = f"message {i}".encode()
        await pair.client.write(msg)
        assert await pair.client.readexactly(len(msg)) == msg
    await pair.client.write_eof()
    await asyncio.wait_for(task, 5)


async def test_cancelled_read_loses_no_data(pair: Pair) -> None:
    """A read cancelled while waiting (e.g. by a timeout) leaves the stream intact,
    and the next read gets what arrived; a second concurrent reader is refused."""
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(pair.server.read(100), 0.05)
    waiting = asyncio.create_task(pair.server.read(100))
    await asyncio.sleep(0.01)
    with pytest.raises(RuntimeError, match="already reading"):
        await pair.server.read(100)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await pair.client.write(b"first")
    await pair.client.write(b"second")
    got = b""
    while len(got) < 11:
        got += await asyncio.wait_for(pair.server.read(100), 5)
    assert got == b"firstsecond"


async def test_explicit_migrate_mid_transfer_sends_nothing_twice(pair: Pair) -> None:
    data = os.urandom(24 << 20)
    reader = asyncio.create_task(drain_all(pair.server))
    view = memoryview(data)
    first = pair.client.active_path
    other = next(p.id for p in pair.client.stats().paths if p.id != first and p.state == "up")
    step = 1 << 20
    for i in range(0, len(data), step):
        await pair.client.write(view[i : i + step])
        if i == 8 * step:
            await pair.client.migrate(other)
            assert pair.client.active_path == other
        if i == 16 * step:
            await pair.client.migrate(first)
    await pair.client.write_eof()
    got = await asyncio.wait_for(reader, 20)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert pair.server.recv_dups == 0 and pair.client.recv_dups == 0
    assert pair.client.migration_count == 2
    assert pair.server.migration_count == 2  # the listener follows the dialer
    assert pair.server.active_path == first
    causes = [e.cause for e in pair.events if e.kind is rendr.EventKind.MIGRATION]
    assert causes == ["explicit", "explicit"]


async def test_rst_kill_of_active_path_mid_transfer_is_invisible(pair: Pair) -> None:
    data = os.urandom(32 << 20)
    reader = asyncio.create_task(drain_all(pair.server))
    view = memoryview(data)
    killed = pair.client.active_path
    step = 1 << 20
    for i in range(0, len(data), step):
        await pair.client.write(view[i : i + step])
        if i == 10 * step:
            pair.relay_of(killed).kill()  # RST on both sides of that path
    await pair.client.write_eof()
    got = await asyncio.wait_for(reader, 30)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert pair.client.active_path != killed
    downs = [e for e in pair.events if e.kind is rendr.EventKind.PATH_DOWN and e.path_id == killed]
    assert downs and downs[0].cause in ("reset", "eof")
    deaths = [e for e in pair.events if e.kind is rendr.EventKind.MIGRATION and e.cause == "death"]
    assert deaths and deaths[0].old_path == killed
    # the server can also send after the kill
    await pair.server.write(b"still here")
    assert await pair.client.readexactly(10) == b"still here"


async def test_blackholed_active_path_fails_over_when_suspect() -> None:
    pair = await make_pair()
    try:
        async def echo() -> None:
            while data := await pair.server.read(4096):
                await pair.server.write(data)

        task = asyncio.create_task(echo())
        await pair.client.write(b"warm")
        assert await pair.client.readexactly(4) == b"warm"
        active = pair.client.active_path
        pair.relay_of(active).blackhole()
        t0 = time.monotonic()
        await pair.client.write(b"ping")
        assert await asyncio.wait_for(pair.client.readexactly(4), 5) == b"ping"
        failover = time.monotonic() - t0
        assert pair.client.active_path != active
        # it moved when the path became suspect (target <= 0.3 s with default settings:
        # ping 0.05 s + suspect 0.2 s; allow noise), and the path is dead later
        assert failover < 1.0, failover
        assert any(e.kind is rendr.EventKind.PATH_SUSPECT and e.path_id == active
                   for e in pair.events)

        def down() -> list[rendr.Event]:
            return [e for e in pair.events
                    if e.kind is rendr.EventKind.PATH_DOWN and e.path_id == active]

        for _ in range(200):
            if down():
                break
            await asyncio.sleep(0.01)
        assert [e.cause for e in down()] == ["timeout"]
        await pair.client.write_eof()
        await asyncio.wait_for(task, 5)
    finally:
        await close_pair(pair)


async def test_slow_upload_is_not_a_dead_path() -> None:
    pair = await make_pair(n_paths=1)
    try:
        pair.relays[0].set_rate(200_000)  # 200 kB/s: 600 kB takes ~3 s
        data = os.urandom(600_000)
        reader = asyncio.create_task(drain_all(pair.server))
        await pump(pair.client, data, chunk=64 * 1024)
        await pair.client.write_eof()
        got = await asyncio.wait_for(reader, 20)
        assert got == data
        assert not [e for e in pair.events if e.kind is rendr.EventKind.PATH_DOWN]
    finally:
        await close_pair(pair)


async def test_add_path_to_a_listener_that_does_not_know_the_flow(pair: Pair) -> None:
    extra = await rendr.listen(rendr.ListenSpec("tcp", "127.0.0.1:0"))
    try:
        port = extra.addrs[0][1]
        with pytest.raises(rendr.HandshakeError, match="does not know"):
            await pair.client.add_path(rendr.PathSpec("tcp", f"127.0.0.1:{port}"))
    finally:
        await extra.close()
    # an admin call that failed does not hurt the flow
    assert not pair.client.is_closed
    await pair.client.write(b"alive")
    assert await pair.server.readexactly(5) == b"alive"


async def test_add_path_remove_path_and_last_path_error() -> None:
    pair = await make_pair()
    try:
        host, port = pair.listener.addrs[0]
        new_id = await pair.client.add_path(rendr.PathSpec("tcp", f"{host}:{port}"))
        await pair.wait_paths(3)
        await pair.client.migrate(new_id)
        await pair.client.write(b"via new path")
        assert await pair.server.readexactly(12) == b"via new path"
        assert pair.server.active_path == new_id
        ids = [p.id for p in pair.client.stats().paths if p.state == "up"]
        for pid in ids:
            if pid != new_id:
                await pair.client.remove_path(pid)
        with pytest.raises(rendr.LastPathError):
            await pair.client.remove_path(new_id)
        await asyncio.sleep(0.2)
        states = {p.id: p.state for p in pair.client.stats().paths}
        assert states[new_id] == "up"
        assert all(states[p] == "removed" for p in ids if p != new_id)
        await pair.server.write(b"back")
        assert await pair.client.readexactly(4) == b"back"
        assert pair.server.recv_dups == 0 and pair.client.recv_dups == 0
        # removed paths are not re-dialled
        await asyncio.sleep(0.3)
        assert sum(p.state == "up" for p in pair.client.stats().paths) == 1
    finally:
        await close_pair(pair)


async def test_half_close_then_reply(pair: Pair) -> None:
    await pair.client.write(b"request")
    await pair.client.write_eof()
    assert await drain_all(pair.server) == b"request"
    assert await pair.server.read(10) == b""  # EOF is sticky
    await pair.server.write(b"response")
    await pair.server.close()
    assert await drain_all(pair.client) == b"response"
    await pair.client.close()
    assert pair.client.state is rendr.State.CLOSED
    with pytest.raises(rendr.ConnClosed):
        await pair.client.write(b"late")
    with pytest.raises(rendr.ConnClosed):
        await pair.client.read(1)


async def test_close_delivers_everything(pair: Pair) -> None:
    data = os.urandom(6 << 20)
    reader = asyncio.create_task(drain_all(pair.server))
    await pump(pair.client, data)
    await pair.client.close()  # returns once the peer acknowledged everything
    assert await asyncio.wait_for(reader, 10) == data
    await asyncio.wait_for(pair.server.wait_closed(), 5)
    assert pair.server.state is rendr.State.CLOSED
    with pytest.raises(rendr.ConnClosed):
        await pair.server.write(b"x")


async def test_abort_reaches_peer_with_code(pair: Pair) -> None:
    pair.client.abort(code=42, reason="bye")
    with pytest.raises(rendr.ConnAborted) as info:
        await asyncio.wait_for(pair.server.read(10), 5)
    assert info.value.code == 42 and info.value.reason == "bye"


async def test_budget_exhaustion_raises() -> None:
    pair = await make_pair(migration_budget=1.0)
    try:
        for relay in pair.relays:
            relay.blackhole()  # silent: existing paths die by timeout, re-dials hang
        t0 = time.monotonic()
        with pytest.raises(rendr.MigrationBudgetExceeded):
            await asyncio.wait_for(pair.client.read(10), 10)
        elapsed = time.monotonic() - t0
        # detection (~0.7 s) + budget (1 s)
        assert 1.0 <= elapsed < 4.0, elapsed
        with pytest.raises(rendr.MigrationBudgetExceeded):
            await pair.client.write(b"x")
        with pytest.raises(rendr.MigrationBudgetExceeded):
            await asyncio.wait_for(pair.server.read(10), 10)
    finally:
        await close_pair(pair)


async def test_path_outage_shorter_than_budget_is_invisible() -> None:
    pair = await make_pair(n_paths=1)
    try:
        relay = pair.relays[0]
        relay.blackhole()
        writer = asyncio.create_task(pair.client.write(b"during outage"))
        await asyncio.sleep(2.0)  # the path dies; the dialer keeps re-dialing
        assert pair.client.state is rendr.State.MIGRATING
        relay.forward()
        await asyncio.wait_for(writer, 5)
        assert await asyncio.wait_for(pair.server.readexactly(13), 10) == b"during outage"
        await pair.server.write(b"ok")
        assert await asyncio.wait_for(pair.client.readexactly(2), 5) == b"ok"
        assert pair.client.state is rendr.State.ACTIVE
    finally:
        await close_pair(pair)


async def test_wrong_peer_fails_handshake_fast() -> None:
    async def not_rendr(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(not_rendr, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        d = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{port}")])
        t0 = time.monotonic()
        with pytest.raises(rendr.HandshakeError, match="not a rendr"):
            await d.dial()
        assert time.monotonic() - t0 < 2
    finally:
        server.close()
        await server.wait_closed()


async def test_handshake_errors_name_the_path_address_and_step() -> None:
    """A server that accepts and never answers, and a port nobody listens on: the
    error says which path, which addresses and what happened (it was a bare
    "no handshake answer within 10 s" / "TimeoutError: ")."""
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        d = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{port}")],
                         handshake_timeout=0.3)
        with pytest.raises(rendr.HandshakeError) as info:
            await d.dial()
        msg = str(info.value)
        assert "HELLO on path 1 (tcp 127.0.0.1:" in msg and f"-> 127.0.0.1:{port})" in msg, msg
        assert "no answer within 0.3 s" in msg, msg
    finally:
        server.close()
        await server.wait_closed()
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    d = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{free}")])
    with pytest.raises(OSError) as oserr:
        await d.dial()
    assert f"connect tcp 127.0.0.1:{free}" in str(oserr.value), oserr.value
    assert "refused" in str(oserr.value).lower(), oserr.value


async def test_version_mismatch_is_reported() -> None:
    ln = await rendr.listen_tcp("127.0.0.1:0")
    try:
        port = ln.addrs[0][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"RNDR\x07\x00\x00\x00" + bytes(40))
        answer = await asyncio.wait_for(reader.read(100), 5)
        assert answer[:5] == b"RNDR" + bytes([VERSION])  # its own version, then it closes
        assert await asyncio.wait_for(reader.read(100), 5) == b""
        writer.close()
    finally:
        await ln.close()


async def test_async_for_and_listener_close() -> None:
    ln = await rendr.listen_tcp("127.0.0.1:0")
    port = ln.addrs[0][1]
    got = []

    async def acceptor() -> None:
        async for conn in ln:
            got.append(conn)

    task = asyncio.create_task(acceptor())
    c = await rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{port}")]).dial()
    await asyncio.sleep(0.05)
    await ln.close()
    await asyncio.wait_for(task, 2)
    assert len(got) == 1 and got[0].flow_id == c.flow_id
    c.abort()
    got[0].abort()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_one_flow_over_ipv4_and_ipv6_paths() -> None:
    """One bridge table for a v4 and a v6 listener: the flow has a path on each, and a
    migration from one family to the other is as clean as any other."""
    ln = await rendr.listen(rendr.ListenSpec("tcp", "127.0.0.1:0"),
                            rendr.ListenSpec("tcp", "[::1]:0"))
    try:
        (h4, p4), (h6, p6) = ln.addrs
        assert (h4, h6) == ("127.0.0.1", "::1")
        d = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{p4}"),
                                rendr.PathSpec("tcp", f"[::1]:{p6}")])
        client = await d.dial()
        server = await asyncio.wait_for(ln.accept(), 5)
        for _ in range(200):
            if sum(p.state == "up" for p in client.stats().paths) == 2:
                break
            await asyncio.sleep(0.01)
        paths = {p.id: p.remote_addr for p in client.stats().paths}
        assert sorted(paths.values()) == sorted([f"127.0.0.1:{p4}", f"[::1]:{p6}"])
        target = next(i for i in paths if i != client.active_path)  # the other family
        data = os.urandom(3 << 20)
        reader = asyncio.create_task(drain_all(server))
        view = memoryview(data)
        for i in range(0, len(data), 1 << 20):
            await client.write(view[i : i + (1 << 20)])
            if i == 1 << 20:
                await client.migrate(target)
        await client.write_eof()
        assert await asyncio.wait_for(reader, 10) == data
        assert client.active_path == target and server.active_path == target
        assert client.migration_count == 1
        assert server.recv_dups == 0
        await client.close()
        await server.close()
    finally:
        await ln.close()


async def test_no_leaks_after_close() -> None:
    """Closing both conns and the listener releases every socket and task.

    Direct paths (no relay): a relay closing its sockets would end rendr's carriers
    by EOF and hide a carrier that rendr itself forgot to close."""
    before_fds = before_tasks = 0
    for i in range(4):
        if i == 1:
            # measured after one warm-up round: an event loop may open fds of its own
            # once (libuv keeps a reserve /dev/null fd after its first accept)
            before_fds = _fds()
            before_tasks = len(asyncio.all_tasks())
        listener = await rendr.listen(rendr.ListenSpec("tcp", "127.0.0.1:0"),
                                      rendr.ListenSpec("tcp", "127.0.0.1:0"))
        dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"{h}:{p}") for h, p in listener.addrs])
        client = await dialer.dial()
        server = await asyncio.wait_for(listener.accept(), 5)
        data = os.urandom(1 << 20)
        reader = asyncio.create_task(drain_all(server))
        await pump(client, data)
        await client.close()
        assert await reader == data
        await server.close()
        await listener.close()
    for _ in range(50):
        await asyncio.sleep(0.02)
        if _fds() <= before_fds and len(asyncio.all_tasks()) <= before_tasks:
            break
    assert _fds() <= before_fds, "file descriptors leaked"
    assert len(asyncio.all_tasks()) <= before_tasks, asyncio.all_tasks()


async def test_join_for_an_unknown_flow_waits_join_wait_then_is_refused() -> None:
    """A JOIN for a flow the listener does not know waits ``join_wait`` for its HELLO,
    then gets UNKNOWN_FLOW.  (In v1 a valid JOIN cannot overtake its HELLO: its MAC
    needs keys from the HELLO_ACK; the wait is kept for flows still being accepted.)"""
    from rendr.core.wire import PREFACE, FrameType, Join, JoinAck, Result

    ln = await rendr.listen_tcp("127.0.0.1:0", join_wait=0.3)
    port = ln.addrs[0][1]
    try:
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        t0 = asyncio.get_running_loop().time()
        w2.write(PREFACE + Join(os.urandom(16), 2, bytes(16), bytes(16)).encode())
        await w2.drain()
        head = await asyncio.wait_for(r2.readexactly(8 + 4 + 21), 2)
        assert asyncio.get_running_loop().time() - t0 >= 0.25
        assert head[8] == FrameType.JOIN_ACK
        assert JoinAck.decode(head[12:]).result == Result.UNKNOWN_FLOW
        w2.close()
    finally:
        await ln.close()


async def test_custom_transport_factory_with_streams() -> None:
    """An embedder's factory returning asyncio streams is a carrier (e.g. TLS, SSH)."""
    ln = await rendr.listen_tcp("127.0.0.1:0")
    port = ln.addrs[0][1]
    opened = []

    async def factory(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        opened.append(address)
        host, p = address.rsplit(":", 1)
        return await asyncio.open_connection(host, int(p))

    try:
        d = rendr.Dialer(paths=[rendr.PathSpec("mystream", f"127.0.0.1:{port}")],
                         transports={"mystream": factory})
        c = await d.dial()
        s = await ln.accept()
        data = os.urandom(2 << 20)
        reader = asyncio.create_task(drain_all(s))
        await pump(c, data)
        await c.write_eof()
        assert await asyncio.wait_for(reader, 10) == data
        assert opened == [f"127.0.0.1:{port}"]
        assert c.stats().paths[0].transport == "mystream"
        c.abort()
        s.abort()
    finally:
        await ln.close()


_ = TcpRelay  # re-exported helper used by the fixtures


async def test_close_wakes_a_reader_and_writer_parked_in_the_same_conn() -> None:
    ln = await rendr.listen_tcp("127.0.0.1:0", recv_window=128 * 1024, max_frame=64 * 1024)
    try:
        conn = await rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{ln.addrs[0][1]}")],
                                  linger=5.0).dial()
        server = await asyncio.wait_for(ln.accept(), 5)
        reader = asyncio.ensure_future(conn.read(10))
        writer = asyncio.ensure_future(conn.write(bytes(16 << 20)))  # the peer never reads
        await asyncio.sleep(0.1)
        assert not reader.done() and not writer.done()
        closing = asyncio.ensure_future(conn.close())  # lingers: the peer's window is full
        for parked in (reader, writer):
            with pytest.raises(rendr.ConnClosed):
                await asyncio.wait_for(parked, 1)  # at once, not after the 5 s linger
        assert not closing.done()
        server.abort()
        await asyncio.wait_for(closing, 5)
    finally:
        await ln.close()
