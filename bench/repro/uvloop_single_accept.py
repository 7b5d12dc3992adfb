#!/usr/bin/env python3
"""On uvloop a listening socket is accepted from once per event-loop iteration.

Found by ``bench/soak.py``: with 200 busy flows the rendr listener's loop iterations
took 100-200 ms (``strace``: one ``accept4`` per ``epoll_pwait``), the kernel's accept
queue held up to 380 connections, and re-dials, JOINs of ``add_path()`` and HELLOs of
new flows waited there more than the dialer's 10 s ``handshake_timeout`` (then failed,
and their stale carriers, accepted later, cost the flows zombie-guard strikes).  The
default asyncio loop accepts up to ``backlog`` connections per readiness event.

Method: a server whose loop spends 20 ms of CPU per iteration; 100 connections are
already complete in the kernel; how long until the server has accepted them all?

Usage: ``python3 bench/repro/uvloop_single_accept.py``  (runs both loops)
"""

from __future__ import annotations

import asyncio
import socket
import time

import uvloop


async def measure(iteration_cost: float = 0.02, n: int = 100) -> float:
    loop = asyncio.get_running_loop()
    accepted: list[float] = []
    all_in = asyncio.Event()

    class Count(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.append(time.monotonic())
            if len(accepted) == n:
                all_in.set()

    server = await loop.create_server(Count, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    busy = True

    def spin() -> None:  # stands for a loop with many busy flows
        t = time.monotonic()
        while time.monotonic() - t < iteration_cost:
            pass
        if busy:
            loop.call_soon(spin)

    loop.call_soon(spin)
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    t0 = time.monotonic()
    await asyncio.wait_for(all_in.wait(), 30)
    busy = False
    for s in socks:
        s.close()
    server.close()
    return accepted[-1] - t0


def main() -> None:
    for name, run in (("uvloop", uvloop.run), ("asyncio", asyncio.run)):
        took = run(measure())
        print(f"{name:8s}: 100 connections waiting in the accept queue, a loop of 20 ms "
              f"per iteration: all accepted after {took:.2f} s")


if __name__ == "__main__":
    main()
