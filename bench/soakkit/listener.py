"""The listener process: ``rendr.listen_tcp`` and a verifying server for every flow.

Per accepted connection: read the flow header, then at once read the client's
stream (every byte compared with the regenerated stream, SHA-256 and count kept)
and send the server's own stream at the pace the header asks, in random-sized
writes, until the client's EOF; then ``write_eof()``, ``close()`` and a record to
the parent.  Commands from the parent: ``stats`` (fds, tasks, objects, loop lag,
open flows, receive-memory promised), ``exit``.
"""

from __future__ import annotations

import asyncio
import random
import traceback
import tracemalloc
from typing import Any

import rendr

from .common import (
    HEADER,
    MAGIC,
    EventLog,
    describe,
    exc_text,
    first_failure,
    flow_key,
    send_bursts,
)
from .params import Params
from .pattern import DOWN, UP, Checker, Sender, log_uniform
from .probe import LagMonitor, census, raise_fd_limit, snapshot
from .proto import Channel


class _Flow:
    __slots__ = ("checker", "eof", "events", "key", "last_progress", "reported_stall",
                 "sender", "started")

    def __init__(self, key: str, checker: Checker, sender: Sender, now: float,
                 events: EventLog) -> None:
        self.key = key
        self.checker = checker
        self.sender = sender
        self.started = now
        self.last_progress = now
        self.eof = False
        self.reported_stall = False
        self.events = events


class ServerError(Exception):
    """Something the soak's server found wrong (not raised by rendr)."""


