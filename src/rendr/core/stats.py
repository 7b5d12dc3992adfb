"""Statistics snapshots returned by ``Conn.stats()``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .types import Mode, State

if TYPE_CHECKING:
    from .flow import Flow
    from .path import PathState

__all__ = ["ConnStats", "PathStats", "conn_stats"]


@dataclass(frozen=True)
class PathStats:
    """One path's counters at the time of the snapshot.

    Attributes:
        id: path id (equal on both ends).
        transport: carrier name ("tcp", ...).
        local_addr / remote_addr: carrier addresses as text.
        state: "up", "retiring", "down" or "removed".
        srtt / rttvar: smoothed RTT and its variation from PING/PONG, seconds (None before
            the first sample).
        bytes_sent / bytes_received: stream payload bytes (sent) and all carrier bytes (received).
        frames_sent / frames_received: DATA frames sent; control frames and DATA pieces parsed.
        retransmits: payload bytes re-sent: after another path died, or (a datagram path)
            declared lost on this one.
        last_recv_age: seconds since anything arrived on the path.
        down_cause: why the path went down (None while up).
        suspect: the path stopped answering for ``suspect_timeout`` and has not been
            heard from since (it carries no data; see ``FlowConfig.suspect_timeout``).
        dropped: datagrams dropped unopened (failed authentication, replayed, or older
            than the replay window; a datagram path only).
        mtu: the largest datagram of a datagram path (None on a stream carrier).
        ping_loss: the fraction of this end's PINGs never answered (a moving average;
            part of the path's score in PRIME).
        encrypted: whether the path's records (sealed datagrams) are encrypted: False
            when they are authenticated only (a verified QUIC path, or ``encrypt=False``);
            None without records.
        packets_sent / packets_received: packets (packet flows) this end sent on the
            path / received on it.
        delivery_rate / delivery_loss: a packet flow in BOND: the payload bytes per
            second the path delivered and the fraction of its packets lost, by the
            peer's latest delivery reports (PATH_REPORT; what BOND stripes by); None
            without a report.
    """

    id: int
    transport: str
    local_addr: str
    remote_addr: str
    state: str
    srtt: float | None
    rttvar: float | None
    bytes_sent: int
    bytes_received: int
    frames_sent: int
    frames_received: int
    retransmits: int
    last_recv_age: float
    down_cause: str | None = None
    suspect: bool = False
    dropped: int = 0
    mtu: int | None = None
    ping_loss: float = 0.0
    encrypted: bool | None = None
    packets_sent: int = 0
    packets_received: int = 0
    delivery_rate: float | None = None
    delivery_loss: float | None = None


@dataclass(frozen=True)
class ConnStats:
    """A connection's statistics.

    Attributes:
        flow_id: the 16-byte flow id.
        state / mode / active_path: as on the connection.
        paths: every path the flow ever had, in id order.
        recv_queue_hwm: the most bytes ever held in the reorder buffer.
        recv_dups: received pieces that carried already-received bytes.
        bond_stuck_skips: times BOND left a path out for an RTT far above the best
            path's (its bytes would have held the receiver back).
        mode_switches: mode switches that took effect (see ``set_mode``).
        migration_count: active-path changes after the first.
        created_at: engine time the flow was created.
        bytes_written / bytes_read: application bytes accepted / delivered.
        unacked_bytes: bytes written and not yet acknowledged by the peer.
        quic_rebinds: QUIC connection migrations this end started
            (``rebind_path``), apart from ``migration_count``.
    """

    flow_id: bytes
    state: State
    mode: Mode
    active_path: int | None
    paths: list[PathStats] = field(default_factory=list)
    recv_queue_hwm: int = 0
    recv_dups: int = 0
    bond_stuck_skips: int = 0
    mode_switches: int = 0
    migration_count: int = 0
    created_at: float = 0.0
    bytes_written: int = 0
    bytes_read: int = 0
    unacked_bytes: int = 0
    quic_rebinds: int = 0


def conn_stats(flow: Flow, known: Iterable[PathState], now: float) -> ConnStats:
    """The snapshot :meth:`Flow.stats` returns: the flow's counters and a
    :class:`PathStats` for each path in ``known`` (live ones and the recent history)."""
    return ConnStats(
        flow_id=flow.flow_id, state=flow.state, mode=flow.mode, active_path=flow.active,
        paths=[p.stats(now, flow.packet_rates) for p in sorted(known, key=lambda p: p.id)],
        recv_queue_hwm=flow.recv_queue_hwm, recv_dups=flow.recv_dups,
        bond_stuck_skips=flow.modes.bond_stuck_skips, mode_switches=flow.modes.switches,
        migration_count=flow.migration_count, created_at=flow.created_at,
        bytes_written=flow.bytes_written, bytes_read=flow.bytes_read,
        unacked_bytes=flow.unacked,
    )
