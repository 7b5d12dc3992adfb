#!/usr/bin/env python3
"""Issue 6: a slow, saturated path is never declared dead; LAN failover time.

Method: :class:`rendr.testing.netns.NetnsTopology` with two veth paths between a
*client* and a *server* namespace; one process, one event loop whose thread stays
in the client namespace (the listener is created while it briefly enters the server
namespace, as in ``bench/g4g5``).  Every scenario runs on a fresh topology.

* Path 0 is a fast LAN path: an unshaped veth (``--fast-rate`` shapes it).
* Path 1 is slow: ``tc tbf`` at ``--rate`` (10 mbit) on both veth ends, and
  ``--rtt`` (200 ms) of round trip added by the project's userspace relay
  (:class:`rendr.testing.relay.TcpRelay`, ``set_delay(rtt / 2)``; this kernel has no
  netem).  The relay runs in the client namespace on the path's client address; rendr
  dials the relay, the relay's upstream connection crosses the shaped veth to the
  listener.  The relay holds at most ``--relay-buffer`` bytes per direction, so under
  load PINGs wait behind data in the sender's socket, the relay and the tbf queue.

Scenarios (``--scenarios``, default all):

A. *bulk on the slow path only*: one flow dialled over path 1 alone; both ends write
   as fast as they can for ``--seconds`` while both read (send buffers full, PINGs
   queued behind data), then EOF both ways.  PASS: no PATH_DOWN and no MIGRATION on
   either end, no exception, byte counts and SHA-256 equal both ways, and each
   direction moved at least a tenth of the shaped rate (no total stall; a direction
   that got less than half of it, or stopped for over 1 s, is noted as starved).

B. *failover onto the slow path*: a flow over both paths, active on path 0, bulk
   client -> server; after ``--drop-after`` s path 0 is silently dropped (nftables,
   ``topo.drop``); the flow must move to path 1 and carry the backlog for
   ``--b-seconds`` without path 1 being declared dead.  Failover = drop start -> first
   MIGRATION event (either end) and -> first bytes the server application reads after
   that migration.  PASS: the flow ended active on path 1, zero deaths of path 1 on
   either end (over the whole run), no exception, byte count and SHA-256 equal.
   ``--b-two-way`` adds bulk server -> client (the ACKs then queue behind data too).

C. *LAN failover at defaults*: both paths unshaped, an echo every 10 ms, the active
   path dropped; failover = drop start -> first answer to a request sent after the drop
   completed (the G4 definition), ``--repeat`` fresh runs.  PASS: median <= ``--c-goal``
   (0.300 s).  The issue 6 goal: measured 0.70 s at 24ad722 (a silent path was only
   left at its dead time, 0.6 s) and 0.25 s once ``suspect_timeout`` landed (34e3e3a).

Every PATH_DOWN (and PATH_SUSPECT/PATH_RESUMED, on engines that have them) is printed
with its cause; a death of the slow path also prints the srtt/rttvar/dead-time/silence
samples of that end before it.  The dead time shown is
``PathStats.dead_time`` if the engine reports one, otherwise the engine's formula at
the time of writing, ``max(dead_timeout, 3*srtt + 4*rttvar)``; "silence" is
``last_recv_age`` (a path dies only after its oldest unanswered PING and nothing
received for a dead time, so silence/dead < 1 means no death was near).

Exit status: 0 every selected scenario passed, 1 one failed, 77 skipped (not root, no
netns/tc/nftables), 2 usage error.

Usage (root)::

    python3 bench/slow_path_liveness.py                       # A (30 s), B, C (5 runs)
    python3 bench/slow_path_liveness.py --scenarios A,B --seconds 10 --json out.json
    python3 bench/slow_path_liveness.py --scenarios C --repeat 9 --knob dead_timeout=0.2
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TextIO

import rendr
from g4g5.analysis import analyze_echo, percentile
from g4g5.probes import host_of, wait_until
from g4g5.traffic import EchoLoop, serve_echo
from rendr.aio import runner
from rendr.testing.netns import NetnsTopology, parse_rate, unavailable_reason
from rendr.testing.relay import TcpRelay

log = logging.getLogger("slow_path")

EXIT_SKIP = 77
KIB = 1024
MIB = 1024 * KIB
BLOCK = 4 * MIB
CHUNK = 256 * KIB
SAMPLE_S = 0.05
SLOW, FAST = 1, 0
"""Topology indexes of the slow (shaped + relay) and the fast path."""


class Row(NamedTuple):
    """One liveness sample of one up path of one end."""

    t: float
    end: str
    link: int
    """Topology path."""
    srtt: float
    rttvar: float
    dead: float
    """Its dead time at that moment."""
    silence: float
    """``last_recv_age``."""
    suspect: bool
    """``PathStats.suspect`` where the engine reports it (issue 6), else False."""
    suspect_time: float | None
    """Its suspect time at that moment (None: the engine has no suspicion)."""


@dataclass
class Opts:
    scenarios: str = "ABC"
    seconds: float = 30.0
    b_seconds: float = 20.0
    b_two_way: bool = False
    drop_after: float = 2.0
    repeat: int = 5
    rate: str = "10mbit"
    rtt: float = 0.200
    tbf_latency: str = "50ms"
    relay_buffer: int = 1 * MIB
    fast_rate: str | None = None
    c_goal: float = 0.300
    drain_timeout: float = 120.0
    use_uvloop: bool = True
    knobs: dict[str, Any] = field(default_factory=dict)
    json: str | None = None

    @property
    def config(self) -> rendr.FlowConfig:
        return rendr.FlowConfig().replace(**self.knobs)


# ---------------------------------------------------------------- what the ends report


class Recorder:
    """Every event of one end, with the monotonic time it came."""

    def __init__(self, end: str) -> None:
        self.end = end
        self.items: list[tuple[float, rendr.Event]] = []

    def __call__(self, ev: rendr.Event) -> None:
        self.items.append((time.monotonic(), ev))
        log.info("%s event %s path=%s %s->%s cause=%s %s", self.end, ev.kind, ev.path_id,
                 ev.old_path, ev.new_path, ev.cause, ev.detail)

    def of(self, kind: rendr.EventKind, t0: float = 0.0,
           t1: float = float("inf")) -> list[tuple[float, rendr.Event]]:
        out = []
        for t, ev in self.items:
            if kind is not ev.kind or not t0 <= t < t1:
                continue
            if kind is rendr.EventKind.MIGRATION and ev.old_path is None:
                continue  # the first activation, not a move
            out.append((t, ev))
        return out


def path_of(topo: NetnsTopology, ps: rendr.PathStats) -> int:
    """Topology path a rendr path runs on (-1: unknown).  The relay listens on the slow
    path's client address, so every address of a path belongs to one link."""
    for addr in (ps.remote_addr, ps.local_addr):
        host = host_of(addr)
        for link in topo.paths:
            if host in (link.client_addr, link.server_addr):
                return link.index
    return -1


