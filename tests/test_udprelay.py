"""The UDP fault relay (issue 8's test tool): each fault does what it says, seeded
runs repeat, NAT rebinding shows the upstream a new source port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from rendr.testing.udprelay import Faults, UdpRelay

Address = tuple[str, int]


class _Echo(asyncio.DatagramProtocol):
    """The upstream: echoes every datagram and remembers who sent it."""

    def __init__(self) -> None:
        self.sources: list[Address] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.sources.append(addr)
        assert self.transport is not None
        self.transport.sendto(data, addr)


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[float, bytes]] = []
        self.arrived = asyncio.Event()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.got.append((time.monotonic(), data))
        self.arrived.set()


@pytest.fixture
async def echo() -> AsyncIterator[tuple[_Echo, Address]]:
    loop = asyncio.get_running_loop()
    proto = _Echo()
    transport, _ = await loop.create_datagram_endpoint(lambda: proto,
                                                       local_addr=("127.0.0.1", 0))
    try:
        yield proto, transport.get_extra_info("sockname")[:2]
    finally:
        transport.close()


async def _client(relay: UdpRelay) -> tuple[asyncio.DatagramTransport, _Client]:
    loop = asyncio.get_running_loop()
    proto = _Client()
    transport, _ = await loop.create_datagram_endpoint(lambda: proto, remote_addr=relay.addr)
    return transport, proto


async def _exchange(relay: UdpRelay, n: int, pause: float = 0.0, settle: float = 0.3
                    ) -> list[bytes]:
    transport, client = await _client(relay)
    try:
        for i in range(n):
            transport.sendto(i.to_bytes(4, "big"))
            if pause:
                await asyncio.sleep(pause)
            elif i % 10 == 9:
                await asyncio.sleep(0.001)  # stay well under the socket buffers
        await asyncio.sleep(settle)
        return [data for _, data in client.got]
    finally:
        transport.close()


async def test_clean_relay_forwards_every_datagram_both_ways(
        echo: tuple[_Echo, Address]) -> None:
    async with UdpRelay(echo[1], seed=1) as relay:
        got = await _exchange(relay, 200)
    assert got == [i.to_bytes(4, "big") for i in range(200)]
    assert relay.stats["up"].forwarded == relay.stats["down"].forwarded == 200


async def test_loss_is_seeded_and_near_its_probability(echo: tuple[_Echo, Address]) -> None:
    counts = []
    for _ in range(2):
        async with UdpRelay(echo[1], seed=7) as relay:
            relay.set_faults("up", loss=0.2)
            got = await _exchange(relay, 500)
            assert relay.stats["up"].received == 500  # same traffic both times
            counts.append((relay.stats["up"].lost, sorted(got)))
    assert counts[0] == counts[1]  # same seed, same traffic: same drops
    lost = counts[0][0]
    assert 60 <= lost <= 140, lost  # 20 % of 500, binomial: well inside 4 sigma
    assert len(counts[0][1]) == 500 - lost


async def test_duplicates_and_reordering(echo: tuple[_Echo, Address]) -> None:
    async with UdpRelay(echo[1], seed=3) as relay:
        relay.set_faults("down", duplicate=0.3, reorder=0.3, reorder_gap=0.01)
        got = await _exchange(relay, 200, pause=0.0005)
    st = relay.stats["down"]
    assert st.duplicated > 20 and st.reordered > 20
    assert len(got) == 200 + st.duplicated
    order = [int.from_bytes(d, "big") for d in got]
    assert order != sorted(order)  # some overtook others
    assert sorted(set(order)) == list(range(200))


async def test_delay_and_jitter(echo: tuple[_Echo, Address]) -> None:
    async with UdpRelay(echo[1], seed=5) as relay:
        relay.set_faults("up", delay=0.05, jitter=0.02)
        transport, client = await _client(relay)
        t0 = time.monotonic()
        transport.sendto(b"x")
        await asyncio.wait_for(client.arrived.wait(), 2)
        rtt = client.got[0][0] - t0
        transport.close()
    assert 0.05 <= rtt < 0.05 + 0.02 + 0.1


async def test_rate_limit_drops_what_would_queue_too_long(echo: tuple[_Echo, Address]) -> None:
    async with UdpRelay(echo[1], seed=9) as relay:
        relay.set_faults("up", rate=100_000, max_queue_delay=0.02)  # 100 kB/s, 2 kB queue
        transport, _client_proto = await _client(relay)
        for _ in range(50):
            transport.sendto(b"z" * 1000)  # 50 kB at once: ~3 fit the queue
        await asyncio.sleep(0.2)
        transport.close()
    st = relay.stats["up"]
    assert st.queue_drops >= 40 and st.forwarded + st.queue_drops == 50


async def test_blackhole_then_forward(echo: tuple[_Echo, Address]) -> None:
    async with UdpRelay(echo[1], seed=2) as relay:
        relay.blackhole()
        assert await _exchange(relay, 20, settle=0.1) == []
        relay.forward()
        assert len(await _exchange(relay, 20, settle=0.1)) == 20
    assert relay.stats["up"].blackholed == 20


async def test_rebind_gives_the_upstream_a_new_source_port(
        echo: tuple[_Echo, Address]) -> None:
    proto, addr = echo
    async with UdpRelay(addr, seed=4) as relay:
        transport, client = await _client(relay)
        transport.sendto(b"a")
        await asyncio.wait_for(client.arrived.wait(), 2)
        relay.rebind()
        client.arrived.clear()
        transport.sendto(b"b")
        await asyncio.wait_for(client.arrived.wait(), 2)
        transport.close()
    assert [d for _, d in client.got] == [b"a", b"b"]  # the client saw nothing change
    assert len(set(proto.sources)) == 2  # the upstream saw a new source


def test_faults_are_validated() -> None:
    with pytest.raises(ValueError):
        Faults(loss=1.5).validate()
    with pytest.raises(ValueError):
        Faults(rate=0).validate()
