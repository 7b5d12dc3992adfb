"""What every rendr connection has, whatever it carries: the end of the flow (close,
abort, wait_closed) and the administrative surface (:class:`~rendr.AdminConn`: paths,
migration, events, statistics).  :class:`~rendr.Conn` (a byte stream) and
:class:`~rendr.PacketConn` (datagrams) add their data API to it."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Callable
from typing import TypeVar

from ..core.events import Event, EventKind
from ..core.stats import ConnStats
from ..core.types import Mode, Role, State
from ..core.wire import CloseCode
from ..errors import ConnClosed, ModeSwitchIllegal, RendrError
from ..spec import PathSpec
from .driver import EventCallback, FlowDriver
from .events import EventStream

__all__ = ["Endpoint", "mark_coroutine_methods"]

_E = TypeVar("_E", bound="Endpoint")


def mark_coroutine_methods(cls: type, *names: str) -> None:
    """Mark methods of ``cls`` that return the driver's coroutines without being
    ``async def`` (``Conn.read``...) as coroutine functions: for
    ``inspect.iscoroutinefunction`` (Python 3.12+, ``inspect.markcoroutinefunction``)
    and ``asyncio.iscoroutinefunction`` (every version), so that code which checks
    before awaiting a callback still awaits them."""
    mark = getattr(inspect, "markcoroutinefunction", None)
    asyncio_marker = getattr(asyncio.coroutines, "_is_coroutine", None)
    for name in names:
        func = cls.__dict__[name]
        if mark is not None:
            mark(func)
        if asyncio_marker is not None:
            func._is_coroutine = asyncio_marker


class Endpoint:
    """The shared part of :class:`~rendr.Conn` and :class:`~rendr.PacketConn`."""

    def __init__(self, driver: FlowDriver) -> None:
        self._driver = driver
        self._flow = driver.flow
        self._loop = driver.loop
        self._quic_rebinds = 0

    def _raise_if_unusable(self) -> None:
        if self._driver.local_closed:
            raise ConnClosed("connection is closed")

    async def close(self) -> None:
        """Close gracefully: deliver everything written, then end the flow.

        Waits at most ``linger`` seconds for the peer's acknowledgement.  Idempotent.
        """
        if not self._driver.local_closed:
            self._driver.local_closed = True
            self._flow.close(self._loop.time())
            self._driver.flush()
            self._wake_parked()
        await asyncio.shield(self._driver.closed)
        self._driver.stop()

    def abort(self, code: int = CloseCode.APPLICATION, reason: str = "") -> None:
        """End the flow at once; the peer's read/write raise :class:`~rendr.ConnAborted`."""
        self._driver.local_closed = True
        self._flow.abort(self._loop.time(), code, reason)
        self._driver.flush()
        self._wake_parked()
        self._driver.stop()

    def _wake_parked(self) -> None:
        """A task parked in read/write/recv/send of this connection re-checks it now
        (and raises :class:`~rendr.ConnClosed`), instead of waiting for the flow's end."""
        driver = self._driver
        for waiter in (driver.read_waiter, driver.write_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until the flow has ended (either side closed it, or it failed)."""
        await asyncio.shield(self._driver.closed)

    async def __aenter__(self: _E) -> _E:
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

    async def rebind_path(self, path_id: int, local: str | None = None) -> None:
        """Move the QUIC path ``path_id`` to a new local UDP socket (``local``:
        ``"host:port"`` to bind, else a fresh port of the same family): QUIC connection
        migration with a fresh connection ID, the server validating the new address
        (PATH_CHALLENGE) before it sends there.  The path stays the same rendr path
        (no :meth:`migrate`); counted in ``stats().quic_rebinds``.  Dialer side only.

        Raises:
            RendrError: no such live path, or it is not a QUIC path this end dialed.
            OSError: ``local`` could not be bound.
        """
        self._raise_if_unusable()
        carrier = self._driver.carriers.get(path_id)
        if carrier is None:
            raise RendrError(f"no live path {path_id}")
        rebind = getattr(carrier, "rebind", None)
        if rebind is None:
            raise RendrError(f"path {path_id} ({carrier.transport}) cannot rebind: only "
                             "QUIC paths can, on the dialer's side")
        try:
            await rebind(local)
        except RuntimeError as exc:
            raise RendrError(f"path {path_id}: {exc}") from exc
        self._quic_rebinds += 1
        path = self._flow.find_path(path_id)
        if path is not None:  # statistics show the new socket
            path.local_addr = carrier.local_addr

    async def set_mode(self, mode: Mode) -> None:
        """Switch the flow's mode live, in both directions: prime <-> race and prime
        <-> bond.  Returns once the peer agreed and this end sends by ``mode``
        (nothing is lost or duplicated on the way: receiving is the same in every
        mode).  A no-op when already in ``mode``.

        Raises:
            ModeSwitchIllegal: race <-> bond (go through prime), another switch is
                still in progress, or the peer refused (its own switch crossed ours).
            ConnClosed: the connection is closed, or the flow ended meanwhile.
        """
        self._raise_if_unusable()
        flow = self._flow
        if not isinstance(mode, Mode):
            mode = Mode(mode)
        if mode is flow.mode and flow.modes.pending is None:
            return
        wake: list[asyncio.Future[None]] = []

        def on_event(event: Event) -> None:
            if event.kind in (EventKind.MODE_CHANGE, EventKind.CLOSED):
                for fut in wake:
                    if not fut.done():
                        fut.set_result(None)

        self._driver.callbacks.append(on_event)
        try:
            flow.set_mode(mode, self._loop.time())
            self._driver.flush()
            while flow.modes.pending is not None and flow.state is not State.CLOSED:
                fut = self._loop.create_future()
                wake[:] = [fut]
                await fut
        finally:
            self._driver.callbacks.remove(on_event)
        if flow.state is State.CLOSED:
            raise ConnClosed(f"the flow ended during the switch to {mode}")
        if flow.modes.refused:
            raise ModeSwitchIllegal(flow.modes.refused)

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
        stats = self._flow.stats(self._loop.time())
        if self._quic_rebinds:
            stats = dataclasses.replace(stats, quic_rebinds=self._quic_rebinds)
        return stats

    def __repr__(self) -> str:
        return (f"<rendr.Conn {self._flow.role.value} flow={self.flow_id.hex()[:8]} "
                f"state={self.state} active={self.active_path}>")