def suspect_time(cfg: rendr.FlowConfig, ps: rendr.PathStats) -> float | None:
    """The path's suspect time on engines with ``suspect_timeout`` (issue 6), else None:
    ``PathStats.suspect_time`` if reported, otherwise the formula of 34e3e3a,
    ``min(max(suspect_timeout, 2*srtt + 4*rttvar), dead time)``."""
    reported = getattr(ps, "suspect_time", None)
    if isinstance(reported, float):
        return reported
    base = getattr(cfg, "suspect_timeout", None)
    if not isinstance(base, (int, float)):
        return None
    if ps.srtt is None:
        return dead_time(cfg, ps)
    return min(max(base, 2 * ps.srtt + 4 * (ps.rttvar or 0.0)), dead_time(cfg, ps))


def dead_time(cfg: rendr.FlowConfig, ps: rendr.PathStats) -> float:
    reported = getattr(ps, "dead_time", None)
    if isinstance(reported, float):
        return reported
    if ps.srtt is None:
        return cfg.dead_timeout
    return max(cfg.dead_timeout, 3 * ps.srtt + 4 * (ps.rttvar or 0.0))


class Bed:
    """One scenario's listener, relay, event recorders, samples, tasks and errors."""

    def __init__(self, topo: NetnsTopology, o: Opts) -> None:
        self.topo, self.o, self.cfg = topo, o, o.config
        self.client_ev, self.server_ev = Recorder("client"), Recorder("server")
        self.ln: rendr.Listener | None = None
        self.relay: TcpRelay | None = None
        self.ports: dict[str, int] = {}
        self.rows: list[Row] = []
        self.relay_queued: list[int] = []
        self.unacked_max = {"client": 0, "server": 0}
        self.errors: list[str] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.conns: list[rendr.Conn] = []
        self.ids: dict[int, int] = {}
        """rendr path id -> topology path (filled from stats as paths appear)."""

    async def open(self, relay: bool) -> None:
        with self.topo.enter("server"):
            self.ln = await rendr.listen(
                *[rendr.ListenSpec("tcp", f"{link.server_addr}:0") for link in self.topo.paths],
                on_event=self.server_ev, **self.o.knobs)
        self.ports = dict(self.ln.addrs)
        if relay:
            link = self.topo.paths[SLOW]
            self.relay = TcpRelay((link.server_addr, self.ports[link.server_addr]),
                                  host=link.client_addr, max_buffer=self.o.relay_buffer)
            await self.relay.start()
            self.relay.set_delay(self.o.rtt / 2)

    def spec(self, index: int) -> rendr.PathSpec:
        if index == SLOW and self.relay is not None:
            host, port = self.relay.addr
        else:
            host = self.topo.paths[index].server_addr
            port = self.ports[host]
        return rendr.PathSpec("tcp", f"{host}:{port}")

    def dialer(self, *indexes: int) -> rendr.Dialer:
        return rendr.Dialer(paths=[self.spec(i) for i in indexes], on_event=self.client_ev,
                            **self.o.knobs)

    async def accept(self) -> rendr.Conn:
        assert self.ln is not None
        conn = await asyncio.wait_for(self.ln.accept(), 15)
        self.conns.append(conn)
        return conn

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        async def guarded() -> Any:
            try:
                return await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                log.debug("%s failed:\n%s", name, traceback.format_exc())
                return None

        task = asyncio.get_running_loop().create_task(guarded(), name=name)
        self.tasks.append(task)
        return task

    def index(self, conn: rendr.Conn, path_id: int | None) -> int:
        if path_id is None:
            return -1
        if path_id not in self.ids:
            for ps in conn.stats().paths:
                self.ids.setdefault(ps.id, path_of(self.topo, ps))
        return self.ids.get(path_id, -1)

    async def sampler(self, client: rendr.Conn, server: rendr.Conn) -> None:
        """Every up path's srtt, dead time and silence on both ends, every 50 ms."""
        while True:
            now = time.monotonic()
            for end, conn in (("client", client), ("server", server)):
                st = conn.stats()
                self.unacked_max[end] = max(self.unacked_max[end], st.unacked_bytes)
                for ps in st.paths:
                    self.ids.setdefault(ps.id, path_of(self.topo, ps))
                    if ps.state == "up" and ps.srtt is not None:
                        self.rows.append(Row(now, end, self.ids[ps.id], ps.srtt,
                                             ps.rttvar or 0.0, dead_time(self.cfg, ps),
                                             ps.last_recv_age,
                                             bool(getattr(ps, "suspect", False)),
                                             suspect_time(self.cfg, ps)))
            if self.relay is not None:
                self.relay_queued.append(self.relay.queued_bytes)
            await asyncio.sleep(SAMPLE_S)

    def deaths(self, index: int, t0: float = 0.0,
               t1: float = float("inf")) -> list[dict[str, Any]]:
        """PATH_DOWN events of topology path ``index`` on either end, with the liveness
        samples of that end in the 2 s before."""
        out = []
        for rec, conn in ((self.client_ev, self.conns[0]), (self.server_ev, self.conns[1])):
            for t, ev in rec.of(rendr.EventKind.PATH_DOWN, t0, t1):
                if self.index(conn, ev.path_id) != index:
                    continue
                around = [f"{r.t - t:+.2f}s srtt={r.srtt * 1e3:.0f}ms "
                          f"rttvar={r.rttvar * 1e3:.0f}ms dead={r.dead * 1e3:.0f}ms "
                          f"silence={r.silence * 1e3:.0f}ms{' suspect' if r.suspect else ''}"
                          for r in self.rows if r.end == rec.end and r.link == index
                          and t - 2.0 <= r.t <= t + 0.1]
                out.append({"end": rec.end, "path_id": ev.path_id, "cause": ev.cause,
                            "detail": ev.detail, "t": t, "samples": around[-12:]})
        return out

    def suspicions(self, index: int, t0: float = 0.0, t1: float = float("inf")) -> int:
        """PATH_SUSPECT events (issue 6 engines) of topology path ``index``, both ends."""
        return sum(1 for rec, conn in ((self.client_ev, self.conns[0]),
                                       (self.server_ev, self.conns[1]))
                   for t, ev in rec.items
                   if ev.kind.value == "path_suspect" and t0 <= t < t1
                   and self.index(conn, ev.path_id) == index)

    def event_lines(self, t_ref: float) -> list[str]:
        lines = []
        for rec, conn in ((self.client_ev, self.conns[0]), (self.server_ev, self.conns[1])):
            for t, ev in rec.items:
                if ev.kind.value in ("path_suspect", "path_resumed"):
                    lines.append(f"{rec.end} {ev.kind.value.upper()} path {ev.path_id} "
                                 f"(topology {self.index(conn, ev.path_id)}) {ev.detail!r} "
                                 f"at {t - t_ref:+.3f}s")
                elif ev.kind is rendr.EventKind.PATH_DOWN:
                    lines.append(f"{rec.end} PATH_DOWN path {ev.path_id} (topology "
                                 f"{self.index(conn, ev.path_id)}) cause={ev.cause} "
                                 f"{ev.detail!r} at {t - t_ref:+.3f}s")
                elif ev.kind is rendr.EventKind.MIGRATION and ev.old_path is not None:
                    lines.append(f"{rec.end} MIGRATION {ev.old_path}->{ev.new_path} "
                                 f"cause={ev.cause} at {t - t_ref:+.3f}s")
        return lines

    def liveness(self, end: str, index: int, t0: float = 0.0,
                 t1: float = float("inf")) -> dict[str, Any]:
        rows = [r for r in self.rows if r.end == end and r.link == index and t0 <= r.t < t1]
        if not rows:
            return {"samples": 0}
        srtt = [r.srtt for r in rows]
        dead = [r.dead for r in rows]
        return {
            "samples": len(rows),
            "srtt_median": statistics.median(srtt), "srtt_max": max(srtt),
            "rttvar_median": statistics.median(r.rttvar for r in rows),
            "dead_min": min(dead), "dead_median": statistics.median(dead),
            "dead_max": max(dead),
            "srtt_over_dead_max": max(r.srtt / r.dead for r in rows),
            "silence_max": max(r.silence for r in rows),
            "silence_over_dead_max": max(r.silence / r.dead for r in rows),
            "suspect_samples": sum(r.suspect for r in rows),
            "silence_over_suspect_max": max((r.silence / r.suspect_time for r in rows
                                             if r.suspect_time), default=None),
            "unacked_max": self.unacked_max[end],
        }

    def rtt_lag(self, end: str, index: int, t: float | None) -> dict[str, float | None]:
        """The path's srtt at ``t`` (a failover onto it) and how long after ``t`` it first
        doubled: until then the RTT terms of its dead time knew nothing of the queue."""
        rows = [r for r in self.rows if r.end == end and r.link == index]
        before = [r for r in rows if t is not None and r.t <= t]
        if t is None or not before:
            return {"srtt_at": None, "doubled_after": None}
        at = before[-1].srtt
        rise = next((r.t - t for r in rows if r.t > t and r.srtt > 2 * at), None)
        return {"srtt_at": at, "doubled_after": rise}

    async def close(self) -> None:
        for conn in self.conns:
            if conn.is_closed:
                continue
            try:
                await asyncio.wait_for(conn.close(), 5)
            except (asyncio.TimeoutError, rendr.RendrError) as exc:
                log.info("close: %r", exc)
                conn.abort(reason="bench shutdown")
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.ln is not None:
            await self.ln.close()
        if self.relay is not None:
            await self.relay.close()


