"""Packet connections on real sockets: over udpflow (through the project's UDP fault
relay) and over TCP; boundaries, de-duplication, migration, NAT rebinding, a spoofed
source, many flows on one listener socket (both loops)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

import rendr
from rendr.carriers.udpflow import CHALLENGE, DATA, RESPONSE, UdpServerCarrier
from rendr.testing.udprelay import UdpRelay

from .conftest import assert_drivers_coroutine

PSK = b"packet-test-psk-0123456789abcdef"


@dataclass
class PacketPair:
    listener: rendr.PacketListener
    relays: list[UdpRelay]
    client: rendr.PacketConn
    server: rendr.PacketConn

    async def wait_paths(self, n: int) -> None:
        async def ready() -> None:
            while (sum(p.state == "up" for p in self.client.stats().paths) < n  # noqa: ASYNC110
                   or sum(p.state == "up" for p in self.server.stats().paths) < n):
                await asyncio.sleep(0.01)

        await asyncio.wait_for(ready(), 5)

    def relay_of(self, path_id: int) -> UdpRelay:
        remote = next(p.remote_addr for p in self.client.stats().paths if p.id == path_id)
        port = int(remote.rsplit(":", 1)[1])
        return next(r for r in self.relays if r.addr[1] == port)


async def _pair(n_paths: int = 2, **knobs: object) -> PacketPair:
    pln = await rendr.listen_udpflow_packet(*["127.0.0.1:0"] * n_paths, psk=PSK, **knobs)
    relays = []
    for addr in pln.addrs:
        relay = UdpRelay(addr, seed=len(relays) + 1)
        await relay.start()
        relays.append(relay)
    dialer = rendr.Dialer(paths=[rendr.PathSpec("udpflow", f"127.0.0.1:{r.addr[1]}")
                                 for r in relays], psk=PSK, **knobs)
    client = await asyncio.wait_for(dialer.dial_packet(), 5)
    server = await asyncio.wait_for(pln.accept(), 5)
    pair = PacketPair(pln, relays, client, server)
    await pair.wait_paths(n_paths)
    return pair


@pytest.fixture
async def pp() -> AsyncIterator[PacketPair]:
    pair = await _pair()
    yield pair
    pair.client.abort()
    pair.server.abort()
    await pair.listener.close()
    for r in pair.relays:
        await r.close()


async def _recv_quiet(pc: rendr.PacketConn, quiet: float = 1.0) -> list[bytes]:
    """Everything received until nothing came for ``quiet`` seconds."""
    out: list[bytes] = []
    while True:
        try:
            out.append(await asyncio.wait_for(pc.recv(), quiet))
        except asyncio.TimeoutError:
            return out


async def _recv_n(pc: rendr.PacketConn, n: int, timeout: float = 10) -> list[bytes]:
    out: list[bytes] = []

    async def run() -> None:
        while len(out) < n:
            out.append(await pc.recv())

    await asyncio.wait_for(run(), timeout)
    return out


async def _send_paced(pc: rendr.PacketConn, packets: list[bytes], batch: int = 10) -> None:
    # a paced sender, as a UDP application must be: the relay (a DatagramProtocol)
    # reads one datagram per loop iteration on the default loop
    for i, p in enumerate(packets):
        await pc.send(p)
        if i % batch == batch - 1:
            await asyncio.sleep(0.001)


async def test_boundaries_sizes_and_too_large(pp: PacketPair) -> None:
    c, s = pp.client, pp.server
    assert isinstance(c, rendr.AdminPacketConn) and isinstance(s, rendr.AdminPacketConn)
    most = c.max_payload
    assert most == 1200 - 9 - 24 - 12  # udpflow header, seal, DGRAM header
    sizes = [0, 1, 100, most - 1, most, 0]
    for n in sizes:
        await c.send(bytes([n % 256]) * n)
    with pytest.raises(rendr.PacketTooLarge):
        await c.send(b"z" * (most + 1))
    assert [len(p) for p in await _recv_n(s, len(sizes))] == sizes
    await s.send(b"back")
    assert await asyncio.wait_for(c.recv(), 5) == b"back"


async def test_duplicated_reordered_datagrams_deliver_each_packet_once(
        pp: PacketPair) -> None:
    for r in pp.relays:
        r.set_faults("up", duplicate=0.3, reorder=0.2, reorder_gap=0.003)
    sent = [i.to_bytes(4, "big") * 25 for i in range(3000)]
    receiving = asyncio.ensure_future(_recv_quiet(pp.server))
    await _send_paced(pp.client, sent)
    got = await receiving
    # each packet at most once, none invented; (nearly) all of them: the relay itself
    # may drop a few on a loaded machine (it is a DatagramProtocol on the same loop)
    assert len(got) == len(set(got)) and set(got) <= set(sent)
    assert len(got) >= 0.9 * len(sent), {k: str(v) for k, v in pp.relays[0].stats.items()}
    dups = sum(r.stats["up"].duplicated for r in pp.relays)
    datagrams = sum(r.stats["up"].received for r in pp.relays)
    assert dups > 0.2 * datagrams > 50
    replays = sum(p.opener.replays for p in pp.server._flow.paths.values()
                  if p.opener is not None)
    assert replays >= dups * 0.9  # the copies were dropped below the packet layer


async def test_planned_migrations_lose_nothing() -> None:
    """Direct paths (no relay in between that could drop under load): six planned
    migrations while sending, and not one packet lost."""
    pln = await rendr.listen_udpflow_packet("127.0.0.1:0", "127.0.0.1:0", psk=PSK)
    c = await rendr.Dialer(paths=[rendr.PathSpec("udpflow", f"127.0.0.1:{p}")
                                  for _, p in pln.addrs], psk=PSK).dial_packet()
    s = await asyncio.wait_for(pln.accept(), 5)
    for _ in range(100):
        if len(c.stats().paths) == 2 and len(s.stats().paths) == 2:
            break
        await asyncio.sleep(0.02)
    sent = [i.to_bytes(4, "big") * 50 for i in range(6000)]
    receiving = asyncio.ensure_future(_recv_n(s, len(sent), timeout=20))
    ids = [p.id for p in c.stats().paths]
    for k in range(6):
        await _send_paced(c, sent[k * 1000 : (k + 1) * 1000])
        await c.migrate(ids[(k + 1) % 2])
    got = await receiving
    assert sorted(got) == sent
    assert c.migration_count >= 6
    c.abort()
    s.abort()
    await pln.close()


async def test_failover_when_the_active_path_goes_silent(pp: PacketPair) -> None:
    c, s = pp.client, pp.server
    pp.relay_of(c.active_path).blackhole()
    before = c.active_path
    for _ in range(200):
        if c.active_path != before:
            break
        await c.send(b"probe")
        await asyncio.sleep(0.01)
    assert c.active_path != before
    while s.recv_nowait() is not None:
        pass
    await c.send(b"after failover")
    while (p := await asyncio.wait_for(s.recv(), 5)) == b"probe":
        pass
    assert p == b"after failover"


async def test_nat_rebinding_keeps_the_flow(pp: PacketPair) -> None:
    """The client's source port changes (the relay's NAT rebinds): the listener
    validates the new address and moves there; the application sees nothing."""
    c, s = pp.client, pp.server
    relay = pp.relay_of(c.active_path)
    await c.send(b"before")
    assert await asyncio.wait_for(s.recv(), 5) == b"before"
    carrier = s._driver.carriers[c.active_path]
    assert isinstance(carrier, UdpServerCarrier)
    old_addr = carrier.addr
    relay.rebind()
    for i in range(50):  # traffic both ways while the listener validates
        await c.send(b"up %d" % i)
        await s.send(b"down %d" % i)
        await asyncio.sleep(0.01)
    got_up = [p for p in await _recv_n(s, 50) if p.startswith(b"up")]
    assert got_up[-1] == b"up 49"
    assert carrier.addr != old_addr  # the listener moved to the validated address
    await s.send(b"to the new address")
    while (p := await asyncio.wait_for(c.recv(), 5)) != b"to the new address":
        assert p.startswith(b"down")


async def test_a_spoofed_source_does_not_redirect_the_listener(pp: PacketPair) -> None:
    """An attacker who saw a path's connection id sends junk with it from its own
    address and answers whatever comes back.  It must get nothing: no CHALLENGE (only
    an authenticated datagram from a new address starts a validation), so no move,
    and never the flow's traffic.  (Before: a CHALLENGE came, the attacker answered
    it, and the listener sent the path's datagrams to the attacker.)"""
    c, s = pp.client, pp.server
    carrier = next(x for x in s._driver.carriers.values()
                   if isinstance(x, UdpServerCarrier))
    host, port = carrier._server.local_addr.rsplit(":", 1)
    target = (host, int(port))
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.bind(("127.0.0.1", 0))
    attacker.setblocking(False)
    seen: list[bytes] = []

    def drain_and_answer() -> None:
        while True:
            try:
                d = attacker.recv(65535)
            except BlockingIOError:
                return
            seen.append(d)
            if d[0] == CHALLENGE:  # answer it, as a hijacker would
                attacker.sendto(bytes([RESPONSE]) + d[1:], target)

    try:
        before = carrier.addr
        forged = bytes([DATA]) + carrier.cid + bytes(100)
        for _ in range(20):
            attacker.sendto(forged, target)
            await asyncio.sleep(0.005)
            drain_and_answer()
        for i in range(20):
            await s.send(b"to client %d" % i)
            await asyncio.sleep(0.005)
            drain_and_answer()
        got = await _recv_n(c, 20)
        assert got[-1] == b"to client 19"
        assert seen == []  # not even a CHALLENGE: nothing to reflect, nothing to answer
        assert carrier.addr == before
    finally:
        attacker.close()
    path = s._flow.find_path(carrier_path(s, carrier))
    assert path is not None and path.opener is not None
    dropped = path.opener.failures + path.opener.replays
    assert dropped >= 20  # the forgeries were dropped and counted


