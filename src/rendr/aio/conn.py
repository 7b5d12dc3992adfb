"""``Conn``: the application's stable connection, a byte-stream API over a :class:`Flow`.

A ``Conn`` turns the engine's calls into awaitable reads and writes; its
:class:`~rendr.aio.driver.FlowDriver` moves carrier bytes, time and events in and
out of the engine.  Every protocol decision lives in the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..carriers.base import Buffer
from ..core.bufpool import trim as trim_buffers
from ..core.stats import ConnStats
from ..core.types import Mode, Role, State
from ..core.wire import CloseCode
from ..errors import ConnClosed, ModeSwitchIllegal, ModeUnavailable
from ..spec import PathSpec
from .driver import EventCallback, FlowDriver
from .events import EventStream

__all__ = ["Conn"]

_SMALL_WRITE = 64 * 1024  # bytes objects up to this size are queued as they are


class Conn:
    """One stable rendr connection (returned by ``Dialer.dial()`` and ``Listener.accept()``).

    Reads and writes survive path changes: a path's death is handled inside rendr and
    never raised here.  Only the flow's end is: ``read()`` returns ``b""`` after the
    peer's clean close, and ``read``/``write`` raise :class:`~rendr.MigrationBudgetExceeded`,
    :class:`~rendr.ZombieFlow` or :class:`~rendr.ConnAborted` when the flow failed, and
    :class:`~rendr.ConnClosed` after ``close()``.

    This class also implements :class:`~rendr.AdminConn`.  Not safe for concurrent
    ``read()`` calls from several tasks (nor concurrent ``write()`` calls).
    """

    def __init__(self, driver: FlowDriver) -> None:
        self._driver = driver
        self._flow = driver.flow
        self._loop = driver.loop
        self._local_closed = False

    def _raise_if_unusable(self) -> None:
        if self._local_closed:
            raise ConnClosed("connection is closed")

    # -------------------------------------------------------- stream API

    async def read(self, n: int = 65536) -> bytes:
        """Read up to ``n`` bytes (at least one).

        Returns ``b""`` only after the peer's clean close (or write_eof) and all its data.
        ``n == -1`` reads everything until EOF.  Cancelling a read loses no data.

        Raises:
            ConnClosed: used after ``close()``.
            MigrationBudgetExceeded, ZombieFlow, ConnAborted: the flow failed (data that
                arrived before the failure is returned first).
        """
        if n == -1:
            parts = []
            while chunk := await self.read(1 << 20):
                parts.append(chunk)
            return b"".join(parts)
        if n <= 0:
            return b""
        flow = self._flow
        while True:
            if self._local_closed:
                raise ConnClosed("connection is closed")
            data = flow.read(n)
            if data is not None:
                if flow.ack_due:
                    self._driver.flush()  # a window update
                trim_buffers()  # the read may have freed retired receive buffers
                return data
            await self._driver.wait_readable()

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
        flow = self._flow
        while True:
            if self._local_closed:
                raise ConnClosed("connection is closed")
            n = flow.readinto(dest)
            if n is not None:
                if flow.ack_due:
                    self._driver.flush()  # a window update
                trim_buffers()  # the read may have freed retired receive buffers
                return n
            await self._driver.wait_readable()

    async def readexactly(self, n: int) -> bytes:
        """Read exactly ``n`` bytes.

        Raises:
            asyncio.IncompleteReadError: the peer closed cleanly before ``n`` bytes came.
        """
        parts: list[bytes] = []
        got = 0
        while got < n:
            chunk = await self.read(n - got)
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(parts), n)
            parts.append(chunk)
            got += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``; return once all of it is in the send buffer.

        Waits while the send buffer is full (backpressure).  Data is never dropped:
        it stays buffered until the peer acknowledges it, across path changes.
        Cancelling a write may leave a prefix of ``data`` queued.

        Raises:
            ConnClosed: after ``close()``/``write_eof()`` or the peer's close.
            MigrationBudgetExceeded, ZombieFlow, ConnAborted: the flow failed.
        """
        if self._local_closed:
            raise ConnClosed("connection is closed")
        flow = self._flow
        view: Buffer
        if type(data) is bytes and len(data) <= _SMALL_WRITE:
            view = data  # a partial take slices at most this much
        else:
            # not copied here: the engine copies what it takes of a mutable buffer
            view = memoryview(data)
            if view.ndim != 1 or view.itemsize != 1:
                view = view.cast("B")
        total = len(view)
        sent = 0
        while True:
            if flow.state is State.CLOSED:
                raise flow.error or ConnClosed("connection closed by peer")
            if flow.eof_sent:
                raise ConnClosed("write after write_eof()")
            if sent < total:
                sent += flow.send(view[sent:] if sent else view, self._loop.time())
                self._driver.flush()
            if sent >= total:
                return
            await self._driver.wait_writable()
            self._raise_if_unusable()

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

    async def close(self) -> None:
        """Close gracefully: deliver everything written, then end the flow.

        Waits at most ``linger`` seconds for the peer's acknowledgement.  Idempotent.
        """
        if not self._local_closed:
            self._local_closed = True
            self._flow.close(self._loop.time())
            self._driver.flush()
        await asyncio.shield(self._driver.closed)
        self._driver.stop()

    def abort(self, code: int = CloseCode.APPLICATION, reason: str = "") -> None:
        """End the flow at once; the peer's read/write raise :class:`~rendr.ConnAborted`."""
        self._local_closed = True
        self._flow.abort(self._loop.time(), code, reason)
        self._driver.flush()
        self._driver.stop()

    async def wait_closed(self) -> None:
        """Wait until the flow has ended (either side closed it, or it failed)."""
        await asyncio.shield(self._driver.closed)

    async def __aenter__(self) -> Conn:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def flow_id(self) -> bytes:
        """16 bytes naming the connection, constant for its life, equal on both ends."""
        return self._flow.flow_id

    @property
    def is_closed(self) -> bool:
        """Whether the flow has ended."""
        return self._flow.state is State.CLOSED

    def on_event(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(event)`` for every :class:`~rendr.Event`; returns an unsubscribe."""
        callbacks = self._driver.callbacks
        callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in callbacks:
                callbacks.remove(callback)

        return unsubscribe

    def events(self, maxlen: int = 1024) -> EventStream:
        """Every :class:`~rendr.Event` from now on, as an async iterator that ends after
        the CLOSED event (or at once if the flow already ended)::

            async for event in conn.events():
                if event.kind is rendr.EventKind.MIGRATION: ...

        At most ``maxlen`` events wait unread (older ones are dropped and counted in
        the stream's ``dropped``); ``aclose()`` stops it early.
        """
        return EventStream(self.on_event, self.is_closed, maxlen)

    # -------------------------------------------------------- AdminConn

    async def migrate(self, path_id: int) -> None:
        """Make ``path_id`` the active path for both directions (dialer side only).

        The old path delivers what it already carries; nothing is sent twice.
        """
        self._raise_if_unusable()
        self._flow.migrate(path_id, self._loop.time())
        self._driver.flush()

    @property
    def active_path(self) -> int:
        """Id of the active path (-1 while there is none)."""
        return -1 if self._flow.active is None else self._flow.active

    async def add_path(self, spec: PathSpec) -> int:
        """Dial another path and attach it to this flow; return its id (dialer side only).

        rendr re-dials it on its own if it dies later, until it is removed.

        Raises:
            RendrError: on the listener side, or if the flow is closed.
            HandshakeError, OSError: the path could not be opened.
        """
        self._raise_if_unusable()
        return await self._driver.owner.add_path(spec)

    async def remove_path(self, path_id: int) -> None:
        """Retire a path cleanly (migrating away first if it is active).

        Raises:
            LastPathError: it is the only live path.
        """
        self._raise_if_unusable()
        self._flow.remove_path(path_id, self._loop.time())
        self._driver.owner.forget(path_id)
        self._driver.flush()

    async def set_mode(self, mode: Mode) -> None:
        """Switch the flow's mode live (RACE and BOND are not available yet)."""
        if mode is self._flow.mode:
            return
        if mode in (Mode.RACE, Mode.BOND):
            raise ModeUnavailable(f"mode {mode} is not available yet")
        raise ModeSwitchIllegal(f"cannot switch from {self._flow.mode} to {mode}")

    @property
    def state(self) -> State:
        """The flow's :class:`~rendr.State`."""
        return self._flow.state

    @property
    def mode(self) -> Mode:
        """The flow's :class:`~rendr.Mode`."""
        return self._flow.mode

    @property
    def role(self) -> Role:
        """DIALER or LISTENER."""
        return self._flow.role

    @property
    def recv_queue_hwm(self) -> int:
        """The most bytes ever held in the reorder buffer."""
        return self._flow.recv_queue_hwm

    @property
    def recv_dups(self) -> int:
        """Received pieces that carried bytes already received (re-sends after a death)."""
        return self._flow.recv_dups

    @property
    def bond_stuck_skips(self) -> int:
        """Bond-mode stuck-path skips (0 until bond mode exists)."""
        return 0

    @property
    def migration_count(self) -> int:
        """Active-path changes after the first (explicit, death-driven or peer-driven)."""
        return self._flow.migration_count

    def stats(self) -> ConnStats:
        """A snapshot of the connection's counters."""
        return self._flow.stats(self._loop.time())

    def __repr__(self) -> str:
        return (f"<rendr.Conn {self._flow.role.value} flow={self.flow_id.hex()[:8]} "
                f"state={self.state} active={self.active_path}>")
