"""The TCP carrier: an ``asyncio.BufferedProtocol``, one ``writelines`` per flush.

Receiving has two modes, switched by the size of what arrives.  *Message reads*
(the start): the transport's protocol is a plain ``asyncio.Protocol`` whose
``data_received`` is the carrier's own method, and the loop hands over each read as
``bytes`` -- the cheapest read a loop offers (on uvloop a ``BufferedProtocol`` read
costs ~7k more instructions: a ``get_buffer`` call, a buffer export and a
``buffer_updated`` call; an echo round trip 13 % more in all).  A read of
``COPY_MAX`` bytes or more switches to *bulk reads*: the socket is read straight
into reused buffers (:mod:`rendr.core.bufpool`) and the engine gets read-only views
of them, so a bulk transfer allocates nothing per read (a loop's own ``bytes`` per
256 KiB read made glibc shrink and regrow its heap every burst on uvloop).
``SMALL_STREAK`` small reads in a row switch back.  Message reads are only used
where the loop allocates no more than a read brings: uvloop makes exact-size
``bytes``; asyncio's selector transports ``recv(max_size)``, so the carrier sets
their ``max_size`` to ``COPY_MAX`` (at the default 256 KiB, glibc served every
small read with an mmap, a mremap and a munmap in a fresh process).  On any other
transport a carrier always reads into reused buffers.

Bulk reads take at most ``READ_BURST`` bytes per event-loop iteration: uvloop
(libuv) otherwise reads up to 32 times per readiness event, pulling a whole receive
window into memory before the application's reader task gets to run.  A carrier
gives its buffer back once it goes idle: at the end of a loop iteration
in which it received (uvloop), or, on asyncio's own transports (which read a socket
at most once per iteration, so there is no burst to cap), at a check every
``IDLE_CHECK`` seconds that finds no read since the last one: a callback per read
was a sixth of the receiver's interpreted work per read there.

Kernel TCP keepalive is switched off: rendr's own PING/PONG is the only liveness
authority (kernel keepalive was seen killing shaped paths).  TCP_NODELAY is on.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable, Sequence
from typing import cast

from ..core.bufpool import ReadBuffers
from .accept import open_tcp_server
from .address import format_address, parse_address
from .base import Buffer, Carrier, CarrierKind, CarrierServer, register_transport

__all__ = ["TcpCarrier", "connect_tcp"]

logger = logging.getLogger("rendr.carriers.tcp")

WRITE_HIGH = 512 * 1024
WRITE_LOW = 128 * 1024
READ_BURST = 2 * 1024 * 1024
"""Bytes read in one event-loop iteration before reading pauses until the next."""
COPY_MAX = 16 * 1024
"""Bulk reads up to this size are handed on as ``bytes`` copies, larger ones as views; a
message read this large switches to bulk reads (on asyncio's selector loop a message
read is at most this large)."""
_JOIN_MAX = 64 * 1024  # see write(): up to this much, one joined write is cheaper
_WATCH = 64 * 1024  # bytes in one iteration from which its end is always scheduled
IDLE_CHECK = 0.05
"""asyncio's transports: seconds between checks for an idle carrier (its buffer then goes back)."""
SMALL_STREAK = 16
"""Bulk reads of at most ``COPY_MAX`` bytes in a row that switch back to message reads."""


class _MessageReads(asyncio.Protocol):
    """The transport's protocol while a carrier reads messages: the loop calls the
    carrier's own bound ``data_received`` (an instance attribute: no call in between);
    the rare callbacks are passed on."""

    def __init__(self, carrier: TcpCarrier) -> None:
        self._carrier = carrier
        self.data_received = carrier.data_received  # type: ignore[method-assign]

    def eof_received(self) -> bool:
        return self._carrier.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._carrier.connection_lost(exc)

    def pause_writing(self) -> None:
        self._carrier.pause_writing()

    def resume_writing(self) -> None:
        self._carrier.resume_writing()