def carrier_path(conn: rendr.PacketConn, carrier: object) -> int:
    return next(pid for pid, x in conn._driver.carriers.items() if x is carrier)


async def test_clean_close_is_eof_after_every_packet(pp: PacketPair) -> None:
    c, s = pp.client, pp.server
    for i in range(100):
        await c.send(bytes([i]) * 300)
    await c.close()
    got = [p async for p in s]  # ends at the peer's clean close
    assert got == [bytes([i]) * 300 for i in range(100)]
    with pytest.raises(EOFError):
        await s.recv()


async def test_packet_flows_over_tcp_paths_too() -> None:
    ln = await rendr.listen(rendr.ListenSpec("tcp", "127.0.0.1:0"), psk=PSK)
    try:
        pc = await rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{ln.addrs[0][1]}")],
                                psk=PSK).dial_packet()
        spc = await asyncio.wait_for(ln.accept_packet(), 5)
        assert pc.max_payload == 65536 - 8
        sizes = [0, 1, 70, pc.max_payload]
        for n in sizes:
            await pc.send(b"t" * n)
        assert [len(p) for p in await _recv_n(spc, len(sizes))] == sizes
        pc.abort()
    finally:
        await ln.close()


@pytest.mark.timeout(120)
async def test_a_thousand_flows_on_one_listener_socket() -> None:
    pln = await rendr.listen_udpflow_packet(
        "127.0.0.1:0", psk=PSK, backlog=1024, max_flows=4096, max_flows_per_source=2000,
        source_hello_rate=0, max_pending_per_source=200)
    port = pln.addrs[0][1]
    dialer = rendr.Dialer(paths=[rendr.PathSpec("udpflow", f"127.0.0.1:{port}")], psk=PSK)
    n = 1000
    sem = asyncio.Semaphore(50)

    async def one(i: int) -> rendr.PacketConn:
        async with sem:
            pc = await asyncio.wait_for(dialer.dial_packet(), 30)
            await pc.send(i.to_bytes(4, "big"))
            return pc

    async def serve() -> set[bytes]:
        seen: set[bytes] = set()
        accepted = []
        while len(accepted) < n:
            accepted.append(await pln.accept())
        for spc in accepted:
            seen.add(await asyncio.wait_for(spc.recv(), 10))
        for spc in accepted:
            spc.abort()
        return seen

    server = asyncio.ensure_future(serve())
    clients = await asyncio.gather(*(one(i) for i in range(n)))
    seen = await asyncio.wait_for(server, 60)
    assert seen == {i.to_bytes(4, "big") for i in range(n)}
    udp_servers = pln.listener._servers
    assert len(udp_servers) == 1  # one socket for every flow
    for pc in clients:
        pc.abort()
    await pln.close()


