"""The asyncio driver of one :class:`Flow`: carriers in, one flush out, one timer.

The driver only moves bytes, time and events: carrier bytes go into the engine,
then one :meth:`FlowDriver.flush` writes what the engine wants written (one
``writelines`` per path), closes the carriers it wants closed, dispatches
events, wakes waiting readers and writers, and re-arms the single timer at
``flow.get_timer()``.  Every protocol decision lives in the engine.

Whoever opened the flow's paths (a dialer session, or the listener) is its
:class:`PathOwner`: told every event, asked to open or forget paths.  The
application's :class:`~rendr.aio.conn.Conn` sits on top of a driver and takes one
step of the driver per read or write (:meth:`FlowDriver.read`,
:meth:`FlowDriver.write_step`).

This module is the per-message path between the carriers, the engine and the
application: a compiled build compiles it with mypyc together with the engine
(``rendr._native.DRIVER_MODULES``), so its calls into the engine are native calls.
``Conn.read``, ``readexactly`` and ``write`` return this module's coroutines
(:meth:`FlowDriver.read_some`, :meth:`~FlowDriver.read_exactly`,
:meth:`~FlowDriver.write_all`): a message costs no interpreted frame.
Hence exact annotations (a carrier hands ``bytes`` or a ``memoryview``), no class
here that applications subclass, and the structural interfaces in
:mod:`rendr.aio.owner`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from ..carriers.base import READ_BATCH, Buffer, Carrier
from ..core.bufpool import _retired as _retired_buffers
from ..core.bufpool import trim as trim_buffers
from ..core.events import Event, EventKind
from ..core.flow import Flow
from ..core.types import Cause, State
from ..core.wire import Kind
from ..errors import ConnClosed
from .owner import HandshakeHandoff, PathOwner

__all__ = ["EventCallback", "FlowDriver", "HandshakeHandoff", "PathOwner", "classify"]

logger = logging.getLogger("rendr.conn")

EventCallback = Callable[[Event], object]

_TIMER_RESOLUTION: Final = 0.001  # event loops' timer granularity (uvloop: 1 ms)
_CLOSED: Final = State.CLOSED
_SMALL_WRITE: Final = 64 * 1024  # bytes objects up to this size are queued as they are
_PACKET_OVERHEAD: Final = 12  # a DGRAM frame's header and packet number
_FLUSH_MAX: Final = 16 * 1024  # on stream paths: flush at least every 16 KiB of packets


def loop_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop.time``, or what it calls when that is asyncio's own (``time.monotonic``:
    the same clock without an interpreted call per reading)."""
    clock = loop.time
    if getattr(clock, "__func__", None) is asyncio.BaseEventLoop.time:
        return time.monotonic
    return clock


def classify(exc: BaseException | None) -> Cause:
    """Map a carrier's end to a path-death cause (never to an application EOF)."""
    if exc is None:
        return Cause.EOF
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return Cause.TIMEOUT
    return Cause.RESET


class _PathSink:
    """Routes one carrier's reports into the engine."""

    __slots__ = ("_driver", "_flow", "_pid", "_time")

    def __init__(self, driver: FlowDriver, path_id: int) -> None:
        self._driver = driver
        self._flow = driver.flow
        self._time = driver.time
        self._pid = path_id

    def carrier_data(self, data: Buffer) -> None:
        if self._flow.receive(self._pid, data, self._time()):
            # a datagram carrier's batch: flush at its end (depth 0: no batch is open)
            if not READ_BATCH.depth or not READ_BATCH.defer(self._driver.flush):
                self._driver.flush()
        else:  # only stream data arrived: wake the reader, nothing else changed
            waiter = self._driver.read_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def carrier_authentic(self) -> int:
        """How many receives on this path passed authentication so far (a datagram
        carrier compares it around a delivery: did that datagram come from the peer?)."""
        path = self._flow.find_path(self._pid)
        return 0 if path is None else path.authentic

    def carrier_lost(self, exc: BaseException | None) -> None:
        carrier = self._driver.carriers.pop(self._pid, None)
        if carrier is not None:
            # the carrier may still be open (it failed at handoff: too many bytes
            # before its answer; or only its read side ended): nothing would close
            # it once it leaves the driver
            if exc is None:
                carrier.close()
            else:
                carrier.abort()
        self._flow.path_failed(self._pid, classify(exc), self._time(),
                               "" if exc is None else repr(exc))
        self._driver.flush()

    def carrier_pause(self) -> None:
        self._flow.set_path_blocked(self._pid, True)

    def carrier_resume(self) -> None:
        self._flow.set_path_blocked(self._pid, False)
        self._driver.flush()


