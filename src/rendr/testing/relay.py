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
from types import TracebackType

from .relay_pipe import Pipe

__all__ = ["TcpRelay"]

log = logging.getLogger(__name__)

_DEFAULT_MAX_BUFFER = 1024 * 1024


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
        self._pipes: set[Pipe] = set()
        self._all: set[Pipe] = set()
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
            lambda: Pipe(self).client, self._host, self._port
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

    def _register(self, pipe: Pipe) -> None:
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

    def _unregister(self, pipe: Pipe) -> None:
        self._pipes.discard(pipe)

