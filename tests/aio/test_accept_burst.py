"""The TCP listener takes a burst of queued connections in a few loop iterations
(bench/repro/uvloop_single_accept.py: uvloop accepted one per iteration, so a busy
listener left re-dials, JOINs and HELLOs in the kernel's accept queue for seconds)."""

from __future__ import annotations

import asyncio
import socket

from rendr.carriers.base import Carrier
from rendr.carriers.tcp import TcpCarrier, listen_tcp

N = 64


async def test_a_queued_burst_is_accepted_in_a_few_iterations() -> None:
    loop = asyncio.get_running_loop()
    got: list[Carrier] = []
    server, (host, port) = await listen_tcp("127.0.0.1:0", got.append, backlog=128)
    socks: list[socket.socket] = []
    try:
        # the loop does not run while these connect: all N wait in the accept queue
        socks = [socket.create_connection((host, port), timeout=5) for _ in range(N)]
        iterations = 0
        all_in = loop.create_future()

        def tick() -> None:  # one call per loop iteration
            nonlocal iterations
            iterations += 1
            if len(got) >= N:
                all_in.set_result(None)
            elif iterations < 10_000:
                loop.call_soon(tick)

        loop.call_soon(tick)
        await asyncio.wait_for(all_in, 10)
        assert len(got) == N
        assert iterations <= 8, f"{N} queued connections took {iterations} loop iterations"
        assert all(isinstance(c, TcpCarrier) and c.remote_addr for c in got)
    finally:
        for s in socks:
            s.close()
        for c in got:
            c.abort()
        server.close()
        await server.wait_closed()


async def test_accepted_carriers_carry_bytes_and_close_cleanly() -> None:
    got: list[Carrier] = []
    server, (host, port) = await listen_tcp("127.0.0.1:0", got.append)
    try:
        reader, writer = await asyncio.open_connection(host, port)
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
        (carrier,) = got
        assert carrier.local_addr.endswith(f":{port}")
        carrier.write([b"hello"])
        assert await asyncio.wait_for(reader.readexactly(5), 5) == b"hello"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    # closed: new connections are refused
    refused = False
    try:
        _, w = await asyncio.open_connection(host, port)
        w.close()
    except OSError:
        refused = True
    assert refused
