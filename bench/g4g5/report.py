"""The printed figures: one block per run, and the summary over all runs."""

from __future__ import annotations

import statistics
from collections.abc import Callable

from .params import KIB, MIB, Params
from .record import RunResult


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
    rd = [r.redial_s for r in results if r.redial_s is not None]
    if rd:
        out(f"  automatic re-dial after undrop: median {_ms(statistics.median(rd))}, "
            f"max {_ms(max(rd))}")
    rates = [r.bulk_bytes / r.bulk_seconds / 1e6 for r in results if r.bulk_seconds]
    if rates:
        out(f"  bulk: median {statistics.median(rates):.1f} MB/s (with the outage), SHA-256 "
            f"identical in {sum(r.sha_ok for r in results)}/{len(results)} run(s)")
    out(f"G4 {_verdict(g4_ok)}")
    out(f"G5 {_verdict(g5_ok)}")
    return g4_ok and g5_ok
