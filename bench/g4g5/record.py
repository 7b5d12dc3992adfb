"""What one G4+G5 run measured, and the pass/fail verdicts drawn from it."""

from __future__ import annotations

from dataclasses import dataclass, field

from .analysis import EchoAnalysis


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

