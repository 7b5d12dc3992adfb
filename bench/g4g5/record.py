"""What one G4+G5 run measured, and the pass/fail verdicts drawn from it.

:class:`RunResult` holds the run as a whole (errors, notes, limits, engine events)
and one small record per concern: the :class:`Drop`, the :class:`EchoResult` and
:class:`BulkResult` of G4's two connections, and the :class:`Recovery` of G5
(with its :class:`LoadMigration`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .analysis import EchoAnalysis


@dataclass
class Drop:
    """G4: the path that was black-holed."""

    index: int | None = None
    """Topology path index (None: the drop never happened)."""
    addr: str = ""
    """Its server address."""
    cmd_s: float = 0.0
    """How long the drop command took."""


@dataclass
class EchoResult:
    """G4: the echo connection."""

    timing: EchoAnalysis | None = None
    sent: int = 0
    received: int = 0
    ok: bool = False
    """Every request answered, content and order right."""
    failover_event_s: float | None = None
    """Drop -> the engine's first MIGRATION event on this connection."""
    active_after: int | None = None
    active_index_after: int | None = None
    """Topology path index of the active path after G4."""


@dataclass
class BulkResult:
    """G4: the bulk connection."""

    pre_migrated: bool = False
    """Migrated to the echo connection's path before the traffic started."""
    in_flight_at_drop: bool = False
    received_at_drop: int = 0
    unacked_at_drop: int = 0
    failover_event_s: float | None = None
    max_gap_s: float | None = None
    """Longest time the server received nothing."""
    size: int = 0
    received: int = 0
    seconds: float | None = None
    sha_expected: str = ""
    sha_server: str = ""
    sha_ok: bool = False


@dataclass
class LoadMigration:
    """G5: the migration back to the re-dialed path with data in flight."""

    inflight: int = 0
    """Unacknowledged bytes when ``migrate`` was called."""
    exact: bool = False
    dups: tuple[int, int] = (0, 0)
    """Growth of recv_dups (client, server)."""
    hwm: tuple[int, int] = (0, 0)
    """Growth of recv_queue_hwm (client, server) in the migration under load (reported,
    not gated: data racing on two paths may legitimately be reordered)."""


@dataclass
class Recovery:
    """G5: undrop, automatic re-dial, ``add_path`` + ``migrate`` + echo, then a
    migration under load.  ``(before, after)`` pairs for the dups and hwm counters."""

    ran: bool = False
    undrop_cmd_s: float = 0.0
    redial_s: float | None = None
    redial_path_id: int | None = None
    added_path_id: int | None = None
    added_remote: str = ""
    active_client: int | None = None
    active_server: int | None = None
    echo_exact: bool = False
    echo_size: int = 0
    path_sent: int = 0
    path_received: int = 0
    server_path_received: int = 0
    dups_client: tuple[int, int] = (0, 0)
    dups_server: tuple[int, int] = (0, 0)
    hwm_client: tuple[int, int] = (0, 0)
    hwm_server: tuple[int, int] = (0, 0)
    load: LoadMigration = field(default_factory=LoadMigration)
    checks: dict[str, bool] = field(default_factory=dict)
    """G5's gated checks by name, in the order they were made."""


@dataclass
class RunResult:
    """Everything measured in one G4+G5 run."""

    loop: str = ""
    errors: list[str] = field(default_factory=list)
    """Application-visible exceptions, hangs, broken invariants (each one fails)."""
    notes: list[str] = field(default_factory=list)
    diagnostics: list[str] = field(default_factory=list)
    failover_limit: float = 5.0
    failover_target: float = 0.3
    redial_limit: float = 15.0
    drop: Drop = field(default_factory=Drop)
    echo: EchoResult = field(default_factory=EchoResult)
    bulk: BulkResult = field(default_factory=BulkResult)
    g5: Recovery = field(default_factory=Recovery)
    path_down_causes: list[str] = field(default_factory=list)
    migration_causes: list[str] = field(default_factory=list)
    client_recv_dups_g4: int = 0
    """recv_dups of the client's echo and bulk connections after G4."""

    # ---- verdicts
    @property
    def failover(self) -> float | None:
        return self.echo.timing.failover if self.echo.timing is not None else None

    def g4_failures(self) -> list[str]:
        out: list[str] = []
        if self.errors:
            out.append(f"{len(self.errors)} error(s): " + " | ".join(self.errors))
        if self.drop.index is None:
            out.append("the drop never happened")
            return out
        if not self.bulk.in_flight_at_drop:
            out.append("bulk transfer was not in flight at the drop (test invalid; "
                       "lower --rate or raise --bulk-mib)")
        if self.failover is None:
            out.append("echo answers never resumed after the drop")
        elif self.failover > self.failover_limit:
            out.append(f"failover {self.failover:.3f}s > {self.failover_limit:g}s")
        if not self.echo.ok:
            out.append("echo answers incomplete, wrong or out of order")
        if not self.bulk.sha_ok:
            out.append("bulk SHA-256 mismatch or transfer incomplete")
        if self.echo.active_index_after == self.drop.index:
            out.append("echo connection still active on the dropped path")
        return out

    def g5_failures(self) -> list[str]:
        if not self.g5.ran:
            return ["G5 did not run (G4 broke the run)"]
        return [name for name, ok in self.g5.checks.items() if not ok]

    @property
    def g4_pass(self) -> bool:
        return not self.g4_failures()

    @property
    def g5_pass(self) -> bool:
        return not self.g5_failures() and not self.errors