def fmt_liveness(lv: dict[str, Any]) -> str:
    if not lv.get("samples"):
        return "no srtt samples"
    return (f"srtt median {lv['srtt_median'] * 1e3:.0f} ms (max {lv['srtt_max'] * 1e3:.0f}), "
            f"rttvar median {lv['rttvar_median'] * 1e3:.0f} ms, dead time median "
            f"{lv['dead_median'] * 1e3:.0f} ms (min {lv['dead_min'] * 1e3:.0f}, max "
            f"{lv['dead_max'] * 1e3:.0f}); "
            f"srtt/dead max {lv['srtt_over_dead_max']:.2f}; longest silence "
            f"{lv['silence_max'] * 1e3:.0f} ms = {lv['silence_over_dead_max']:.2f} of dead time"
            + ("" if lv["silence_over_suspect_max"] is None else
               f" ({lv['silence_over_suspect_max']:.2f} of suspect time)")
            + f"; suspect in {lv['suspect_samples']} samples; unacked max "
            f"{lv['unacked_max'] / MIB:.2f} MiB")


# ---------------------------------------------------------------- bulk traffic


class Pump:
    """One direction of a bulk transfer: what the writer wrote and the reader read."""

    def __init__(self, block: bytes) -> None:
        self.block = memoryview(block)
        self.written = 0
        self.wsha = hashlib.sha256()
        self.received = 0
        self.rsha = hashlib.sha256()
        self.reads: list[tuple[float, int]] = []
        """(time, total received) after every read."""
        self.eof = asyncio.Event()

    async def write_until(self, conn: rendr.Conn, stop: asyncio.Event) -> None:
        while not stop.is_set():
            off = self.written % len(self.block)
            chunk = self.block[off:off + min(CHUNK, len(self.block) - off)]
            await conn.write(chunk)
            self.wsha.update(chunk)
            self.written += len(chunk)
        await conn.write_eof()

    async def read_all(self, conn: rendr.Conn) -> None:
        buf = bytearray(MIB)
        view = memoryview(buf)
        while n := await conn.readinto(buf):
            self.rsha.update(view[:n])
            self.received += n
            self.reads.append((time.monotonic(), self.received))
        self.eof.set()

    def received_at(self, t: float) -> int:
        return max((b for tt, b in self.reads if tt <= t), default=0)

    def longest_gap(self, t0: float, t1: float) -> float:
        times = [t0] + [t for t, _ in self.reads if t0 <= t <= t1] + [t1]
        return max(b - a for a, b in itertools.pairwise(times))

    @property
    def intact(self) -> bool:
        return (self.eof.is_set() and self.written == self.received
                and self.wsha.digest() == self.rsha.digest())


