#!/usr/bin/env python3
"""One 1.5 s stall of the listener process ends most 3-path flows with ``ZombieFlow``.

Found by ``bench/soak.py`` on a loaded machine.  The listener process stops (SIGSTOP;
a GC pause or a starved CPU does the same) while a dialer streams over three paths.
The dialer declares every path dead after 0.6 s, closes them (RST) and re-dials.  When
the listener runs again it handles the three resets in one pass: the active path dies
and it fails over to the next path, which dies in the same pass, and so on - each hop a
"death-driven migration that moved no data" - and the re-dialled path's attach is one
more.  Three strikes: the zombie guard (``zombie_max_migrations=2``) ends the flow,
after one outage of 1.5 s (README: only an outage longer than the 90 s migration
budget may end a flow).  The dialer then sees ``ConnAborted`` (code 4) or
``ZombieFlow: the listener no longer knows this flow``.

Method: a listener echo server in a child process; ``--runs`` flows over 3 paths,
each streaming both ways; SIGSTOP the child for ``--stall`` s, SIGCONT, stream 6 s
more.  ``SHOW=1`` prints the listener's events.  Exit status 1 if a flow ended.

Usage: ``python3 bench/repro/zombie_after_peer_stall.py [--runs 8] [--stall 1.5]``
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import sys
import time

import rendr


def _line(t0: float, e: rendr.Event) -> str:
    return (f"{time.monotonic() - t0:7.3f} {e.kind} path={e.path_id} {e.old_path}->{e.new_path}"
            f" {e.cause or ''} {e.error or ''}")


def server(q: mp.Queue[int]) -> None:
    t0 = time.monotonic()
    show = bool(os.environ.get("SHOW"))

    def on_event(e: rendr.Event) -> None:
        if show:
            print("   listener", _line(t0, e), flush=True)

    async def echo(conn: rendr.Conn) -> None:
        try:
            while data := await conn.read(65536):
                await conn.write(data)
        except rendr.RendrError as exc:
            print(f"   listener flow ended: {type(exc).__name__}: {exc}", flush=True)

    async def main() -> None:
        ln = await rendr.listen_tcp("127.0.0.1:0", on_event=on_event)
        q.put(ln.addrs[0][1])
        async for conn in ln:
            asyncio.get_running_loop().create_task(echo(conn))

    rendr.run(main())


async def once(port: int, pid: int, stall: float) -> str | None:
    t0 = time.monotonic()
    events: list[str] = []
    dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{port}")] * 3,
                          on_event=lambda e: events.append(_line(t0, e)))
    conn = await dialer.dial()
    for _ in range(500):  # all three paths up
        if sum(p.state == "up" for p in conn.stats().paths) == 3:
            break
        await asyncio.sleep(0.01)
    stop = asyncio.Event()

    async def pump() -> None:
        while not stop.is_set():
            await conn.write(b"z" * 4096)
            await asyncio.sleep(0.005)

    async def drain() -> None:
        while not stop.is_set():
            await conn.read(65536)

    tasks = [asyncio.ensure_future(pump()), asyncio.ensure_future(drain())]
    await asyncio.sleep(0.5)
    os.kill(pid, signal.SIGSTOP)
    await asyncio.sleep(stall)
    os.kill(pid, signal.SIGCONT)
    await asyncio.sleep(6)
    stop.set()
    for t in tasks:
        t.cancel()
    ended = [r for r in await asyncio.gather(*tasks, return_exceptions=True)
             if isinstance(r, rendr.RendrError)]
    conn.abort()
    if ended:
        return f"{type(ended[0]).__name__}: {ended[0]}\n     " + "\n     ".join(events)
    return None


async def main(runs: int, stall: float) -> int:
    q: mp.Queue[int] = mp.Queue()
    child = mp.Process(target=server, args=(q,), daemon=True)
    child.start()
    assert child.pid is not None
    port = q.get()
    ended = 0
    for i in range(runs):
        why = await once(port, child.pid, stall)
        ended += why is not None
        print(f"run {i}: " + (f"FLOW ENDED: {why}" if why else "survived"), flush=True)
    print(f"{ended}/{runs} flows over 3 paths ended by one {stall:g} s stall of the listener")
    child.kill()
    child.join()
    return 1 if ended else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--stall", type=float, default=1.5)
    a = ap.parse_args()
    sys.exit(rendr.run(main(a.runs, a.stall)))
