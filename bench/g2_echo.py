#!/usr/bin/env python3
"""G2 gate (issue 9): an echo loop over one rendr Conn with random migrations across modes.

Two processes (as on two machines), each pinned to its own core when there are two,
both on the same loop (uvloop unless ``--no-uvloop``):

- the *server* runs a raw TCP echo server (asyncio streams) and a rendr listener with
  two loopback TCP addresses, and echoes every byte back;
- the *client* opens one raw TCP connection and one rendr Conn with two paths (one to
  each listener address) and sends a 64-byte message (sequence number, send time, a
  pattern) every ``--interval`` (100 ms) on each, the rendr sends offset by half an
  interval from the raw ones, for ``--duration`` (30 min; ``--short``: 60 s). A reader
  per connection takes each answer's RTT and checks its content and order. The raw TCP
  echo is the baseline, measured in the same run on the same loops.

Random migrations (``--migrations``: 36; ``--short``: 8), at random times spread over
the run: each is planned in one of prime, race and bond (each mode gets a third, in a
shuffled order). Before a migration the client switches the Conn to its planned mode
with ``await conn.set_mode(...)`` (race <-> bond goes through prime: that switch is
illegal, and once, in race or bond, the client checks that the direct switch raises
``rendr.ModeSwitchIllegal``), then ``await conn.migrate(other path)``. An engine
without RACE/BOND raises ``rendr.ModeUnavailable`` at the first switch: the client then
runs every remaining migration in prime, and the report says so (no switch is faked).

Goals (the verdict): no message lost or corrupted on either connection; rendr echo
P99 < ``--max-p99-ratio`` (2) x the raw TCP P99; rendr P99.9 < ``--max-p999`` (1 s);
the same Conn throughout (the client's one object, the same flow id on both ends, the
server accepted exactly one Conn); at least ``--min-migrations`` (30; ``--short``: 5)
migrations done; migrations in prime, race and bond (UNAVAILABLE without those modes:
fails unless ``--allow-unavailable``). Exit code 0 pass, 1 fail.

Usage::

    PYTHONPATH=src python3 bench/g2_echo.py --short       # CI: 60 s, >= 5 migrations
    PYTHONPATH=src python3 bench/g2_echo.py               # full: 30 min, >= 30 migrations
    PYTHONPATH=src python3 bench/g2_echo.py --short --allow-unavailable  # before RACE/BOND
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from typing import Any

import _twoproc as tp
import rendr
from gatekit import common as gk

PSK = b"rendr-g2-echo-gate-psk-32-bytes!"
HOST = "127.0.0.1"

# ---------------------------------------------------------------------------- server side

_server: dict[str, Any] = {}


async def _raw_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _rendr_echo(conn: rendr.Conn) -> dict[str, Any]:
    echoed = 0
    while data := await conn.read(65536):
        await conn.write(data)
        echoed += len(data)
    rows = gk.path_rows(conn)  # before close: the paths as they carried the run
    await conn.close()
    return {"flow_id": conn.flow_id.hex(), "echoed": echoed, "paths": rows}


async def h_start(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    raw = await asyncio.start_server(_raw_echo, HOST, 0)
    ln = await rendr.listen(rendr.ListenSpec("tcp", f"{HOST}:0"),
                            rendr.ListenSpec("tcp", f"{HOST}:0"), psk=PSK)
    tasks: list[asyncio.Task[dict[str, Any]]] = []

    async def accept_loop() -> None:
        while True:
            conn = await ln.accept()
            tasks.append(asyncio.create_task(_rendr_echo(conn)))

    _server.update(raw=raw, ln=ln, tasks=tasks, acceptor=asyncio.create_task(accept_loop()))
    return {"raw_port": raw.sockets[0].getsockname()[1], "ports": [p for _, p in ln.addrs]}


async def h_finish(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    tasks: list[asyncio.Task[dict[str, Any]]] = _server["tasks"]
    done, _ = await asyncio.wait(tasks, timeout=15.0) if tasks else (set(), set())
    _server["acceptor"].cancel()
    conns = [t.result() for t in done if t.exception() is None]
    errors = [repr(t.exception()) for t in done if t.exception() is not None]
    await _server["ln"].close()
    _server["raw"].close()
    return {"accepts": len(tasks), "conns": conns, "errors": errors,
            "unfinished": len(tasks) - len(done)}


# ---------------------------------------------------------------------------- client side


class Echo:
    """One echo stream: a paced sender and a reader that checks answers and takes RTTs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent = 0
        self.answered = 0
        self.bad = 0  # wrong content or out of order
        self.rtts: list[float] = []
        self.all_answered = asyncio.Event()
        self.sending_done = False

    async def send_loop(self, write: Any, t0: float, offset: float, interval: float,
                        end: float) -> None:
        i = 0
        while True:
            at = t0 + offset + i * interval
            if at >= end:
                break
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            await write(gk.echo_message(i, time.perf_counter()))
            self.sent += 1
            i += 1
        self.sending_done = True
        if self.answered >= self.sent:
            self.all_answered.set()

    async def read_loop(self, readexactly: Any) -> None:
        expect = 0
        while True:
            try:
                data = await readexactly(gk.ECHO_SIZE)
            except (asyncio.IncompleteReadError, ConnectionError, rendr.ConnClosed):
                return
            now = time.perf_counter()
            seq, t_send, intact = gk.parse_echo(data)
            if not intact or seq != expect:
                self.bad += 1
            expect = seq + 1
            self.rtts.append(now - t_send)
            self.answered += 1
            if self.sending_done and self.answered >= self.sent:
                self.all_answered.set()

    def result(self) -> dict[str, Any]:
        return {"sent": self.sent, "answered": self.answered, "bad": self.bad,
                "rtts": self.rtts}