async def drained(pumps: list[Pump], timeout: float) -> bool:
    try:
        await asyncio.wait_for(asyncio.gather(*(p.eof.wait() for p in pumps)), timeout)
    except asyncio.TimeoutError:
        return False
    return True


# ---------------------------------------------------------------- scenario A


async def scenario_a(topo: NetnsTopology, o: Opts) -> dict[str, Any]:
    bed = Bed(topo, o)
    await bed.open(relay=True)
    res: dict[str, Any] = {"scenario": "A", "seconds": o.seconds}
    try:
        client = await asyncio.wait_for(bed.dialer(SLOW).dial(), 15)
        bed.conns.append(client)
        server = await bed.accept()
        block = os.urandom(BLOCK)
        up, down = Pump(block), Pump(block)  # client -> server, server -> client
        stop = asyncio.Event()
        bed.spawn("sampler", bed.sampler(client, server))
        t_start = time.monotonic()
        for name, coro in (("client-write", up.write_until(client, stop)),
                           ("server-write", down.write_until(server, stop)),
                           ("server-read", up.read_all(server)),
                           ("client-read", down.read_all(client))):
            bed.spawn(name, coro)
        await wait_until(lambda: bool(bed.errors), o.seconds, step=0.1)
        stop.set()
        t_stop = time.monotonic()
        complete = await drained([up, down], o.drain_timeout) if not bed.errors else False
        t_end = time.monotonic()
        el = t_stop - t_start
        deaths = [(t, e) for rec in (bed.client_ev, bed.server_ev)
                  for t, e in rec.of(rendr.EventKind.PATH_DOWN, 0, t_end)]
        moves = [(t, e) for rec in (bed.client_ev, bed.server_ev)
                 for t, e in rec.of(rendr.EventKind.MIGRATION, 0, t_end)]
        shaped = parse_rate(o.rate) / 8
        res.update({
            "up_Bps": up.received_at(t_stop) / el, "down_Bps": down.received_at(t_stop) / el,
            "shaped_Bps": shaped, "drain_s": t_end - t_stop, "drained": complete,
            "up_bytes": up.received, "down_bytes": down.received,
            "up_intact": up.intact, "down_intact": down.intact,
            "longest_gap_up": up.longest_gap(t_start + 1.0, t_stop),
            "longest_gap_down": down.longest_gap(t_start + 1.0, t_stop),
            "path_downs": len(deaths), "migrations": len(moves),
            "slow_suspicions": bed.suspicions(SLOW, 0, t_end),
            "deaths": bed.deaths(SLOW, 0, t_end),
            "client": bed.liveness("client", SLOW, t_start, t_end),
            "server": bed.liveness("server", SLOW, t_start, t_end),
            "relay_queued_max": max(bed.relay_queued, default=0),
            "relay_queued_median": statistics.median(bed.relay_queued or [0]),
            "events": bed.event_lines(t_start),
            "recv_dups": client.recv_dups + server.recv_dups,
        })
        checks = {
            "no PATH_DOWN on either end": not deaths,
            "no MIGRATION on either end": not moves,
            "no exception": not bed.errors,
            "both directions complete, byte counts and SHA-256 equal":
                up.intact and down.intact,
            "each direction moved >= 10% of the shaped rate (no total stall)":
                min(res["up_Bps"], res["down_Bps"]) >= 0.10 * shaped,
        }
    finally:
        await bed.close()
    res["errors"] = bed.errors
    res["checks"] = checks
    res["pass"] = all(checks.values())
    return res


