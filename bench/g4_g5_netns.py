#!/usr/bin/env python3
"""G4/G5 gates: silent path loss and path recovery on a real network (Linux netns).

Topology: :class:`rendr.testing.netns.NetnsTopology` with two veth paths between a
*client* and a *server* namespace.  One process, one event loop: the loop thread
lives in the client namespace for the whole run; the listener is created while
the thread briefly enters the server namespace (its sockets stay there).

G4 -- failover under load.  Two rendr connections over the same two paths:

* an *echo* connection: the client sends a 64-byte message (sequence number +
  checksum-like pattern) every 10 ms and the server echoes it; every send and
  answer time is recorded and every answer is checked (content and order);
* a *bulk* connection: the client streams ``--bulk-mib`` MiB (optionally shaped
  with ``tc tbf`` so it is still in flight at the drop), the server SHA-256s it
  and answers the digest at EOF.

About ``--drop-after`` seconds into the traffic, the path that is active for both
connections is black-holed (``topo.drop``: nftables DROP, no RST/ICMP).

*Failover time* = from the moment the drop command started until the client
receives the first echo answer to a request that was **sent after the drop
command completed** (such an answer can only have travelled on a working path).
The time of the first answer of any kind received after the drop (including
the requests stuck in flight) is reported too.  Required: failover <= 5 s
(target <= 1 s), no exception from any read/write, every echo answer correct
and in order, the bulk SHA-256 identical (every byte in flight arrives).

G5 -- recovery, same run.  ``topo.undrop`` the path; the dialer must re-dial it on
its own (a PATH_UP whose remote address is the recovered path's server address;
the time after the undrop is reported).  Then ``conn.add_path`` over the
recovered address explicitly, ``conn.migrate`` to the new path, echo 256 KiB
byte-exact over it, and check with ``stats()`` that the active path (both ends)
is the new one and that the bytes flowed on it; ``recv_dups`` must not increase
and ``recv_queue_hwm`` must not grow on either end during this clean migration.

Exit status: 0 all gates passed, 1 a gate failed, 77 skipped (not root, no
netns/nftables), 2 usage error.

Usage::

    sudo python bench/g4_g5_netns.py --quick          # CI: 64 MiB at 200 mbit, 1 run
    sudo python bench/g4_g5_netns.py                  # full: 512 MiB at 1 gbit
    sudo python bench/g4_g5_netns.py --quick --repeat 5   # median failover over 5 runs
    sudo python bench/g4_g5_netns.py --quick --debug --log-file /tmp/rendr.log
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import rendr
from rendr.aio import runner
from rendr.testing.netns import NetnsTopology, unavailable_reason
from rendr.testing.payload import repeated_digest

EXIT_SKIP = 77
KIB = 1024
MIB = 1024 * 1024
ECHO_SIZE = 64
BULK_BLOCK = 4 * MIB
BULK_CHUNK = 256 * KIB

log = logging.getLogger("g4g5")


# --------------------------------------------------------------------------- parameters


@dataclass
class Params:
    """Knobs of one G4/G5 run."""

    bulk_bytes: int = 512 * MIB
    rate: str | None = "1gbit"
    """``tc tbf`` rate on both paths (both directions); None = unshaped."""
    tbf_latency: str = "20ms"
    drop_after: float = 1.0
    echo_interval: float = 0.010
    g5_bytes: int = 256 * KIB
    failover_limit: float = 5.0
    failover_target: float = 1.0
    recovery_wait: float = 15.0
    """How long to wait for echo answers after the drop before declaring a hang."""
    redial_limit: float = 15.0
    """How long after the undrop the automatic re-dial may take."""
    bulk_timeout: float = 120.0
    settle_after_recovery: float = 1.0
    """Keep the echo loop running at least this long after the recovery."""
    window_before: float = 1.0
    window_after: float = 1.0
    """Echo RTT statistics 'around the drop' cover requests sent from
    ``window_before`` s before the drop to ``window_after`` s after the recovery."""
    knobs: dict[str, Any] = field(default_factory=dict)
    """FlowConfig overrides for both ends."""


def quick_params(**over: Any) -> Params:
    """The CI configuration (``--quick``)."""
    p = Params(bulk_bytes=64 * MIB, rate="200mbit", bulk_timeout=60.0)
    return dataclasses.replace(p, **over)


# --------------------------------------------------------------------------- results


@dataclass
class EchoAnalysis:
    """Echo timing around the drop (all times in seconds)."""

    failover: float | None
    """Drop start -> first answer to a request sent after the drop completed."""
    first_any_after: float | None
    """Drop start -> first answer of any kind received after the drop completed."""
    stuck: int
    """Requests unanswered when the drop completed."""
    baseline_p50: float | None
    baseline_p99: float | None
    around_p50: float | None
    around_p99: float | None
    around_max: float | None
    around_n: int
    overall_max: float | None


@dataclass
class RunResult:
    """Everything measured in one G4+G5 run."""

    loop: str = ""
    errors: list[str] = field(default_factory=list)
    """Application-visible exceptions, hangs, broken invariants (each one fails)."""
    notes: list[str] = field(default_factory=list)
    # G4
    drop_index: int | None = None
    drop_addr: str = ""
    drop_cmd_s: float = 0.0
    bulk_pre_migrated: bool = False
    bulk_in_flight_at_drop: bool = False
    bulk_received_at_drop: int = 0
    bulk_unacked_at_drop: int = 0
    echo: EchoAnalysis | None = None
    echo_sent: int = 0
    echo_received: int = 0
    echo_ok: bool = False
    echo_failover_event_s: float | None = None
    bulk_failover_event_s: float | None = None
    bulk_max_gap_s: float | None = None
    bulk_bytes: int = 0
    bulk_received: int = 0
    bulk_seconds: float | None = None
    sha_expected: str = ""
    sha_server: str = ""
    sha_ok: bool = False
    echo_active_after: int | None = None
    echo_active_index_after: int | None = None
    path_down_causes: list[str] = field(default_factory=list)
    migration_causes: list[str] = field(default_factory=list)
    client_recv_dups_g4: int = 0
    # G5
    g5_ran: bool = False
    undrop_cmd_s: float = 0.0
    redial_s: float | None = None
    redial_path_id: int | None = None
    added_path_id: int | None = None
    added_remote: str = ""
    g5_active_client: int | None = None
    g5_active_server: int | None = None
    g5_echo_exact: bool = False
    g5_bytes: int = 0
    g5_path_sent: int = 0
    g5_path_received: int = 0
    g5_server_path_received: int = 0
    g5_dups_client: tuple[int, int] = (0, 0)
    g5_dups_server: tuple[int, int] = (0, 0)
    g5_hwm_client: tuple[int, int] = (0, 0)
    g5_hwm_server: tuple[int, int] = (0, 0)
    g5_load_inflight: int = 0
    g5_load_exact: bool = False
    g5_load_dups: tuple[int, int] = (0, 0)
    g5_load_hwm: tuple[int, int] = (0, 0)
    """Growth of recv_queue_hwm (client, server) in the migration under load (reported,
    not gated: data racing on two paths may legitimately be reordered)."""
    g5_checks: dict[str, bool] = field(default_factory=dict)
    diagnostics: list[str] = field(default_factory=list)
    failover_limit: float = 5.0
    failover_target: float = 1.0
    redial_limit: float = 15.0

    # ---- verdicts
    @property
    def failover(self) -> float | None:
        return self.echo.failover if self.echo is not None else None

    def g4_failures(self) -> list[str]:
        out: list[str] = []
        if self.errors:
            out.append(f"{len(self.errors)} error(s): " + " | ".join(self.errors))
        if self.drop_index is None:
            out.append("the drop never happened")
            return out
        if not self.bulk_in_flight_at_drop:
            out.append("bulk transfer was not in flight at the drop (test invalid; "
                       "lower --rate or raise --bulk-mib)")
        if self.failover is None:
            out.append("echo answers never resumed after the drop")
        elif self.failover > self.failover_limit:
            out.append(f"failover {self.failover:.3f}s > {self.failover_limit:g}s")
        if not self.echo_ok:
            out.append("echo answers incomplete, wrong or out of order")
        if not self.sha_ok:
            out.append("bulk SHA-256 mismatch or transfer incomplete")
        if self.echo_active_index_after == self.drop_index:
            out.append("echo connection still active on the dropped path")
        return out

    def g5_failures(self) -> list[str]:
        if not self.g5_ran:
            return ["G5 did not run (G4 broke the run)"]
        out = [name for name, ok in self.g5_checks.items() if not ok]
        return out

    @property
    def g4_pass(self) -> bool:
        return not self.g4_failures()

    @property
    def g5_pass(self) -> bool:
        return not self.g5_failures() and not self.errors


# --------------------------------------------------------------------------- helpers


def echo_message(seq: int) -> bytes:
    """The 64-byte echo request number ``seq`` (its content is checked on return)."""
    head = seq.to_bytes(8, "big")
    return head + hashlib.blake2b(head, digest_size=ECHO_SIZE - 8).digest()


def bulk_block() -> bytes:
    return os.urandom(BULK_BLOCK)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def analyze_echo(sent: list[float], recv: list[float | None], t0: float, t1: float,
                 window_before: float = 1.0, window_after: float = 1.0) -> EchoAnalysis:
    """Echo timing around a drop that started at ``t0`` and was complete at ``t1``.

    ``sent[i]``/``recv[i]`` are the send/answer times of request ``i`` (``recv[i]`` is
    None if it was never answered).  The failover time is measured from ``t0`` to the
    first answer to a request sent at or after ``t1``: that answer cannot predate the
    recovery.  RTT statistics 'around the drop' cover requests sent from
    ``t0 - window_before`` to ``window_after`` after the recovery.
    """
    fresh = [r for s, r in zip(sent, recv, strict=True) if s >= t1 and r is not None]
    recovered_at = min(fresh) if fresh else None
    after = [r for r in recv if r is not None and r > t1]
    first_any = min(after) if after else None
    stuck = sum(1 for s, r in zip(sent, recv, strict=True) if s < t1 and (r is None or r > t1))
    rtts = [(s, r - s) for s, r in zip(sent, recv, strict=True) if r is not None]
    base = [x for s, x in rtts if s < t0 - 0.05]
    hi = (recovered_at if recovered_at is not None else t1) + window_after
    around = [x for s, x in rtts if t0 - window_before <= s <= hi]
    return EchoAnalysis(
        failover=None if recovered_at is None else recovered_at - t0,
        first_any_after=None if first_any is None else first_any - t0,
        stuck=stuck,
        baseline_p50=percentile(base, 50),
        baseline_p99=percentile(base, 99),
        around_p50=percentile(around, 50),
        around_p99=percentile(around, 99),
        around_max=max(around) if around else None,
        around_n=len(around),
        overall_max=max((x for _, x in rtts), default=None),
    )


def host_of(addr: str) -> str:
    """``"10.231.0.2:4242"`` -> ``"10.231.0.2"`` (``[v6]:port`` too)."""
    host, _, _ = addr.rpartition(":")
    return host.strip("[]")


def path_index(topo: NetnsTopology, conn: rendr.Conn, path_id: int) -> int | None:
    """Topology path index carrying rendr path ``path_id`` of ``conn`` (by remote address
    on the client, local address on the server)."""
    for ps in conn.stats().paths:
        if ps.id != path_id:
            continue
        for addr in (ps.remote_addr, ps.local_addr):
            host = host_of(addr)
            for link in topo.paths:
                if link.server_addr == host:
                    return link.index
    return None


def up_paths(conn: rendr.Conn) -> list[rendr.PathStats]:
    return [p for p in conn.stats().paths if p.state == "up"]


def describe(conn: rendr.Conn | None, name: str) -> str:
    """A one-block dump of a connection's stats (for hang/failure diagnosis)."""
    if conn is None:
        return f"{name}: (no connection)"
    st = conn.stats()
    lines = [f"{name}: state={st.state} active={st.active_path} migrations="
             f"{st.migration_count} written={st.bytes_written} read={st.bytes_read} "
             f"unacked={st.unacked_bytes} dups={st.recv_dups} hwm={st.recv_queue_hwm}"]
    for p in st.paths:
        srtt = "-" if p.srtt is None else f"{p.srtt * 1e3:.1f}ms"
        lines.append(f"    path {p.id}: {p.state:8s} {p.local_addr} -> {p.remote_addr} "
                     f"srtt={srtt} sent={p.bytes_sent} recv={p.bytes_received} "
                     f"retx={p.retransmits} last_recv_age={p.last_recv_age:.3f}s "
                     f"down_cause={p.down_cause}")
    return "\n".join(lines)