class TcpCarrier(Carrier, asyncio.BufferedProtocol):
    """One TCP connection as a carrier.

    Args:
        on_connect: called with the carrier once connected (listener side).
    """

    transport = "tcp"
    _loop: asyncio.AbstractEventLoop  # set by connection_made()

    def __init__(self, on_connect: Callable[[TcpCarrier], None] | None = None) -> None:
        super().__init__()
        self._on_connect = on_connect
        self._transport: asyncio.Transport | None = None
        self._done = False
        self._rx = ReadBuffers()
        # the loop calls the buffers' own get_buffer (one interpreted call per read, not
        # two); both asyncio and uvloop look the method up on the protocol object
        self.get_buffer = self._rx.get_buffer  # type: ignore[method-assign]
        self._burst = 0
        self._burst_end: asyncio.Handle | None = None
        self._read_paused = False
        self._join_writes = False
        self._reads_once = False  # set by connection_made(): asyncio's own transport
        self._reads = 0  # reads that left the buffer held, for the idle check
        self._reads_checked = 0
        self._idle_check: asyncio.TimerHandle | None = None
        self._messages = _MessageReads(self)
        self._small_reads = 0  # bulk reads of at most COPY_MAX bytes in a row
        self._messages_ok = False  # set by connection_made(): message reads are cheap there

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport: cast, don't check
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        # asyncio's own selector (and proactor) transports read at most one buffer per
        # readiness event and iteration: nothing to cap, only idleness to notice
        module = type(transport).__module__
        self._reads_once = module.startswith("asyncio.")
        # message reads only where the loop allocates no more than a read brings
        # (see the module docstring)
        if module.startswith("uvloop"):
            self._messages_ok = True
        elif (module == "asyncio.selector_events"
              and isinstance(getattr(transport, "max_size", None), int)):
            transport.max_size = COPY_MAX  # type: ignore[attr-defined]
            self._messages_ok = True
        self._join_writes = (getattr(type(transport), "writelines", None)
                             is asyncio.WriteTransport.writelines)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
            except OSError:  # pragma: no cover - exotic socket types
                pass
        self.local_addr = format_address(transport.get_extra_info("sockname"))
        self.remote_addr = format_address(transport.get_extra_info("peername"))
        transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        if self._messages_ok:
            self._set_bulk(False)  # a flow starts with small messages (its handshake)
        if self._on_connect is not None:
            self._on_connect(self)

    def _set_bulk(self, bulk: bool) -> None:
        """Switch between bulk reads (this object is the transport's protocol) and message
        reads (``_messages`` is).  Both loops then read with the new protocol's callbacks,
        from within a read callback too: the socket's bytes stay in order."""
        t = self._transport
        if t is None or self._done or t.is_closing():
            return
        self._small_reads = 0
        t.set_protocol(self if bulk else self._messages)

    def data_received(self, data: bytes) -> None:
        """A message read: the loop's own ``bytes`` (see the module docstring)."""
        if len(data) >= COPY_MAX:
            self._set_bulk(True)  # the next read goes into reused buffers
        self._sink.carrier_data(data)

    def get_buffer(self, sizehint: int) -> memoryview:  # bound to the instance's buffers
        return self._rx.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if not nbytes:
            return
        rx = self._rx
        # small reads are copied out (cheap; they pin nothing), large ones handed over
        # as views of the buffer, which is checked for reuse at the next iteration
        if nbytes <= COPY_MAX:
            data: Buffer = rx.copy_out(nbytes)
            end_burst = rx._buf is not None  # rx.held, without a property call
            small = self._small_reads = self._small_reads + 1
            if small >= SMALL_STREAK and self._messages_ok:
                self._set_bulk(False)
        else:
            data = rx.filled(nbytes)
            end_burst = True
            self._small_reads = 0
        if self._reads_once:
            if end_burst:
                self._reads += 1
                if self._idle_check is None:
                    self._idle_check = self._loop.call_later(IDLE_CHECK, self._check_idle)
            self._sink.carrier_data(data)
            return
        burst = self._burst = self._burst + nbytes
        if (end_burst or burst >= _WATCH) and self._burst_end is None:
            self._burst_end = self._loop.call_soon(self._end_burst)
        if burst >= READ_BURST and not self._read_paused:
            t = self._transport
            if t is not None and not self._done and not t.is_closing():
                t.pause_reading()
                self._read_paused = True
        self._sink.carrier_data(data)

    def _end_burst(self) -> None:
        """The next loop iteration: read again; give back the buffer if nobody refers to
        it (an idle carrier holds none)."""
        self._burst_end = None
        self._burst = 0
        if self._read_paused:
            self._read_paused = False
            t = self._transport
            if t is not None and not self._done and not t.is_closing():
                t.resume_reading()
        self._rx.release()

    def _check_idle(self) -> None:
        """asyncio's transports: give back the buffer once no read came since the last check
        (and let freed retired buffers go); look again later while reads go on."""
        reads = self._reads
        if reads != self._reads_checked:
            self._reads_checked = reads
            self._idle_check = self._loop.call_later(IDLE_CHECK, self._check_idle)
        else:
            self._idle_check = None
        self._rx.release()

    def eof_received(self) -> bool:
        self._report_lost(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._report_lost(exc)

    def pause_writing(self) -> None:
        self._sink.carrier_pause()

    def resume_writing(self) -> None:
        self._sink.carrier_resume()

    # Carrier
    def write(self, buffers: Sequence[Buffer]) -> None:
        t = self._transport
        if t is None or self._done or t.is_closing():
            return
        if self._join_writes and len(buffers) > 1:
            # This transport's writelines() joins everything into one new bytes object
            # (asyncio before Python 3.12): write large buffers one by one instead,
            # which copies each byte once fewer (at the cost of one small send).
            small = 0
            for b in buffers:
                small += len(b)
            if small > _JOIN_MAX:
                for b in buffers:
                    t.write(b)
                return
        t.writelines(buffers)

    def close(self) -> None:
        self._done = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        self._done = True
        t = self._transport
        if t is None:
            return
        sock = t.get_extra_info("socket")
        if sock is not None and not t.is_closing():
            try:  # make the close a RST even if the loop would flush
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except (OSError, ValueError):  # uvloop: ValueError once its socket is gone
                pass
        t.abort()

    def _report_lost(self, exc: BaseException | None) -> None:
        if self._burst_end is not None:
            self._burst_end.cancel()
            self._burst_end = None
        if self._idle_check is not None:
            self._idle_check.cancel()
            self._idle_check = None
        self._rx.release()
        if self._done:
            return
        self._done = True
        self._sink.carrier_lost(exc)


async def connect_tcp(address: str) -> TcpCarrier:
    """Open a TCP carrier to ``"host:port"``."""
    host, port = parse_address(address)
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(TcpCarrier, host or "127.0.0.1", port)
    return protocol


async def listen_tcp(address: str, on_carrier: Callable[[Carrier], None], backlog: int = 128
                     ) -> tuple[CarrierServer, tuple[str, int]]:
    """Accept TCP carriers on ``"host:port"`` (port 0: any free port).

    Up to ``backlog`` queued connections are accepted per loop iteration on every
    event loop (uvloop's own accept takes one: see :mod:`rendr.carriers.accept`).
    """
    host, port = parse_address(address)
    server = await open_tcp_server(host or None, port,
                                   lambda: TcpCarrier(on_connect=on_carrier), backlog)
    name = server.sockets[0].getsockname()
    return server, (name[0], name[1])


register_transport("tcp", connect_tcp, listen=listen_tcp, kind=CarrierKind.STREAM)
