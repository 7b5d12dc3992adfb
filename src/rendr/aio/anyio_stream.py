"""rendr for anyio programs: a :class:`~rendr.Conn` as an :class:`anyio.abc.ByteStream`.

::

    import anyio.streams.tls
    import rendr

    conn = await rendr.Dialer(paths=[...]).dial()
    stream = rendr.anyio_stream(conn)
    tls = await anyio.streams.tls.TLSStream.wrap(stream, hostname="example.org")
    await tls.send(b"hello")

Everything that takes an anyio byte stream then runs on a migrating connection:
:class:`anyio.streams.tls.TLSStream`, :class:`anyio.streams.buffered.BufferedByteReceiveStream`,
:class:`anyio.streams.text.TextStream`, ``anyio.streams.stapled``...  The path's
failures stay inside rendr as always; only the flow's end reaches the stream, in
anyio's terms:

- ``receive()`` returns 1..``max_bytes`` bytes, and raises :class:`anyio.EndOfStream`
  after the peer's clean close (or ``send_eof``) and all its data;
- :class:`anyio.ClosedResourceError` after this side's ``aclose()`` (also in a task
  that was waiting in ``receive()`` or ``send()`` when another task closed the stream),
  and for a
  ``send()`` after ``send_eof()``;
- :class:`anyio.BrokenResourceError` when the flow failed (its cause is the rendr
  error: :class:`~rendr.ConnAborted`, :class:`~rendr.MigrationBudgetExceeded`,
  :class:`~rendr.ZombieFlow`...) or, for ``send()``, when the peer closed the flow;
- :class:`anyio.BusyResourceError` for a second concurrent ``receive()`` (or
  ``send()``), as anyio's own socket streams do.

anyio is an optional dependency (``pip install rendr[anyio]``); this module is the only
one that imports it.  It runs on anyio's asyncio backend (rendr is asyncio-based).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Mapping
from typing import Any

import anyio
from anyio.abc import ByteStream, SocketAttribute

from ..errors import ConnClosed, RendrError
from .conn import Conn

__all__ = ["ConnByteStream", "RendrAttribute", "anyio_stream"]

logger = logging.getLogger("rendr.anyio")


class RendrAttribute(anyio.TypedAttributeSet):
    """Typed extra attributes of a :class:`ConnByteStream` (``stream.extra(...)``)."""

    conn: Conn = anyio.typed_attribute()
    """The :class:`~rendr.Conn` under the stream, with its admin surface (paths,
    migration, statistics); also reachable through a TLS stream wrapping it."""

    flow_id: bytes = anyio.typed_attribute()
    """The flow's 16-byte id, equal on both ends."""


def _parse(addr: str) -> tuple[str, int] | None:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


