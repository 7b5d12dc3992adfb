"""Watching the flows of a long-running program: what ``rendr stats`` and the
Prometheus exporter read, and the structured log records of each flow.

A :class:`FlowMonitor` keeps the live :class:`~rendr.Conn` objects a program (the
forwarder of ``rendr serve`` / ``rendr connect``) hands it, logs each flow's life under
the ``rendr.flow`` logger with structured fields (``flow_id``, ``event``, ``path_id``,
``old_path``, ``new_path``, ``cause``, ...: see :class:`rendr.logfmt.JsonFormatter`),
and takes snapshots on demand: :meth:`FlowMonitor.snapshot` for the control socket
(JSON-ready, with throughputs) and :meth:`FlowMonitor.live` for a metrics collector.
Nothing polls: every number is read from ``Conn.stats()`` when it is asked for.

Use it from the event loop's thread only (like the connections themselves).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..core.events import Event, EventKind
from ..core.stats import ConnStats
from .conn import Conn

__all__ = ["FlowMonitor", "FlowTotals", "TrackedFlow"]

logger = logging.getLogger("rendr.flow")

RATE_MIN_INTERVAL = 0.25
"""Seconds: a snapshot taken sooner than this after the previous one reports the
previous throughputs (a rate over a shorter window is mostly noise)."""

SCHEMA_VERSION = 1
"""Version of the :meth:`FlowMonitor.snapshot` document."""


@dataclass
class TrackedFlow:
    """One live flow the monitor holds."""

    conn: Conn
    flow_id: str
    """The flow id as hex (the label and field everywhere)."""
    peer: str
    """Who this flow serves: the TCP client (connect) or the dialer's address (serve)."""
    started: float
    """Loop time the monitor started tracking the flow."""
    error: str | None = None
    """Why the flow failed (from its CLOSED event), None while it has not."""
    _unsubscribe: Any = None
    # throughput bookkeeping: the counters at the previous snapshot, and the rates then
    _last_at: float | None = None
    _last: dict[str, int] = field(default_factory=dict)
    _rates: dict[str, float] = field(default_factory=dict)

    def rates(self, stats: ConnStats, now: float) -> dict[str, float]:
        """Bytes per second of the flow (``read``, ``written``) and of each path
        (``sent:ID``, ``received:ID``) since the previous call, or since the flow
        started on the first call; the previous rates when that was under
        :data:`RATE_MIN_INTERVAL` ago."""
        counters = {"read": stats.bytes_read, "written": stats.bytes_written}
        for p in stats.paths:
            counters[f"sent:{p.id}"] = p.bytes_sent
            counters[f"received:{p.id}"] = p.bytes_received
        if self._last_at is not None and now - self._last_at < RATE_MIN_INTERVAL:
            return {k: self._rates.get(k, 0.0) for k in counters}
        since = self.started if self._last_at is None else self._last_at
        dt = max(now - since, 1e-3)
        self._rates = {k: max(v - self._last.get(k, 0), 0) / dt for k, v in counters.items()}
        self._last_at, self._last = now, counters
        return dict(self._rates)


@dataclass
class FlowTotals:
    """Counters over every flow the monitor has seen, ended ones included."""

    opened: int = 0
    closed: int = 0
    failed: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    migrations: int = 0


def _fields(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"event": event.kind.value}
    for name in ("path_id", "old_path", "new_path", "cause"):
        value = getattr(event, name)
        if value is not None:
            out[name] = value
    if event.detail:
        out["detail"] = event.detail
    if event.mode is not None:
        out["mode"] = str(event.mode)
    if event.error is not None:
        out["error"] = f"{type(event.error).__name__}: {event.error}"
    return out


def _describe(event: Event) -> str:
    kind = event.kind
    if kind is EventKind.MIGRATION:
        return f"migration path {event.old_path} -> {event.new_path} ({event.cause})"
    if kind is EventKind.PATH_DOWN:
        return f"path {event.path_id} down ({event.cause})"
    if kind is EventKind.MODE_CHANGE:
        return f"mode -> {event.mode}"
    if kind is EventKind.CLOSED:
        return "flow ended" if event.error is None else f"flow failed: {event.error}"
    if event.path_id is not None:
        return f"path {event.path_id} {str(kind.value).removeprefix('path_')}"
    return str(kind.value)