def report_a(res: dict[str, Any], out: TextIO) -> None:
    mb = 1e6
    print(f"A. bulk both ways on the slow path only, {res['seconds']:g} s", file=out)
    print(f"   throughput client->server {res['up_Bps'] / mb:.3f} MB/s, server->client "
          f"{res['down_Bps'] / mb:.3f} MB/s (tbf {res['shaped_Bps'] / mb:.3f} MB/s at IP "
          f"level); longest read gap {res['longest_gap_up']:.2f} / "
          f"{res['longest_gap_down']:.2f} s; drain after stop {res['drain_s']:.1f} s", file=out)
    print(f"   moved {res['up_bytes'] / MIB:.1f} MiB up, {res['down_bytes'] / MIB:.1f} MiB "
          f"down; relay queue per connection median {res['relay_queued_median'] / KIB:.0f} "
          f"KiB, max {res['relay_queued_max'] / KIB:.0f} KiB; recv_dups {res['recv_dups']}",
          file=out)
    print(f"   client: {fmt_liveness(res['client'])}", file=out)
    print(f"   server: {fmt_liveness(res['server'])}", file=out)
    print(f"   PATH_DOWN {res['path_downs']}, MIGRATION {res['migrations']}, PATH_SUSPECT "
          f"{res['slow_suspicions']}", file=out)
    for way, key in (("client->server", "up"), ("server->client", "down")):
        if (res[f"{key}_Bps"] < 0.5 * res["shaped_Bps"] or res[f"longest_gap_{key}"] > 1.0):
            print(f"   note: {way} starved ({res[f'{key}_Bps'] / mb:.3f} MB/s, reads stopped "
                  f"for up to {res[f'longest_gap_{key}']:.2f} s) while the path stayed up",
                  file=out)
    report_common(res, out)


def report_common(res: dict[str, Any], out: TextIO) -> None:
    for line in res.get("events", []):
        print(f"     {line}", file=out)
    for d in res.get("deaths", []):
        print(f"   FALSE DEATH of the slow path: {d['end']} path {d['path_id']} "
              f"cause={d['cause']} {d['detail']!r}; liveness samples before it:", file=out)
        for s in d["samples"]:
            print(f"       {s}", file=out)
    for e in res.get("errors", []):
        print(f"   error: {e}", file=out)
    for name, ok in res["checks"].items():
        print(f"   [{'ok' if ok else 'NO'}] {name}", file=out)
    print(f"   {res['scenario']}: {'PASS' if res['pass'] else 'FAIL'}", file=out)


# ---------------------------------------------------------------- scenario B