class Migrator:
    """Random migrations, each in its planned mode (switching with set_mode first)."""

    def __init__(self, conn: rendr.Conn, rng: random.Random, count: int) -> None:
        self.conn = conn
        self.rng = rng
        self.plan = [("prime", "race", "bond")[i % 3] for i in range(count)]
        rng.shuffle(self.plan)
        self.current = "prime"
        self.available: bool | None = None  # unknown until the first switch
        self.unavailable_note = ""
        self.illegal_check: str | None = None
        self.done: dict[str, int] = {"prime": 0, "race": 0, "bond": 0}
        self.switches: list[str] = []
        self.failures: list[str] = []
        self.longest_call = 0.0

    async def _timed(self, coro: Any) -> None:
        t = time.perf_counter()
        await coro
        self.longest_call = max(self.longest_call, time.perf_counter() - t)

    async def switch(self, target: str) -> None:
        steps = [] if target == self.current else (
            [target] if "prime" in (target, self.current) else ["prime", target])
        for step in steps:
            try:
                await self._timed(self.conn.set_mode(gk.mode_of(step)))
            except rendr.ModeUnavailable as exc:
                self.available = False
                self.unavailable_note = f"{type(exc).__name__}: {exc}"
                return
            self.available = True
            self.switches.append(f"{self.current}->{step}")
            self.current = step
        if self.current in ("race", "bond") and self.illegal_check is None:
            other = "bond" if self.current == "race" else "race"
            try:
                await self.conn.set_mode(gk.mode_of(other))
                self.illegal_check = f"{self.current}->{other} was accepted (expected illegal)"
            except rendr.ModeSwitchIllegal:
                self.illegal_check = "ok"
            except rendr.ModeUnavailable as exc:  # one of the two modes only
                self.available = False
                self.unavailable_note = f"{type(exc).__name__}: {exc}"
                self.illegal_check = f"not checked ({self.unavailable_note})"
            except rendr.RendrError as exc:
                self.illegal_check = f"{self.current}->{other} raised {type(exc).__name__}: {exc}"

    async def one(self, i: int) -> None:
        target = self.plan[i] if self.available is not False else "prime"
        await self.switch(target)
        others = [p.id for p in self.conn.stats().paths
                  if p.state == "up" and p.id != self.conn.active_path]
        if not others:
            self.failures.append(f"#{i} in {self.current}: no other path up")
            return
        try:
            await self._timed(self.conn.migrate(self.rng.choice(others)))
        except rendr.RendrError as exc:
            self.failures.append(f"#{i} in {self.current}: {type(exc).__name__}: {exc}")
            return
        self.done[self.current] += 1

    async def run(self, t0: float, duration: float) -> None:
        n = len(self.plan)
        slot = duration / (n + 1)
        times = sorted(t0 + slot * (k + 1) + self.rng.uniform(-0.4, 0.4) * slot
                       for k in range(n))
        for i, at in enumerate(times):
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            await self.one(i)

    def result(self) -> dict[str, Any]:
        return {"planned": len(self.plan), "done": self.done, "available": self.available,
                "unavailable_note": self.unavailable_note, "switches": self.switches,
                "illegal_check": self.illegal_check, "failures": self.failures,
                "longest_call_ms": self.longest_call * 1e3}


