#!/usr/bin/env python3
"""Memory held per idle path: many flows, each with several paths, after bulk traffic.

A busy server holds many idle paths; the receive path must not keep a large read
buffer per carrier.  This opens ``--flows`` flows with ``--paths`` paths each
(both ends in one process, loopback), moves ``--mib`` MiB through every flow
(so every carrier has read into its buffers), migrates once (every path carried
data), lets everything go idle (PINGs only) and reports, per path end:

- Python heap (``tracemalloc``) held after idling, against the baseline before the
  flows were opened, per path end besides the process-wide pool of spare receive
  buffers (a few MiB, shared by all carriers);
- receive-buffer bytes still held by carriers (should be 0 when idle) and the
  shared pool's spares.

Usage::

    python bench/idle_paths.py [--flows 100] [--paths 2] [--mib 1] [--max-per-path-kib 64]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tracemalloc

import rendr
from rendr.aio import runner

try:
    from rendr.core import bufpool as rxbuf
except ImportError:  # a tree from before reused receive buffers (for comparison)
    rxbuf = None  # type: ignore[assignment]


async def run(args: argparse.Namespace) -> int:
    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    specs = [rendr.ListenSpec("tcp", "127.0.0.1:0") for _ in range(args.paths)]
    ln = await rendr.listen(*specs)
    paths = [rendr.PathSpec("tcp", f"127.0.0.1:{p}") for _, p in ln.addrs]
    payload = os.urandom(args.mib << 20)
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    pairs: list[tuple[rendr.Conn, rendr.Conn]] = []
    for _ in range(args.flows):
        client = await rendr.Dialer(paths=paths).dial()
        server = await ln.accept()
        pairs.append((client, server))
    for _ in range(200):
        if all(sum(p.state == "up" for p in c.stats().paths) == args.paths for c, _ in pairs):
            break
        await asyncio.sleep(0.01)

    async def transfer(client: rendr.Conn, server: rendr.Conn) -> None:
        half = len(payload) // 2
        buf = bytearray(1 << 20)
        for i, part in enumerate((payload[:half], payload[half:])):
            if i == 1 and args.paths > 1:
                other = next(p.id for p in client.stats().paths if p.id != client.active_path)
                await client.migrate(other)
            await client.write(part)
            got = 0
            while got < len(part):
                if hasattr(server, "readinto"):
                    got += await server.readinto(buf)
                else:  # a tree from before readinto (for comparison)
                    got += len(await server.read(1 << 20))

    await asyncio.gather(*(transfer(c, s) for c, s in pairs))
    _, peak = tracemalloc.get_traced_memory()
    await asyncio.sleep(args.idle)  # idle: PINGs and PONGs only
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    ends = 2 * args.flows * args.paths
    rx_held = sum(c._rx.held for conn in (x for pair in pairs for x in pair)
                  for c in conn._driver.carriers.values() if hasattr(c, "_rx"))
    spares, retired = rxbuf.pool_stats() if rxbuf is not None else (0, 0)
    pool = spares * rxbuf.BUFFER_SIZE if rxbuf is not None else 0
    per_path = (held - base - pool) / ends  # the shared pool is per process, not per path
    print(f"idle paths (loop={loop_name}, compiled={getattr(rendr, '__compiled__', False)}): "
          f"{args.flows} flows x {args.paths} paths, {args.mib} MiB each; "
          f"peak during traffic {(peak - base) / 2**20:.1f} MiB; after {args.idle:g} s idle: "
          f"{(held - base) / 2**20:.2f} MiB, of which the process-wide pool of spare "
          f"receive buffers {pool / 2**20:.0f} MiB ({spares} spares, {retired} retired); "
          f"{per_path / 1024:.1f} KiB per path end besides the pool; carrier receive "
          f"buffers held {rx_held} B")
    for client, server in pairs:
        client.abort()
        server.abort()
    await ln.close()
    ok = rx_held == 0 and per_path <= args.max_per_path_kib * 1024
    print("IDLE PASS" if ok else "IDLE FAIL")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=100)
    parser.add_argument("--paths", type=int, default=2)
    parser.add_argument("--mib", type=int, default=1)
    parser.add_argument("--idle", type=float, default=1.5)
    parser.add_argument("--max-per-path-kib", type=float, default=64)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    return runner.run(run(args), use_uvloop=not args.no_uvloop)


if __name__ == "__main__":
    sys.exit(main())
