"""The moving parts of :class:`~rendr.testing.relay.TcpRelay`: one relayed connection
(:class:`Pipe`: a client-facing and an upstream-facing socket) and the forwarding
state of each of its directions (delay queue, token bucket, blackhole, EOF order)."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import struct
from collections import deque
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from .relay import TcpRelay

__all__ = ["Pipe"]

log = logging.getLogger("rendr.testing.relay")

_BURST_SECONDS = 0.02
_WRITE_HIGH_WATER = 512 * 1024
_LINGER_RST = struct.pack("ii", 1, 0)


def _set_linger_rst(transport: asyncio.BaseTransport) -> None:
    """Make closing *transport*'s socket send an RST instead of a FIN."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    except OSError as exc:  # socket already dead: nothing to reset
        log.debug("SO_LINGER failed: %r", exc)


class _Side(asyncio.Protocol):
    """One socket of a relayed connection (client-facing or upstream-facing)."""

    def __init__(self, pipe: Pipe, name: str) -> None:
        self.pipe = pipe
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.eof = False
        self.lost = False
        self.write_paused = False
        # Set by Pipe once both sides exist.
        self.outgoing: _Direction
        self.incoming: _Direction

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; duck-type it.
        t = cast(asyncio.Transport, transport)
        self.transport = t
        t.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        self.pipe.side_made(self)
        # uvloop starts reading *after* connection_made returns, overriding a
        # pause_reading() issued inside it: re-apply the wanted state once more.
        self.pipe.relay._loop().call_soon(self.outgoing.update_reading)

    def data_received(self, data: bytes) -> None:
        self.outgoing.feed(data)

    def eof_received(self) -> bool:
        self.eof = True
        self.outgoing.feed_eof()
        self.pipe.maybe_finish_graceful()
        return True  # keep the transport half-open

    def pause_writing(self) -> None:
        self.write_paused = True
        self.incoming.update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.incoming.pump()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pipe.side_lost(self, exc)

    # -- helpers ------------------------------------------------------------
    @property
    def open(self) -> bool:
        """Transport exists and ``connection_lost`` has not been called yet."""
        return self.transport is not None and not self.lost

    @property
    def usable(self) -> bool:
        """Transport is open and can still be written to."""
        t = self.transport
        return t is not None and not self.lost and not t.is_closing()

    def set_reading(self, on: bool) -> None:
        t = self.transport
        if t is None or self.lost or self.eof or t.is_closing() or on == t.is_reading():
            return
        if on:
            t.resume_reading()
        else:
            t.pause_reading()


class _Direction:
    """Forwarding state for one direction (``src`` -> ``dst``) of a pipe."""

    def __init__(self, pipe: Pipe, src: _Side, dst: _Side) -> None:
        self.pipe = pipe
        self.relay = pipe.relay
        self.src = src
        self.dst = dst
        # (deliver_at, chunk); chunk None is the EOF marker.
        self.queue: deque[tuple[float, bytes | None]] = deque()
        self.queued = 0
        self.over_high = False
        self.eof_sent = False
        self.eof_queued = False  # no data after the EOF marker: what follows is discarded
        self.timer: asyncio.TimerHandle | None = None
        self.timer_when = math.inf
        self.tokens = 0.0
        self.refilled = 0.0
        self.pumping = False
        self.reset_bucket()

    def reset_bucket(self) -> None:
        rate = self.relay._rate
        self.tokens = self._capacity(rate) if rate is not None else 0.0
        self.refilled = self.relay._loop_time()

    @staticmethod
    def _capacity(rate: float) -> float:
        return max(rate * _BURST_SECONDS, 1.0)

    def _fast_path_ok(self) -> bool:
        r = self.relay
        return (
            not self.queue
            and r._delay == 0.0
            and r._rate is None
            and not r._blackholed
            and not self.dst.write_paused
            and self.dst.usable
        )

    def feed(self, data: bytes) -> None:
        if self.pipe.closing or self.eof_queued:
            return
        if self._fast_path_ok():
            assert self.dst.transport is not None
            self.dst.transport.write(data)
            return
        self.queue.append((self.relay._loop_time() + self.relay._delay, data))
        self.queued += len(data)
        if self.queued > self.relay._max_buffer:
            self.over_high = True
            self.update_reading()
        self.pump()

    def feed_eof(self) -> None:
        """The source's EOF, or a FIN fault: EOF toward ``dst`` after what is queued."""
        if self.pipe.closing or self.eof_queued:
            return
        self.eof_queued = True
        self.queue.append((self.relay._loop_time() + self.relay._delay, None))
        self.pump()

    def update_reading(self) -> None:
        relay, pipe = self.relay, self.pipe
        if self.eof_queued:  # after a FIN toward dst: read and discard (unless blackholed)
            self.src.set_reading(not (relay._blackholed or pipe.closing))
            return
        self.src.set_reading(
            not (
                relay._blackholed
                or pipe.closing
                or self.over_high
                or self.dst.write_paused
                or not self.dst.usable
            )
        )

    def _arm_timer(self, when: float) -> None:
        if self.timer is not None:
            if self.timer_when <= when:
                return
            self.timer.cancel()
        self.timer_when = when
        self.timer = self.relay._loop().call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        self.timer_when = math.inf
        self.pump()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.timer_when = math.inf
        self.queue.clear()
        self.queued = 0

    def pump(self) -> None:
        """Deliver whatever is due, allowed by the rate limit and flow control."""
        if self.pumping:
            return
        self.pumping = True
        try:
            self._pump()
        finally:
            self.pumping = False
        if self.over_high and self.queued <= self.relay._max_buffer // 4:
            self.over_high = False
        self.update_reading()

    def _pump(self) -> None:
        relay = self.relay
        if relay._blackholed or self.pipe.closing or not self.dst.usable:
            return
        transport = self.dst.transport
        assert transport is not None
        queue = self.queue
        now = relay._loop_time()
        rate = relay._rate
        if rate is not None:
            cap = self._capacity(rate)
            self.tokens = min(cap, self.tokens + (now - self.refilled) * rate)
            self.refilled = now
        while queue and not self.dst.write_paused:
            when, chunk = queue[0]
            if when > now:
                self._arm_timer(when)
                return
            if chunk is None:
                queue.popleft()
                self.eof_sent = True
                if transport.can_write_eof():
                    transport.write_eof()
                else:
                    transport.close()
                self.pipe.maybe_finish_graceful()
                return
            if rate is None:
                queue.popleft()
                self.queued -= len(chunk)
                transport.write(chunk)
                continue
            n = min(len(chunk), int(self.tokens))
            if n <= 0:
                want = min(float(len(chunk)), self._capacity(rate))
                self._arm_timer(now + (want - self.tokens) / rate)
                return
            if n < len(chunk):
                queue[0] = (when, chunk[n:])
                chunk = chunk[:n]
            else:
                queue.popleft()
            self.tokens -= n
            self.queued -= n
            transport.write(chunk)