async def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.005) -> bool:
    """Poll ``pred`` until true (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step)
    return True


# --------------------------------------------------------------------------- the run


class _Run:
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
        # echo
        self.echo_sent: list[float] = []
        self.echo_recv: list[float | None] = []
        self.echo_stop = asyncio.Event()
        self.echo_sender_done = asyncio.Event()
        self.echo_all_in = asyncio.Event()
        self.echo_bad: str | None = None
        # bulk
        self.bulk_written = 0
        self.bulk_received = 0
        self.bulk_t_start: float | None = None
        self.bulk_t_done: float | None = None
        self.bulk_server_digest = b""
        self.bulk_client_result: bytes = b""
        self.progress: list[tuple[float, int]] = []
        self.t_drop: float | None = None
        self.shutting_down = False
        # events: (monotonic time, conn name, event)
        self.events: list[tuple[float, str, rendr.Event]] = []

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
            while data := await conn.read(65536):
                await conn.write(data)
            await conn.close()
        elif tag == "B":
            h = hashlib.sha256()
            while data := await conn.read(1 << 20):
                h.update(data)
                self.bulk_received += len(data)
            self.bulk_server_digest = h.digest()
            await conn.write(self.bulk_server_digest + self.bulk_received.to_bytes(8, "big"))
            await conn.close()
        else:
            raise ValueError(f"unknown connection tag {tag!r}")

    # ---- client side: echo
    async def echo_sender(self, conn: rendr.Conn) -> None:
        interval = self.p.echo_interval
        next_at = time.monotonic()
        try:
            while not self.echo_stop.is_set():
                seq = len(self.echo_sent)
                msg = echo_message(seq)
                self.echo_sent.append(time.monotonic())
                self.echo_recv.append(None)
                await conn.write(msg)
                next_at += interval
                delay = next_at - time.monotonic()
                if delay < -0.5:  # we fell far behind (loop stall): don't burst
                    next_at = time.monotonic()
                await asyncio.sleep(max(0.0, delay))
        finally:
            self.echo_sender_done.set()

    async def echo_reader(self, conn: rendr.Conn) -> None:
        expect = 0
        while True:
            data = await conn.readexactly(ECHO_SIZE)
            now = time.monotonic()
            seq = int.from_bytes(data[:8], "big")
            if seq != expect or data != echo_message(expect):
                self.echo_bad = (f"echo answer #{expect} wrong: got seq {seq}"
                                 f"{' (content mismatch)' if seq == expect else ''}")
                raise AssertionError(self.echo_bad)
            if expect >= len(self.echo_sent):
                self.echo_bad = f"echo answer #{expect} arrived before it was sent"
                raise AssertionError(self.echo_bad)
            self.echo_recv[expect] = now
            expect += 1
            if self.echo_sender_done.is_set() and expect == len(self.echo_sent):
                self.echo_all_in.set()

    def echo_last_fresh(self, t1: float) -> bool:
        """Whether an answer to a request sent at/after ``t1`` came in."""
        for s, r in zip(reversed(self.echo_sent), reversed(self.echo_recv), strict=True):
            if s < t1:
                return False
            if r is not None:
                return True
        return False

    # ---- client side: bulk
    async def bulk_client(self, conn: rendr.Conn, block: bytes) -> None:
        size = self.p.bulk_bytes
        mv = memoryview(block)
        self.bulk_t_start = time.monotonic()
        while self.bulk_written < size:
            off = self.bulk_written % len(block)
            n = min(BULK_CHUNK, size - self.bulk_written, len(block) - off)
            await conn.write(mv[off : off + n])
            self.bulk_written += n
        await conn.write_eof()
        self.bulk_client_result = await conn.readexactly(40)
        self.bulk_t_done = time.monotonic()
        rest = await conn.read(-1)
        if rest:
            raise AssertionError(f"bulk: {len(rest)} unexpected bytes after the digest")
        await conn.close()

    async def sampler(self) -> None:
        while True:
            self.progress.append((time.monotonic(), self.bulk_received))
            await asyncio.sleep(0.02)

    # ---- the scenario
    async def run(self) -> RunResult:
        p, r, topo = self.p, self.r, self.topo
        r.loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        block = bulk_block()
        expect_digest = repeated_digest(block, p.bulk_bytes)
        r.sha_expected = expect_digest.hex()
        r.bulk_bytes = p.bulk_bytes
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
            await self.align(bulk, idx)
            await self.g4(echo, bulk, block, expect_digest, ports)
            if not r.errors and r.drop_index is not None:
                await self.g5(echo, ports)
        except Exception as exc:
            self.error(f"scenario: {type(exc).__name__}: {exc}")
            r.diagnostics.append(traceback.format_exc())
            r.diagnostics.append(describe(echo, "client echo"))
            r.diagnostics.append(describe(bulk, "client bulk"))
            for tag, conn in self.server_conns.items():
                r.diagnostics.append(describe(conn, f"server {tag}"))
        finally:
            await self.shutdown(ln, [echo, bulk])
        def rel(t: float) -> str:
            if self.t_drop is None:
                return ""
            return f"@{(t - self.t_drop) * 1e3:+.0f}ms"

        r.path_down_causes = [f"{n}:{ev.path_id}:{ev.cause}{rel(t)}" for t, n, ev in self.events
                              if ev.kind is rendr.EventKind.PATH_DOWN]
        r.migration_causes = [f"{n}:{ev.old_path}->{ev.new_path}:{ev.cause}{rel(t)}"
                              for t, n, ev in self.events
                              if ev.kind is rendr.EventKind.MIGRATION]
        return r

    async def align(self, bulk: rendr.Conn, idx: int) -> None:
        """Put the bulk connection on topology path ``idx`` (where echo is active)."""
        if path_index(self.topo, bulk, bulk.active_path) == idx:
            return
        for ps in up_paths(bulk):
            if path_index(self.topo, bulk, ps.id) == idx:
                await bulk.migrate(ps.id)
                self.r.bulk_pre_migrated = True
                return
        raise RuntimeError(f"bulk connection has no path on topology path {idx}")

    async def g4(self, echo: rendr.Conn, bulk: rendr.Conn, block: bytes,
                 expect_digest: bytes, ports: dict[str, int]) -> None:
        p, r, topo = self.p, self.r, self.topo
        sampler = self.spawn("sampler", self.sampler())
        sender = self.spawn("echo-sender", self.echo_sender(echo))
        reader = self.spawn("echo-reader", self.echo_reader(echo))
        bulk_task = self.spawn("bulk-client", self.bulk_client(bulk, block))
        await asyncio.sleep(p.drop_after)
        if r.errors:
            return
        idx = path_index(topo, echo, echo.active_path)
        bidx = path_index(topo, bulk, bulk.active_path)
        if idx is None:
            raise RuntimeError("echo has no active path before the drop")
        if bidx != idx:
            r.notes.append(f"bulk active on topology path {bidx}, echo on {idx} at the drop")
        r.drop_index = idx
        r.drop_addr = topo.paths[idx].server_addr
        r.bulk_received_at_drop = self.bulk_received
        r.bulk_unacked_at_drop = bulk.stats().unacked_bytes
        r.bulk_in_flight_at_drop = self.bulk_received < p.bulk_bytes and bidx == idx
        t0 = self.t_drop = time.monotonic()
        await asyncio.to_thread(topo.drop, idx)
        t1 = time.monotonic()
        r.drop_cmd_s = t1 - t0
        log.info("dropped topology path %d (%s) in %.3fs", idx, r.drop_addr, t1 - t0)
        recovered = await wait_until(lambda: self.echo_last_fresh(t1) or bool(r.errors),
                                     p.recovery_wait)
        if not recovered:
            self.error(f"hang: no echo answer within {p.recovery_wait:g}s after the drop")
            for conn, name in ((echo, "client echo"), (self.server_conns.get("E"), "server E")):
                r.diagnostics.append(describe(conn, name))
        t_rec = time.monotonic()
        # let the bulk transfer finish (and the echo loop run on for a while); after a
        # hang, only briefly: the run is failed already
        done = await wait_until(lambda: bulk_task.done(),
                                p.bulk_timeout if recovered else 2.0, step=0.02)
        if not done:
            self.error(f"hang: bulk transfer not finished "
                       f"{time.monotonic() - t_rec:.1f}s after the recovery "
                       f"({self.bulk_received} of {p.bulk_bytes} bytes received)")
            for conn, name in ((bulk, "client bulk"), (self.server_conns.get("B"), "server B")):
                r.diagnostics.append(describe(conn, name))
        await asyncio.sleep(max(0.0, t_rec + p.settle_after_recovery - time.monotonic()))
        self.echo_stop.set()
        await sender
        if not reader.done():
            if len(self.echo_recv) and self.echo_recv[-1] is not None:
                self.echo_all_in.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.echo_all_in.wait(), 10 if recovered else 1)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        sampler.cancel()
        r.echo_sent = len(self.echo_sent)
        r.echo_received = sum(1 for x in self.echo_recv if x is not None)
        r.echo_ok = (self.echo_bad is None and r.echo_received == r.echo_sent
                     and r.echo_sent > 0)
        if self.echo_bad:
            r.notes.append(self.echo_bad)
        r.echo = analyze_echo(self.echo_sent, self.echo_recv, t0, t1, p.window_before,
                              p.window_after)
        # bulk
        r.bulk_received = self.bulk_received
        if self.bulk_t_start is not None and self.bulk_t_done is not None:
            r.bulk_seconds = self.bulk_t_done - self.bulk_t_start
        res = self.bulk_client_result
        r.sha_server = self.bulk_server_digest.hex()
        r.sha_ok = (len(res) == 40 and res[:32] == expect_digest
                    and self.bulk_server_digest == expect_digest
                    and int.from_bytes(res[32:], "big") == p.bulk_bytes
                    and self.bulk_received == p.bulk_bytes)
        gap, last_t, last_b = 0.0, None, -1
        for t, b in self.progress:
            if b < p.bulk_bytes and b == last_b and last_t is not None:
                gap = max(gap, t - last_t)
            elif b != last_b:
                last_t, last_b = t, b
        r.bulk_max_gap_s = gap
        # failover as seen by the engine (MIGRATION event after the drop)
        for name, attr in (("echo", "echo_failover_event_s"), ("bulk", "bulk_failover_event_s")):
            for t, n, ev in self.events:
                if n == name and t >= t0 and ev.kind is rendr.EventKind.MIGRATION:
                    setattr(r, attr, t - t0)
                    break
        r.echo_active_after = echo.active_path
        r.echo_active_index_after = path_index(topo, echo, echo.active_path)
        r.client_recv_dups_g4 = echo.recv_dups + bulk.recv_dups

    async def g5(self, echo: rendr.Conn, ports: dict[str, int]) -> None:
        p, r, topo = self.p, self.r, self.topo
        idx = r.drop_index
        assert idx is not None
        addr = topo.paths[idx].server_addr
        spec_addr = f"{addr}:{ports[addr]}"
        server = self.server_conns["E"]
        r.g5_ran = True
        checks = r.g5_checks
        before_ids = {ps.id for ps in echo.stats().paths}
        dups0 = (echo.recv_dups, server.recv_dups)
        hwm0 = (echo.recv_queue_hwm, server.recv_queue_hwm)
        t0 = time.monotonic()
        await asyncio.to_thread(topo.undrop, idx)
        r.undrop_cmd_s = time.monotonic() - t0

        def redialed() -> bool:
            for t, n, ev in self.events:
                if (n == "echo" and t >= t0 and ev.kind is rendr.EventKind.PATH_UP
                        and ev.path_id not in before_ids
                        and path_index(topo, echo, ev.path_id or 0) == idx):
                    r.redial_s = t - t0
                    r.redial_path_id = ev.path_id
                    return True
            return False

        await wait_until(redialed, p.redial_limit, step=0.01)
        checks[f"automatic re-dial of the recovered path within {p.redial_limit:g}s"] = (
            r.redial_s is not None)
        # explicit add_path over the recovered address + migrate + 256 KiB echo
        ids_before_add = {ps.id for ps in echo.stats().paths}
        pid = await asyncio.wait_for(echo.add_path(rendr.PathSpec("tcp", spec_addr)), 10)
        r.added_path_id = pid
        added = next((ps for ps in echo.stats().paths if ps.id == pid), None)
        r.added_remote = added.remote_addr if added is not None else ""
        checks["add_path returned a new, live path id to the recovered address"] = (
            pid not in ids_before_add and added is not None and added.state == "up"
            and host_of(added.remote_addr) == addr)
        await wait_until(lambda: any(ps.id == pid for ps in server.stats().paths), 5)
        c_before = next(ps for ps in echo.stats().paths if ps.id == pid)
        s_before = next((ps for ps in server.stats().paths if ps.id == pid), None)
        await echo.migrate(pid)
        r.g5_active_client = echo.active_path
        payload = os.urandom(p.g5_bytes)
        r.g5_bytes = len(payload)

        async def exchange() -> bytes:
            # reader and writer concurrently (the payload may exceed the windows)
            wtask = asyncio.ensure_future(echo.write(payload))
            try:
                got = await echo.readexactly(len(payload))
            finally:
                await wtask
            return got

        got = await asyncio.wait_for(exchange(), 20)
        r.g5_echo_exact = got == payload
        r.g5_active_server = server.active_path
        c_after = next(ps for ps in echo.stats().paths if ps.id == pid)
        s_after = next((ps for ps in server.stats().paths if ps.id == pid), None)
        r.g5_path_sent = c_after.bytes_sent - c_before.bytes_sent
        r.g5_path_received = c_after.bytes_received - c_before.bytes_received
        if s_before is not None and s_after is not None:
            r.g5_server_path_received = s_after.bytes_received - s_before.bytes_received
        r.g5_dups_client = (dups0[0], echo.recv_dups)
        r.g5_dups_server = (dups0[1], server.recv_dups)
        r.g5_hwm_client = (hwm0[0], echo.recv_queue_hwm)
        r.g5_hwm_server = (hwm0[1], server.recv_queue_hwm)
        checks["migrate: client and server active on the added path"] = (
            r.g5_active_client == pid and r.g5_active_server == pid)
        checks[f"{p.g5_bytes // KIB} KiB echoed byte-exact"] = r.g5_echo_exact
        checks["bytes flowed on the added path (both ways, stats)"] = (
            r.g5_path_sent >= p.g5_bytes and r.g5_path_received >= p.g5_bytes
            and r.g5_server_path_received >= p.g5_bytes)
        checks["recv_dups unchanged in G5 (both ends)"] = (
            r.g5_dups_client[0] == r.g5_dups_client[1]
            and r.g5_dups_server[0] == r.g5_dups_server[1])
        checks["recv_queue_hwm did not grow in G5 (both ends)"] = (
            r.g5_hwm_client[0] == r.g5_hwm_client[1]
            and r.g5_hwm_server[0] == r.g5_hwm_server[1])
        # migration under load: back to the automatically re-dialed path while the
        # payload is in flight on the added one -- nothing may be sent twice
        target = r.redial_path_id
        if target is not None and any(ps.id == target for ps in up_paths(echo)):
            payload = os.urandom(p.g5_bytes)
            dups0 = (echo.recv_dups, server.recv_dups)
            hwm0 = (echo.recv_queue_hwm, server.recv_queue_hwm)
            rtask = asyncio.ensure_future(echo.readexactly(len(payload)))
            try:
                await echo.write(payload)
                r.g5_load_inflight = echo.stats().unacked_bytes
                await echo.migrate(target)
                got = await asyncio.wait_for(asyncio.shield(rtask), 20)
            finally:
                rtask.cancel()
            r.g5_load_exact = got == payload
            r.g5_load_dups = (echo.recv_dups - dups0[0], server.recv_dups - dups0[1])
            r.g5_load_hwm = (echo.recv_queue_hwm - hwm0[0], server.recv_queue_hwm - hwm0[1])
            checks[f"migration under load ({r.g5_load_inflight // KIB} KiB unacknowledged): "
                   "byte-exact, recv_dups unchanged"] = (
                r.g5_load_exact and r.g5_load_dups == (0, 0) and echo.active_path == target)
        else:
            checks["migration under load: re-dialed path available"] = False
        if not all(checks.values()):
            r.diagnostics.append(describe(echo, "client echo (G5)"))
            r.diagnostics.append(describe(server, "server E (G5)"))

    async def shutdown(self, ln: rendr.Listener, conns: list[rendr.Conn | None]) -> None:
        self.echo_stop.set()
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
    return await _Run(topo, p).run()


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


# --------------------------------------------------------------------------- report


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 1e3:.1f} ms"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report_run(n: int, r: RunResult, out: Callable[[str], None] = print) -> None:
    e = r.echo
    out(f"--- run {n} (loop={r.loop})")
    out(f"  G4 dropped topology path {r.drop_index} (server {r.drop_addr}); drop command "
        f"{_ms(r.drop_cmd_s)}; bulk {'re-aligned to it before the traffic' if r.bulk_pre_migrated else 'already on it'}")  # noqa: E501
    out(f"     bulk in flight at drop: {r.bulk_in_flight_at_drop} "
        f"({r.bulk_received_at_drop / MIB:.1f} of {r.bulk_bytes / MIB:.0f} MiB received, "
        f"{r.bulk_unacked_at_drop / KIB:.0f} KiB unacknowledged)")
    if e is not None:
        tgt = "met" if e.failover is not None and e.failover <= r.failover_target else "MISSED"
        out(f"     failover (drop -> first answer to a post-drop request): {_ms(e.failover)} "
            f"[limit {r.failover_limit:g} s, target {r.failover_target:g} s {tgt}]")
        out(f"     first answer of any kind after the drop: {_ms(e.first_any_after)}; "
            f"requests stuck in flight: {e.stuck}")
        out(f"     engine MIGRATION after drop: echo {_ms(r.echo_failover_event_s)}, "
            f"bulk {_ms(r.bulk_failover_event_s)}; longest bulk stall {_ms(r.bulk_max_gap_s)}")
        out(f"     echo RTT baseline p50 {_ms(e.baseline_p50)} p99 {_ms(e.baseline_p99)}; "
            f"around the drop (n={e.around_n}) p50 {_ms(e.around_p50)} "
            f"p99 {_ms(e.around_p99)} max {_ms(e.around_max)}")
    out(f"     echo: {r.echo_received}/{r.echo_sent} answers, content+order "
        f"{'OK' if r.echo_ok else 'BAD'}; active after: path {r.echo_active_after} "
        f"(topology path {r.echo_active_index_after})")
    rate = (f"{r.bulk_bytes / r.bulk_seconds / 1e6:.1f} MB/s over {r.bulk_seconds:.2f} s"
            if r.bulk_seconds else "n/a")
    out(f"     bulk: {r.bulk_received / MIB:.1f}/{r.bulk_bytes / MIB:.0f} MiB, {rate}; SHA-256 "
        f"{'identical' if r.sha_ok else 'MISMATCH'} ({r.sha_expected[:16]}... vs "
        f"{r.sha_server[:16] or '-'}...)")
    out(f"     PATH_DOWN: {', '.join(r.path_down_causes) or '-'}")
    out(f"     MIGRATION: {', '.join(r.migration_causes) or '-'}")
    out(f"  G4 {_verdict(r.g4_pass)}" + ("" if r.g4_pass else ": " + "; ".join(r.g4_failures())))
    if r.g5_ran:
        out(f"  G5 undrop command {_ms(r.undrop_cmd_s)}; automatic re-dial: "
            f"{'path ' + str(r.redial_path_id) + ' up ' + _ms(r.redial_s) + ' after the undrop' if r.redial_s is not None else 'NOT SEEN'}")  # noqa: E501
        out(f"     add_path -> path {r.added_path_id} ({r.added_remote}); migrate -> active "
            f"client {r.g5_active_client} / server {r.g5_active_server}")
        out(f"     {r.g5_bytes // KIB} KiB echo {'byte-exact' if r.g5_echo_exact else 'WRONG'};"
            f" on the added path: client sent {r.g5_path_sent}, client received "
            f"{r.g5_path_received}, server received {r.g5_server_path_received} bytes")
        out(f"     recv_dups client {r.g5_dups_client[0]}->{r.g5_dups_client[1]}, server "
            f"{r.g5_dups_server[0]}->{r.g5_dups_server[1]}; recv_queue_hwm client "
            f"{r.g5_hwm_client[0]}->{r.g5_hwm_client[1]}, server "
            f"{r.g5_hwm_server[0]}->{r.g5_hwm_server[1]}")
        out(f"     under load: migrate to path {r.redial_path_id} with "
            f"{r.g5_load_inflight // KIB} KiB unacknowledged: echo "
            f"{'byte-exact' if r.g5_load_exact else 'WRONG'}, recv_dups +{r.g5_load_dups[0]} "
            f"client / +{r.g5_load_dups[1]} server, recv_queue_hwm +{r.g5_load_hwm[0]} client /"
            f" +{r.g5_load_hwm[1]} server (reorder: informational)")
        for name, ok in r.g5_checks.items():
            out(f"     [{'ok' if ok else 'FAIL'}] {name}")
    out(f"  G5 {_verdict(r.g5_pass)}" + ("" if r.g5_pass else ": " + "; ".join(r.g5_failures())))
    for note in r.notes:
        out(f"  note: {note}")
    if not (r.g4_pass and r.g5_pass):
        for d in r.diagnostics:
            out("  diag: " + d.replace("\n", "\n        "))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="short CI version (64 MiB bulk at 200 mbit)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run G4 (+G5) N times on fresh topologies; median failover")
    parser.add_argument("--bulk-mib", type=int, default=None,
                        help="bulk transfer size (default 512, quick 64)")
    parser.add_argument("--rate", default=None,
                        help="tc tbf rate of both paths (default 1gbit, quick 200mbit; "
                             "'none' = unshaped)")
    parser.add_argument("--drop-after", type=float, default=1.0,
                        help="seconds of traffic before the drop")
    parser.add_argument("--failover-limit", type=float, default=5.0)
    parser.add_argument("--failover-target", type=float, default=1.0)
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--debug", action="store_true", help="DEBUG logging of rendr")
    parser.add_argument("--log-file", default=None, help="write logs here (default stderr)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")

    level = logging.DEBUG if args.debug else logging.WARNING
    logging.basicConfig(level=level, filename=args.log_file,
                        format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    if args.debug:
        logging.getLogger("g4g5").setLevel(logging.DEBUG)

    reason = unavailable_reason()
    if reason is not None:
        print(f"G4/G5 SKIPPED: {reason}")
        return EXIT_SKIP
    use_uvloop = not args.no_uvloop
    if use_uvloop:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            print("note: uvloop not installed, using the asyncio loop")
            use_uvloop = False

    p = quick_params() if args.quick else Params()
    if args.bulk_mib is not None:
        p.bulk_bytes = args.bulk_mib * MIB
    if args.rate is not None:
        p.rate = None if args.rate.lower() == "none" else args.rate
    p.drop_after = args.drop_after
    p.failover_limit = args.failover_limit
    p.failover_target = args.failover_target

    print(f"G4/G5 netns gate: {'quick' if args.quick else 'full'}, bulk "
          f"{p.bulk_bytes / MIB:.0f} MiB, paths shaped to {p.rate or 'unshaped'}, drop after "
          f"{p.drop_after:g} s, echo every {p.echo_interval * 1e3:.0f} ms, "
          f"loop={'uvloop' if use_uvloop else 'asyncio'}, {args.repeat} run(s)", flush=True)
    results: list[RunResult] = []
    for i in range(args.repeat):
        try:
            r = run_in_netns(p, use_uvloop)
        except Exception as exc:  # topology or loop trouble outside the scenario
            r = RunResult(failover_limit=p.failover_limit, failover_target=p.failover_target)
            r.errors.append(f"run crashed: {type(exc).__name__}: {exc}")
            r.diagnostics.append(traceback.format_exc())
        results.append(r)
        report_run(i + 1, r)
        sys.stdout.flush()

    fos = [r.failover for r in results if r.failover is not None]
    g4_ok = all(r.g4_pass for r in results)
    g5_ok = all(r.g5_pass for r in results)
    med = statistics.median(fos) if fos else None
    print("=== summary")
    if fos:
        print(f"  failover over {len(fos)} run(s): median {_ms(med)}, min {_ms(min(fos))}, "
              f"max {_ms(max(fos))} (limit {p.failover_limit:g} s; target "
              f"{p.failover_target:g} s: "
              f"{'met' if med is not None and med <= p.failover_target else 'MISSED'} "
              f"by the median, {sum(f <= p.failover_target for f in fos)}/{len(fos)} runs)")
    rd = [r.redial_s for r in results if r.redial_s is not None]
    if rd:
        print(f"  automatic re-dial after undrop: median {_ms(statistics.median(rd))}, "
              f"max {_ms(max(rd))}")
    rates = [r.bulk_bytes / r.bulk_seconds / 1e6 for r in results if r.bulk_seconds]
    if rates:
        print(f"  bulk: median {statistics.median(rates):.1f} MB/s (with the outage), SHA-256 "
              f"identical in {sum(r.sha_ok for r in results)}/{len(results)} run(s)")
    print(f"G4 {_verdict(g4_ok)}")
    print(f"G5 {_verdict(g5_ok)}")
    return 0 if g4_ok and g5_ok else 1


if __name__ == "__main__":
    sys.exit(main())
