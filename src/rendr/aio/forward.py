"""Port forwarding over rendr: what ``rendr serve`` and ``rendr connect`` run.

- :func:`forward_flows`: every flow a listener accepts is spliced to a fresh TCP
  connection to ``target`` (the server side: e.g. the local sshd).
- :func:`forward_local`: every TCP connection to a local address gets a flow of its own,
  dialled with a :class:`~rendr.Dialer`, spliced to it (the client side: point ssh at
  the local port).
- :func:`forward_stdio`: one flow spliced to this process's stdin/stdout (netcat-style;
  usable as an ssh ``ProxyCommand``).

Half-close passes through; a flow that fails reaches the TCP application as a reset, a
clean close as a FIN (:func:`~rendr.aio.streams.splice`).

Each takes an optional :class:`~rendr.aio.monitor.FlowMonitor`, which then holds every
live flow (for ``rendr stats`` and the metrics exporter) and logs each flow's life.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator

from ..errors import RendrError
from .conn import Conn
from .dialer import Dialer
from .listener import Listener
from .monitor import FlowMonitor
from .streams import splice

__all__ = ["forward_flows", "forward_local", "forward_stdio"]

logger = logging.getLogger("rendr.forward")


@contextlib.contextmanager
def _tracked(monitor: FlowMonitor | None, conn: Conn, peer: str) -> Iterator[None]:
    if monitor is None:
        yield
        return
    with monitor.tracking(conn, peer):
        yield


def _peer(conn: Conn) -> str:
    """The dialer's address on the flow's active (or first) path."""
    stats = conn.stats()
    for p in stats.paths:
        if p.id == stats.active_path:
            return p.remote_addr
    return stats.paths[0].remote_addr if stats.paths else ""


async def forward_flows(listener: Listener, target: tuple[str, int],
                        monitor: FlowMonitor | None = None) -> None:
    """Splice every accepted flow to a new TCP connection to ``target``, until the
    listener closes (or this task is cancelled)."""
    tasks: set[asyncio.Task[None]] = set()
    try:
        async for conn in listener:
            task = asyncio.create_task(_to_target(conn, target, monitor))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()


async def _to_target(conn: Conn, target: tuple[str, int],
                     monitor: FlowMonitor | None) -> None:
    with _tracked(monitor, conn, _peer(conn)):
        try:
            reader, writer = await asyncio.open_connection(*target)
        except OSError as exc:
            logger.warning("forward to %s:%d failed: %s", target[0], target[1], exc,
                           extra={"flow_id": conn.flow_id.hex(), "event": "forward_failed",
                                  "target": f"{target[0]}:{target[1]}"})
            conn.abort(reason=f"forward target unreachable: {exc}")
            return
        await splice(conn, reader, writer)


async def forward_local(dialer: Dialer, local: tuple[str, int],
                        monitor: FlowMonitor | None = None) -> asyncio.Server:
    """Listen on ``local`` (TCP); each connection there dials a flow of its own and is
    spliced to it.  Returns the server (close it to stop)."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _fmt_addr(writer.get_extra_info("peername"))
        try:
            conn = await dialer.dial()
        except (RendrError, OSError) as exc:
            logger.warning("dial for %s failed: %s", peer, exc,
                           extra={"event": "dial_failed", "peer": peer})
            writer.transport.abort()
            return
        with _tracked(monitor, conn, peer):
            await splice(conn, reader, writer)

    return await asyncio.start_server(serve, *local)


def _fmt_addr(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "" if addr is None else str(addr)


async def forward_stdio(dialer: Dialer, monitor: FlowMonitor | None = None) -> None:
    """One flow spliced to stdin/stdout; returns when both directions ended."""
    loop = asyncio.get_running_loop()
    conn = await dialer.dial()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    # a StreamReaderProtocol gives the writer flow control and a close waiter
    w_transport, w_protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), sys.stdout)
    writer = asyncio.StreamWriter(w_transport, w_protocol, None, loop)
    with _tracked(monitor, conn, "stdio"), contextlib.suppress(BrokenPipeError):
        await splice(conn, reader, writer)