class FlowDriver:
    """Drives one engine on an asyncio loop (see the module docstring).

    Attributes:
        flow: the engine.
        carriers: the carrier of each attached path, by path id.
        closed: resolved when the flow ends.
    """

    def __init__(self, flow: Flow, loop: asyncio.AbstractEventLoop, owner: PathOwner) -> None:
        self.flow = flow
        self.loop = loop
        self.time = loop_clock(loop)
        """The loop's clock (``loop.time()``)."""
        self.owner = owner
        self.carriers: dict[int, Carrier] = {}
        self.local_closed = False
        """Set by the connection's ``close()``/``abort()``: reads and writes raise
        :class:`~rendr.ConnClosed` from then on."""
        self.read_waiter: asyncio.Future[None] | None = None
        self.write_waiter: asyncio.Future[None] | None = None
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.callbacks: list[EventCallback] = []
        self.closed: asyncio.Future[None] = loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None  # the engine's deadline
        self._timer_fire = 0.0  # when the armed loop timer fires (<= _timer_at)
        self._flushing = False
        self._again = False
        self._soon: asyncio.Handle | None = None
        self._in_burst = False  # packets were queued in this loop iteration
        self._batched = 0  # packet bytes queued since the last flush
        self._flush_at = 0  # ... and how many bring the next one

    def attach(self, path_id: int, carrier: Carrier, handshake: HandshakeHandoff) -> None:
        """Make a carrier whose handshake completed path ``path_id`` of the flow."""
        carrier.prepare(packets=self.flow.kind is Kind.PACKET)
        self.flow.add_path(path_id, now=self.time(), transport=carrier.transport,
                           local_addr=carrier.local_addr, remote_addr=carrier.remote_addr,
                           rtt=handshake.rtt, mtu=carrier.mtu)
        self.carriers[path_id] = carrier
        handshake.handoff(carrier, _PathSink(self, path_id))
        self.flush()

    def flush(self) -> None:
        """Write, close, dispatch and re-arm: what the engine wants after any input."""
        if self._flushing:
            self._again = True
            return
        self._flushing = True
        flow = self.flow
        try:
            while True:
                self._again = False
                now = self.time()
                carriers = self.carriers
                for pid, buffers in flow.transmits(now):
                    carrier = carriers.get(pid)
                    if carrier is not None:
                        carrier.write(buffers)
                for pid, abort in flow.closes():
                    carrier = carriers.pop(pid, None)
                    if carrier is not None:
                        if abort:
                            carrier.abort()
                        else:
                            carrier.close()
                events = flow.events()
                if events:
                    self._dispatch(events)
                if not self._again:
                    break
        finally:
            self._flushing = False
        self.wake()
        self._arm_timer(flow.get_timer())
        if self._soon is None and flow.wants_transmit():
            self._soon = self.loop.call_soon(self._flush_soon)

    def _arm_timer(self, at: float | None) -> None:
        """Make the loop call :meth:`_on_timer` by ``at`` (the engine's next deadline).

        A deadline that moved *later* keeps the loop timer already armed: it fires
        early, finds nothing due and re-arms for the new deadline.  Deadlines move
        later on nearly every receive (the next PING, the path's liveness), and
        re-arming each time costs a timer handle, a heap push and a cancelled entry in
        the loop's heap per read; an early wake-up costs one callback per deadline.
        """
        if at == self._timer_at:
            return
        self._timer_at = at
        timer = self._timer
        if at is None:
            if timer is not None:
                timer.cancel()
                self._timer = None
            return
        if timer is not None:
            if at >= self._timer_fire:
                return  # fires early, then re-arms (see above)
            timer.cancel()
        fire = at
        now = self.time()
        if now < at < now + _TIMER_RESOLUTION:
            # uvloop's clock and timers tick in milliseconds: a deadline less than a
            # tick away would fire "early" again and again (the loop's time stands
            # still within the tick) until the tick passes
            fire = now + _TIMER_RESOLUTION
        self._timer = self.loop.call_at(fire, self._on_timer)
        self._timer_fire = fire

    def _flush_soon(self) -> None:
        self._soon = None
        self.flush()

    def _on_timer(self) -> None:
        self._timer = None
        at = self._timer_at
        self._timer_at = None
        if at is not None and at > self._timer_fire:
            self._arm_timer(at)  # armed for an earlier deadline that moved later
            return
        self.flow.handle_timer(self.time())
        self.flush()

    def wake(self) -> None:
        """Wake the reader, writer and drainers whose condition now holds."""
        flow = self.flow
        w = self.read_waiter
        if w is not None and not w.done() and flow.readable:
            w.set_result(None)
        w = self.write_waiter
        if w is not None and not w.done() and (flow.send_space > 0 or flow.state is _CLOSED):
            w.set_result(None)
        if self.drain_waiters and (flow.flushed or flow.state is _CLOSED):
            for w in self.drain_waiters:
                if not w.done():
                    w.set_result(None)
            self.drain_waiters.clear()

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            self.owner.on_event(event)
            for callback in list(self.callbacks):
                try:
                    callback(event)
                except Exception:
                    logger.exception("rendr event callback %r failed", callback)
            if event.kind is EventKind.CLOSED:
                self._on_flow_closed()

    def _on_flow_closed(self) -> None:
        for carrier in self.carriers.values():
            carrier.close()
        self.carriers.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    # ------------------------------------------------- the steps of Conn's read/write

    def read(self, n: int) -> bytes | None:
        """One step of ``Conn.read``: up to ``n`` (> 0) bytes, ``b""`` at the peer's clean
        EOF, None when nothing is there yet (then :meth:`wait_readable`).  Raises the
        flow's error once no data is left."""
        data = self.flow.read(n)
        if data is not None:
            self._after_read()
        return data

    def _after_read(self) -> None:
        """After the application took data: send a window update if one is due, and let
        retired receive buffers the read freed go."""
        if self.flow.ack_due:
            self.flush()
        if _retired_buffers:
            trim_buffers()

    def read_view(self, n: int) -> memoryview | None:
        """One step of ``Conn.read_view``: like :meth:`read`, a view instead of bytes
        (empty at the peer's clean EOF)."""
        view = self.flow.read_view(n)
        if view is not None:
            self._after_read()
        return view

    def readinto(self, dest: memoryview) -> int | None:
        """One step of ``Conn.readinto`` (``dest``: a writable, non-empty byte view):
        how many bytes were copied, 0 at the peer's clean EOF, None when nothing is
        there yet.  Raises like :meth:`read`."""
        n = self.flow.readinto(dest)
        if n is not None:
            self._after_read()
        return n

    def write_step(self, view: Buffer, sent: int) -> int:
        """One step of ``Conn.write``: queue what fits of ``view[sent:]`` and flush;
        returns how much of ``view`` is queued now (less than all of it: wait for
        :meth:`wait_writable`, then step again).

        Raises:
            RendrError: the flow failed (its error), ConnClosed: it ended or
                ``write_eof()`` was called.
        """
        flow = self.flow
        if flow.state is _CLOSED:
            raise flow.error or ConnClosed("connection closed by peer")
        if flow.eof_sent:
            raise ConnClosed("write after write_eof()")
        if sent < len(view):
            sent += flow.send(view[sent:] if sent else view, self.time())
            self.flush()
        return sent

    # ------------------------------------------ Conn's read and write, compiled coroutines

    async def read_some(self, n: int) -> bytes:
        """``Conn.read(n)`` for ``n > 0`` (the whole coroutine here, so that a compiled
        build runs it natively; see :class:`~rendr.aio.conn.Conn` for the contract)."""
        while True:
            if self.local_closed:
                raise ConnClosed("connection is closed")
            data = self.read(n)
            if data is not None:
                return data
            await self.wait_readable()

    async def read_exactly(self, n: int) -> bytes:
        """``Conn.readexactly(n)``."""
        parts: list[bytes] = []
        got = 0
        while got < n:
            if self.local_closed:
                raise ConnClosed("connection is closed")
            chunk = self.read(n - got)
            if chunk is None:
                await self.wait_readable()
                continue
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(parts), n)
            parts.append(chunk)
            got += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def write_all(self, data: bytes | bytearray | memoryview) -> None:
        """``Conn.write(data)``: queue all of ``data``, waiting for room as needed."""
        if self.local_closed:
            raise ConnClosed("connection is closed")
        view: Buffer
        if type(data) is bytes and len(data) <= _SMALL_WRITE:
            view = data  # a partial take slices at most this much
        else:
            # not copied here: the engine copies what it takes of a mutable buffer
            mv = memoryview(data)
            if mv.ndim != 1 or mv.itemsize != 1:
                mv = mv.cast("B")
            view = mv
        total = len(view)
        sent = 0
        while True:
            # raises if the flow ended; else queues what fits and flushes
            sent = self.write_step(view, sent)
            if sent >= total:
                return
            await self.wait_writable()
            if self.local_closed:
                raise ConnClosed("connection is closed")

    # ------------------------------------------- PacketConn's send and recv, compiled

    async def recv_packet(self) -> bytes:
        """``PacketConn.recv()`` (see there for the contract)."""
        flow = self.flow
        while True:
            if self.local_closed:
                raise ConnClosed("connection is closed")
            data = flow.recv_packet()
            if data is not None:
                return data
            await self.wait_readable()

    async def send_packet(self, data: bytes | bytearray | memoryview) -> None:
        """``PacketConn.send(data)``: one packet, waiting while the queue is full."""
        if self.local_closed:
            raise ConnClosed("connection is closed")
        payload = data if type(data) is bytes else bytes(data)
        while not self.try_send_packet(payload):
            self.flush()
            await self.wait_writable()
            if self.local_closed:
                raise ConnClosed("connection is closed")

    def try_send_packet(self, payload: bytes) -> bool:
        """Queue one packet if there is room now (then flush as a burst goes); False
        when the queue is full.  Raises the flow's error once it ended."""
        flow = self.flow
        if flow.state is _CLOSED:
            raise flow.error or ConnClosed("connection closed by peer")
        if not flow.send_packet(payload, self.time()):
            return False
        self._packet_queued(len(payload))
        return True

    def _packet_queued(self, size: int) -> None:
        """A packet of ``size`` bytes was queued: flush as a burst goes.  The first
        packet of a burst goes at once (a lone packet, an echo, waits for nothing); the
        next ones share datagrams: they go once a datagram's worth is queued, then two
        more, four more... and at the end of the loop iteration (the first of a long
        burst does not wait for the last; a long burst costs few flushes)."""
        if not self._in_burst:
            self._in_burst = True
            self._batched = 0
            self._flush_at = min(self.flow.max_payload, _FLUSH_MAX)
            self.flush()
            self.loop.call_soon(self._end_packet_burst)
            return
        self._batched += size + _PACKET_OVERHEAD
        if self._batched >= self._flush_at:
            self._batched = 0
            self._flush_at *= 2
            self.flush()

    def _end_packet_burst(self) -> None:
        self._in_burst = False
        if self._batched:  # what the burst queued since its last flush
            self._batched = 0
            self.flush()

    async def wait_readable(self) -> None:
        """Wait until the flow is readable (the caller found nothing to read)."""
        waiter = self.read_waiter
        if waiter is not None and not waiter.done():
            raise RuntimeError("read() called while another task is already reading")
        fut = self.read_waiter = self.loop.create_future()
        try:
            await fut
        finally:
            self.read_waiter = None

    async def wait_writable(self) -> None:
        """Wait until the send buffer has room (or the flow ended)."""
        waiter = self.write_waiter
        if waiter is not None and not waiter.done():
            raise RuntimeError("write() called while another task is already writing")
        fut = self.write_waiter = self.loop.create_future()
        self.wake()
        try:
            await fut
        finally:
            self.write_waiter = None

    async def wait_flushed(self) -> None:
        """Wait until everything written was acknowledged (or the flow ended)."""
        flow = self.flow
        while not flow.flushed and flow.state is not State.CLOSED:
            fut: asyncio.Future[None] = self.loop.create_future()
            self.drain_waiters.append(fut)
            await fut

    def stop(self) -> None:
        """The connection is done with the driver: cancel its timer and callbacks."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        self.owner.stop()
