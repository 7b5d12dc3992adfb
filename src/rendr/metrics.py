"""Prometheus metrics of a running forwarder (``rendr serve/connect --metrics HOST:PORT``).

Needs the ``prometheus_client`` package (``pip install 'rendr[metrics]'``).
:class:`RendrCollector` reads the live flows of a :class:`~rendr.aio.monitor.FlowMonitor`
when it is scraped (no polling thread, nothing sampled in between) and
:func:`start_metrics_server` serves the Prometheus text format (or OpenMetrics, when the
scraper asks for it) over HTTP from the program's own event loop, where the connections
live, so a scrape reads them from the thread that owns them.

Metrics (``flow_id`` is the hex flow id; a path's series carry ``flow_id``, ``path_id``
and ``transport``):

- ``rendr_info{role,version}``, ``rendr_flows_active``, ``rendr_flows_opened_total``,
  ``rendr_flows_closed_total``, ``rendr_flows_failed_total``, and over every flow seen
  (ended ones included) ``rendr_bytes_read_total``, ``rendr_bytes_written_total``,
  ``rendr_migrations_total``;
- per flow: ``rendr_flow_bytes_read_total``, ``rendr_flow_bytes_written_total``,
  ``rendr_flow_migrations_total``, ``rendr_flow_active_path`` (-1: none),
  ``rendr_flow_unacked_bytes``, ``rendr_flow_age_seconds``, ``rendr_flow_state{state}``;
- per path: ``rendr_path_up``, ``rendr_path_active``, ``rendr_path_state{state}``,
  ``rendr_path_srtt_seconds`` and ``rendr_path_rttvar_seconds`` (once measured),
  ``rendr_path_bytes_sent_total``, ``rendr_path_bytes_received_total``,
  ``rendr_path_retransmitted_bytes_total``, ``rendr_path_ping_loss_ratio``,
  ``rendr_path_last_receive_age_seconds``;
- the standard ``process_*``, ``python_gc_*`` and ``python_info`` metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from ._version import __version__
from .aio.monitor import FlowMonitor

__all__ = ["RendrCollector", "metrics_registry", "start_metrics_server"]

logger = logging.getLogger("rendr.metrics")

_FLOW = ["flow_id"]
_PATH = ["flow_id", "path_id", "transport"]
_MAX_REQUEST = 16 * 1024
_REQUEST_TIMEOUT = 10.0


class RendrCollector:
    """A ``prometheus_client`` collector of a :class:`FlowMonitor`'s flows and paths,
    read at scrape time (call :meth:`collect` on the event loop's thread)."""

    def __init__(self, monitor: FlowMonitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterable[Metric]:
        monitor = self.monitor
        live = monitor.live()
        totals = monitor.totals
        info = GaugeMetricFamily("rendr_info", "This rendr program.",
                                 labels=["role", "version"])
        info.add_metric([monitor.role, __version__], 1)
        yield info
        yield GaugeMetricFamily("rendr_flows_active", "Flows open now.", value=len(live))
        yield CounterMetricFamily("rendr_flows_opened", "Flows opened.", value=totals.opened)
        yield CounterMetricFamily("rendr_flows_closed", "Flows ended.", value=totals.closed)
        yield CounterMetricFamily("rendr_flows_failed", "Flows that ended with an error.",
                                  value=totals.failed)
        yield CounterMetricFamily(
            "rendr_bytes_read", "Application bytes delivered, over every flow.",
            value=totals.bytes_read + sum(s.bytes_read for _, s in live))
        yield CounterMetricFamily(
            "rendr_bytes_written", "Application bytes accepted, over every flow.",
            value=totals.bytes_written + sum(s.bytes_written for _, s in live))
        yield CounterMetricFamily(
            "rendr_migrations", "Active-path changes, over every flow.",
            value=totals.migrations + sum(s.migration_count for _, s in live))

        families: list[Metric] = []

        def counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
            metric = CounterMetricFamily(name, doc, labels=labels)
            families.append(metric)
            return metric

        def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            metric = GaugeMetricFamily(name, doc, labels=labels)
            families.append(metric)
            return metric

        f_read = counter("rendr_flow_bytes_read",
                        "Application bytes the flow delivered.", _FLOW)
        f_written = counter("rendr_flow_bytes_written",
                           "Application bytes the flow accepted.", _FLOW)
        f_mig = counter("rendr_flow_migrations",
                       "Active-path changes of the flow after the first.", _FLOW)
        f_active = gauge("rendr_flow_active_path",
                          "Id of the flow's active path (-1: none).", _FLOW)
        f_unacked = gauge("rendr_flow_unacked_bytes",
                           "Bytes written and not yet acknowledged by the peer.", _FLOW)
        f_age = gauge("rendr_flow_age_seconds",
                       "Seconds since the flow was handed to the forwarder.", _FLOW)
        f_state = gauge("rendr_flow_state",
                         "The flow's state (1 for the current one).", [*_FLOW, "state"])
        p_up = gauge("rendr_path_up", "1 if the path is up.", _PATH)
        p_active = gauge("rendr_path_active",
                          "1 if the path is the flow's active path.", _PATH)
        p_state = gauge("rendr_path_state",
                         "The path's state (1 for the current one).", [*_PATH, "state"])
        p_srtt = gauge("rendr_path_srtt_seconds",
                        "Smoothed round-trip time of the path.", _PATH)
        p_rttvar = gauge("rendr_path_rttvar_seconds",
                          "Round-trip time variation of the path.", _PATH)
        p_sent = counter("rendr_path_bytes_sent",
                        "Stream payload bytes sent on the path.", _PATH)
        p_recv = counter("rendr_path_bytes_received",
                        "Carrier bytes received on the path.", _PATH)
        p_retx = counter("rendr_path_retransmitted_bytes",
                        "Payload bytes re-sent on the path.", _PATH)
        p_loss = gauge("rendr_path_ping_loss_ratio",
                        "Moving average of the path's unanswered PINGs.", _PATH)
        p_age = gauge("rendr_path_last_receive_age_seconds",
                       "Seconds since anything arrived on the path.", _PATH)
        now = monitor.now()
        for tracked, stats in live:
            fl = [tracked.flow_id]
            f_read.add_metric(fl, stats.bytes_read)
            f_written.add_metric(fl, stats.bytes_written)
            f_mig.add_metric(fl, stats.migration_count)
            f_active.add_metric(fl, -1 if stats.active_path is None else stats.active_path)
            f_unacked.add_metric(fl, stats.unacked_bytes)
            f_age.add_metric(fl, now - tracked.started)
            f_state.add_metric([*fl, str(stats.state)], 1)
            for p in stats.paths:
                pl = [tracked.flow_id, str(p.id), p.transport]
                p_up.add_metric(pl, 1 if p.state == "up" else 0)
                p_active.add_metric(pl, 1 if p.id == stats.active_path else 0)
                p_state.add_metric([*pl, p.state], 1)
                if p.srtt is not None:
                    p_srtt.add_metric(pl, p.srtt)
                if p.rttvar is not None:
                    p_rttvar.add_metric(pl, p.rttvar)
                p_sent.add_metric(pl, p.bytes_sent)
                p_recv.add_metric(pl, p.bytes_received)
                p_retx.add_metric(pl, p.retransmits)
                p_loss.add_metric(pl, p.ping_loss)
                p_age.add_metric(pl, p.last_recv_age)
        yield from families


def metrics_registry(monitor: FlowMonitor, *, process: bool = True) -> CollectorRegistry:
    """A registry with a :class:`RendrCollector` of ``monitor`` (and, if ``process``,
    the standard process, platform and garbage-collector collectors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RendrCollector(monitor))
    if process:
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
    return registry


@contextlib.contextmanager
def _closing(writer: asyncio.StreamWriter) -> Iterator[None]:
    try:
        yield
    finally:
        writer.close()


async def start_metrics_server(monitor: FlowMonitor, host: str, port: int,
                               registry: CollectorRegistry | None = None) -> asyncio.Server:
    """Serve ``registry`` (default: :func:`metrics_registry` of ``monitor``) over HTTP on
    ``host:port``: ``GET /metrics`` (or ``/``) in the format the ``Accept`` header asks
    for; anything else 404/405.  Returns the server (close it to stop)."""
    reg = metrics_registry(monitor) if registry is None else registry

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with _closing(writer), contextlib.suppress(OSError, asyncio.TimeoutError,
                                                   asyncio.IncompleteReadError,
                                                   asyncio.LimitOverrunError, ValueError):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _REQUEST_TIMEOUT)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip()
                       for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            path = target.split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path not in ("/metrics", "/"):
                status, ctype, body = "404 Not Found", "text/plain", b"try /metrics\n"
            else:
                encoder, ctype = choose_encoder(headers.get("accept", ""))
                status, body = "200 OK", encoder(reg)
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                         .encode("latin-1"))
            if method != "HEAD":
                writer.write(body)
            await writer.drain()

    server = await asyncio.start_server(handle, host, port, limit=_MAX_REQUEST)
    logger.debug("metrics on http://%s:%d/metrics", host, server.sockets[0].getsockname()[1],
                extra={"event": "metrics_listening", "host": host,
                       "port": server.sockets[0].getsockname()[1]})
    return server
