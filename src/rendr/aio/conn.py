"""``Conn``: the application's stable connection, a byte-stream API over a :class:`Flow`.

A ``Conn`` turns the engine's calls into awaitable reads and writes; its
:class:`~rendr.aio.driver.FlowDriver` moves carrier bytes, time and events in and
out of the engine.  Every protocol decision lives in the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .endpoint import Endpoint, mark_coroutine_methods

__all__ = ["Conn"]

_A = TypeVar("_A")
_R = TypeVar("_R")


class Conn(Endpoint):
    """One stable rendr connection (returned by ``Dialer.dial()`` and ``Listener.accept()``).

    Reads and writes survive path changes: a path's death is handled inside rendr and
    never raised here.  Only the flow's end is: ``read()`` returns ``b""`` after the
    peer's clean close, and ``read``/``write`` raise :class:`~rendr.MigrationBudgetExceeded`,
    :class:`~rendr.ZombieFlow` or :class:`~rendr.ConnAborted` when the flow failed, and
    :class:`~rendr.ConnClosed` after ``close()``.

    This class also implements :class:`~rendr.AdminConn`.  Not safe for concurrent
    ``read()`` calls from several tasks (nor concurrent ``write()`` calls).
    """

    # -------------------------------------------------------- stream API

    def read(self, n: int = 65536) -> Coroutine[Any, Any, bytes]:
        """Read up to ``n`` bytes (at least one); a coroutine: ``await conn.read()``.

        Returns ``b""`` only after the peer's clean close (or write_eof) and all its data.
        ``n == -1`` reads everything until EOF.  Cancelling a read loses no data.

        Raises:
            ConnClosed: used after ``close()``.
            MigrationBudgetExceeded, ZombieFlow, ConnAborted: the flow failed (data that
                arrived before the failure is returned first).
        """
        # read, readexactly and write return the driver's coroutines (compiled with the
        # engine in a compiled build): no interpreted frame per message
        if n > 0:
            return self._driver.read_some(n)
        return self._read_all() if n == -1 else self._read_nothing()

    async def _read_all(self) -> bytes:
        parts = []
        while chunk := await self.read(1 << 20):
            parts.append(chunk)
        return b"".join(parts)

    async def _read_nothing(self) -> bytes:
        return b""

    async def readinto(self, buffer: bytearray | memoryview) -> int:
        """Read into ``buffer`` (any writable bytes-like object); return how many bytes.

        Waits until at least one byte is there; returns ``0`` only after the peer's
        clean close (or ``write_eof``) and all its data, or for an empty ``buffer``.
        Each byte is copied once, from the carrier's receive buffer into ``buffer``,
        with no allocation: the fastest way to consume a bulk stream.  Cancelling a
        readinto loses no data.

        Raises:
            ConnClosed: used after ``close()``.
            MigrationBudgetExceeded, ZombieFlow, ConnAborted: the flow failed (data that
                arrived before the failure is returned first).
        """
        dest = memoryview(buffer)
        if dest.readonly:
            raise TypeError("readinto() needs a writable buffer")
        if dest.ndim != 1 or dest.itemsize != 1:
            dest = dest.cast("B")
        if not len(dest):
            return 0
        return await self._read_with(self._driver.readinto, dest)

    async def read_view(self, n: int = 65536) -> memoryview:
        """Read up to ``n`` bytes (at least one) without copying them.

        Returns a read-only ``memoryview`` of rendr's own receive memory (for a large
        transfer, a view of the buffer the socket was read into); an empty view only
        after the peer's clean close (or write_eof) and all its data.  The view is yours
        for as long as you keep it: rendr never writes over memory that something
        still refers to (it checks reference counts), so there is no lifetime rule to
        get wrong, only a cost: a view you hold keeps its whole receive buffer (up to
        1 MiB) allocated, and rendr reads into fresh memory meanwhile.  Drop views (or
        call ``release()``) once used.  Cancelling a read_view loses no data.

        Raises:
            ConnClosed: used after ``close()``.
            MigrationBudgetExceeded, ZombieFlow, ConnAborted: the flow failed (data that
                arrived before the failure is returned first).
        """
        if n <= 0:
            return memoryview(b"")
        return await self._read_with(self._driver.read_view, n)

    async def _read_with(self, step: Callable[[_A], _R | None], arg: _A) -> _R:
        """Run a driver read step (it flushes a window update and lets freed buffers go)
        until it returns something, waiting for data in between."""
        while True:
            self._raise_if_unusable()
            got = step(arg)
            if got is not None:
                return got
            await self._driver.wait_readable()

    def readexactly(self, n: int) -> Coroutine[Any, Any, bytes]:
        """Read exactly ``n`` bytes; a coroutine: ``await conn.readexactly(n)``.

        Raises:
            asyncio.IncompleteReadError: the peer closed cleanly before ``n`` bytes came.
            ConnClosed, MigrationBudgetExceeded, ZombieFlow, ConnAborted: as :meth:`read`.
        """
        return self._driver.read_exactly(n)

    def write(self, data: bytes | bytearray | memoryview) -> Coroutine[Any, Any, None]:
        """Queue ``data``; the coroutine returns once all of it is in the send buffer
        (``await conn.write(data)``).

        Waits while the send buffer is full (backpressure).  Data is never dropped:
        it stays buffered until the peer acknowledges it, across path changes.
        Cancelling a write may leave a prefix of ``data`` queued.

        Raises:
            ConnClosed: after ``close()``/``write_eof()`` or the peer's close.
            MigrationBudgetExceeded, ZombieFlow, ConnAborted: the flow failed.
        """
        return self._driver.write_all(data)

    async def write_eof(self) -> None:
        """Half-close: the peer reads ``b""`` after everything written; reading goes on."""
        self._raise_if_unusable()
        self._flow.send_eof(self._loop.time())
        self._driver.flush()

    async def drain(self) -> None:
        """Wait until the peer has acknowledged everything written so far.

        Returns early if the flow ends; raises like ``write()`` if it failed.
        """
        self._raise_if_unusable()
        await self._driver.wait_flushed()
        if self._flow.error is not None:
            raise self._flow.error


mark_coroutine_methods(Conn, "read", "readexactly", "write")
