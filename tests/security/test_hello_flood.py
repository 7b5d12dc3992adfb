"""Issue 7: a HELLO flood from one source address must not starve a dialer from
another.  The attacker (its own process, from the loopback alias 127.0.0.2) opens TCP
carriers as fast as it can, each with a valid-looking HELLO (fresh flow id, valid
X25519 share), follows RETRYs, and never completes a flow; a legitimate dialer from
127.0.0.1 dials meanwhile and must get its flow within a bound, every time."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time

import rendr
from rendr.testing.flood import flood_process

DIALS = 5
BOUND = 3.0  # seconds a legitimate dial may take under the flood


async def _serve(lst: rendr.Listener) -> None:
    """An ordinary server: every accepted connection is read until it ends."""
    async def handle(conn: rendr.Conn) -> None:
        with contextlib.suppress(rendr.RendrError):
            while await conn.read(65536):
                pass
        conn.abort()

    tasks: set[asyncio.Task[None]] = set()
    async for conn in lst:
        task = asyncio.create_task(handle(conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def test_hello_flood_from_one_source_does_not_starve_another() -> None:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()

    async def main() -> list[float]:
        lst = await rendr.listen_tcp("127.0.0.1:0", max_flows=256)
        host, port = lst.addrs[0][:2]
        server = asyncio.create_task(_serve(lst))
        attacker = ctx.Process(target=flood_process,
                               args=((host, port), "127.0.0.2", 9.0, 16, False, out))
        attacker.start()
        latencies: list[float] = []
        try:
            await asyncio.sleep(3.0)  # the flood is in full swing (before: the table is full)
            spec = [rendr.PathSpec("tcp", f"{host}:{port}")]
            for _ in range(DIALS):
                t0 = time.monotonic()
                conn = await asyncio.wait_for(rendr.Dialer(paths=spec).dial(), BOUND)
                await conn.write(b"legitimate")
                latencies.append(time.monotonic() - t0)
                conn.abort()
                await asyncio.sleep(0.2)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, attacker.join, 20)
            server.cancel()
            await lst.close()
        return latencies

    latencies = asyncio.run(asyncio.wait_for(main(), 60))
    stats = out.get(timeout=5)
    assert len(latencies) == DIALS and max(latencies) < BOUND, (latencies, stats)
    assert stats["sent"] > 200, stats  # it was a flood
