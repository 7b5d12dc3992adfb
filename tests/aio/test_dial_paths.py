"""``dial()`` over several paths succeeds when any one of them works
(bench/repro/dial_first_path_silent.py): HELLO is staggered over the connected
carriers, the first HELLO_ACK opens the flow, the other paths JOIN it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

import rendr
from rendr.carriers.base import Carrier
from rendr.carriers.tcp import connect_tcp
from rendr.testing.relay import TcpRelay


async def _late_tcp(address: str) -> Carrier:
    """TCP that connects 50 ms late: the other path's carrier is up first and gets
    the first HELLO, deterministically."""
    await asyncio.sleep(0.05)
    return await connect_tcp(address)


@pytest.fixture
async def two_relays() -> AsyncIterator[tuple[rendr.Listener, list[TcpRelay]]]:
    # the listener drops a carrier that sends nothing for 1 s; its paths live through
    # a 1.6 s round trip
    listener = await rendr.listen_tcp("127.0.0.1:0", first_frame_timeout=1.0,
                                      dead_timeout=5.0, suspect_timeout=3.0)
    relays = [TcpRelay(("127.0.0.1", listener.addrs[0][1])) for _ in range(2)]
    for relay in relays:
        await relay.start()
    try:
        yield listener, relays
    finally:
        for relay in relays:
            relay.forward()
            await relay.close()
        await listener.close()


async def _echo_once(client: rendr.Conn, listener: rendr.Listener) -> rendr.Conn:
    server = await asyncio.wait_for(listener.accept(), 2)
    await client.write(b"ping")
    assert await asyncio.wait_for(server.readexactly(4), 2) == b"ping"
    return server


async def test_dial_succeeds_when_the_path_that_gets_hello_first_is_silent(
        two_relays: tuple[rendr.Listener, list[TcpRelay]]) -> None:
    listener, (silent, good) = two_relays
    silent.blackhole()  # accepts, never forwards
    dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{silent.addr[1]}"),
                                 rendr.PathSpec("late", f"127.0.0.1:{good.addr[1]}")],
                          transports={"late": _late_tcp}, handshake_timeout=3.0)
    t0 = time.monotonic()
    conn = await asyncio.wait_for(dialer.dial(), 2.0)  # before: HandshakeError after 3 s
    try:
        assert time.monotonic() - t0 < 1.0
        assert len(listener._session.flows) == 1
        assert conn.stats().paths[0].remote_addr.endswith(f":{good.addr[1]}")
        (await _echo_once(conn, listener)).abort()
    finally:
        conn.abort()


async def test_a_slow_first_path_does_not_hold_the_dial_and_joins_later(
        two_relays: tuple[rendr.Listener, list[TcpRelay]]) -> None:
    """The first HELLO's path is slow (0.8 s each way), not dead: the second path's
    HELLO wins; the first path's late HELLO makes no second flow (the listener refuses
    it) and the path is re-dialled and JOINs."""
    listener, (slow, good) = two_relays
    slow.set_delay(0.8)
    dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{slow.addr[1]}"),
                                 rendr.PathSpec("late", f"127.0.0.1:{good.addr[1]}")],
                          transports={"late": _late_tcp}, hello_stagger=0.1,
                          handshake_timeout=3.0, dead_timeout=5.0, suspect_timeout=3.0)
    t0 = time.monotonic()
    conn = await asyncio.wait_for(dialer.dial(), 3.0)
    try:
        assert time.monotonic() - t0 < 1.0  # before: 1.6 s (the slow HELLO's answer)
        server = await _echo_once(conn, listener)
        for _ in range(400):  # the slow path JOINs (one 1.6 s round trip, then up)
            if sum(p.state == "up" for p in conn.stats().paths) == 2:
                break
            await asyncio.sleep(0.01)
        assert sum(p.state == "up" for p in conn.stats().paths) == 2
        assert len(listener._session.flows) == 1
        server.abort()
    finally:
        conn.abort()


async def test_dial_fails_when_every_path_is_silent(
        two_relays: tuple[rendr.Listener, list[TcpRelay]]) -> None:
    listener, relays = two_relays
    for relay in relays:
        relay.blackhole()
    dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{r.addr[1]}")
                                 for r in relays], handshake_timeout=0.5, hello_stagger=0.1)
    with pytest.raises(rendr.HandshakeError, match=r"no answer within 0\.5 s"):
        await asyncio.wait_for(dialer.dial(), 3.0)
    assert not listener._session.flows


async def test_a_cancelled_dial_closes_its_carriers() -> None:
    """Cancelled while its HELLOs wait for answers, dial() closes every carrier."""
    loop = asyncio.get_running_loop()
    made: list[asyncio.Transport] = []
    lost: list[asyncio.Transport] = []

    class Silent(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            made.append(transport)  # type: ignore[arg-type]

        def connection_lost(self, exc: Exception | None) -> None:
            lost.append(self.transport)  # type: ignore[arg-type]

    servers = [await loop.create_server(Silent, "127.0.0.1", 0) for _ in range(2)]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{p}") for p in ports],
                          hello_stagger=0.05)
    task = asyncio.ensure_future(dialer.dial())
    await asyncio.sleep(0.3)  # both carriers are up and have sent HELLO
    assert len(made) == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):
        if len(lost) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(lost) == 2
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_dial_succeeds_when_the_first_hello_ack_is_lost() -> None:
    """The soak's failure (30-min run, seed 301): HELLO reached the listener over path
    1 but its HELLO_ACK was lost there; HELLO over path 2 used to get a bare
    DUPLICATE_PATH, and dial() failed after the handshake timeout.  The listener now
    repeats its first answer on path 2 (the flow is not confirmed yet); the dialer
    opens the flow with path 1's keys and JOINs."""
    listener = await rendr.listen_tcp("127.0.0.1:0")
    port = listener.addrs[0][1]
    tasks: set[asyncio.Task[None]] = set()

    async def one_way(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter
                      ) -> None:
        """Forward dialer -> listener; swallow everything the listener answers."""
        u_reader, u_writer = await asyncio.open_connection("127.0.0.1", port)

        async def up() -> None:
            while data := await c_reader.read(65536):
                u_writer.write(data)

        async def down() -> None:
            while await u_reader.read(65536):
                pass

        for coro in (up(), down()):
            task = asyncio.create_task(coro)
            tasks.add(task)

    proxy = await asyncio.start_server(one_way, "127.0.0.1", 0)
    try:
        dialer = rendr.Dialer(
            paths=[rendr.PathSpec("tcp", f"127.0.0.1:{proxy.sockets[0].getsockname()[1]}"),
                   rendr.PathSpec("late", f"127.0.0.1:{port}")],
            transports={"late": _late_tcp}, handshake_timeout=3.0)
        conn = await asyncio.wait_for(dialer.dial(), 2.0)  # before: HandshakeError at 3 s
        try:
            await _echo_once(conn, listener)
        finally:
            conn.abort()
    finally:
        for task in tasks:
            task.cancel()
        proxy.close()
        await listener.close()
