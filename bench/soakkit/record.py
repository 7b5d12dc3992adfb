"""What one soak run measured, the figures derived from it, and the verdict."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .params import FAULT_KINDS, OP_KINDS, Params

Msg = dict[str, Any]


@dataclass
class Sample:
    t: float
    """Seconds since the start."""
    rss: int
    hwm: int
    threads: int
    clients_rss: list[int]
    accept_queue: int | None = None
    """Connections the kernel completed that the listener had not accepted yet."""
    clients: list[Msg] = field(default_factory=list)
    """Each client's latest progress figures (CPU, loop lag, fds, tasks, flows)."""
    listener: Msg | None = None
    """The listener's own figures at that moment (fds, tasks, objects, open flows...)."""


@dataclass
class Result:
    params: Msg
    rundir: str
    namespaces: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    warm_sample: int | None = None
    listener_start: Msg = field(default_factory=dict)
    listener_warm: Msg | None = None
    listener_end: Msg = field(default_factory=dict)
    listener_rss_end: int = 0
    trace_growth: list[str] | None = None
    """--tracemalloc: the listener's allocation sites that grew most from warm-up to the end."""
    census_growth: dict[str, int] = field(default_factory=dict)
    """Objects the listener holds after every flow closed, beyond its start, by type."""
    listener_hwm: int = 0
    clients_start: list[Msg] = field(default_factory=list)
    clients_end: list[Msg] = field(default_factory=list)
    client_finished: list[Msg] = field(default_factory=list)
    client_flows: dict[str, Msg] = field(default_factory=dict)
    server_flows: dict[str, Msg] = field(default_factory=dict)
    errors: list[Msg] = field(default_factory=list)
    anomalies: list[Msg] = field(default_factory=list)
    """Library misbehaviour that is reported but does not fail the run (a lost
    cancellation: see bench/soak.py)."""
    faults: dict[str, int] = field(default_factory=dict)
    """Parent-side faults (netns_drop); the clients' relay faults are in their progress."""
    planned_drops: list[list[float]] = field(default_factory=list)
    drops: list[list[Any]] = field(default_factory=list)
    stopped_at: float | None = None
    finished_at: float | None = None
    stopping_done: bool = False
    diagnostics: list[str] = field(default_factory=list)
    header: str = ""


def error_kind(e: Msg) -> str:
    """A short signature of an error: who saw it and what, without addresses."""
    text = str(e.get("error", ""))
    side = "parent" if e.get("child") == "parent" else (
        "listener" if e.get("child") == "listener" else "dialer")
    head = text.split(":", 1)[0]
    if "could not establish the flow" in text:
        head = "dial() failed: HandshakeError"
    elif "no flow header" in text:
        head = "no flow header (a dial its client gave up)"
    elif "add_path through" in text:
        head = "add_path() failed with no fault on its relay"
    elif head.startswith(("ZombieFlow", "ConnAborted", "MigrationBudgetExceeded")):
        head = text[:80]
    elif "no byte from" in text:
        head = "stalled (no byte for the stall limit)"
    return f"{side}: {head}"


