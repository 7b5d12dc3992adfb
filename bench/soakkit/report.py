"""The printed report of one soak run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .params import Params
from .record import Result, Summary, group_errors

Out = Callable[[str], None]


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def _kv(d: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"


def _series(r: Result, points: int = 16) -> str:
    xs = r.samples
    if not xs:
        return "no samples"
    step = max(1, len(xs) // points)
    chosen = xs[::step]
    if chosen[-1] is not xs[-1]:
        chosen.append(xs[-1])
    return "  ".join(f"{x.t:.0f}s:{_mib(x.rss)}" for x in chosen)


def _figs(d: dict[str, Any] | None) -> str:
    if not d:
        return "-"
    return (f"fds {d.get('fds')}, tasks {d.get('tasks')}, objects {d.get('objects', '-')}, "
            f"pymalloc blocks {d.get('blocks', '-')}, open flows {d.get('open_flows', '-')}")


def report(r: Result, s: Summary, p: Params, out: Out) -> None:
    out("== result")
    out(f"flows completed:  {s.flows_matched} verified at both ends (client records "
        f"{s.flows_client}, server records {s.flows_server}; {s.long_lived} long-lived "
        f"for the whole run); {s.started} started")
    out(f"bytes verified:   {s.bytes_up / 1e6:.1f} MB client->server, {s.bytes_down / 1e6:.1f} "
        f"MB server->client (every byte compared on reading; counts and SHA-256 equal at "
        f"both ends)")
    faults = {k: v for k, v in s.faults.items() if "skipped" not in k}
    skipped = {k: v for k, v in s.faults.items() if "skipped" in k}
    out(f"faults injected:  {_kv(faults)} (total {sum(faults.values())})"
        + (f"; not started (near a DROP of the other path): {_kv(skipped)}" if skipped else ""))
    out(f"admin calls:      {_kv(s.ops)}")
    out(f"rendr events:     client: {_kv(s.client_events)}")
    out(f"                  server: {_kv(s.server_events)}")
    out(f"recv_dups:        client {s.recv_dups_client}, server {s.recv_dups_server} "
        f"(re-sent pieces the receiver dropped; the application saw each byte once)")
    out(f"errors:           {len(r.errors)}")
    if r.errors:
        out("  by kind (first error of its flow / after another error of the same flow):")
        for kind, (first, later) in group_errors(r.errors).items():
            out(f"    {first:4d} / {later:4d}  {kind}")
    for e in r.errors[:10]:
        out(f"  - {e.get('child')} flow {e.get('key', '-')} at {e.get('at', '-')} s: "
            f"{e.get('error')}")
    if len(r.errors) > 10:
        out(f"  ... {len(r.errors) - 10} more in {r.rundir}/errors.log")
    if r.anomalies:
        out(f"anomalies:        {len(r.anomalies)} (reported, not failing the run)")
        for a in r.anomalies[:5]:
            out(f"  - {a.get('child')} flow {a.get('key')} at {a.get('at')} s: {a.get('text')} "
                f"(last admin call: {a.get('last_op')})")
    out(f"listener RSS MiB: {_series(r)}")
    if s.rss_growth_mib_h is not None:
        gated = (f"gated at {p.max_rss_growth:g} MiB/h" if s.rss_fit_span_min >= p.rss_gate_minutes
                 else f"not gated: under {p.rss_gate_minutes:g} min of samples after warm-up")
        out(f"  growth after warm-up ({p.warmup_s:.0f} s): {s.rss_growth_mib_h:+.2f} MiB/h "
            f"(least squares over {s.rss_fit_samples} samples, {s.rss_fit_span_min:.1f} min, "
            f"r^2 {s.rss_fit_r2:.2f}; {gated}); {_mib(s.rss_warm)} -> {_mib(s.rss_stop)} MiB")
    if r.samples:
        out(f"  start {_mib(r.samples[0].rss)}, end (all flows closed) "
            f"{_mib(r.listener_rss_end)}, peak (VmHWM) {_mib(r.listener_hwm)} MiB; client "
            f"processes at the stop: "
            f"{', '.join(_mib(x) for x in r.samples[-1].clients_rss)} MiB")
    out(f"listener:         start: {_figs(r.listener_start)}")
    out(f"                  after warm-up: {_figs(r.listener_warm)}")
    out(f"                  end: {_figs(r.listener_end)}; receive memory promised "
        f"{r.listener_end.get('memory_promised')}")
    if r.census_growth:
        out("                  objects held at the end beyond the start, by type: "
            + ", ".join(f"{k.rsplit('.', 1)[-1]} {v:+d}" for k, v in
                        list(r.census_growth.items())[:10]))
    if r.trace_growth:
        out("                  allocation sites that grew from warm-up to the end (tracemalloc):")
        for line in r.trace_growth:
            out(f"                    {line}")
    for i, (a, b) in enumerate(zip(r.clients_start, r.clients_end, strict=False)):
        out(f"client{i}:          start fds {a.get('fds')} tasks {a.get('tasks')}; end fds "
            f"{b.get('fds')} tasks {b.get('tasks')}")
    out(f"listener loop:    worst lag {s.lag_listener_max * 1e3:.0f} ms per sample window, "
        f"{s.lag_listener_over_250ms} lag(s) over 250 ms; CPU {s.cpu_listener_s:.1f} s; "
        f"kernel accept queue at most {s.accept_queue_max}")
    if r.drops:
        out(f"nftables DROPs:   {sum(1 for d in r.drops if d[0] == 'drop')} "
            f"(path, start, length: "
            + ", ".join(f"{int(d[0])}@{d[1]:.0f}s/{d[2] - d[1]:.1f}s"
                        for d in r.planned_drops[:12])
            + (" ..." if len(r.planned_drops) > 12 else "") + ")")
    out(f"logs:             {r.rundir} (per-process logs, client*.faults.log: every fault "
        f"and call with its flow; errors.log)")
    for d in r.diagnostics:
        out(d)
    if s.passed:
        out("PASS")
    else:
        out("FAIL: " + "; ".join(s.reasons))