class FlowMonitor:
    """The live flows of one program, their log records and their snapshots.

    Args:
        role: what the program is (``"serve"``, ``"connect"``, ...), reported in every
            snapshot and log record.
        info: anything else a snapshot should carry (listen addresses, the forward
            target, ...): JSON-ready values.
    """

    def __init__(self, role: str, info: dict[str, Any] | None = None) -> None:
        self.role = role
        self.info: dict[str, Any] = dict(info or {})
        self.flows: dict[str, TrackedFlow] = {}
        self.totals = FlowTotals()
        self.started_wall = time.time()
        self._loop: asyncio.AbstractEventLoop | None = None

    def now(self) -> float:
        """The event loop's clock (the time base of ``TrackedFlow.started``)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop.time()

    # ---------------------------------------------------------------- tracking

    def track(self, conn: Conn, peer: str = "") -> TrackedFlow:
        """Start watching ``conn`` (logs ``flow opened``); pair with :meth:`untrack`."""
        flow_id = conn.flow_id.hex()
        tracked = TrackedFlow(conn=conn, flow_id=flow_id, peer=peer, started=self.now())
        extra = {"flow_id": flow_id, "role": self.role}

        def on_event(event: Event) -> None:
            if event.kind is EventKind.CLOSED and event.error is not None:
                tracked.error = f"{type(event.error).__name__}: {event.error}"
            level = logging.WARNING if event.kind is EventKind.CLOSED and event.error \
                else logging.INFO
            logger.log(level, "flow %s: %s", flow_id[:8], _describe(event),
                       extra={**extra, **_fields(event)})

        tracked._unsubscribe = conn.on_event(on_event)
        self.flows[flow_id] = tracked
        self.totals.opened += 1
        stats = conn.stats()
        logger.info("flow %s opened (peer %s, path %s)", flow_id[:8], peer or "-",
                    stats.active_path,
                    extra={**extra, "event": "flow_opened", "peer": peer,
                           "path_id": stats.active_path, "mode": str(stats.mode)})
        return tracked

    def untrack(self, conn: Conn) -> None:
        """Stop watching ``conn``: its counters go into :attr:`totals` (logs
        ``flow closed``)."""
        tracked = self.flows.pop(conn.flow_id.hex(), None)
        if tracked is None:
            return
        if tracked._unsubscribe is not None:
            tracked._unsubscribe()
        stats = conn.stats()
        totals = self.totals
        totals.closed += 1
        totals.failed += tracked.error is not None
        totals.bytes_read += stats.bytes_read
        totals.bytes_written += stats.bytes_written
        totals.migrations += stats.migration_count
        logger.info("flow %s closed: %d bytes read, %d written, %d migration(s), %.1f s",
                    tracked.flow_id[:8], stats.bytes_read, stats.bytes_written,
                    stats.migration_count, self.now() - tracked.started,
                    extra={"flow_id": tracked.flow_id, "role": self.role,
                           "event": "flow_closed", "bytes_read": stats.bytes_read,
                           "bytes_written": stats.bytes_written,
                           "migrations": stats.migration_count,
                           "error": tracked.error})

    @contextlib.contextmanager
    def tracking(self, conn: Conn, peer: str = "") -> Iterator[TrackedFlow]:
        """``with monitor.tracking(conn): ...``: :meth:`track`, then :meth:`untrack`."""
        tracked = self.track(conn, peer)
        try:
            yield tracked
        finally:
            self.untrack(conn)

    # ---------------------------------------------------------------- reading

    def live(self) -> list[tuple[TrackedFlow, ConnStats]]:
        """Every live flow with a fresh ``stats()`` snapshot (ordered by start)."""
        return [(t, t.conn.stats()) for t in sorted(self.flows.values(),
                                                    key=lambda t: t.started)]

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready document of the program and each live flow and path: state,
        RTT, throughput (bytes/s since the previous snapshot), migrations, counters."""
        now = self.now()
        flows = []
        for tracked, stats in self.live():
            rates = tracked.rates(stats, now)
            paths = []
            for p in stats.paths:
                paths.append({
                    "id": p.id, "transport": p.transport, "local_addr": p.local_addr,
                    "remote_addr": p.remote_addr, "state": p.state,
                    "active": p.id == stats.active_path, "suspect": p.suspect,
                    "srtt": p.srtt, "rttvar": p.rttvar,
                    "bytes_sent": p.bytes_sent, "bytes_received": p.bytes_received,
                    "send_rate": rates.get(f"sent:{p.id}", 0.0),
                    "recv_rate": rates.get(f"received:{p.id}", 0.0),
                    "retransmits": p.retransmits, "ping_loss": p.ping_loss,
                    "last_recv_age": p.last_recv_age, "down_cause": p.down_cause,
                })
            flows.append({
                "flow_id": tracked.flow_id, "peer": tracked.peer,
                "age": now - tracked.started, "state": str(stats.state),
                "mode": str(stats.mode), "active_path": stats.active_path,
                "migrations": stats.migration_count,
                "bytes_read": stats.bytes_read, "bytes_written": stats.bytes_written,
                "read_rate": rates.get("read", 0.0), "write_rate": rates.get("written", 0.0),
                "unacked_bytes": stats.unacked_bytes, "recv_dups": stats.recv_dups,
                "paths": paths,
            })
        t = self.totals
        return {
            "version": SCHEMA_VERSION, "role": self.role, "pid": os.getpid(),
            "time": time.time(), "uptime": time.time() - self.started_wall,
            **self.info,
            "totals": {"flows_opened": t.opened, "flows_closed": t.closed,
                       "flows_failed": t.failed},
            "flows": flows,
        }
