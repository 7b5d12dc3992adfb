"""Issue 6: a listener-wide receive-memory budget.  Many flows that each could pin
a whole receive window (1000 flows x 8 MiB = 8 GiB) share ``listener_memory``:
under pressure windows stop growing (never below ``recv_window_floor``), every flow
still moves, and the memory comes back when applications read or flows end."""

from __future__ import annotations

import asyncio
import hashlib
import os

import rendr
from rendr.config import FlowConfig
from rendr.core.memory import MemoryBudget
from rendr.core.session import DialerHandshake, ListenerHandshake
from rendr.core.types import Mode
from rendr.core.wire import FrameType

KIB, MIB = 1 << 10, 1 << 20


def test_budget_grants_floor_under_pressure_and_never_more_than_asked() -> None:
    b = MemoryBudget(limit=1 * MIB, floor=64 * KIB)
    assert b.grant(768 * KIB, 64 * KIB) == 768 * KIB
    assert b.grant(768 * KIB, 64 * KIB) == 256 * KIB  # what is free
    assert b.grant(768 * KIB, 64 * KIB) == 64 * KIB  # the floor
    assert b.grant(10, 64 * KIB) == 10  # never more than asked
    assert b.promised == 1 * MIB + 64 * KIB + 10 and b.throttled == 2
    b.release(b.promised)
    assert b.grant(768 * KIB, 0) == 768 * KIB


def test_hello_acks_advertise_what_the_budget_grants() -> None:
    """The 1st flow gets its full window, later ones what is left, then the floor:
    the listener promises at most limit + flows * floor (it was flows * recv_window)."""
    cfg = FlowConfig(listener_memory=20 * MIB, recv_window_floor=256 * KIB)
    hs = ListenerHandshake(cfg)
    windows = []
    for _ in range(100):
        opening = DialerHandshake(os.urandom(16), Mode.PRIME, FlowConfig()).hello(1)
        decision = hs.decide(FrameType.HELLO, opening[1][4:], 0.0)
        assert decision.flow is not None
        windows.append(decision.flow.advertised_window)
    assert windows[:2] == [8 * MIB, 8 * MIB] and windows[2] == 4 * MIB
    assert set(windows[3:]) == {256 * KIB}
    assert hs.memory.promised <= cfg.listener_memory + 100 * cfg.recv_window_floor
    for flow in hs.flows.values():  # ending flows gives everything back
        flow.abort(1.0)
    assert hs.memory.promised == 0


def test_flows_under_memory_pressure_all_complete_exactly() -> None:
    asyncio.run(asyncio.wait_for(_flows_under_memory_pressure(), 60))


async def _flows_under_memory_pressure() -> None:
    """Six flows of 3 MiB each into a listener with 2 MiB of memory whose server
    does not read for a while: the promised memory stays within limit + 6 floors,
    then every byte of every flow arrives, and the budget is empty at the end."""
    limit, floor = 2 * MIB, 128 * KIB
    lst = await rendr.listen_tcp("127.0.0.1:0", listener_memory=limit,
                                 recv_window_floor=floor)
    host, port = lst.addrs[0][:2]
    datas = [os.urandom(3 * MIB) for _ in range(6)]
    peak = 0

    async def client(data: bytes) -> None:
        conn = await rendr.Dialer(paths=[rendr.PathSpec("tcp", f"{host}:{port}")]).dial()
        await conn.write(data)
        await conn.write_eof()
        assert await conn.read(1) == b""
        await conn.close()

    try:
        clients = [asyncio.create_task(client(d)) for d in datas]
        servers = [await asyncio.wait_for(lst.accept(), 10) for _ in datas]
        for _ in range(30):  # nobody reads: windows fill up to what was promised
            peak = max(peak, lst.memory.promised)
            await asyncio.sleep(0.01)
        assert peak <= limit + len(datas) * floor, peak
        assert lst.memory.throttled > 0

        async def drain(conn: rendr.Conn) -> bytes:
            out = bytearray()
            while chunk := await conn.read(256 * KIB):
                out += chunk
            await conn.write_eof()
            return bytes(out)

        got = await asyncio.wait_for(asyncio.gather(*(drain(s) for s in servers)), 30)
        want = {hashlib.sha256(d).digest() for d in datas}
        assert {hashlib.sha256(g).digest() for g in got} == want
        await asyncio.wait_for(asyncio.gather(*clients), 10)
        for s in servers:
            await s.close()
        assert lst.memory.promised == 0
    finally:
        await lst.close()