class ListenerRole:
    def __init__(self, ch: Channel, p: Params, t0: float) -> None:
        self.ch = ch
        self.p = p
        self.t0 = t0
        self.lag = LagMonitor()
        self.active: dict[str, _Flow] = {}
        self.conns: set[rendr.Conn] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.done = 0
        self.errors = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.events: dict[str, int] = {}
        self.ln: rendr.Listener | None = None

    def on_event(self, ev: rendr.Event) -> None:
        kind = str(ev.kind)
        if ev.kind is rendr.EventKind.MIGRATION and ev.cause:
            kind = f"migration:{ev.cause}"
        self.events[kind] = self.events.get(kind, 0) + 1

    def stats(self, collect: bool = False) -> dict[str, Any]:
        ln = self.ln
        return {
            **snapshot(self.lag, collect=collect),
            "open_flows": len(self.conns), "done": self.done, "errors": self.errors,
            "bytes_in": self.bytes_in + sum(f.checker.count for f in self.active.values()),
            "bytes_out": self.bytes_out + sum(f.sender.count for f in self.active.values()),
            "memory_promised": ln.memory.promised if ln is not None else None,
            "memory_throttled": ln.memory.throttled if ln is not None else None,
            "events": dict(self.events),
        }

    def trace_diff(self, base: tracemalloc.Snapshot | None) -> list[str]:
        """The allocation sites that grew most since ``base``."""
        if base is None or not tracemalloc.is_tracing():
            return []
        now = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)])
        return [str(d) for d in now.compare_to(base, "lineno")[:15]]

    async def main(self) -> None:
        raise_fd_limit()
        if self.p.tracemalloc:
            tracemalloc.start(1)
        base: tracemalloc.Snapshot | None = None
        loop = asyncio.get_running_loop()
        self.lag.start()
        addr = "0.0.0.0:0" if self.p.netns else "127.0.0.1:0"
        self.ln = ln = await rendr.listen_tcp(addr, backlog=1024, on_event=self.on_event,
                                              **{**self.p.listener_caps, **self.p.knobs})
        accept = loop.create_task(self.accept(ln), name="accept")
        watchdog = loop.create_task(self.watchdog(), name="watchdog")
        self.ch.say("ready", port=ln.addrs[0][1], stats=self.stats(collect=True), census=census())
        try:
            while (msg := await self.ch.recv()) is not None:
                if msg["cmd"] == "stats":
                    self.ch.say("stats", tag=msg.get("tag"),
                                stats=self.stats(bool(msg.get("collect"))))
                elif msg["cmd"] == "trace_base":
                    base = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
                elif msg["cmd"] == "trace_diff":
                    self.ch.say("trace", lines=self.trace_diff(base))
                elif msg["cmd"] == "census":
                    self.ch.say("census", tag=msg.get("tag"), census=census())
                elif msg["cmd"] == "exit":
                    break
        finally:
            accept.cancel()
            watchdog.cancel()
            for conn in list(self.conns):
                conn.abort(reason="soak listener exit")
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(accept, watchdog, *self.tasks, return_exceptions=True)
            await ln.close()
            await self.lag.stop()

    async def accept(self, ln: rendr.Listener) -> None:
        loop = asyncio.get_running_loop()
        async for conn in ln:
            task = loop.create_task(self.serve(conn))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(5.0)
            now = loop.time()
            for f in list(self.active.values()):
                if not f.reported_stall and now - f.last_progress > self.p.stall_limit:
                    f.reported_stall = True
                    self.errors += 1
                    self.ch.say("error", side="server", key=f.key,
                                error=f"no byte from the client for {now - f.last_progress:.1f} s",
                                events=list(f.events.recent))

    async def serve(self, conn: rendr.Conn) -> None:
        loop = asyncio.get_running_loop()
        self.conns.add(conn)
        key = "?"
        f: _Flow | None = None
        events = EventLog(self.t0)
        conn.on_event(events)
        tasks: list[asyncio.Task[None]] = []
        try:
            try:
                head = await asyncio.wait_for(conn.readexactly(HEADER.size), 60)
            except asyncio.TimeoutError:
                raise ServerError("no flow header within 60 s of accept() (a dial the client "
                               "gave up?)") from None
            magic, seed, proc, slot, gen = HEADER.unpack(head)
            if magic != MAGIC:
                raise ServerError(f"bad flow header {head.hex()}")
            key = flow_key(proc, slot, gen)
            rng = random.Random(seed ^ 0x5EED)
            f = _Flow(key, Checker(seed, UP), Sender(seed, DOWN, rng, self.p.max_write),
                      loop.time(), events)
            self.active[key] = f
            tasks = [loop.create_task(self.read_side(conn, f, random.Random(seed ^ 0xEAD))),
                     loop.create_task(self.write_side(conn, f, random.Random(seed ^ 0xB0)))]
            await first_failure(tasks)
            try:
                await asyncio.wait_for(conn.close(), self.p.knobs.get("linger", 10.0) + 20.0)
            except asyncio.TimeoutError:
                raise ServerError("close() did not return in time") from None
            self.done += 1
            self.bytes_in += f.checker.count
            self.bytes_out += f.sender.count
            self.ch.say("flow", side="server", key=key, flow_id=conn.flow_id.hex()[:8],
                        up=f.checker.count,
                        up_sha=f.checker.sha.hexdigest(), down=f.sender.count,
                        down_sha=f.sender.sha.hexdigest(),
                        dur=round(loop.time() - f.started, 3), recv_dups=conn.recv_dups,
                        migrations=conn.migration_count, events=events.counts)
        except Exception as exc:
            self.errors += 1
            self.ch.say("error", side="server", key=key, error=exc_text(exc),
                        flow_id=conn.flow_id.hex()[:8],
                        trace=traceback.format_exc(limit=8), conn=describe(conn),
                        read=f.checker.count if f else None,
                        sent=f.sender.count if f else None, events=list(events.recent))
            conn.abort(reason="soak server error")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if f is not None:
                self.active.pop(f.key, None)
            self.conns.discard(conn)

    async def read_side(self, conn: rendr.Conn, f: _Flow, rng: random.Random) -> None:
        loop = asyncio.get_running_loop()
        top = self.p.max_read
        while True:
            data = await conn.read(log_uniform(rng, top))
            if not data:
                f.eof = True
                return
            err = f.checker.feed(data)
            if err is not None:
                raise ServerError(f"client->server stream: {err}")
            f.last_progress = loop.time()

    async def write_side(self, conn: rendr.Conn, f: _Flow, rng: random.Random) -> None:
        await send_bursts(conn, f.sender, rng, self.p.burst, self.p.idle, lambda: not f.eof)
