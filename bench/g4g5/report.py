"""The printed figures: one block per run, and the summary over all runs."""

from __future__ import annotations

import statistics
from collections.abc import Callable

from .params import KIB, MIB, Params
from .record import Recovery, RunResult


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 1e3:.1f} ms"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report_run(n: int, r: RunResult, out: Callable[[str], None] = print) -> None:
    """Print one run's figures, checks and verdicts (and, if it failed, the diagnostics)."""
    out(f"--- run {n} (loop={r.loop})")
    _report_g4(r, out)
    out(f"  G4 {_verdict(r.g4_pass)}" + ("" if r.g4_pass else ": " + "; ".join(r.g4_failures())))
    if r.g5.ran:
        _report_g5(r.g5, out)
    out(f"  G5 {_verdict(r.g5_pass)}" + ("" if r.g5_pass else ": " + "; ".join(r.g5_failures())))
    for note in r.notes:
        out(f"  note: {note}")
    if not (r.g4_pass and r.g5_pass):
        for d in r.diagnostics:
            out("  diag: " + d.replace("\n", "\n        "))


def _report_g4(r: RunResult, out: Callable[[str], None]) -> None:
    drop, echo, bulk, e = r.drop, r.echo, r.bulk, r.echo.timing
    aligned = "re-aligned to it before the traffic" if bulk.pre_migrated else "already on it"
    out(f"  G4 dropped topology path {drop.index} (server {drop.addr}); drop command "
        f"{_ms(drop.cmd_s)}; bulk {aligned}")
    out(f"     bulk in flight at drop: {bulk.in_flight_at_drop} "
        f"({bulk.received_at_drop / MIB:.1f} of {bulk.size / MIB:.0f} MiB received, "
        f"{bulk.unacked_at_drop / KIB:.0f} KiB unacknowledged)")
    if e is not None:
        tgt = "met" if e.failover is not None and e.failover <= r.failover_target else "MISSED"
        out(f"     failover (drop -> first answer to a post-drop request): {_ms(e.failover)} "
            f"[limit {r.failover_limit:g} s, target {r.failover_target:g} s {tgt}]")
        out(f"     first answer of any kind after the drop: {_ms(e.first_any_after)}; "
            f"requests stuck in flight: {e.stuck}")
        out(f"     engine MIGRATION after drop: echo {_ms(echo.failover_event_s)}, "
            f"bulk {_ms(bulk.failover_event_s)}; longest bulk stall {_ms(bulk.max_gap_s)}")
        out(f"     echo RTT baseline p50 {_ms(e.baseline_p50)} p99 {_ms(e.baseline_p99)}; "
            f"around the drop (n={e.around_n}) p50 {_ms(e.around_p50)} "
            f"p99 {_ms(e.around_p99)} max {_ms(e.around_max)}")
    out(f"     echo: {echo.received}/{echo.sent} answers, content+order "
        f"{'OK' if echo.ok else 'BAD'}; active after: path {echo.active_after} "
        f"(topology path {echo.active_index_after})")
    rate = (f"{bulk.size / bulk.seconds / 1e6:.1f} MB/s over {bulk.seconds:.2f} s"
            if bulk.seconds else "n/a")
    out(f"     bulk: {bulk.received / MIB:.1f}/{bulk.size / MIB:.0f} MiB, {rate}; SHA-256 "
        f"{'identical' if bulk.sha_ok else 'MISMATCH'} ({bulk.sha_expected[:16]}... vs "
        f"{bulk.sha_server[:16] or '-'}...)")
    out(f"     PATH_DOWN: {', '.join(r.path_down_causes) or '-'}")
    out(f"     MIGRATION: {', '.join(r.migration_causes) or '-'}")


def _report_g5(g: Recovery, out: Callable[[str], None]) -> None:
    redial = (f"path {g.redial_path_id} up {_ms(g.redial_s)} after the undrop"
              if g.redial_s is not None else "NOT SEEN")
    out(f"  G5 undrop command {_ms(g.undrop_cmd_s)}; automatic re-dial: {redial}")
    out(f"     add_path -> path {g.added_path_id} ({g.added_remote}); migrate -> active "
        f"client {g.active_client} / server {g.active_server}")
    out(f"     {g.echo_size // KIB} KiB echo {'byte-exact' if g.echo_exact else 'WRONG'};"
        f" on the added path: client sent {g.path_sent}, client received "
        f"{g.path_received}, server received {g.server_path_received} bytes")
    out(f"     recv_dups client {g.dups_client[0]}->{g.dups_client[1]}, server "
        f"{g.dups_server[0]}->{g.dups_server[1]}; recv_queue_hwm client "
        f"{g.hwm_client[0]}->{g.hwm_client[1]}, server "
        f"{g.hwm_server[0]}->{g.hwm_server[1]}")
    load = g.load
    out(f"     under load: migrate to path {g.redial_path_id} with "
        f"{load.inflight // KIB} KiB unacknowledged: echo "
        f"{'byte-exact' if load.exact else 'WRONG'}, recv_dups +{load.dups[0]} "
        f"client / +{load.dups[1]} server, recv_queue_hwm +{load.hwm[0]} client /"
        f" +{load.hwm[1]} server (reorder: informational)")
    for name, ok in g.checks.items():
        out(f"     [{'ok' if ok else 'FAIL'}] {name}")


def report_summary(results: list[RunResult], p: Params,
                   out: Callable[[str], None] = print) -> bool:
    """Print the figures over all runs and the two verdicts; True if every run passed
    both gates."""
    fos = [r.failover for r in results if r.failover is not None]
    g4_ok = all(r.g4_pass for r in results)
    g5_ok = all(r.g5_pass for r in results)
    med = statistics.median(fos) if fos else None
    out("=== summary")
    if fos:
        out(f"  failover over {len(fos)} run(s): median {_ms(med)}, min {_ms(min(fos))}, "
            f"max {_ms(max(fos))} (limit {p.failover_limit:g} s; target "
            f"{p.failover_target:g} s: "
            f"{'met' if med is not None and med <= p.failover_target else 'MISSED'} "
            f"by the median, {sum(f <= p.failover_target for f in fos)}/{len(fos)} runs)")
    rd = [r.g5.redial_s for r in results if r.g5.redial_s is not None]
    if rd:
        out(f"  automatic re-dial after undrop: median {_ms(statistics.median(rd))}, "
            f"max {_ms(max(rd))}")
    rates = [r.bulk.size / r.bulk.seconds / 1e6 for r in results if r.bulk.seconds]
    if rates:
        out(f"  bulk: median {statistics.median(rates):.1f} MB/s (with the outage), SHA-256 "
            f"identical in {sum(r.bulk.sha_ok for r in results)}/{len(results)} run(s)")
    out(f"G4 {_verdict(g4_ok)}")
    out(f"G5 {_verdict(g5_ok)}")
    return g4_ok and g5_ok
