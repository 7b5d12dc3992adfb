"""One G4+G5 run: a fresh two-path topology, a listener and two connections, the
tasks of the traffic, the phases of :mod:`.scenarios`, an orderly shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Callable, Coroutine
from typing import Any

import rendr
from rendr.aio import runner
from rendr.testing.netns import NetnsTopology
from rendr.testing.payload import repeated_digest

from . import scenarios
from .analysis import Events, migration_causes, path_down_causes
from .params import Params
from .probes import describe, path_index, up_paths, wait_until
from .record import RunResult
from .traffic import BulkTransfer, EchoLoop, bulk_block, serve_echo

log = logging.getLogger("g4g5")


class Run:
    """State shared by the tasks of one run."""

    def __init__(self, topo: NetnsTopology, p: Params) -> None:
        self.topo = topo
        self.p = p
        self.r = RunResult(failover_limit=p.failover_limit, failover_target=p.failover_target,
                           redial_limit=p.redial_limit)
        self.tasks: list[asyncio.Task[Any]] = []
        self.server_conns: dict[str, rendr.Conn] = {}
        self.server_ready: dict[str, asyncio.Event] = {"E": asyncio.Event(),
                                                       "B": asyncio.Event()}
        self.echo_loop = EchoLoop(p.echo_interval)
        self.transfer = BulkTransfer(p.bulk_bytes)
        self.t_drop: float | None = None
        self.shutting_down = False
        self.events: Events = []

    # ---- bookkeeping
    def error(self, msg: str) -> None:
        if self.shutting_down:
            # the gate aborting what is left after a failure: not another failure
            self.r.notes.append(f"during shutdown: {msg}")
            return
        log.error("%s", msg)
        self.r.errors.append(msg)

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        async def guarded() -> Any:
            try:
                return await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.error(f"{name}: {type(exc).__name__}: {exc}")
                self.r.diagnostics.append(f"{name} traceback:\n{traceback.format_exc()}")
                return None

        task = asyncio.get_running_loop().create_task(guarded(), name=name)
        self.tasks.append(task)
        return task

    def watch(self, conn: rendr.Conn, name: str) -> None:
        def on_event(ev: rendr.Event) -> None:
            self.events.append((time.monotonic(), name, ev))
            log.info("%s event: %s path=%s old=%s new=%s cause=%s %s", name, ev.kind,
                     ev.path_id, ev.old_path, ev.new_path, ev.cause, ev.detail)

        conn.on_event(on_event)

    # ---- server side
    async def serve(self, ln: rendr.Listener) -> None:
        n = 0
        while True:
            conn = await ln.accept()
            n += 1
            self.spawn(f"server-conn-{n}", self.serve_conn(conn))

    async def serve_conn(self, conn: rendr.Conn) -> None:
        tag = (await conn.readexactly(1)).decode()
        self.server_conns[tag] = conn
        self.watch(conn, f"server-{tag}")
        self.server_ready[tag].set()
        if tag == "E":
            await serve_echo(conn)
        elif tag == "B":
            await self.transfer.serve(conn)
        else:
            raise ValueError(f"unknown connection tag {tag!r}")

    # ---- the run
    async def run(self) -> RunResult:
        p, r, topo = self.p, self.r, self.topo
        r.loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        block = bulk_block()
        expect_digest = repeated_digest(block, p.bulk_bytes)
        r.bulk.sha_expected = expect_digest.hex()
        r.bulk.size = p.bulk_bytes
        with topo.enter("server"):
            ln = await rendr.listen(
                *[rendr.ListenSpec("tcp", f"{link.server_addr}:0") for link in topo.paths],
                **p.knobs)
        ports = {host: port for host, port in ln.addrs}
        echo: rendr.Conn | None = None
        bulk: rendr.Conn | None = None
        try:
            self.spawn("server-accept", self.serve(ln))
            dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"{h}:{port}")
                                         for h, port in ln.addrs], **p.knobs)
            echo = await asyncio.wait_for(dialer.dial(), 10)
            self.watch(echo, "echo")
            await echo.write(b"E")
            bulk = await asyncio.wait_for(dialer.dial(), 10)
            self.watch(bulk, "bulk")
            await bulk.write(b"B")
            both = await wait_until(
                lambda: len(up_paths(echo)) >= 2 and len(up_paths(bulk)) >= 2
                and all(e.is_set() for e in self.server_ready.values()), 10)
            if not both:
                raise TimeoutError("connections did not get both paths up within 10 s:\n"
                                   + describe(echo, "echo") + "\n" + describe(bulk, "bulk"))
            idx = path_index(topo, echo, echo.active_path)
            if idx is None:
                raise RuntimeError("cannot map the echo active path to a topology path")
            await scenarios.align(self, bulk, idx)
            await scenarios.g4(self, echo, bulk, block, expect_digest)
            if not r.errors and r.drop.index is not None:
                await scenarios.g5(self, echo, ports)
        except Exception as exc:
            self.error(f"scenario: {type(exc).__name__}: {exc}")
            r.diagnostics.append(traceback.format_exc())
            r.diagnostics.append(describe(echo, "client echo"))
            r.diagnostics.append(describe(bulk, "client bulk"))
            for tag, conn in self.server_conns.items():
                r.diagnostics.append(describe(conn, f"server {tag}"))
        finally:
            await self.shutdown(ln, [echo, bulk])
        r.path_down_causes = path_down_causes(self.events, self.t_drop)
        r.migration_causes = migration_causes(self.events, self.t_drop)
        return r

    async def shutdown(self, ln: rendr.Listener, conns: list[rendr.Conn | None]) -> None:
        self.echo_loop.stop.set()
        self.shutting_down = bool(self.r.errors)
        for conn in conns:
            if conn is None or conn.is_closed:
                continue
            try:
                await asyncio.wait_for(conn.close(), 5)
            except (asyncio.TimeoutError, rendr.RendrError) as exc:
                self.r.notes.append(f"close: {exc!r}")
                conn.abort(reason="gate shutdown")
        for task in self.tasks:
            if task.get_name().startswith("server-conn") and not task.done():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), 5)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for conn in self.server_conns.values():
            if not conn.is_closed:
                conn.abort(reason="gate shutdown")
        await ln.close()


async def run_once(topo: NetnsTopology, p: Params) -> RunResult:
    """One G4+G5 run on an open topology.  The calling thread must be in the client
    namespace (see :func:`run_in_netns`)."""
    return await Run(topo, p).run()


def _run_loop(main: Callable[[], Coroutine[Any, Any, RunResult]], use_uvloop: bool) -> RunResult:
    return runner.run(main(), use_uvloop=use_uvloop)


def run_in_netns(p: Params, use_uvloop: bool = True) -> RunResult:
    """Build a fresh 2-path topology, run G4+G5 on a new event loop whose thread stays in
    the client namespace, tear everything down, and return the measurements."""
    with NetnsTopology(paths=2) as topo:
        if p.rate:
            for link in topo.paths:
                topo.rate_limit(link.index, p.rate, latency=p.tbf_latency)
        with topo.enter("client"):
            return _run_loop(lambda: run_once(topo, p), use_uvloop)
