#!/usr/bin/env python3
"""Small-message echo RTT: rendr against raw asyncio Protocol TCP and asyncio streams.

64-byte messages, one outstanding, on loopback, all three on the same kind of loop in
the same run (``--repeat`` rounds of raw, rendr, streams, interleaved). By default the
client and the server run in separate processes, each pinned to its own core when
there are two (as deployments run); ``--single-process`` keeps the old method (both
ends on one loop in one process).

- raw: ``asyncio.Protocol`` on both ends, the server echoes inside ``data_received``;
- streams: ``asyncio.start_server`` with an echo task (``read``/``write``/``drain``), the
  client ``write``/``drain``/``readexactly`` — what an application without rendr writes;
- rendr: a listener with two loopback addresses, the dialer opens two paths; an echo
  task on the server (``read``/``write``), the client ``write``/``readexactly``;
- with ``--tls``, also streams over asyncio's TLS (TLS 1.3, AES-256-GCM as rendr's
  records): what an application that wants its bytes encrypted writes without rendr.

Prints P50/P99 of each (median over rounds, min-max), CPU microseconds per round trip
of each process (getrusage), and the median paired P50 ratios rendr/raw and
rendr/streams. Verdict: rendr's P50 <= ``--max-ratio`` x raw and <= streams' P50.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import socket
import statistics
import sys
import time
from typing import Any

import _twoproc as tp
import rendr
from rendr.aio import runner

MSG = b"x" * 64
KINDS = ("raw", "rendr", "streams")
NAMES = {"raw": "raw Protocol", "streams": "asyncio streams", "rendr": "rendr",
         "streams_tls": "streams over TLS"}


# ---------------------------------------------------------------------------- servers


class _Echo(asyncio.Protocol):
    def __init__(self, lost: asyncio.Future[tp.Usage]) -> None:
        self.lost = lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.t.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(tp.Usage.now())


async def _serve_until_lost(server: asyncio.Server, lost: asyncio.Future[tp.Usage],
                            say: tp.Say, cert: str | None = None) -> tp.Msg:
    """Announce the server's port (and its certificate), wait until its one connection
    ends, return the usage."""
    usage0 = tp.Usage.now()
    say({"ports": [server.sockets[0].getsockname()[1]], "cert": cert})
    usage1 = await lost
    server.close()
    await server.wait_closed()
    return {"usage": usage1.since(usage0)}


async def serve_raw(say: tp.Say, _knobs: dict[str, Any]) -> tp.Msg:
    loop = asyncio.get_running_loop()
    lost: asyncio.Future[tp.Usage] = loop.create_future()
    server = await loop.create_server(lambda: _Echo(lost), "127.0.0.1", 0)
    return await _serve_until_lost(server, lost, say)


async def serve_streams(say: tp.Say, _knobs: dict[str, Any], tls: bool = False) -> tp.Msg:
    loop = asyncio.get_running_loop()
    lost: asyncio.Future[tp.Usage] = loop.create_future()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        lost.set_result(tp.Usage.now())
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0,
                                        ssl=tp.tls_context(True, "") if tls else None)
    return await _serve_until_lost(server, lost, say, tp.self_signed()[0] if tls else None)


async def serve_streams_tls(say: tp.Say, knobs: dict[str, Any]) -> tp.Msg:
    return await serve_streams(say, knobs, tls=True)


def _config(knobs: dict[str, Any]) -> rendr.FlowConfig:
    return rendr.FlowConfig().replace(**knobs)


async def serve_rendr(say: tp.Say, knobs: dict[str, Any]) -> tp.Msg:
    """(Every server and client takes ``knobs``, the FlowConfig overrides; only rendr's
    use them.)"""
    ln = await rendr.listen(rendr.ListenSpec("tcp", "127.0.0.1:0"),
                            rendr.ListenSpec("tcp", "127.0.0.1:0"), config=_config(knobs))
    usage0 = tp.Usage.now()
    say({"ports": [p for _, p in ln.addrs]})
    srv = await ln.accept()
    while data := await srv.read(65536):
        await srv.write(data)
    usage1 = tp.Usage.now()
    await srv.close()
    await ln.close()
    return {"usage": usage1.since(usage0)}


# ---------------------------------------------------------------------------- clients


class _Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.got = 0
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got >= len(MSG) and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


async def raw_rtts(ready: tp.Msg, n: int, _knobs: dict[str, Any]) -> list[float]:
    loop = asyncio.get_running_loop()
    t, c = await loop.create_connection(_Client, "127.0.0.1", ready["ports"][0])
    out = []
    for _ in range(n):
        c.waiter = loop.create_future()
        c.got = 0
        t0 = time.perf_counter()
        t.write(MSG)
        await c.waiter
        out.append(time.perf_counter() - t0)
    t.close()
    return out


async def streams_rtts(ready: tp.Msg, n: int, _knobs: dict[str, Any]) -> list[float]:
    """(Over TLS when the server sent its certificate.)"""
    tls = tp.tls_context(False, ready["cert"]) if ready.get("cert") else None
    reader, writer = await asyncio.open_connection("127.0.0.1", ready["ports"][0], ssl=tls,
                                                   server_hostname="localhost" if tls else None)
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
    return out


async def rendr_rtts(ready: tp.Msg, n: int, knobs: dict[str, Any]) -> list[float]:
    d = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{p}") for p in ready["ports"]],
                     config=_config(knobs))
    conn = await d.dial()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await conn.write(MSG)
        await conn.readexactly(len(MSG))
        out.append(time.perf_counter() - t0)
    await conn.close()
    return out


SERVERS = {"raw": serve_raw, "streams": serve_streams, "rendr": serve_rendr,
           "streams_tls": serve_streams_tls}
CLIENTS = {"raw": raw_rtts, "streams": streams_rtts, "rendr": rendr_rtts,
           "streams_tls": streams_rtts}


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def serve(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    return await SERVERS[msg["kind"]](say, msg.get("knobs", {}))


async def measure(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    """``warmup + samples`` round trips; P50/P99 of the samples after the warm-up."""
    usage0 = tp.Usage.now()
    rtts = await CLIENTS[msg["kind"]](msg["ready"], msg["warmup"] + msg["samples"],
                                      msg.get("knobs", {}))
    usage = tp.Usage.now().since(usage0)
    timed = rtts[msg["warmup"]:]
    return {"p50": statistics.median(timed), "p99": pct(timed, 0.99), "usage": usage,
            "round_trips": len(rtts)}


HANDLERS: dict[str, tp.Handler] = {"serve": serve, "measure": measure}


# ---------------------------------------------------------------------------- driver


def one_round_two_process(client: tp.Worker, server: tp.Worker, kind: str,
                          args: argparse.Namespace) -> tuple[tp.Msg, tp.Msg]:
    ready = server.call(cmd="serve", kind=kind, knobs=args.knob)
    c = client.call(cmd="measure", kind=kind, ready=ready, samples=args.samples,
                    warmup=args.warmup, knobs=args.knob)
    return c, server.recv()


async def one_round_one_process(kind: str, args: argparse.Namespace) -> tuple[tp.Msg, tp.Msg]:
    ready: asyncio.Future[tp.Msg] = asyncio.get_running_loop().create_future()
    server_task = asyncio.create_task(serve({"kind": kind, "knobs": args.knob},
                                            ready.set_result))
    c = await measure({"kind": kind, "ready": await ready, "samples": args.samples,
                       "warmup": args.warmup, "knobs": args.knob}, print)
    return c, await server_task


def fmt(xs: list[float], scale: float = 1e6) -> str:
    m = statistics.median(xs) * scale
    return f"{m:.0f} ({min(xs) * scale:.0f}-{max(xs) * scale:.0f})"


def run(args: argparse.Namespace) -> int:
    use_uvloop = not args.no_uvloop
    print(tp.header(use_uvloop) + (f"; FlowConfig overrides {args.knob}" if args.knob else ""))
    kinds = KINDS + (("streams_tls",) if args.tls else ())
    results: dict[str, list[tuple[tp.Msg, tp.Msg]]] = {k: [] for k in kinds}
    if args.single_process:
        mode = "one process"
        print("one process: client and server on one loop", flush=True)

        async def rounds() -> None:
            for _ in range(args.repeat):
                for kind in kinds:
                    results[kind].append(await one_round_one_process(kind, args))

        runner.run(rounds(), use_uvloop=use_uvloop)
    else:
        mode = "two processes"
        cpu_client, cpu_server = (None, None) if args.no_pin else tp.core_plan()
        print(f"two processes: client on CPU {cpu_client}, server on CPU {cpu_server}",
              flush=True)
        common = ["--no-uvloop"] if args.no_uvloop else []
        server = tp.Worker(__file__, "server", common, cpu=cpu_server)
        client = tp.Worker(__file__, "client", common, cpu=cpu_client)
        try:
            for _ in range(args.repeat):
                for kind in kinds:
                    results[kind].append(one_round_two_process(client, server, kind, args))
        finally:
            client.close()
            server.close()

    loop = tp.loop_label(use_uvloop)
    print(f"echo RTT 64 B ({mode}, loop={loop}, {args.samples} samples after {args.warmup} "
          f"warm-up x {args.repeat} rounds; median over rounds (min-max)):")
    p50 = {k: [c["p50"] for c, _ in results[k]] for k in kinds}
    for kind in kinds:
        name = NAMES[kind]
        cpu_c = [c["usage"]["cpu_s"] / c["round_trips"] for c, _ in results[kind]]
        cpu_s = [s["usage"]["cpu_s"] / c["round_trips"] for c, s in results[kind]]
        cpu = (f"client {fmt(cpu_c)} us, server {fmt(cpu_s)} us" if not args.single_process
               else f"the process {fmt(cpu_c)} us")
        print(f"  {name:16} P50 {fmt(p50[kind]):>14} us   P99 "
              f"{fmt([c['p99'] for c, _ in results[kind]]):>16} us   CPU per round trip: {cpu}")
    def paired(baseline: str, goal: str) -> float:
        """Print rendr's median paired P50 ratio to ``baseline`` (min-max); return it."""
        ratios = [m / b for m, b in zip(p50["rendr"], p50[baseline], strict=True)]
        median = float(statistics.median(ratios))
        print(f"  P50 ratio rendr/{NAMES[baseline]}, median paired: {median:.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f}), {goal}")
        return median

    r_raw = paired("raw", f"max {args.max_ratio}")
    r_streams = paired("streams", "max 1.0")
    if args.tls:
        paired("streams_tls", "informational")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"header": tp.header(use_uvloop), "mode": mode, "loop": loop,
                       "results": results}, f, indent=1)
    ok = r_raw <= args.max_ratio and r_streams <= 1.0
    print("RTT PASS" if ok else "RTT FAIL")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-ratio", type=float, default=1.7)
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--single-process", action="store_true",
                        help="old method: client and server on one loop in one process")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the two processes")
    parser.add_argument("--tls", action="store_true",
                        help="also time asyncio streams over TLS (informational)")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement here")
    parser.add_argument("--knob", metavar="NAME=VALUE", action="append", default=[],
                        help="override a FlowConfig field on both ends (A/B experiments)")
    parser.add_argument("--role", choices=["client", "server"], help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeat < 1 or args.samples < 1:
        parser.error("--repeat and --samples must be at least 1")
    try:
        args.knob = {k: ast.literal_eval(v) for k, v in (kv.split("=", 1) for kv in args.knob)}
    except (ValueError, SyntaxError):
        parser.error("--knob takes NAME=VALUE with a Python literal value")
    if args.role:
        return tp.serve(HANDLERS, use_uvloop=not args.no_uvloop, cpu=args.cpu)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
