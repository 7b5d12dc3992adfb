"""Userspace TCP fault relay for tests and benchmark gates.

:class:`TcpRelay` listens on a loopback address and forwards every accepted
connection to one fixed upstream ``(host, port)``.  While it runs, the test can
inject network faults into the relayed traffic from the event loop at any
time::

    from rendr.testing.relay import TcpRelay

    async with TcpRelay(("127.0.0.1", server_port)) as relay:
        host, port = relay.addr          # point the client here
        relay.set_delay(0.05)            # +50 ms one-way, both directions
        relay.set_rate(1_000_000)        # 1 MB/s per direction per connection
        relay.blackhole()                # silence: nothing forwarded, no FIN/RST
        relay.forward()                  # outage over: held bytes are delivered
        relay.fin()                      # clean EOF (FIN) to both sides, after held bytes
        relay.kill()                     # RST both sides of every connection

Fault model
-----------
``forward()``
    Normal forwarding (the default).  Delay and rate limit, if configured,
    still apply.
``blackhole()``
    Models a temporary path outage (packets dropped).  The relay stops
    reading from both sockets of every connection and stops delivering
    anything it still holds, so the kernel buffers fill up and the peers see
    silence: no data, no FIN, no RST.  Connections accepted while blackholed
    are accepted by the relay's kernel but the relay does *not* connect to the
    upstream until forwarding resumes (the upstream sees nothing at all, as if
    the SYN had been dropped).  Bytes that were already handed to a socket
    before the call cannot be recalled and may still arrive.
    :meth:`TcpRelay.forward` resumes everything without losing bytes: held
    data is delivered in order, and pending upstream connections are opened.
``kill()``
    Abortive close of every current connection: ``SO_LINGER`` is set to
    ``(on, 0)`` on both sockets, which are then closed, so both peers get a
    TCP RST (``ConnectionResetError``), not a clean EOF.  The listener keeps
    running, so new connections work normally.
``fin(toward="both")``
    Clean end of every current connection, as a middlebox or host that closes
    it gracefully: a FIN (``shutdown(SHUT_WR)``) toward the client, the
    upstream or both, each after the bytes the relay still holds for that end
    (delayed, rate-limited or blackholed bytes come first; a FIN held by a
    blackhole is delivered by :meth:`TcpRelay.forward`).  Whatever arrives
    for an end after its FIN is discarded.  Toward one end only, it is a
    half-close: that end can still send to the other.  The relay keeps
    reading (and discarding) until each end closes its side too, then closes
    its sockets (closing a socket with unread input would send an RST instead;
    a reset from either end resets the other, as always).
``set_delay(seconds)``
    One-way delay added to every chunk in each direction (an echo round trip
    therefore grows by ``2 * seconds``).  The delay is stamped when the relay
    reads the chunk; delivery order is always preserved.
``set_rate(bytes_per_second)``
    Token-bucket rate limit, applied separately to each direction of each
    connection (``None`` = unlimited).  The bucket holds at most
    ``bytes_per_second * 0.02`` bytes (20 ms of burst).

Flow control
------------
The relay is built on :class:`asyncio.Protocol`.  Each direction keeps a small
queue that is only used when data cannot be written immediately (delay, rate
limit, blackhole, or a destination whose transport asked to pause writing).
Reading from the source socket is paused whenever the destination transport
is paused for writing or the queue exceeds ``max_buffer`` bytes, so memory use
is bounded per connection and senders experience ordinary TCP backpressure.
Without faults the data path is a direct ``transport.write`` of each chunk.

Half-closes are relayed in order (an EOF from one peer becomes ``write_eof``
towards the other once earlier data has been delivered); a reset or error on
one side aborts the other side too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import struct
from collections import deque
from types import TracebackType
from typing import cast

__all__ = ["TcpRelay"]

log = logging.getLogger(__name__)

_BURST_SECONDS = 0.02
_DEFAULT_MAX_BUFFER = 1024 * 1024
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

    def __init__(self, pipe: _Pipe, name: str) -> None:
        self.pipe = pipe
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.eof = False
        self.lost = False
        self.write_paused = False
        # Set by _Pipe once both sides exist.
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

    def __init__(self, pipe: _Pipe, src: _Side, dst: _Side) -> None:
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


class _Pipe:
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


class TcpRelay:
    """Loopback TCP relay with injectable faults (blackhole, fin, kill, delay, rate).

    Args:
        upstream: ``(host, port)`` every accepted connection is forwarded to.
        host: address to listen on (default ``127.0.0.1``).
        port: port to listen on (default ``0`` = pick a free port).
        max_buffer: bytes a direction may hold (delayed/rate-limited/blackholed
            data) before the relay stops reading from the sender.

    Must be used from a running event loop; call :meth:`start` (or use
    ``async with``) before connecting to :attr:`addr`.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_buffer: int = _DEFAULT_MAX_BUFFER,
    ) -> None:
        if max_buffer < 1:
            raise ValueError("max_buffer must be >= 1")
        self._upstream = (upstream[0], int(upstream[1]))
        self._host = host
        self._port = port
        self._max_buffer = max_buffer
        self._server: asyncio.Server | None = None
        self._addr: tuple[str, int] | None = None
        self._pipes: set[_Pipe] = set()
        self._all: set[_Pipe] = set()
        self._total = 0
        self._blackholed = False
        self._delay = 0.0
        self._rate: float | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._name = f"->{self._upstream[0]}:{self._upstream[1]}"

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Start listening. :attr:`addr` is valid afterwards."""
        if self._server is not None:
            raise RuntimeError("relay already started")
        self._event_loop = asyncio.get_running_loop()
        self._server = await self._event_loop.create_server(
            lambda: _Pipe(self).client, self._host, self._port
        )
        sockname = self._server.sockets[0].getsockname()
        self._addr = (str(sockname[0]), int(sockname[1]))
        self._name = f"{self._addr[0]}:{self._addr[1]}->{self._upstream[0]}:{self._upstream[1]}"
        log.debug("relay %s: listening", self._name)

    async def close(self) -> None:
        """Stop listening and abort all relayed connections (idempotent)."""
        server = self._server
        if server is None:
            return
        self._server = None
        server.close()
        for pipe in list(self._all):
            pipe.abort(rst=False)
        pending = [p.done for p in self._all if not p.done.done()]
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        await server.wait_closed()
        log.debug("relay %s: closed", self._name)

    async def __aenter__(self) -> TcpRelay:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- introspection -------------------------------------------------------
    @property
    def addr(self) -> tuple[str, int]:
        """``(host, port)`` of the listening socket (after :meth:`start`)."""
        if self._addr is None:
            raise RuntimeError("relay not started")
        return self._addr

    @property
    def upstream(self) -> tuple[str, int]:
        """The ``(host, port)`` connections are forwarded to."""
        return self._upstream

    @property
    def connections(self) -> int:
        """Number of currently open relayed connections."""
        return len(self._pipes)

    @property
    def total_connections(self) -> int:
        """Number of connections accepted since :meth:`start`."""
        return self._total

    @property
    def blackholed(self) -> bool:
        """True while :meth:`blackhole` is in effect."""
        return self._blackholed

    @property
    def delay(self) -> float:
        """Current one-way delay in seconds."""
        return self._delay

    @property
    def rate(self) -> float | None:
        """Current per-direction rate limit in bytes/second (None = unlimited)."""
        return self._rate

    @property
    def queued_bytes(self) -> int:
        """Bytes currently held in the relay's own queues (all connections)."""
        return sum(p.c2u.queued + p.u2c.queued for p in self._pipes)

    # -- faults ------------------------------------------------------------------
    def forward(self) -> None:
        """Forward normally; after :meth:`blackhole`, deliver held bytes in order."""
        if not self._blackholed:
            return
        log.debug("relay %s: forward", self._name)
        self._blackholed = False
        for pipe in list(self._pipes):
            pipe.refresh()

    def blackhole(self) -> None:
        """Silently stop forwarding on existing and new connections (no FIN/RST)."""
        if self._blackholed:
            return
        log.debug("relay %s: blackhole", self._name)
        self._blackholed = True
        for pipe in list(self._pipes):
            pipe.c2u.update_reading()
            pipe.u2c.update_reading()

    def fin(self, toward: str = "both") -> None:
        """End every current connection cleanly: a FIN toward ``"client"``, ``"upstream"``
        or ``"both"``, after the bytes held for that end; keep listening (see the module
        docstring)."""
        if toward not in ("both", "client", "upstream"):
            raise ValueError(f"toward must be 'both', 'client' or 'upstream', got {toward!r}")
        pipes = list(self._pipes)
        log.debug("relay %s: fin %d connection(s) toward %s", self._name, len(pipes), toward)
        for pipe in pipes:
            if toward != "upstream":
                pipe.u2c.feed_eof()
            if toward != "client":
                pipe.c2u.feed_eof()

    def kill(self) -> None:
        """Reset (RST) both sides of every current connection; keep listening."""
        pipes = list(self._pipes)
        log.debug("relay %s: kill %d connection(s)", self._name, len(pipes))
        for pipe in pipes:
            pipe.abort(rst=True)

    def set_delay(self, seconds: float) -> None:
        """Add *seconds* of one-way delay to every chunk in both directions."""
        seconds = float(seconds)
        if not (seconds >= 0.0 and math.isfinite(seconds)):
            raise ValueError(f"delay must be a finite number >= 0, got {seconds!r}")
        log.debug("relay %s: delay %.6f s", self._name, seconds)
        self._delay = seconds

    def set_rate(self, bytes_per_second: float | None) -> None:
        """Limit each direction of each connection to *bytes_per_second* (None = off)."""
        if bytes_per_second is not None:
            bytes_per_second = float(bytes_per_second)
            if not (bytes_per_second > 0.0 and math.isfinite(bytes_per_second)):
                raise ValueError(
                    f"rate must be a finite number > 0 or None, got {bytes_per_second!r}"
                )
        log.debug("relay %s: rate %s B/s", self._name, bytes_per_second)
        self._rate = bytes_per_second
        for pipe in list(self._pipes):
            pipe.c2u.reset_bucket()
            pipe.u2c.reset_bucket()
            pipe.refresh()

    # -- internals ---------------------------------------------------------------
    def _loop(self) -> asyncio.AbstractEventLoop:
        if self._event_loop is None:
            self._event_loop = asyncio.get_running_loop()
        return self._event_loop

    def _loop_time(self) -> float:
        return self._loop().time()

    def _register(self, pipe: _Pipe) -> None:
        if self._server is None:  # closing: refuse late arrivals
            pipe.abort(rst=False)
            return
        self._total += 1
        self._pipes.add(pipe)
        self._all.add(pipe)
        pipe.done.add_done_callback(lambda _f: self._all.discard(pipe))
        log.debug("relay %s: accepted %s", self._name, pipe.peer)
        if not self._blackholed:
            pipe.start_connect()

    def _unregister(self, pipe: _Pipe) -> None:
        self._pipes.discard(pipe)

