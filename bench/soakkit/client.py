"""A client process: flow slots, each running one flow after another over two relays.

Every flow: two :class:`~rendr.testing.relay.TcpRelay` (one per real path; in netns
mode their upstream connections cross the two veth paths), a ``rendr.Dialer`` over
both, the header, then at once

* a writer: the client's stream in random-sized writes at ``rate`` until the
  flow's end (its lifetime, or the run's stop), then ``write_eof()``;
* a reader: the server's stream, every byte compared, until the server's EOF;
* chaos: one relay fault at a time (``kill()``, ``blackhole()`` for 0.1-2 s then
  ``forward()``, or a stall: ``set_rate`` very low for a while), never on the
  other path near a planned nftables DROP;
* admin calls: ``migrate()`` to another live path, ``add_path()`` through a
  random relay (at most ``max_slots`` slots), ``remove_path()`` of a path whose
  relay keeps another slot.

Then ``close()`` and a record (counts and SHA-256 both ways) to the parent, which
matches it with the server's.  Every exception is an error reported with the
flow's recent events, faults and calls.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import traceback
from typing import IO, Any

import rendr
from rendr.testing.relay import TcpRelay

from .common import HEADER, MAGIC, EventLog, add_counts, describe, exc_text, run_until, send_bursts
from .common import flow_key as make_key
from .faults import Drop, DropPlan, FaultIntervals
from .params import FAULT_KINDS, Params
from .pattern import DOWN, UP, Checker, Sender, log_uniform
from .probe import LagMonitor, raise_fd_limit, snapshot
from .proto import Channel


class SoakError(Exception):
    """Something the soak itself found wrong (not raised by rendr)."""


class _Flow:
    """One flow's state on the client."""

    def __init__(self, key: str, seed: int, relays: list[TcpRelay], t0: float,
                 long: bool, max_write: int) -> None:
        self.key = key
        self.seed = seed
        self.relays = relays
        self.long = long
        self.rng = random.Random(seed)
        self.sender = Sender(seed, UP, random.Random(seed ^ 0x5E4D), max_write)
        self.checker = Checker(seed, DOWN)
        self.events = EventLog(t0)
        self.faults: dict[str, int] = {}
        self.ops: dict[str, int] = {}
        self.spans = [FaultIntervals() for _ in relays]
        self.slots = [1] * len(relays)
        self.started = time.monotonic()
        self.last_progress = self.started
        self.reported_stall = False
        self.conn: rendr.Conn | None = None
        self.stop = asyncio.Event()
        self.last_op = ""

    def count(self, table: dict[str, int], kind: str) -> None:
        table[kind] = table.get(kind, 0) + 1

    def relay_index(self, remote_addr: str) -> int | None:
        port = remote_addr.rsplit(":", 1)[-1]
        for k, relay in enumerate(self.relays):
            if str(relay.addr[1]) == port:
                return k
        return None