@pytest.mark.parametrize("seed", [11, 12, 13])
@pytest.mark.parametrize("kind", ["packet", "stream"])
async def test_clean_close_through_heavy_loss(kind: str, seed: int) -> None:
    """30 % loss each way: the FIN (alone in its datagram) is re-sent until
    acknowledged, and the CLOSE goes out three times, so both ends end cleanly (before:
    close() waited out linger, and a peer that missed the CLOSE failed with
    MigrationBudgetExceeded)."""
    ln = await rendr.listen_udpflow("127.0.0.1:0", psk=PSK, migration_budget=30.0)
    relay = UdpRelay(ln.addrs[0], seed=seed)
    await relay.start()
    dialer = rendr.Dialer(paths=[rendr.PathSpec("udpflow", f"127.0.0.1:{relay.addr[1]}")],
                          psk=PSK, migration_budget=30.0)
    try:
        if kind == "packet":
            c: rendr.PacketConn | rendr.Conn = await asyncio.wait_for(dialer.dial_packet(), 5)
            s: rendr.PacketConn | rendr.Conn = await asyncio.wait_for(ln.accept_packet(), 5)
        else:
            c = await asyncio.wait_for(dialer.dial(), 5)
            s = await asyncio.wait_for(ln.accept(), 5)
        relay.set_faults("both", loss=0.3)
        if isinstance(c, rendr.PacketConn):
            await c.send(b"last words")
        else:
            await c.write(b"last words" * 1000)
        t0 = asyncio.get_running_loop().time()
        await asyncio.wait_for(c.close(), 20)
        if isinstance(s, rendr.PacketConn):
            with pytest.raises(EOFError):
                while True:
                    await asyncio.wait_for(s.recv(), 20)
        else:
            assert await asyncio.wait_for(s.read(-1), 20) == b"last words" * 1000
        await asyncio.wait_for(s.wait_closed(), 20)
        assert c._flow.error is None and s._flow.error is None  # both ended cleanly
        assert asyncio.get_running_loop().time() - t0 < 15
    finally:
        await ln.close()
        await relay.close()