async def h_run(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    duration, interval = float(msg["duration"]), float(msg["interval"])
    rng = random.Random(msg["seed"])
    raw_r, raw_w = await asyncio.open_connection(HOST, msg["raw_port"])
    dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"{HOST}:{p}") for p in msg["ports"]],
                          psk=PSK)
    conn = await dialer.dial()
    conn_id, flow_id = id(conn), conn.flow_id
    for _ in range(300):
        if sum(p.state == "up" for p in conn.stats().paths) >= 2:
            break
        await asyncio.sleep(0.01)
    events: list[str] = []
    t0 = time.perf_counter()

    def on_event(ev: rendr.Event) -> None:
        if ev.kind is rendr.EventKind.PATH_DOWN:
            events.append(f"{ev.kind}:{ev.cause}@{time.perf_counter() - t0:.1f}s")

    conn.on_event(on_event)

    async def raw_write(data: bytes) -> None:
        raw_w.write(data)
        await raw_w.drain()

    raw, ren = Echo("raw"), Echo("rendr")
    mig = Migrator(conn, rng, int(msg["migrations"]))
    end = t0 + duration
    readers = [asyncio.create_task(raw.read_loop(raw_r.readexactly)),
               asyncio.create_task(ren.read_loop(conn.readexactly))]
    work = [asyncio.create_task(raw.send_loop(raw_write, t0, 0.0, interval, end)),
            asyncio.create_task(ren.send_loop(conn.write, t0, interval / 2, interval, end)),
            asyncio.create_task(mig.run(t0, duration))]

    async def progress() -> None:
        while True:
            await asyncio.sleep(float(msg["progress_s"]))
            say({"progress": f"{time.perf_counter() - t0:.0f} s: raw {raw.answered}/"
                             f"{raw.sent}, rendr {ren.answered}/{ren.sent} answered, "
                             f"migrations {sum(mig.done.values())} {mig.done}, "
                             f"mode {mig.current}"})

    reporter = asyncio.create_task(progress())
    await asyncio.gather(*work)
    for echo in (raw, ren):  # stragglers: up to 10 s for the last answers
        try:
            await asyncio.wait_for(echo.all_answered.wait(), 10.0)
        except asyncio.TimeoutError:
            pass
    reporter.cancel()
    stats = conn.stats()
    rows = gk.path_rows(conn)
    same = id(conn) == conn_id and conn.flow_id == flow_id and not conn.is_closed
    for t in readers:
        t.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    raw_w.close()
    await conn.write_eof()
    try:
        await asyncio.wait_for(conn.read(1), 5.0)  # the server's EOF after its last echo
    except (asyncio.TimeoutError, rendr.RendrError):
        pass
    await conn.close()
    return {"done": True, "raw": raw.result(), "rendr": ren.result(), "migr": mig.result(),
            "flow_id": flow_id.hex(), "same_conn": same, "paths": rows,
            "migration_count": stats.migration_count, "mode_end": str(stats.mode),
            "recv_dups": stats.recv_dups, "events": events}


HANDLERS: dict[str, tp.Handler] = {"start": h_start, "finish": h_finish, "run": h_run}

# ---------------------------------------------------------------------------- parent side