class ClientRole:
    def __init__(self, ch: Channel, p: Params, index: int, t0: float, fault_log: str) -> None:
        self.ch = ch
        self.p = p
        self.index = index
        self.t0 = t0
        self.flog: IO[str] = open(fault_log, "w", encoding="utf-8")  # noqa: SIM115
        self.lag = LagMonitor()
        self.rng = random.Random(f"{p.seed}/client/{index}")
        self.stopping = asyncio.Event()
        self.upstreams: list[tuple[str, int]] = []
        self.drops = DropPlan([], p.drop_margin_before, p.drop_margin_after)
        self.active: dict[str, _Flow] = {}
        self.done = 0
        self.errors = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.faults: dict[str, int] = {}
        self.ops: dict[str, int] = {}
        self.events: dict[str, int] = {}
        self.migrations = 0
        self.recv_dups = 0
        self.started_flows = 0
        self.finished_keys: set[str] = set()
        self.lingering: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ process

    def log(self, text: str) -> None:
        self.flog.write(f"{time.monotonic() - self.t0:10.3f} {text}\n")

    def progress(self) -> dict[str, Any]:
        live = self.active.values()
        return {
            **snapshot(self.lag, with_objects=False),
            "done": self.done, "active": len(self.active), "started": self.started_flows,
            "errors": self.errors,
            "bytes_up": self.bytes_up + sum(f.sender.count for f in live),
            "bytes_down": self.bytes_down + sum(f.checker.count for f in live),
            "faults": self._sum(self.faults, "faults"), "ops": self._sum(self.ops, "ops"),
        }

    def _sum(self, done: dict[str, int], attr: str) -> dict[str, int]:
        out = dict(done)
        for f in self.active.values():
            add_counts(out, getattr(f, attr))
        return out

    async def main(self) -> None:
        raise_fd_limit()
        loop = asyncio.get_running_loop()
        self.lag.start()
        self.ch.say("ready", stats=snapshot(self.lag, collect=True))
        run: asyncio.Task[None] | None = None
        try:
            while (msg := await self.ch.recv()) is not None:
                cmd = msg["cmd"]
                if cmd == "start":
                    self.upstreams = [(str(h), int(port)) for h, port in msg["upstreams"]]
                    self.drops.drops = [Drop(*d) for d in msg["drops"]]
                    run = loop.create_task(self.run(), name="run")
                elif cmd == "stop":
                    self.stopping.set()
                elif cmd == "stats":
                    self.ch.say("stats", tag=msg.get("tag"),
                                stats=snapshot(self.lag, collect=bool(msg.get("collect"))))
                elif cmd == "exit":
                    break
        finally:
            self.stopping.set()
            if run is not None and not run.done():
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
            await self.lag.stop()
            self.flog.close()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        n = self.p.flows_of(self.index)
        n_long = round(n * self.p.long_frac)
        longs = set(self.rng.sample(range(n), n_long))
        helpers = [loop.create_task(self.report_progress(), name="progress"),
                   loop.create_task(self.watchdog(), name="watchdog")]
        slots = [loop.create_task(self.slot(i, i in longs, self.p.ramp * i / max(n, 1)))
                 for i in range(n)]
        try:
            await asyncio.gather(*slots)
            if self.lingering:  # relays of failed flows, kept for rendr's farewell
                await asyncio.gather(*list(self.lingering), return_exceptions=True)
        finally:
            for task in list(self.lingering):
                task.cancel()
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        self.log("all flows finished")
        self.ch.say("finished", progress=self.progress(), events=self.events,
                    migrations=self.migrations, recv_dups=self.recv_dups)

    async def report_progress(self) -> None:
        while True:
            await asyncio.sleep(self.p.sample)
            self.ch.say("progress", progress=self.progress())

    async def watchdog(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            now = time.monotonic()
            for f in list(self.active.values()):
                if not f.reported_stall and now - f.last_progress > self.p.stall_limit:
                    f.reported_stall = True
                    self.error(f, SoakError(f"no byte from the server for "
                                            f"{now - f.last_progress:.1f} s"), trace=False)

    def error(self, f: _Flow, exc: BaseException, trace: bool = True) -> None:
        self.errors += 1
        self.log(f"ERROR flow={f.key} {exc_text(exc)}")
        self.ch.say("error", side="client", key=f.key, seed=f.seed, error=exc_text(exc),
                    flow_id=f.conn.flow_id.hex()[:8] if f.conn is not None else None,
                    trace=traceback.format_exc(limit=8) if trace else "",
                    conn=describe(f.conn), sent=f.sender.count, read=f.checker.count,
                    faults=f.faults, ops=f.ops, events=list(f.events.recent),
                    relays=[r.addr for r in f.relays])

    def anomaly(self, f: _Flow, text: str) -> None:
        self.log(f"ANOMALY flow={f.key} {text} (last call: {f.last_op})")
        self.ch.say("anomaly", key=f.key, seed=f.seed, text=text, last_op=f.last_op,
                    events=list(f.events.recent)[-12:])

    # ------------------------------------------------------------------ slots and flows

    async def slot(self, i: int, long: bool, delay: float) -> None:
        rng = random.Random(f"{self.p.seed}/slot/{self.index}/{i}")
        await asyncio.sleep(delay + rng.uniform(0, 0.5))
        gen = 0
        while not self.stopping.is_set():
            life = math.inf if long else rng.uniform(*self.p.flow_life)
            await self.flow(make_key(self.index, i, gen), rng.getrandbits(63), life, long)
            gen += 1

    async def flow(self, key: str, seed: int, life: float, long: bool) -> None:
        loop = asyncio.get_running_loop()
        p = self.p
        relays = [TcpRelay(up) for up in self.upstreams]
        f = _Flow(key, seed, relays, self.t0, long, p.max_write)
        self.active[key] = f
        self.started_flows += 1
        tasks: list[asyncio.Task[None]] = []
        side: list[asyncio.Task[None]] = []
        try:
            for relay in relays:
                await relay.start()
            self.log(f"flow={key} start seed={seed} life={life:.1f} relays="
                     f"{[r.addr[1] for r in relays]}")
            dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"{r.addr[0]}:{r.addr[1]}")
                                         for r in relays], on_event=f.events, **p.knobs)
            try:
                conn = f.conn = await asyncio.wait_for(dialer.dial(), 60)
            except asyncio.TimeoutError:
                raise SoakError("dial() did not return within 60 s") from None
            proc, slot, gen = (int(x) for x in key.split("."))
            await conn.write(HEADER.pack(MAGIC, seed, proc, slot, gen))
            end_at = loop.time() + life
            tasks = [loop.create_task(self.write_side(conn, f, end_at)),
                     loop.create_task(self.read_side(conn, f))]
            side = [loop.create_task(self.chaos(f), name="chaos"),
                    loop.create_task(self.admin(conn, f), name="admin")]
            for name in await run_until(tasks, side, f.stop):
                self.anomaly(f, f"the {name} task was cancelled while it awaited rendr and "
                                "went on as if not (the cancellation was lost); it ended only "
                                "because it also watches a stop flag")
            limit = p.knobs.get("linger", 10.0) + 20.0
            try:
                await asyncio.wait_for(conn.close(), limit)
            except asyncio.TimeoutError:
                raise SoakError(f"close() did not return within {limit:g} s") from None
            self.finish(f, conn, loop.time() - end_at)
        except (Exception, asyncio.CancelledError) as exc:
            if not isinstance(exc, asyncio.CancelledError) or not self.stopping.is_set():
                self.error(f, exc)
            if f.conn is not None:
                f.conn.abort(reason="soak client error")
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            for task in tasks + side:
                task.cancel()
            await asyncio.gather(*tasks, *side, return_exceptions=True)
            for relay in relays:
                relay.forward()
                relay.set_rate(None)
            if f.conn is not None and f.conn.is_closed and f.key not in self.finished_keys:
                # a flow that failed: rendr may still deliver its CLOSE to the listener over
                # a fresh carrier (the dialer's farewell): keep the relays up a while
                self.spawn_linger(relays)
            else:
                for relay in relays:
                    await relay.close()
            self.active.pop(key, None)
            self.bytes_up += f.sender.count
            self.bytes_down += f.checker.count
            add_counts(self.faults, f.faults)
            add_counts(self.ops, f.ops)
            add_counts(self.events, f.events.counts)

    def spawn_linger(self, relays: list[TcpRelay]) -> None:
        async def linger() -> None:
            await asyncio.sleep(self.p.relay_linger)
            for relay in relays:
                await relay.close()

        task = asyncio.get_running_loop().create_task(linger(), name="relay-linger")
        self.lingering.add(task)
        task.add_done_callback(self.lingering.discard)

    def finish(self, f: _Flow, conn: rendr.Conn, overtime: float) -> None:
        self.finished_keys.add(f.key)
        self.done += 1
        self.migrations += conn.migration_count
        self.recv_dups += conn.recv_dups
        dur = time.monotonic() - f.started
        self.log(f"flow={f.key} done up={f.sender.count} down={f.checker.count} "
                 f"dur={dur:.1f} faults={f.faults} ops={f.ops}")
        self.ch.say("flow", side="client", key=f.key, flow_id=conn.flow_id.hex()[:8],
                    up=f.sender.count,
                    up_sha=f.sender.sha.hexdigest(), down=f.checker.count,
                    down_sha=f.checker.sha.hexdigest(), dur=round(dur, 3), long=f.long,
                    faults=f.faults, ops=f.ops, migrations=conn.migration_count,
                    recv_dups=conn.recv_dups, events=f.events.counts,
                    end_s=round(overtime, 3))

    async def write_side(self, conn: rendr.Conn, f: _Flow, end_at: float) -> None:
        loop = asyncio.get_running_loop()

        def going() -> bool:
            return loop.time() < end_at and not self.stopping.is_set()

        await send_bursts(conn, f.sender, random.Random(f.seed ^ 0xB1), self.p.burst,
                          self.p.idle, going)
        f.events.note("write_eof")

    async def read_side(self, conn: rendr.Conn, f: _Flow) -> None:
        rng = random.Random(f.seed ^ 0x4EAD)
        top = self.p.max_read
        while True:
            data = await conn.read(log_uniform(rng, top))
            if not data:
                f.events.note("read EOF")
                return
            err = f.checker.feed(data)
            if err is not None:
                raise SoakError(f"server->client stream: {err}")
            f.last_progress = time.monotonic()

    # ------------------------------------------------------------------ faults and calls

    async def chaos(self, f: _Flow) -> None:
        p, rng = self.p, f.rng
        while not f.stop.is_set():
            await asyncio.sleep(rng.uniform(*p.fault_gap))
            kind = rng.choices(FAULT_KINDS, weights=p.fault_weights)[0]
            dur = {"kill": 0.0, "blackhole": rng.uniform(*p.blackhole_len),
                   "stall": rng.uniform(*p.stall_len)}[kind]
            now = time.monotonic()
            allowed = [k for k in range(len(f.relays)) if not self.drops.blocks(k, now, now + dur)]
            if not allowed:
                f.count(f.faults, "skipped_near_drop")
                continue
            k = rng.choice(allowed)
            relay = f.relays[k]
            f.count(f.faults, kind)
            if kind == "kill":
                text = f"relay{k} kill ({relay.connections} conns)"
                relay.kill()
            elif kind == "blackhole":
                text = f"relay{k} blackhole {dur:.2f}s"
                relay.blackhole()
            else:
                bps = rng.uniform(*p.stall_rate)
                text = f"relay{k} stall {dur:.2f}s at {bps:.0f} B/s"
                relay.set_rate(bps)
            self.log(f"flow={f.key} {text}")
            f.events.note(text)
            try:
                await asyncio.sleep(dur)
            finally:
                relay.forward()
                relay.set_rate(None)
                f.spans[k].add(now, time.monotonic())

    async def admin(self, conn: rendr.Conn, f: _Flow) -> None:
        p, rng = self.p, f.rng
        while not f.stop.is_set():
            await asyncio.sleep(rng.uniform(*p.op_gap))
            if f.stop.is_set():
                return
            kind = rng.choice(("migrate", "add_path", "remove_path"))
            f.last_op = kind
            st = conn.stats()
            up = [(path, f.relay_index(path.remote_addr)) for path in st.paths
                  if path.state == "up"]
            if kind == "migrate":
                to = [path.id for path, _ in up if path.id != st.active_path and not path.suspect]
                if not to:
                    f.count(f.ops, "migrate_skipped")
                    continue
                target = rng.choice(to)
                f.events.note(f"migrate({target}) from {st.active_path}")
                self.log(f"flow={f.key} migrate({target}) from {st.active_path}")
                await conn.migrate(target)
                f.count(f.ops, "migrate")
            elif kind == "add_path":
                if sum(f.slots) >= p.max_slots:
                    f.count(f.ops, "add_path_skipped")
                    continue
                await self.add_path(conn, f, rng.randrange(len(f.relays)))
            else:
                gone = [(path.id, k) for path, k in up
                        if k is not None and f.slots[k] >= 2]
                if not gone:
                    f.count(f.ops, "remove_path_skipped")
                    continue
                pid, k = rng.choice(gone)
                f.events.note(f"remove_path({pid}) relay{k} active={st.active_path}")
                self.log(f"flow={f.key} remove_path({pid}) relay{k} active={st.active_path}")
                try:
                    await conn.remove_path(pid)
                except rendr.LastPathError:
                    f.count(f.ops, "remove_path_refused_last")
                    continue
                f.slots[k] -= 1
                f.count(f.ops, "remove_path")

    async def add_path(self, conn: rendr.Conn, f: _Flow, k: int) -> None:
        relay = f.relays[k]
        a = time.monotonic()
        f.events.note(f"add_path(relay{k})")
        try:
            pid = await asyncio.wait_for(
                conn.add_path(rendr.PathSpec("tcp", f"{relay.addr[0]}:{relay.addr[1]}")), 30)
        except (OSError, asyncio.TimeoutError, rendr.RendrError) as exc:
            b = time.monotonic()
            if f.spans[k].touches(a, b) or self.drops.touches(k, a, b) or relay.blackholed:
                f.count(f.ops, "add_path_failed_in_fault")
                f.events.note(f"add_path(relay{k}) failed during a fault: {exc_text(exc)}")
                self.log(f"flow={f.key} add_path(relay{k}) failed during a fault: "
                         f"{exc_text(exc)}")
                return
            raise SoakError(f"add_path through relay{k} failed with no fault on it "
                            f"({b - a:.2f} s): {exc_text(exc)}") from exc
        f.slots[k] += 1
        f.count(f.ops, "add_path")
        f.events.note(f"add_path(relay{k}) -> path {pid}")
        self.log(f"flow={f.key} add_path(relay{k}) -> path {pid} slots={f.slots}")