async def scenario_b(topo: NetnsTopology, o: Opts) -> dict[str, Any]:
    bed = Bed(topo, o)
    await bed.open(relay=True)
    res: dict[str, Any] = {"scenario": "B", "seconds": o.b_seconds, "two_way": o.b_two_way}
    try:
        client = await asyncio.wait_for(bed.dialer(FAST, SLOW).dial(), 15)
        bed.conns.append(client)
        server = await bed.accept()

        def on_both() -> bool:
            return all({bed.index(c, ps.id) for ps in c.stats().paths if ps.state == "up"}
                       >= {FAST, SLOW} for c in (client, server))

        if not await wait_until(on_both, 15):
            raise TimeoutError("both paths not up on both ends within 15 s")
        if bed.index(client, client.active_path) != FAST:
            fast = next(ps.id for ps in client.stats().paths
                        if ps.state == "up" and bed.index(client, ps.id) == FAST)
            await client.migrate(fast)
            res["pre_migrated"] = True
        await wait_until(lambda: bed.index(server, server.active_path) == FAST, 5)
        block = os.urandom(BLOCK)
        pump = Pump(block)
        back = Pump(block) if o.b_two_way else None  # server -> client
        stop = asyncio.Event()
        bed.spawn("sampler", bed.sampler(client, server))
        t_start = time.monotonic()
        bed.spawn("client-write", pump.write_until(client, stop))
        bed.spawn("server-read", pump.read_all(server))
        if back is not None:
            bed.spawn("server-write", back.write_until(server, stop))
            bed.spawn("client-read", back.read_all(client))
        await asyncio.sleep(o.drop_after)
        res["at_drop_received"] = pump.received
        res["before_drop_Bps"] = pump.received / (time.monotonic() - t_start)
        res["at_drop_unacked"] = client.stats().unacked_bytes
        t0 = time.monotonic()
        await asyncio.to_thread(topo.drop, FAST)
        t1 = time.monotonic()
        await wait_until(lambda: bool(bed.errors), o.b_seconds, step=0.1)
        stop.set()
        t_stop = time.monotonic()
        pumps = [pump] if back is None else [pump, back]
        complete = await drained(pumps, o.drain_timeout) if not bed.errors else False
        t_end = time.monotonic()
        moves = sorted(t for rec in (bed.client_ev, bed.server_ev)
                       for t, _ in rec.of(rendr.EventKind.MIGRATION, t0, t_end))
        t_mig = moves[0] if moves else None
        first_read = next((t for t, _ in pump.reads if t_mig is not None and t >= t_mig), None)
        cmig = bed.client_ev.of(rendr.EventKind.MIGRATION, t0, t_end)
        smig = bed.server_ev.of(rendr.EventKind.MIGRATION, t0, t_end)
        slow_deaths = bed.deaths(SLOW, 0, t_end)
        res.update({
            "drop_cmd_s": t1 - t0,
            "failover_migration_s": None if t_mig is None else t_mig - t0,
            "client_migration_s": cmig[0][0] - t0 if cmig else None,
            "server_migration_s": smig[0][0] - t0 if smig else None,
            "failover_bytes_s": None if first_read is None else first_read - t0,
            "stall_after_drop_s": pump.longest_gap(t0, t_stop),
            "after_failover_Bps": (pump.received_at(t_stop) - pump.received_at(first_read))
            / (t_stop - first_read) if first_read is not None and first_read < t_stop else None,
            "written": pump.written, "received": pump.received,
            "intact": all(p.intact for p in pumps),
            "back_received": None if back is None else back.received,
            "drained": complete, "drain_s": t_end - t_stop,
            "slow_deaths": len(slow_deaths), "deaths": slow_deaths,
            "slow_suspicions": bed.suspicions(SLOW, 0, t_end),
            "client_rtt_lag": bed.rtt_lag("client", SLOW, t_mig),
            "server_rtt_lag": bed.rtt_lag("server", SLOW, t_mig),
            "active_after": bed.index(client, client.active_path),
            "client": bed.liveness("client", SLOW, t1, t_end),
            "server": bed.liveness("server", SLOW, t1, t_end),
            "relay_queued_max": max(bed.relay_queued, default=0),
            "events": bed.event_lines(t0),
            "recv_dups": client.recv_dups + server.recv_dups,
        })
        checks = {
            "the flow moved to the slow path": t_mig is not None and res["active_after"] == SLOW,
            "the slow path never declared dead (either end)": not slow_deaths,
            "no exception": not bed.errors,
            "byte counts and SHA-256 equal": res["intact"],
        }
    finally:
        await bed.close()
    res["errors"] = bed.errors
    res["checks"] = checks
    res["pass"] = all(checks.values())
    return res


def _s(x: float | None) -> str:
    return "never" if x is None else f"{x:.3f} s"


def report_b(res: dict[str, Any], out: TextIO) -> None:
    print(f"B. failover onto the slow path under {'two' if res['two_way'] else 'one'}-way "
          f"bulk, {res['seconds']:g} s after the drop", file=out)
    print(f"   at the drop: {res['at_drop_received'] / MIB:.0f} MiB received "
          f"({res['before_drop_Bps'] / 1e6:.0f} MB/s on the fast path), "
          f"{res['at_drop_unacked'] / MIB:.2f} MiB unacknowledged; drop command "
          f"{res['drop_cmd_s'] * 1e3:.0f} ms", file=out)
    print(f"   failover: drop -> first MIGRATION {_s(res['failover_migration_s'])} (client "
          f"{_s(res['client_migration_s'])}, server {_s(res['server_migration_s'])}); -> first "
          f"new bytes read {_s(res['failover_bytes_s'])}; longest read gap after the drop "
          f"{res['stall_after_drop_s']:.3f} s", file=out)
    rate = res["after_failover_Bps"]
    print(f"   after the failover {'-' if rate is None else f'{rate / 1e6:.3f}'} MB/s on the "
          f"slow path; {res['received'] / MIB:.1f} of {res['written'] / MIB:.1f} MiB arrived"
          + ("" if res["back_received"] is None else
             f", {res['back_received'] / MIB:.1f} MiB server->client")
          + f" (drain {res['drain_s']:.1f} s), relay queue max "
          f"{res['relay_queued_max'] / KIB:.0f} KiB, recv_dups {res['recv_dups']}", file=out)
    for end in ("client", "server"):
        lag = res[f"{end}_rtt_lag"]
        if lag["srtt_at"] is not None:
            print(f"   {end}: slow path srtt {lag['srtt_at'] * 1e3:.0f} ms at the failover, "
                  f"doubled {_s(lag['doubled_after'])} after it", file=out)
    print(f"   slow path, client: {fmt_liveness(res['client'])}", file=out)
    print(f"   slow path, server: {fmt_liveness(res['server'])}", file=out)
    print(f"   deaths of the slow path: {res['slow_deaths']} (suspected "
          f"{res['slow_suspicions']} times); events (time from the drop):", file=out)
    report_common(res, out)


# ---------------------------------------------------------------- scenario C


