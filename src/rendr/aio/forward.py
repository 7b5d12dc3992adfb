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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

from ..errors import RendrError
from .conn import Conn
from .dialer import Dialer
from .listener import Listener
from .streams import splice

__all__ = ["forward_flows", "forward_local", "forward_stdio"]

logger = logging.getLogger("rendr.forward")


async def forward_flows(listener: Listener, target: tuple[str, int]) -> None:
    """Splice every accepted flow to a new TCP connection to ``target``, until the
    listener closes (or this task is cancelled)."""
    tasks: set[asyncio.Task[None]] = set()
    try:
        async for conn in listener:
            task = asyncio.create_task(_to_target(conn, target))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()


async def _to_target(conn: Conn, target: tuple[str, int]) -> None:
    try:
        reader, writer = await asyncio.open_connection(*target)
    except OSError as exc:
        logger.warning("forward to %s:%d failed: %s", target[0], target[1], exc)
        conn.abort(reason=f"forward target unreachable: {exc}")
        return
    await splice(conn, reader, writer)


async def forward_local(dialer: Dialer, local: tuple[str, int]) -> asyncio.Server:
    """Listen on ``local`` (TCP); each connection there dials a flow of its own and is
    spliced to it.  Returns the server (close it to stop)."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            conn = await dialer.dial()
        except (RendrError, OSError) as exc:
            logger.warning("dial for %s failed: %s", writer.get_extra_info("peername"), exc)
            writer.transport.abort()
            return
        await splice(conn, reader, writer)

    return await asyncio.start_server(serve, *local)


async def forward_stdio(dialer: Dialer) -> None:
    """One flow spliced to stdin/stdout; returns when both directions ended."""
    loop = asyncio.get_running_loop()
    conn = await dialer.dial()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    # a StreamReaderProtocol gives the writer flow control and a close waiter
    w_transport, w_protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), sys.stdout)
    writer = asyncio.StreamWriter(w_transport, w_protocol, None, loop)
    with contextlib.suppress(BrokenPipeError):
        await splice(conn, reader, writer)
