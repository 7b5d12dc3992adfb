#!/usr/bin/env python3
"""Small-message echo RTT through rendr against raw asyncio Protocol TCP, same loop, same run.

64-byte messages, one outstanding, client and server in one process on loopback.
Prints P50/P99 for both and the ratio; exits non-zero if rendr's P50 exceeds
``--max-ratio`` times the raw P50 (goal 1.5).  For context it also measures plain
asyncio streams (StreamReader/StreamWriter with a task on each side, as an
application without rendr would write it); that figure is not part of the verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import time

import rendr
from rendr.aio import runner

MSG = b"x" * 64


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        self.t.write(data)  # type: ignore[attr-defined]


class _Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = b""
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= len(MSG) and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


async def raw_rtts(n: int) -> list[float]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    t, c = await loop.create_connection(_Client, "127.0.0.1", port)
    out = []
    for _ in range(n):
        c.waiter = loop.create_future()
        c.buf = b""
        t0 = time.perf_counter()
        t.write(MSG)
        await c.waiter
        out.append(time.perf_counter() - t0)
    t.close()
    server.close()
    return out


async def streams_rtts(n: int) -> list[float]:
    """asyncio streams: an echo task on the server, the client awaits each answer."""

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP,
                                                         socket.TCP_NODELAY, 1)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        writer.write(MSG)
        await writer.drain()
        await reader.readexactly(len(MSG))
        out.append(time.perf_counter() - t0)
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return out


async def rendr_rtts(n: int) -> list[float]:
    ln = await rendr.listen(rendr.ListenSpec("tcp", "127.0.0.1:0"),
                            rendr.ListenSpec("tcp", "127.0.0.1:0"))
    d = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{p}") for _, p in ln.addrs])
    conn = await d.dial()
    srv = await ln.accept()

    async def echo() -> None:
        while data := await srv.read(65536):
            await srv.write(data)

    task = asyncio.create_task(echo())
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await conn.write(MSG)
        await conn.readexactly(len(MSG))
        out.append(time.perf_counter() - t0)
    await conn.close()
    await task
    await ln.close()
    return out


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def run(args: argparse.Namespace) -> int:
    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    raw_p50, ren_p50, raw_p99, ren_p99, str_p50 = [], [], [], [], []
    for _ in range(args.repeat):
        r = (await raw_rtts(args.samples + 500))[500:]
        m = (await rendr_rtts(args.samples + 500))[500:]
        str_p50.append(statistics.median((await streams_rtts(args.samples + 500))[500:]))
        raw_p50.append(statistics.median(r))
        ren_p50.append(statistics.median(m))
        raw_p99.append(pct(r, 0.99))
        ren_p99.append(pct(m, 0.99))
    rp50, mp50 = statistics.median(raw_p50), statistics.median(ren_p50)
    ratio = mp50 / rp50
    print(f"echo RTT 64 B (loop={loop_name}, rendr.__compiled__={rendr.__compiled__}, "
          f"{args.samples} samples x {args.repeat}): "
          f"raw Protocol P50 {rp50 * 1e6:.0f} us P99 {statistics.median(raw_p99) * 1e6:.0f} us; "
          f"rendr P50 {mp50 * 1e6:.0f} us P99 {statistics.median(ren_p99) * 1e6:.0f} us; "
          f"P50 ratio {ratio:.2f} (max {args.max_ratio}); "
          f"context: asyncio streams P50 {statistics.median(str_p50) * 1e6:.0f} us")
    ok = ratio <= args.max_ratio
    print("RTT PASS" if ok else "RTT FAIL")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-ratio", type=float, default=1.5)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    return runner.run(run(args), use_uvloop=not args.no_uvloop)


if __name__ == "__main__":
    sys.exit(main())
