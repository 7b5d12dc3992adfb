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

Usage: ``python3 bench/repro/uvloop_single_accept.py [--rendr]``  (runs both loops;
``--rendr``: through rendr's TCP listener, ``rendr.carriers.tcp.listen_tcp``, which
accepts up to ``backlog`` per iteration on every loop; exit status 1 if it took more
than 0.5 s)
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from typing import Any

import uvloop

from rendr.carriers.tcp import listen_tcp


async def measure(iteration_cost: float = 0.02, n: int = 100, via_rendr: bool = False
                  ) -> float:
    loop = asyncio.get_running_loop()
    accepted: list[float] = []
    all_in = asyncio.Event()

    class Count(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.append(time.monotonic())
            if len(accepted) == n:
                all_in.set()

    server: Any
    if via_rendr:
        def on_carrier(carrier: object) -> None:
            accepted.append(time.monotonic())
            if len(accepted) == n:
                all_in.set()

        server, (_, port) = await listen_tcp("127.0.0.1:0", on_carrier, backlog=1024)
    else:
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rendr", action="store_true", help="through rendr's TCP listener")
    via_rendr = ap.parse_args().rendr
    what = "rendr listen_tcp" if via_rendr else "loop.create_server"
    worst = 0.0
    for name, run in (("uvloop", uvloop.run), ("asyncio", asyncio.run)):
        took = run(measure(via_rendr=via_rendr))
        worst = max(worst, took)
        print(f"{name:8s} ({what}): 100 connections waiting in the accept queue, a loop "
              f"of 20 ms per iteration: all accepted after {took:.2f} s")
    return 1 if via_rendr and worst > 0.5 else 0


if __name__ == "__main__":
    sys.exit(main())
