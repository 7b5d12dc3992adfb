"""The parent: topology, children, samples, nftables DROPs, the stop, the leak check.

It never runs an event loop: it polls the children's stdout with a selector, reads
their RSS from ``/proc/<pid>/status`` every ``sample`` seconds and asks the
listener for its fds, tasks and objects at the same moments.
"""

from __future__ import annotations

import selectors
import time
import traceback
from collections.abc import Callable
from typing import Any

from rendr.testing.netns import NetnsTopology

from .faults import Drop, plan_drops
from .params import Params
from .proto import Child, Msg, accept_queue, proc_status
from .record import Result, Sample

PRINT_EVERY = 30.0


class Soak:
    def __init__(self, p: Params, rundir: str, out: Callable[[str], None]) -> None:
        self.p = p
        self.rundir = rundir
        self.out = out
        self.r = Result(params=p.to_json(), rundir=rundir)
        self.topo: NetnsTopology | None = None
        self.listener: Child | None = None
        self.clients: list[Child] = []
        self.sel = selectors.DefaultSelector()
        self.t_base = time.monotonic()
        self.t_start = 0.0
        self.pending_samples: dict[int, Sample] = {}
        self.port = 0
        self.errlog = open(f"{rundir}/errors.log", "w", encoding="utf-8")  # noqa: SIM115

    # ------------------------------------------------------------------ messages

    def children(self) -> list[Child]:
        return ([self.listener] if self.listener else []) + self.clients

    def pump(self, timeout: float) -> None:
        for key, _ in self.sel.select(max(timeout, 0.0)):
            child: Child = key.data
            for msg in child.read_lines():
                self.handle(child, msg)
            if child.eof:
                self.sel.unregister(child.fd)
                if not self.r.stopping_done:
                    self.fail(f"{child.name} exited early (rc {child.proc.wait()}); "
                              f"log: {child.log_path}")

    def wait(self, what: str, pred: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"waiting for {what}: nothing within {timeout:g} s")
            if all(c.eof for c in self.children()):
                raise RuntimeError(f"waiting for {what}: every child exited")
            self.pump(min(left, 0.5))

    def handle(self, child: Child, msg: Msg) -> None:
        t = msg.get("t")
        if t == "ready":
            child.ready = msg
        elif t == "stats":
            child.stats = msg
            tag = msg.get("tag")
            if child is self.listener and isinstance(tag, int) and tag in self.pending_samples:
                self.pending_samples.pop(tag).listener = msg["stats"]
        elif t == "trace":
            self.r.trace_growth = msg["lines"]
        elif t == "census":
            child.census = msg["census"]
        elif t == "progress":
            child.progress = msg["progress"]
        elif t == "finished":
            child.finished = msg
            child.progress = msg["progress"]
        elif t == "flow":
            table = self.r.client_flows if msg["side"] == "client" else self.r.server_flows
            if msg["key"] in table:
                self.fail(f"{msg['side']} reported flow {msg['key']} twice")
            table[msg["key"]] = msg
        elif t == "anomaly":
            msg["child"] = child.name
            msg["at"] = round(time.monotonic() - self.t_start, 3)
            self.r.anomalies.append(msg)
            self.errlog.write(f"ANOMALY {msg}\n")
            self.out(f"  anomaly at {msg['at']:.1f} s in {child.name} flow {msg.get('key')}: "
                     f"{msg.get('text')}")
        elif t == "error":
            msg["child"] = child.name
            msg["at"] = round(time.monotonic() - self.t_start, 3)
            self.r.errors.append(msg)
            self.errlog.write(f"{msg}\n")
            self.errlog.flush()
            self.out(f"  ERROR at {msg['at']:.1f} s in {child.name} flow {msg.get('key')}: "
                     f"{msg.get('error')}")

    def fail(self, text: str) -> None:
        self.r.errors.append({"child": "parent", "error": text,
                              "at": round(time.monotonic() - self.t_start, 3)})
        self.errlog.write(text + "\n")
        self.out(f"  ERROR: {text}")

    # ------------------------------------------------------------------ start

    def spawn(self, name: str, role: str, index: int, ns: str | None) -> Child:
        prefix = ["ip", "netns", "exec", ns] if ns else []
        child = Child(name, role, index, f"{self.rundir}/{name}.log", prefix,
                      ["--loop", "uvloop" if self.p.use_uvloop else "asyncio"])
        self.sel.register(child.fd, selectors.EVENT_READ, child)
        return child

    def configure(self, child: Child, **extra: Any) -> None:
        self.wait(f"{child.name} hello", lambda: child.pid is not None, 60)
        child.send(cmd="config", params=self.p.to_json(), t0=self.t_base, **extra)

    def start(self) -> None:
        p = self.p
        if p.netns:
            self.topo = NetnsTopology(paths=2)
            self.topo.open()
            self.r.namespaces = [self.topo.client_ns, self.topo.server_ns]
        topo = self.topo
        self.listener = ln = self.spawn("listener", "listener", 0,
                                        topo.server_ns if topo else None)
        self.configure(ln)
        self.wait("listener ready", lambda: ln.ready is not None, 60)
        assert ln.ready is not None
        port = self.port = int(ln.ready["port"])
        self.r.listener_start = ln.ready["stats"]
        upstreams = ([[link.server_addr, port] for link in topo.paths] if topo
                     else [["127.0.0.1", port], ["127.0.0.1", port]])
        for i in range(p.procs):
            c = self.spawn(f"client{i}", "client", i, topo.client_ns if topo else None)
            self.clients.append(c)
        for i, c in enumerate(self.clients):
            self.configure(c, fault_log=f"{self.rundir}/client{i}.faults.log")
        self.wait("clients ready", lambda: all(c.ready is not None for c in self.clients), 60)
        self.r.clients_start = [c.ready["stats"] for c in self.clients if c.ready]
        self.t_start = time.monotonic() + 0.5
        drops = plan_drops(p, self.t_start, self.t_start + p.duration) if topo else []
        self.r.planned_drops = [[d.path, round(d.start - self.t_start, 3),
                                 round(d.end - self.t_start, 3)] for d in drops]
        self.drops = drops
        for c in self.clients:
            c.send(cmd="start", upstreams=upstreams,
                   drops=[[d.path, d.start, d.end] for d in drops])

    # ------------------------------------------------------------------ the run

    def sample(self, now: float, index: int) -> None:
        ln = self.listener
        assert ln is not None and ln.pid is not None
        st = proc_status(ln.pid)
        s = Sample(t=round(now - self.t_start, 2), rss=st.get("VmRSS", 0),
                   accept_queue=accept_queue(ln.pid, self.port),
                   hwm=st.get("VmHWM", 0), threads=st.get("Threads", 0),
                   clients_rss=[proc_status(c.pid).get("VmRSS", 0) for c in self.clients
                                if c.pid is not None],
                   clients=[{k: (c.progress or {}).get(k) for k in
                             ("cpu_s", "lag_max_window", "lag_over_250ms", "fds", "tasks",
                              "active", "done", "errors")} for c in self.clients])
        self.r.samples.append(s)
        self.pending_samples[index] = s
        ln.send(cmd="stats", tag=index)

    def drive(self) -> None:
        p = self.p
        t_stop = self.t_start + p.duration
        events: list[tuple[float, str, Drop]] = sorted(
            [(d.start, "drop", d) for d in self.drops] + [(d.end, "undrop", d) for d in self.drops],
            key=lambda e: e[0])
        next_sample = self.t_start
        index = 0
        next_print = self.t_start + PRINT_EVERY
        warm_index: int | None = None
        stopped_at: float | None = None
        while True:
            now = time.monotonic()
            if now >= next_sample:
                self.sample(now, index)
                if warm_index is None and now - self.t_start >= p.warmup_s:
                    warm_index = index
                    self.r.warm_sample = index
                    if p.tracemalloc and self.listener is not None:
                        self.listener.send(cmd="trace_base")
                index += 1
                next_sample += p.sample
            while events and events[0][0] <= now:
                _, what, d = events.pop(0)
                self.netns_fault(what, d)
            if now >= next_print:
                self.print_progress(now)
                next_print += PRINT_EVERY
            if stopped_at is None and now >= t_stop:
                stopped_at = now
                self.r.stopped_at = round(now - self.t_start, 3)
                self.out(f"  {now - self.t_start:6.0f} s  stop: flows finish (EOF both ways, "
                         "close)")
                for c in self.clients:
                    c.send(cmd="stop")
            if stopped_at is not None:
                if all(c.finished is not None for c in self.clients):
                    self.r.finished_at = round(now - self.t_start, 3)
                    break
                if now - stopped_at > p.end_grace:
                    self.fail(f"flows still running {p.end_grace:g} s after the stop")
                    break
            if any(c.eof for c in self.children()):
                break
            wake = min(next_sample, t_stop if stopped_at is None else now + 0.5,
                       events[0][0] if events else now + 0.5, next_print)
            self.pump(min(max(wake - time.monotonic(), 0.0), 0.5))
        # the samples' listener figures still on their way
        self.wait("the last listener stats", lambda: not self.pending_samples, 30)
        if warm_index is not None:
            self.r.listener_warm = self.r.samples[warm_index].listener

    def netns_fault(self, what: str, d: Drop) -> None:
        topo = self.topo
        assert topo is not None
        t = time.monotonic() - self.t_start
        try:
            if what == "drop":
                topo.drop(d.path)
            else:
                topo.undrop(d.path)
        except Exception as exc:
            self.fail(f"nft {what} of path {d.path}: {exc}")
            return
        took = time.monotonic() - self.t_start - t
        self.r.drops.append([what, d.path, round(t, 3), round(took, 3)])
        if what == "drop":
            self.r.faults["netns_drop"] = self.r.faults.get("netns_drop", 0) + 1
            self.out(f"  {t:6.1f} s  nftables DROP of real path {d.path} for "
                     f"{d.end - d.start:.1f} s")

    def print_progress(self, now: float) -> None:
        prog = [c.progress or {} for c in self.clients]
        done = sum(int(x.get("done", 0)) for x in prog)
        active = sum(int(x.get("active", 0)) for x in prog)
        mb = sum(int(x.get("bytes_up", 0)) + int(x.get("bytes_down", 0)) for x in prog) / 1e6
        faults = sum(sum(int(v) for k, v in x.get("faults", {}).items() if "skipped" not in k)
                     for x in prog) + self.r.faults.get("netns_drop", 0)
        lag = max([float(x.get("lag_max_window", 0)) for x in prog] + [0.0])
        s = next((x for x in reversed(self.r.samples) if x.listener), None)
        lst = (s.listener or {}) if s else {}
        aq = s.accept_queue if s else None
        self.out(f"  {now - self.t_start:6.0f} s  flows done {done:5d} active {active:4d}  "
                 f"{mb:8.1f} MB checked  faults {faults:6d}  errors {len(self.r.errors)}  "
                 f"listener: RSS {(s.rss if s else 0) / 2**20:5.1f} MiB, fds {lst.get('fds')}, "
                 f"tasks {lst.get('tasks')}, accept queue {aq}; loop lag "
                 f"{lag * 1e3:.0f}/{float(lst.get('lag_max_window', 0)) * 1e3:.0f} ms "
                 f"(clients/listener)")

    # ------------------------------------------------------------------ the end

    def settle(self, child: Child, base: Msg, extra: Callable[[Msg], bool]) -> Msg:
        """Ask ``child`` for its figures until fds and tasks are back at ``base`` (and
        ``extra`` holds) or ``settle`` seconds passed; return the last figures."""
        deadline = time.monotonic() + self.p.settle
        last: Msg = {}
        while True:
            child.stats = None
            child.send(cmd="stats", tag="end", collect=True)
            self.wait(f"{child.name} stats", lambda: child.stats is not None, 30)
            assert child.stats is not None
            last = child.stats["stats"]
            if (last["fds"] <= base["fds"] and last["tasks"] <= base["tasks"]
                    and extra(last)) or time.monotonic() > deadline:
                return last
            self.pump(1.0)

    def finish(self) -> None:
        self.r.clients_end = [self.settle(c, c.ready["stats"] if c.ready else {},
                                          lambda s: True) for c in self.clients]
        ln = self.listener
        assert ln is not None and ln.ready is not None and ln.pid is not None
        self.r.listener_end = self.settle(
            ln, ln.ready["stats"],
            lambda s: s["open_flows"] == 0 and not s.get("memory_promised"))
        if self.p.tracemalloc:
            ln.send(cmd="trace_diff")
            self.wait("listener allocation trace", lambda: self.r.trace_growth is not None, 120)
        ln.census = None
        ln.send(cmd="census", tag="end")
        self.wait("listener census", lambda: ln.census is not None, 60)
        assert ln.census is not None and ln.ready is not None
        start = ln.ready.get("census", {})
        self.r.census_growth = dict(sorted(
            ((k, v - start.get(k, 0)) for k, v in ln.census.items() if v - start.get(k, 0)),
            key=lambda kv: -kv[1])[:25])
        st = proc_status(ln.pid)
        self.r.listener_rss_end = st.get("VmRSS", 0)
        self.r.listener_hwm = st.get("VmHWM", 0)
        for c in self.clients:
            self.r.client_finished.append(c.finished or {"progress": c.progress or {},
                                                          "unfinished": True})

    def close(self) -> None:
        self.r.stopping_done = True
        for c in self.children():
            rc = c.close()
            if rc not in (0, None):
                self.fail(f"{c.name} exited with rc {rc}; log: {c.log_path}")
        if self.topo is not None:
            try:
                self.topo.close()
            except Exception as exc:
                self.fail(f"netns cleanup: {exc}")
        self.errlog.close()

    def run(self) -> Result:
        try:
            self.start()
            self.drive()
            self.finish()
        except Exception as exc:
            self.fail(f"soak run: {type(exc).__name__}: {exc}")
            self.r.diagnostics.append(traceback.format_exc())
        finally:
            self.close()
        return self.r