async def scenario_c(topo: NetnsTopology, o: Opts) -> dict[str, Any]:
    bed = Bed(topo, o)
    await bed.open(relay=False)
    res: dict[str, Any] = {"scenario": "C"}
    loop = EchoLoop(0.010)
    try:
        client = await asyncio.wait_for(bed.dialer(FAST, SLOW).dial(), 15)
        bed.conns.append(client)
        server = await bed.accept()
        if not await wait_until(lambda: all(
                sum(ps.state == "up" for ps in c.stats().paths) >= 2
                for c in (client, server)), 15):
            raise TimeoutError("both paths not up on both ends within 15 s")
        bed.spawn("server-echo", serve_echo(server))
        sender = bed.spawn("echo-send", loop.sender(client))
        reader = bed.spawn("echo-read", loop.reader(client))
        await asyncio.sleep(1.0)
        idx = bed.index(client, client.active_path)
        t0 = time.monotonic()
        await asyncio.to_thread(topo.drop, idx)
        t1 = time.monotonic()
        await wait_until(lambda: loop.last_fresh(t1) or bool(bed.errors), 15)
        await asyncio.sleep(0.3)
        loop.stop.set()
        await sender
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(loop.all_in.wait(), 2)
        reader.cancel()
        a = analyze_echo(loop.sent, loop.recv, t0, t1)
        cmig = bed.client_ev.of(rendr.EventKind.MIGRATION, t0)
        res.update({
            "dropped": idx, "failover_s": a.failover, "first_any_s": a.first_any_after,
            "migration_s": cmig[0][0] - t0 if cmig else None,
            "baseline_p50_s": a.baseline_p50, "stuck": a.stuck,
            "events": bed.event_lines(t0),
        })
    finally:
        await bed.close()
    res["errors"] = bed.errors + ([loop.bad] if loop.bad else [])
    return res


def summarize_c(runs: list[dict[str, Any]], o: Opts) -> dict[str, Any]:
    fo = [r["failover_s"] for r in runs if r.get("failover_s") is not None]
    med = statistics.median(fo) if len(fo) == len(runs) and fo else None
    errors = [e for r in runs for e in r.get("errors", [])]
    checks = {f"median failover <= {o.c_goal:.3f} s": med is not None and med <= o.c_goal,
              "every run recovered, no exception": len(fo) == len(runs) and not errors}
    return {"scenario": "C", "runs": runs, "median_s": med,
            "min_s": min(fo, default=None), "max_s": max(fo, default=None),
            "p90_s": percentile(fo, 90), "goal_s": o.c_goal, "errors": errors,
            "checks": checks, "pass": all(checks.values())}


def report_c_run(i: int, r: dict[str, Any], out: TextIO) -> None:
    base = r.get("baseline_p50_s")
    print(f"   run {i}: dropped path {r.get('dropped')}, failover {_s(r.get('failover_s'))} "
          f"(first answer of any kind {_s(r.get('first_any_s'))}, client MIGRATION "
          f"{_s(r.get('migration_s'))}); echo RTT p50 before "
          f"{'-' if base is None else f'{base * 1e3:.2f} ms'}", file=out)
    for line in r.get("events", []):
        print(f"       {line}", file=out)


def report_c(res: dict[str, Any], out: TextIO) -> None:
    med = res["median_s"]
    print(f"   C median failover {_s(med)} over {len(res['runs'])} runs (min "
          f"{_s(res['min_s'])}, max {_s(res['max_s'])}); goal <= {res['goal_s']:.3f} s",
          file=out)
    report_common(res, out)


# ---------------------------------------------------------------- driver


def in_topology(o: Opts, shaped: bool,
                scenario: Callable[[NetnsTopology, Opts], Awaitable[dict[str, Any]]]
                ) -> dict[str, Any]:
    """Run one scenario on a fresh two-path topology, on a fresh loop whose thread sits
    in the client namespace; everything is torn down afterwards."""
    with NetnsTopology(paths=2, name_prefix="rendr-slow") as topo:
        if shaped:
            topo.rate_limit(SLOW, o.rate, latency=o.tbf_latency)
            if o.fast_rate:
                topo.rate_limit(FAST, o.fast_rate, latency=o.tbf_latency)
        with topo.enter("client"):
            async def main() -> dict[str, Any]:
                return await scenario(topo, o)
            return runner.run(main(), use_uvloop=o.use_uvloop)


def crashed(name: str, exc: BaseException) -> dict[str, Any]:
    return {"scenario": name, "pass": False, "checks": {"ran to the end": False},
            "errors": [f"run crashed: {type(exc).__name__}: {exc}"],
            "traceback": traceback.format_exc()}


def header(o: Opts) -> dict[str, Any]:
    where = os.path.dirname(os.path.dirname(os.path.abspath(rendr.__file__)))
    return {"rendr": rendr.__version__, "from": where, "compiled": rendr.__compiled__,
            "python": platform.python_version(), "loop": runner.loop_factory(o.use_uvloop)[1],
            "cpus": os.cpu_count(), "load": os.getloadavg()[0], "knobs": o.knobs,
            "slow_path": f"tbf {o.rate} (latency {o.tbf_latency}) + relay RTT "
                         f"{o.rtt * 1e3:.0f} ms, relay buffer {o.relay_buffer // KIB} KiB",
            "fast_path": f"veth, {'tbf ' + o.fast_rate if o.fast_rate else 'unshaped'}"}