async def test_a_datagram_protocol_moves_onto_rendr() -> None:
    """An asyncio DatagramProtocol application over rendr.create_datagram_endpoint:
    sendto/datagram_received with boundaries kept, sendto/recvfrom aliases, and
    connection_lost(None) at the peer's clean close."""
    pln = await rendr.listen_udpflow_packet("127.0.0.1:0", psk=PSK)
    loop = asyncio.get_running_loop()
    got: list[tuple[bytes, object]] = []
    lost: asyncio.Future[Exception | None] = loop.create_future()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.DatagramTransport)
            self.transport = transport

        def datagram_received(self, data: bytes, addr: object) -> None:
            got.append((data, addr))

        def connection_lost(self, exc: Exception | None) -> None:
            lost.set_result(exc)

    try:
        dialer = rendr.Dialer(paths=[rendr.PathSpec("udpflow", f"127.0.0.1:{pln.addrs[0][1]}")],
                              psk=PSK)
        transport, _proto = await rendr.create_datagram_endpoint(Echo, dialer)
        server = await asyncio.wait_for(pln.accept(), 5)
        for n in (0, 1, 500):
            transport.sendto(b"d" * n)
        assert [len(await asyncio.wait_for(server.recv(), 5)) for _ in range(3)] == [0, 1, 500]
        await server.sendto(b"reply")
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
        peer = transport.get_extra_info("peername")
        assert got == [(b"reply", peer)] and peer == transport.conn.flow_id.hex()
        transport.sendto(b"via recvfrom")
        assert await asyncio.wait_for(server.recvfrom(), 5) == (b"via recvfrom",
                                                                server.flow_id.hex())
        await server.close()
        assert await asyncio.wait_for(lost, 10) is None
    finally:
        await pln.close()


async def test_the_mtu_is_configurable_on_both_ends() -> None:
    ln = await rendr.listen(rendr.ListenSpec("udpflow", "127.0.0.1:0", options={"mtu": 600}),
                            psk=PSK)
    try:
        pc = await rendr.Dialer(paths=[rendr.PathSpec(
            "udpflow", f"127.0.0.1:{ln.addrs[0][1]}", options={"mtu": "600"})],
            psk=PSK).dial_packet()
        spc = await asyncio.wait_for(ln.accept_packet(), 5)
        assert pc.max_payload == spc.max_payload == 600 - 9 - 24 - 12
        await pc.send(b"m" * pc.max_payload)
        assert len(await asyncio.wait_for(spc.recv(), 5)) == 555
        with pytest.raises(rendr.PacketTooLarge):
            await spc.send(b"m" * 556)
        pc.abort()
    finally:
        await ln.close()


async def test_send_and_recv_are_the_drivers_coroutines(pp: PacketPair) -> None:
    """``send`` and ``recv`` hand back the driver's coroutines (compiled with the engine in
    a compiled build): no interpreted coroutine per packet.  They behave as coroutines
    everywhere (tasks, cancellation, errors at await)."""
    coros = [pp.client.send(b"one"), pp.server.recv()]
    for coro in coros:
        assert_drivers_coroutine(coro)
    await coros[0]
    assert await asyncio.wait_for(asyncio.ensure_future(coros[1]), 5) == b"one"
    receiver = asyncio.create_task(pp.server.recv())
    await asyncio.sleep(0.05)
    receiver.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receiver
    for i in range(20):  # a burst: the first goes at once, the rest at the iteration's end
        await pp.client.send(b"%d" % i)
    got = [await asyncio.wait_for(pp.server.recv(), 5) for _ in range(20)]
    assert sorted(got) == sorted(b"%d" % i for i in range(20))
    await pp.client.close()
    with pytest.raises(rendr.ConnClosed):
        await pp.client.recv()
    late = pp.client.send(b"x")
    with pytest.raises(rendr.ConnClosed):
        await late