class Pipe:
    """One relayed connection: client side, upstream side, two directions."""

    def __init__(self, relay: TcpRelay) -> None:
        self.relay = relay
        self.client = _Side(self, "client")
        self.upstream = _Side(self, "upstream")
        self.c2u = _Direction(self, self.client, self.upstream)
        self.u2c = _Direction(self, self.upstream, self.client)
        self.client.outgoing = self.upstream.incoming = self.c2u
        self.upstream.outgoing = self.client.incoming = self.u2c
        self.closing = False
        self.connect_task: asyncio.Task[None] | None = None
        self.done: asyncio.Future[None] = relay._loop().create_future()
        self.peer: object = None

    # -- lifecycle -------------------------------------------------------------
    def side_made(self, side: _Side) -> None:
        if side is self.client:
            assert side.transport is not None
            self.peer = side.transport.get_extra_info("peername")
            self.client.set_reading(False)  # until the upstream is connected
            self.relay._register(self)
            return
        # upstream connected
        if self.closing:
            assert side.transport is not None
            side.transport.abort()
            return
        log.debug("relay %s: upstream connected for %s", self.relay._name, self.peer)
        self.c2u.pump()
        self.u2c.pump()

    def start_connect(self) -> None:
        if self.connect_task is not None or self.closing:
            return
        self.connect_task = self.relay._loop().create_task(self._connect())
        self.connect_task.add_done_callback(lambda _t: self._maybe_done())

    async def _connect(self) -> None:
        host, port = self.relay._upstream
        try:
            await self.relay._loop().create_connection(lambda: self.upstream, host, port)
        except OSError as exc:
            log.warning(
                "relay %s: upstream %s:%s connect failed: %r", self.relay._name, host, port, exc
            )
            self.abort(rst=True)

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        if not self.closing:
            if exc is not None:
                log.debug("relay %s: %s side of %s lost: %r", self.relay._name, side.name,
                          self.peer, exc)
                self.abort(rst=True)
            else:
                self.abort(rst=False)
        self._maybe_done()

    def maybe_finish_graceful(self) -> None:
        """Close both sockets once EOF has been relayed in both directions and both ends
        finished sending (after a FIN fault, an end may still send: a socket closed with
        unread input would reset the connection instead of closing it)."""
        if (self.c2u.eof_sent and self.u2c.eof_sent and self.client.eof
                and self.upstream.eof and not self.closing):
            self.closing = True
            self.relay._unregister(self)
            for side in (self.client, self.upstream):
                if side.usable:
                    assert side.transport is not None
                    side.transport.close()
            self._maybe_done()

    def abort(self, rst: bool) -> None:
        """Tear the connection down immediately (with RST if *rst*)."""
        if not self.closing:
            self.closing = True
            self.relay._unregister(self)
        self.c2u.cancel()
        self.u2c.cancel()
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()
        for side in (self.client, self.upstream):
            if side.open:
                assert side.transport is not None
                if rst:
                    _set_linger_rst(side.transport)
                side.transport.abort()
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.done.done():
            return
        if self.connect_task is not None and not self.connect_task.done():
            return
        for side in (self.client, self.upstream):
            if side.transport is not None and not side.lost:
                return
        self.done.set_result(None)

    # -- fault hooks -----------------------------------------------------------
    def refresh(self) -> None:
        """Re-evaluate reading/delivery after a fault-mode change."""
        if self.closing:
            return
        if not self.relay._blackholed and self.connect_task is None:
            self.start_connect()
        for d in (self.c2u, self.u2c):
            d.pump()