def run_all(o: Opts, out: TextIO) -> dict[str, Any]:
    h = header(o)
    print(f"slow-path liveness (issue 6): rendr {h['rendr']} from {h['from']} (compiled="
          f"{h['compiled']}); Python {h['python']}; loop {h['loop']}; {h['cpus']} CPUs, load "
          f"{h['load']:.2f}; slow path: {h['slow_path']}; fast path: {h['fast_path']}"
          + (f"; FlowConfig overrides {o.knobs}" if o.knobs else ""), file=out, flush=True)
    results: dict[str, Any] = {"header": h}
    if "A" in o.scenarios:
        try:
            results["A"] = in_topology(o, True, scenario_a)
        except Exception as exc:
            results["A"] = crashed("A", exc)
        if "up_Bps" in results["A"]:
            report_a(results["A"], out)
        else:
            report_common(results["A"], out)
        out.flush()
    if "B" in o.scenarios:
        try:
            results["B"] = in_topology(o, True, scenario_b)
        except Exception as exc:
            results["B"] = crashed("B", exc)
        if "failover_migration_s" in results["B"]:
            report_b(results["B"], out)
        else:
            report_common(results["B"], out)
        out.flush()
    if "C" in o.scenarios:
        print(f"C. LAN failover, both paths unshaped, echo every 10 ms, {o.repeat} runs",
              file=out, flush=True)
        runs = []
        for i in range(o.repeat):
            try:
                r = in_topology(o, False, scenario_c)
            except Exception as exc:
                r = crashed("C", exc)
            runs.append(r)
            report_c_run(i + 1, r, out)
            out.flush()
        results["C"] = summarize_c(runs, o)
        report_c(results["C"], out)
    verdicts = {k: results[k]["pass"] for k in "ABC" if k in results}
    results["pass"] = all(verdicts.values())
    print("verdicts: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in verdicts.items()),
          file=out, flush=True)
    return results


def parse_args(argv: list[str] | None) -> Opts:
    d = Opts()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--scenarios", default=d.scenarios,
                   help="which of A, B, C to run (e.g. 'A,B'; default all)")
    p.add_argument("--seconds", type=float, default=d.seconds, help="A: bulk duration")
    p.add_argument("--b-seconds", type=float, default=d.b_seconds,
                   help="B: bulk duration after the drop")
    p.add_argument("--b-two-way", action="store_true",
                   help="B: bulk server -> client too (harsher than the issue asks)")
    p.add_argument("--drop-after", type=float, default=d.drop_after,
                   help="B: seconds of bulk on the fast path before the drop")
    p.add_argument("--repeat", type=int, default=d.repeat, help="C: runs (median)")
    p.add_argument("--rate", default=d.rate, help="slow path tbf rate (tc syntax)")
    p.add_argument("--rtt", type=float, default=d.rtt,
                   help="slow path round trip added by the relay, seconds")
    p.add_argument("--tbf-latency", default=d.tbf_latency, help="tbf latency (queue bound)")
    p.add_argument("--relay-buffer", type=int, default=d.relay_buffer,
                   help="bytes the relay holds per direction before it stops reading")
    p.add_argument("--fast-rate", default=None, help="tbf rate of the fast path (default none)")
    p.add_argument("--c-goal", type=float, default=d.c_goal, help="C: median goal, seconds")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--knob", metavar="NAME=VALUE", action="append", default=[],
                   help="override a FlowConfig field on both ends (A/B experiments)")
    p.add_argument("--json", metavar="PATH",
                   help="write every measurement as JSON to PATH ('-': stdout, the report "
                        "then goes to stderr)")
    p.add_argument("--debug", action="store_true", help="log events and rendr at DEBUG")
    p.add_argument("--log-file", default=None, help="write logs here (default stderr)")
    a = p.parse_args(argv)
    scen = "".join(ch for ch in a.scenarios.upper() if ch.isalpha())
    if not scen or set(scen) - set("ABC"):
        p.error("--scenarios takes letters among A, B, C")
    if a.repeat < 1 or a.seconds <= 0 or a.b_seconds <= 0 or a.rtt < 0:
        p.error("--repeat must be >= 1, --seconds/--b-seconds > 0, --rtt >= 0")
    try:
        parse_rate(a.rate)
        if a.fast_rate:
            parse_rate(a.fast_rate)
        knobs = {k: ast.literal_eval(v) for k, v in (kv.split("=", 1) for kv in a.knob)}
        rendr.FlowConfig().replace(**knobs)
    except (ValueError, SyntaxError, TypeError) as exc:
        p.error(f"bad rate or --knob (NAME=VALUE, a Python literal, a FlowConfig field): {exc}")
    level = logging.DEBUG if a.debug else logging.WARNING
    logging.basicConfig(level=level, filename=a.log_file,
                        format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    o = Opts(scenarios=scen, seconds=a.seconds, b_seconds=a.b_seconds, b_two_way=a.b_two_way,
             drop_after=a.drop_after, repeat=a.repeat, rate=a.rate, rtt=a.rtt,
             tbf_latency=a.tbf_latency, relay_buffer=a.relay_buffer, fast_rate=a.fast_rate,
             c_goal=a.c_goal, use_uvloop=not a.no_uvloop, knobs=knobs, json=a.json)
    return o


def main(argv: list[str] | None = None) -> int:
    o = parse_args(argv)
    json_path = o.json
    out = sys.stderr if json_path == "-" else sys.stdout
    reason = unavailable_reason()
    if reason is not None:
        print(f"slow-path liveness SKIPPED: {reason}", file=out)
        return EXIT_SKIP
    results = run_all(o, out)
    if json_path is not None:
        text = json.dumps(results, indent=1, default=str)
        if json_path == "-":
            print(text)
        else:
            with open(json_path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
    return 0 if results["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