def report(args: argparse.Namespace, run: tp.Msg, srv: tp.Msg) -> gk.Verdict:
    v = gk.Verdict("G2", args.allow_unavailable)
    raw, ren, mig = run["raw"], run["rendr"], run["migr"]
    s_raw, s_ren = gk.rtt_summary(raw["rtts"]), gk.rtt_summary(ren["rtts"])
    print(f"\nRTT over {args.duration:.0f} s, one message per {args.interval * 1e3:.0f} ms "
          "on each connection:")
    for name, e, s in (("raw TCP", raw, s_raw), ("rendr", ren, s_ren)):
        print(f"  {name:8} sent {e['sent']:6} answered {e['answered']:6} bad {e['bad']}  "
              f"P50 {gk.ms(s['p50'])}  P99 {gk.ms(s['p99'])}  P99.9 {gk.ms(s['p999'])}  "
              f"max {gk.ms(s['max'])}")
    if s_raw["n"] < 1000:
        print(f"  (P99.9 of {int(s_ren['n'])} samples is close to the maximum)")
    print(f"migrations: {sum(mig['done'].values())} done of {mig['planned']} planned, per mode "
          f"{mig['done']}; stats().migration_count {run['migration_count']}; longest "
          f"set_mode/migrate call {mig['longest_call_ms']:.2f} ms; mode switches "
          f"{len(mig['switches'])}: {' '.join(mig['switches']) or '-'}")
    if mig["available"] is False:
        print(f"  RACE/BOND UNAVAILABLE in this engine: set_mode raised "
              f"{mig['unavailable_note']}; from then on every migration ran in prime (no "
              f"switch faked)")
    for f in mig["failures"]:
        print(f"  migration not done: {f}")
    if run["events"]:
        print(f"  path events: {' '.join(run['events'])}")
    srv_rows = srv["conns"][0]["paths"] if srv["conns"] else []
    print("\n".join(gk.path_table("rendr Conn", run["paths"], srv_rows)))

    lost = (raw["sent"] - raw["answered"]) + (ren["sent"] - ren["answered"])
    v.add("no lost or corrupted message", lost == 0 and raw["bad"] == 0 and ren["bad"] == 0,
          f"raw {raw['answered']}/{raw['sent']} bad {raw['bad']}, rendr "
          f"{ren['answered']}/{ren['sent']} bad {ren['bad']}")
    v.add(f"rendr P99 < {args.max_p99_ratio:g} x raw TCP P99",
          s_ren["p99"] < args.max_p99_ratio * s_raw["p99"],
          f"{gk.ms(s_ren['p99'])} vs {gk.ms(s_raw['p99'])} "
          f"(ratio {s_ren['p99'] / s_raw['p99']:.2f})")
    v.add(f"rendr P99.9 < {args.max_p999:g} s", s_ren["p999"] < args.max_p999,
          gk.ms(s_ren["p999"]))
    flows = [c["flow_id"] for c in srv["conns"]]
    v.add("the same Conn throughout", bool(run["same_conn"]) and srv["accepts"] == 1
          and flows == [run["flow_id"]],
          f"client object and flow id unchanged: {run['same_conn']}; server accepted "
          f"{srv['accepts']} Conn(s), flow ids match: {flows == [run['flow_id']]}"
          + (f"; server errors {srv['errors']}" if srv["errors"] else ""))
    total = sum(mig["done"].values())
    v.add(f">= {args.min_migrations} migrations", total >= args.min_migrations,
          f"{total} done, {len(mig['failures'])} not done")
    modes_ok: bool | None
    if mig["available"] is False:
        modes_ok = None
        detail = f"{mig['done']}; race/bond unavailable ({mig['unavailable_note']})"
    else:
        modes_ok = all(mig["done"][m] > 0 for m in ("prime", "race", "bond"))
        detail = f"{mig['done']}; direct race<->bond switch: {mig['illegal_check']}"
        if mig["illegal_check"] not in (None, "ok"):
            modes_ok = False
    v.add("migrations in prime, race and bond", modes_ok, detail)
    return v


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gk.common_args(parser)
    parser.add_argument("--duration", type=float, help="seconds (default 1800; --short 60)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between messages")
    parser.add_argument("--migrations", type=int, help="planned (default 36; --short 8)")
    parser.add_argument("--min-migrations", type=int, help="needed (default 30; --short 5)")
    parser.add_argument("--max-p99-ratio", type=float, default=2.0)
    parser.add_argument("--max-p999", type=float, default=1.0, help="seconds")
    args = parser.parse_args()
    if args.role:
        return tp.serve(HANDLERS, use_uvloop=not args.no_uvloop, cpu=args.cpu)
    args.duration = args.duration or (60.0 if args.short else 1800.0)
    args.migrations = args.migrations or (8 if args.short else 36)
    args.min_migrations = args.min_migrations or (5 if args.short else 30)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(tp.header(not args.no_uvloop))
    print(f"G2 echo: {args.duration:.0f} s, {args.migrations} random migrations planned "
          f"(need {args.min_migrations}), seed {seed}", flush=True)
    cpu_c, cpu_s = tp.core_plan()
    common = ["--no-uvloop"] if args.no_uvloop else []
    server = tp.Worker(__file__, "server", common, cpu=cpu_s)
    client = tp.Worker(__file__, "client", common, cpu=cpu_c,
                       timeout=max(120.0, args.duration / 4))
    try:
        ports = server.call(cmd="start")
        client.send(cmd="run", seed=seed, duration=args.duration, interval=args.interval,
                    migrations=args.migrations, raw_port=ports["raw_port"],
                    ports=ports["ports"], progress_s=10.0 if args.short else 60.0)
        while True:
            msg = client.recv()
            if "progress" in msg:
                print(f"  {msg['progress']}", flush=True)
            if msg.get("done"):
                run = msg
                break
        srv = server.call(cmd="finish")
    finally:
        client.close()
        server.close()
    v = report(args, run, srv)
    print("\n".join(v.lines()))
    return v.exit_code


if __name__ == "__main__":
    sys.exit(main())
