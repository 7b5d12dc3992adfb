#!/usr/bin/env python3
"""One reset of three paths that share a route ends the flow with ``ZombieFlow``,
although a fourth path is up and healthy.

Found by ``bench/soak.py`` (a ``TcpRelay.kill()`` of the relay that carried three of a
flow's four paths).  The three carriers are reset in the same loop iteration; the
dialer handles them one after the other: the active path dies and it fails over to
the best live path - another of the three, whose reset is next in line - and so on:
three "death-driven migrations that moved no data" within a few milliseconds, so the
zombie guard (``zombie_max_migrations=2``) ends the flow on the third, which lands on
the healthy path.  In the field: several paths over one interface (two over Wi-Fi,
one over LTE) and the Wi-Fi link resets.

Method: a listener, relays A and B in front of it (B adds 5 ms each way, so the A
paths have the lower RTT, as in the soak); a flow dialled over A and B, two more paths
added over A; the flow is made active on an A path, streams both ways, then relay A
is killed (RST on its three paths).  ``--runs`` times.  Exit status 1 if
a flow ended.

Usage: ``python3 bench/repro/zombie_shared_fate_kill.py [--runs 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import rendr
from rendr.testing.relay import TcpRelay


async def once() -> str | None:
    ln = await rendr.listen_tcp("127.0.0.1:0")
    a, b = TcpRelay(("127.0.0.1", ln.addrs[0][1])), TcpRelay(("127.0.0.1", ln.addrs[0][1]))
    await a.start()
    await b.start()
    b.set_delay(0.005)  # path B is a little slower: failover prefers the other A paths
    spec_a = rendr.PathSpec("tcp", f"127.0.0.1:{a.addr[1]}")
    t0 = time.monotonic()
    events: list[str] = []
    dialer = rendr.Dialer(paths=[spec_a, rendr.PathSpec("tcp", f"127.0.0.1:{b.addr[1]}")],
                          on_event=lambda e: events.append(
                              f"{time.monotonic() - t0:7.3f} {e.kind} path={e.path_id} "
                              f"{e.old_path}->{e.new_path} {e.cause or ''} {e.error or ''}"))
    conn = await dialer.dial()
    server = await ln.accept()
    for _ in range(2):
        await conn.add_path(spec_a)
    over_a = sorted(p.id for p in conn.stats().paths
                    if p.state == "up" and p.remote_addr.endswith(f":{a.addr[1]}"))
    await conn.migrate(over_a[0])
    stop = asyncio.Event()

    async def pump(c: rendr.Conn) -> None:
        while not stop.is_set():
            await c.write(b"q" * 2048)
            await asyncio.sleep(0.01)

    async def drain(c: rendr.Conn) -> None:
        while not stop.is_set():
            await c.read(65536)

    tasks = [asyncio.ensure_future(f(c)) for f in (pump, drain) for c in (conn, server)]
    await asyncio.sleep(0.5)
    events.append(f"{time.monotonic() - t0:7.3f} -- kill relay A: paths {over_a} reset; "
                  f"active {conn.active_path}")
    a.kill()
    await asyncio.sleep(2.0)
    stop.set()
    for t in tasks:
        t.cancel()
    ended = [r for r in await asyncio.gather(*tasks, return_exceptions=True)
             if isinstance(r, rendr.RendrError)]
    for c in (conn, server):
        c.abort()
    for r in (a, b):
        await r.close()
    await ln.close()
    if ended:
        return f"{type(ended[0]).__name__}: {ended[0]}\n     " + "\n     ".join(events)
    return None


async def main(runs: int) -> int:
    ended = 0
    for i in range(runs):
        why = await once()
        ended += why is not None
        print(f"run {i}: " + (f"FLOW ENDED: {why}" if why else "survived"), flush=True)
    print(f"{ended}/{runs} flows ended by one reset of the 3 paths they had over relay A "
          f"(a 4th path over relay B was up)")
    return 1 if ended else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    sys.exit(rendr.run(main(ap.parse_args().runs)))