def group_errors(errors: list[Msg]) -> dict[str, list[int]]:
    """Errors by signature: [first errors of their flow, later ones (consequences)]."""
    seen: set[str] = set()
    out: dict[str, list[int]] = {}
    def order(e: Msg) -> float:  # a ConnAborted is the peer's echo of an error: after it
        return float(e.get("at") or 0) + (0.5 if "ConnAborted" in str(e.get("error")) else 0)

    for e in sorted(errors, key=order):
        key = str(e.get("key") or "")
        first = not key or key == "?" or key not in seen
        seen.add(key)
        slot = out.setdefault(error_kind(e), [0, 0])
        slot[0 if first else 1] += 1
    return dict(sorted(out.items(), key=lambda kv: -sum(kv[1])))


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares ``y = a + b x``: (a, b, r^2)."""
    n = len(xs)
    if n < 2:
        return (ys[0] if ys else 0.0), 0.0, 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    syy = sum((y - my) ** 2 for y in ys)
    b = sxy / sxx if sxx else 0.0
    r2 = (sxy * sxy / (sxx * syy)) if sxx and syy else 0.0
    return my - b * mx, b, r2


def _sum_dicts(ds: list[Msg]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in ds:
        for k, v in d.items():
            out[k] = out.get(k, 0) + int(v)
    return out


@dataclass
class Summary:
    flows_client: int = 0
    flows_server: int = 0
    flows_matched: int = 0
    long_lived: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    client_events: dict[str, int] = field(default_factory=dict)
    server_events: dict[str, int] = field(default_factory=dict)
    migrations: int = 0
    recv_dups_client: int = 0
    recv_dups_server: int = 0
    started: int = 0
    rss_fit_span_min: float = 0.0
    rss_fit_samples: int = 0
    rss_growth_mib_h: float | None = None
    rss_fit_r2: float = 0.0
    rss_warm: int = 0
    rss_stop: int = 0
    accept_queue_max: int = 0
    lag_listener_max: float = 0.0
    lag_listener_over_250ms: int = 0
    cpu_listener_s: float = 0.0
    leaks: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    passed: bool = False


def summarize(r: Result, p: Params) -> Summary:
    s = Summary()
    s.flows_client = len(r.client_flows)
    s.flows_server = len(r.server_flows)
    s.long_lived = sum(1 for m in r.client_flows.values() if m.get("long"))
    mismatches: list[str] = []
    for key, c in r.client_flows.items():
        srv = r.server_flows.get(key)
        if srv is None:
            mismatches.append(f"flow {key}: the client finished it, the server has no record")
            continue
        bad = [f"{d} {c[d]} B sha {c[d + '_sha'][:12]} (client) vs {srv[d]} B sha "
               f"{srv[d + '_sha'][:12]} (server)" for d in ("up", "down")
               if c[d] != srv[d] or c[d + "_sha"] != srv[d + "_sha"]]
        if bad:
            mismatches.append(f"flow {key}: " + "; ".join(bad))
            continue
        s.flows_matched += 1
        s.bytes_up += int(c["up"])
        s.bytes_down += int(c["down"])
        s.migrations += int(c.get("migrations", 0))
        s.recv_dups_client += int(c.get("recv_dups", 0))
        s.recv_dups_server += int(srv.get("recv_dups", 0))
    mismatches += [f"flow {k}: the server finished it, the client has no record"
                   for k in r.server_flows if k not in r.client_flows]
    progress = [f.get("progress", {}) for f in r.client_finished]
    s.faults = _sum_dicts([x.get("faults", {}) for x in progress] + [r.faults])
    s.ops = _sum_dicts([x.get("ops", {}) for x in progress])
    s.started = sum(int(x.get("started", 0)) for x in progress)
    s.client_events = _sum_dicts([f.get("events", {}) for f in r.client_finished])
    s.server_events = _sum_dicts([r.listener_end.get("events", {})])
    # RSS after warm-up, up to the stop (the end phase is not steady state)
    stop = r.stopped_at if r.stopped_at is not None else float("inf")
    warm_t = p.warmup_s
    pts = [(x.t, float(x.rss)) for x in r.samples if warm_t <= x.t <= stop and x.rss]
    if len(pts) >= 3:
        _, slope, r2 = linear_fit([t for t, _ in pts], [y for _, y in pts])
        s.rss_growth_mib_h = slope * 3600 / 2**20
        s.rss_fit_r2 = r2
        s.rss_fit_samples = len(pts)
        s.rss_fit_span_min = (pts[-1][0] - pts[0][0]) / 60
        s.rss_warm = int(pts[0][1])
        s.rss_stop = int(pts[-1][1])
    lst = [x.listener for x in r.samples if x.listener]
    s.accept_queue_max = max([x.accept_queue or 0 for x in r.samples] + [0])
    s.lag_listener_max = max([float(x.get("lag_max_window", 0)) for x in lst] + [0.0])
    s.lag_listener_over_250ms = int(r.listener_end.get("lag_over_250ms", 0))
    s.cpu_listener_s = float(r.listener_end.get("cpu_s", 0))

    reasons = s.reasons
    errors = len(r.errors) + len(mismatches)
    if errors:
        reasons.append(f"{errors} error(s) (must be 0): {len(r.errors)} reported by the "
                       f"processes, {len(mismatches)} found comparing the two ends")
        for m in mismatches[:20]:
            r.errors.append({"child": "parent", "error": m})
    if s.flows_matched == 0:
        reasons.append("no flow completed")
    unfinished = s.started - s.flows_client
    if unfinished > 0:
        reasons.append(f"{unfinished} flow(s) started but never completed")
    # every kind must have happened, where the run was long enough to expect it 5 times
    expect = expected(p)
    for kind in (*FAULT_KINDS, *OP_KINDS, *(("netns_drop",) if p.netns else ())):
        got = s.faults.get(kind, 0) + s.ops.get(kind, 0)
        if not got and expect[kind] >= 5:
            reasons.append(f"no {kind} {'call' if kind in OP_KINDS else 'fault'} "
                           f"(about {expect[kind]:.0f} expected)")
    s.leaks = leaks(r)
    for what, figures in s.leaks.items():
        for name, (start, end) in figures.items():
            if end is None or (start is not None and end > start):
                reasons.append(f"{what}: {name} {start} at the start, {end} at the end")
    if (s.rss_growth_mib_h is not None and s.rss_fit_span_min >= p.rss_gate_minutes
            and s.rss_growth_mib_h > p.max_rss_growth):
        reasons.append(f"listener RSS grew {s.rss_growth_mib_h:.1f} MiB/h after warm-up "
                       f"(limit {p.max_rss_growth:g})")
    s.passed = not reasons
    return s


def expected(p: Params) -> dict[str, float]:
    """About how many faults and calls of each kind a run should see."""
    def mean(rng: tuple[float, float]) -> float:
        return max((rng[0] + rng[1]) / 2, 1e-3)

    per_flow = p.duration - p.ramp / 2
    faults = p.flows * per_flow / mean(p.fault_gap)
    ops = p.flows * per_flow / mean(p.op_gap)
    weights = sum(p.fault_weights) or 1.0
    out = {k: faults * w / weights for k, w in zip(FAULT_KINDS, p.fault_weights, strict=True)}
    out.update({k: ops / len(OP_KINDS) / 3 for k in OP_KINDS})  # most are skipped or fail
    out["netns_drop"] = p.duration / mean(p.drop_gap)
    return out


def leaks(r: Result) -> dict[str, Any]:
    """(start, end) of what must return to its start value once every flow closed."""
    out: dict[str, Any] = {}
    a, b = r.listener_start, r.listener_end
    out["listener"] = {
        "fds": (a.get("fds"), b.get("fds")),
        "tasks": (a.get("tasks"), b.get("tasks")),
        "open flows": (0, b.get("open_flows")),
        "receive memory promised": (0, b.get("memory_promised")),
    }
    for i, (a, b) in enumerate(zip(r.clients_start, r.clients_end, strict=False)):
        out[f"client{i}"] = {"fds": (a.get("fds"), b.get("fds")),
                             "tasks": (a.get("tasks"), b.get("tasks"))}
    return out


def to_json(r: Result, s: Summary) -> Msg:
    d = dataclasses.asdict(r)
    d["summary"] = dataclasses.asdict(s)
    return d
