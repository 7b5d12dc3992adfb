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


def test_dialer_follows_retry_transparently() -> None:
    """A listener always under load (occupancy threshold at one pending handshake)
    answers RETRY first; the dialer re-sends its HELLO with the cookie on a fresh
    carrier and gets its flow."""
    async def main() -> None:
        lst = await rendr.listen_tcp("127.0.0.1:0", max_pending=2, hello_load_pending=0.5)
        host, port = lst.addrs[0][:2]
        try:
            conn = await rendr.Dialer(paths=[rendr.PathSpec("tcp", f"{host}:{port}")]).dial()
            server = await lst.accept()
            await conn.write(b"through the cookie")
            assert await server.readexactly(18) == b"through the cookie"
            assert lst._session.retries == 1
            conn.abort()
            server.abort()
        finally:
            await lst.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_half_open_flow_leaves_the_table() -> None:
    """HELLO_ACK sent, then nothing from the dialer: the flow ends after
    ``confirm_timeout`` (before: it held its place for the 90 s migration budget),
    and ``accept()`` never returned it (it waits for the dialer's first record)."""
    from rendr.core.handshake import HandshakeParser
    from rendr.testing.rawpeer import RawDialer

    async def main() -> None:
        lst = await rendr.listen_tcp("127.0.0.1:0", confirm_timeout=0.5)
        host, port = lst.addrs[0][:2]
        loop = asyncio.get_running_loop()
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(RawDialer().hello())
            parser = HandshakeParser()
            while parser.feed(await reader.read(4096)) is None:
                pass
            assert len(lst._session.flows) == 1
            # never confirmed: the application never sees it ...
            accepting = asyncio.ensure_future(lst.accept())
            t0 = loop.time()
            while lst._session.flows and loop.time() - t0 < 2.0:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            # ... and it leaves the table after confirm_timeout
            assert not lst._session.flows
            assert loop.time() - t0 >= 0.4
            assert not accepting.done()
            accepting.cancel()
            writer.close()
        finally:
            await lst.close()

    asyncio.run(asyncio.wait_for(main(), 30))