class ConnByteStream(ByteStream):
    """An :class:`anyio.abc.ByteStream` over a rendr :class:`~rendr.Conn` (see the module).

    Typed extra attributes: :attr:`RendrAttribute.conn` and :attr:`RendrAttribute.flow_id`
    always; ``SocketAttribute.local_address`` / ``remote_address`` / ``local_port`` /
    ``remote_port`` / ``family`` of the *active path* while there is one (they change
    when the flow migrates).  ``SocketAttribute.raw_socket`` is not provided: no single
    OS socket carries a flow.
    """

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._closed = False
        self._eof_sent = False
        self._receive_guard = anyio.ResourceGuard("reading from")
        self._send_guard = anyio.ResourceGuard("writing to")

    @property
    def conn(self) -> Conn:
        """The connection under the stream."""
        return self._conn

    # ------------------------------------------------------------- ByteStream

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Between 1 and ``max_bytes`` bytes, as soon as at least one is there.

        Raises:
            anyio.EndOfStream: the peer closed cleanly (or half-closed) and every byte it
                sent was received.
            anyio.ClosedResourceError: the stream was closed here.
            anyio.BrokenResourceError: the flow failed (data that arrived before the
                failure is returned first).
            anyio.BusyResourceError: another task is already receiving.
        """
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        with self._receive_guard:
            if self._closed:
                raise anyio.ClosedResourceError
            try:
                data = await self._conn.read(max_bytes)
            except ConnClosed:
                # Conn.read raises ConnClosed only after a local close
                raise anyio.ClosedResourceError from None
            except (RendrError, OSError) as exc:
                if self._closed:
                    raise anyio.ClosedResourceError from None
                raise anyio.BrokenResourceError(f"rendr flow failed: {exc}") from exc
            if not data:
                raise anyio.EndOfStream
            return data

    async def send(self, item: bytes) -> None:
        """Queue all of ``item``; returns once it is in the send buffer (backpressure
        waits while the buffer is full).  rendr keeps it until the peer acknowledges it,
        across path changes.

        Raises:
            anyio.ClosedResourceError: after ``aclose()`` or ``send_eof()``.
            anyio.BrokenResourceError: the flow failed, or the peer closed it.
            anyio.BusyResourceError: another task is already sending.
        """
        with self._send_guard:
            if self._closed or self._eof_sent:
                raise anyio.ClosedResourceError
            try:
                await self._conn.write(item)
            except (RendrError, OSError) as exc:
                if self._closed:
                    raise anyio.ClosedResourceError from None
                raise anyio.BrokenResourceError(f"rendr flow ended: {exc}") from exc

    async def send_eof(self) -> None:
        """Half-close: the peer receives :class:`anyio.EndOfStream` after everything sent
        so far; receiving goes on.  Idempotent.

        Raises:
            anyio.ClosedResourceError: after ``aclose()``.
            anyio.BrokenResourceError: the flow already ended.
        """
        if self._closed:
            raise anyio.ClosedResourceError
        if self._eof_sent:
            return
        try:
            await self._conn.write_eof()
        except (RendrError, OSError) as exc:
            raise anyio.BrokenResourceError(f"rendr flow ended: {exc}") from exc
        self._eof_sent = True

    async def aclose(self) -> None:
        """Close gracefully: deliver everything sent, then end the flow (bounded by the
        flow's ``linger``).  A task waiting in ``receive()`` or ``send()`` gets
        :class:`anyio.ClosedResourceError`.  If the close is cancelled the flow is aborted
        instead (the peer sees :class:`~rendr.ConnAborted`).  Idempotent."""
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        # conn.close() marks the Conn closed and wakes a reader or writer parked in it,
        # which raises ConnClosed (receive() and send() turn it into ClosedResourceError)
        try:
            await conn.close()
        except asyncio.CancelledError:
            logger.debug("aclose() of %r cancelled: aborting the flow", conn)
            conn.abort(reason="anyio stream closed forcefully")
            raise
        except RendrError as exc:  # the flow had failed already: nothing to deliver
            logger.debug("aclose() of %r after the flow ended: %s", conn, exc)

    # ------------------------------------------------------------- attributes

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        conn = self._conn
        attributes: dict[Any, Callable[[], Any]] = {
            RendrAttribute.conn: lambda: conn,
            RendrAttribute.flow_id: lambda: conn.flow_id,
        }
        stats = conn.stats()
        active = next((p for p in stats.paths if p.id == stats.active_path), None)
        if active is None:
            return attributes
        local = _parse(active.local_addr)
        remote = _parse(active.remote_addr)
        if local is not None:
            attributes[SocketAttribute.local_address] = lambda: local
            attributes[SocketAttribute.local_port] = lambda: local[1]
            family = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
            attributes[SocketAttribute.family] = lambda: family
        if remote is not None:
            attributes[SocketAttribute.remote_address] = lambda: remote
            attributes[SocketAttribute.remote_port] = lambda: remote[1]
        return attributes


def anyio_stream(conn: Conn) -> ConnByteStream:
    """Wrap ``conn`` as an :class:`anyio.abc.ByteStream` (see :class:`ConnByteStream`).

    The stream owns the connection from then on: closing the stream closes ``conn``.
    """
    return ConnByteStream(conn)
