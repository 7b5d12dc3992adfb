"""The datagram transports under test, all with one shape.

A :class:`PacketTransport` opens a server (``open_server`` -> its addresses, then
``accept`` -> a :class:`PacketEnd`) or a client (``open_client(addrs)`` -> a
:class:`PacketEnd`). A :class:`PacketEnd` has ``send(data)`` (one datagram),
``recv()`` (exactly one datagram; ``EOFError`` after the peer's clean close),
``migrate()`` (move to another path; the raw transports have one path and return
``False``), ``close()`` and ``info()`` (counters for the report).

- ``raw-proto``: what a good asyncio UDP application does: ``create_datagram_endpoint``
  with a ``DatagramProtocol`` on a socket with SO_RCVBUF/SO_SNDBUF of 4 MiB;
  ``datagram_received`` appends to a deque that ``recv()`` pops (``recv()`` only
  suspends when the deque is empty). On the default loop the transport reads one
  datagram per loop iteration (``_SelectorDatagramTransport``).
- ``raw-reader``: the same socket read by its own ``loop.add_reader`` callback, which
  calls ``sock.recvfrom_into`` until EAGAIN (at most :data:`MAX_DRAIN` per callback),
  which is what rendr's UDP carrier does; sends with ``sock.send``/``sendto`` and waits
  for writability on EAGAIN.
- ``rendr``: rendr's packet mode over the ``udpflow`` carrier, a listener with two
  loopback addresses and a dialer with a path to each; ``migrate()`` moves to the other
  path that is up.

Nothing here prints.
"""

from __future__ import annotations

import abc
import asyncio
import socket
from collections import deque
from typing import Any

import rendr

BUF = 4 * 1024 * 1024  # SO_RCVBUF / SO_SNDBUF of the raw sockets (the kernel doubles it)
MAX_DRAIN = 4096  # raw-reader: most datagrams read per readable callback
HOST = "127.0.0.1"

Addr = tuple[str, int]

UNAVAILABLE = "rendr packet mode not available in this tree"
PACKET_COUNTERS = ("sent", "received", "dups", "too_old", "overflow", "dropped")


def rendr_packet_available() -> bool:
    """Whether this rendr build has the packet API (``listen_udpflow_packet``)."""
    return hasattr(rendr, "listen_udpflow_packet")


class Unavailable(RuntimeError):
    """The transport cannot run with this build (rendr without packet mode)."""


class PacketEnd(abc.ABC):
    """One end of a datagram conversation."""

    @abc.abstractmethod
    async def send(self, data: bytes) -> None: ...

    @abc.abstractmethod
    async def recv(self) -> bytes: ...

    async def migrate(self) -> bool:
        """Move to another path; ``False`` when there is none (raw UDP: always)."""
        return False

    @abc.abstractmethod
    async def close(self) -> None: ...

    def info(self) -> dict[str, Any]:
        return {}


class PacketTransport(abc.ABC):
    """Opens the server end (``open_server`` then ``accept``) or the client end."""

    name: str = ""

    @abc.abstractmethod
    async def open_server(self) -> list[Addr]: ...

    @abc.abstractmethod
    async def accept(self) -> PacketEnd: ...

    @abc.abstractmethod
    async def open_client(self, addrs: list[Addr]) -> PacketEnd: ...


def udp_socket(bind: Addr | None = None, connect: Addr | None = None) -> socket.socket:
    """A non-blocking UDP socket with 4 MiB socket buffers, bound and/or connected."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUF)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUF)
    sock.setblocking(False)
    sock.bind(bind or (HOST, 0))
    if connect is not None:
        sock.connect(connect)
    return sock


class _Queue:
    """The deque + waiter that both raw ends hand datagrams to ``recv()`` through."""

    def __init__(self) -> None:
        self.q: deque[bytes] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False

    def wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    async def get(self) -> bytes:
        q = self.q
        while not q:
            if self.closed:
                raise EOFError
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.waiter = fut
            await fut
        return q.popleft()


# ---------------------------------------------------------------------------- raw-proto


class _ProtoEnd(asyncio.DatagramProtocol, PacketEnd):
    def __init__(self, peer: Addr | None) -> None:
        self.peer = peer  # None on the server until the first datagram
        self.connected = peer is not None
        self.inq = _Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.errors = 0
        self.can_write = asyncio.Event()
        self.can_write.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.inq.q.append(data)
        if self.peer is None:
            self.peer = addr
        if self.inq.waiter is not None:
            self.inq.wake()

    def error_received(self, exc: Exception) -> None:
        self.errors += 1  # ECONNREFUSED after the peer closed: not a failure of the run

    def connection_lost(self, exc: Exception | None) -> None:
        self.inq.closed = True
        self.inq.wake()

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    async def send(self, data: bytes) -> None:
        if not self.can_write.is_set():
            await self.can_write.wait()
        assert self.transport is not None
        if self.connected:
            self.transport.sendto(data)
        else:
            self.transport.sendto(data, self.peer)

    async def recv(self) -> bytes:
        return await self.inq.get()

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def info(self) -> dict[str, Any]:
        return {"error_received": self.errors}


class RawProtoTransport(PacketTransport):
    name = "raw-proto"

    def __init__(self) -> None:
        self._end: _ProtoEnd | None = None

    async def open_server(self) -> list[Addr]:
        sock = udp_socket()
        end = _ProtoEnd(None)
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: end, sock=sock)
        self._end = end
        return [sock.getsockname()]

    async def accept(self) -> PacketEnd:
        assert self._end is not None
        return self._end

    async def open_client(self, addrs: list[Addr]) -> PacketEnd:
        peer = (addrs[0][0], addrs[0][1])
        end = _ProtoEnd(peer)
        sock = udp_socket(connect=peer)
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: end, sock=sock)
        return end


# ---------------------------------------------------------------------------- raw-reader


class _ReaderEnd(PacketEnd):
    def __init__(self, sock: socket.socket, peer: Addr | None) -> None:
        self.sock = sock
        self.peer = peer
        self.connected = peer is not None
        self.inq = _Queue()
        self.buf = bytearray(65536)
        self.view = memoryview(self.buf)
        self.loop = asyncio.get_running_loop()
        self.fd = sock.fileno()
        self.errors = 0
        self.eagain_sends = 0
        self.callbacks = 0
        self.loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        recv_into = self.sock.recvfrom_into
        q = self.inq.q
        buf, view = self.buf, self.view
        self.callbacks += 1
        for _ in range(MAX_DRAIN):
            try:
                n, addr = recv_into(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ECONNREFUSED after the peer closed
                self.errors += 1
                break
            q.append(bytes(view[:n]))
            if self.peer is None:
                self.peer = addr
        if self.inq.waiter is not None:
            self.inq.wake()

    async def _writable(self) -> None:
        fut: asyncio.Future[None] = self.loop.create_future()
        self.loop.add_writer(self.fd, fut.set_result, None)
        try:
            await fut
        finally:
            self.loop.remove_writer(self.fd)

    async def send(self, data: bytes) -> None:
        while True:
            try:
                if self.connected:
                    self.sock.send(data)
                else:
                    assert self.peer is not None
                    self.sock.sendto(data, self.peer)
                return
            except (BlockingIOError, InterruptedError):
                self.eagain_sends += 1
                await self._writable()
            except ConnectionRefusedError:  # a late ICMP from a closed peer: not ours
                self.errors += 1
                return

    async def recv(self) -> bytes:
        return await self.inq.get()

    async def close(self) -> None:
        if not self.inq.closed:
            self.inq.closed = True
            self.loop.remove_reader(self.fd)
            self.sock.close()
            self.inq.wake()

    def info(self) -> dict[str, Any]:
        return {"socket_errors": self.errors, "eagain_sends": self.eagain_sends,
                "read_callbacks": self.callbacks}


class RawReaderTransport(PacketTransport):
    name = "raw-reader"

    def __init__(self) -> None:
        self._end: _ReaderEnd | None = None

    async def open_server(self) -> list[Addr]:
        sock = udp_socket()
        self._end = _ReaderEnd(sock, None)
        return [sock.getsockname()]

    async def accept(self) -> PacketEnd:
        assert self._end is not None
        return self._end

    async def open_client(self, addrs: list[Addr]) -> PacketEnd:
        peer = (addrs[0][0], addrs[0][1])
        return _ReaderEnd(udp_socket(connect=peer), peer)


# ---------------------------------------------------------------------------- rendr


class _RendrEnd(PacketEnd):
    def __init__(self, pc: Any, listener: Any = None) -> None:
        self.pc = pc
        self.listener = listener
        self.migrate_failures: list[str] = []

    async def send(self, data: bytes) -> None:
        await self.pc.send(data)

    async def recv(self) -> bytes:
        data: bytes = await self.pc.recv()
        return data

    async def migrate(self) -> bool:
        others = [p.id for p in self.pc.stats().paths
                  if p.state == "up" and p.id != self.pc.active_path]
        if not others:
            self.migrate_failures.append("no other path up")
            return False
        await self.pc.migrate(others[0])
        return True

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.pc.close(), 5.0)
        except (asyncio.TimeoutError, OSError, rendr.RendrError):
            self.pc.abort()
        if self.listener is not None:
            closing = getattr(self.listener, "close", None)
            if closing is not None:
                res = closing()
                if asyncio.iscoroutine(res):
                    await res

    def info(self) -> dict[str, Any]:
        st = self.pc.stats()
        out: dict[str, Any] = {"migration_count": getattr(st, "migration_count", None),
                               "paths": len(getattr(st, "paths", [])),
                               "max_payload": getattr(self.pc, "max_payload", None),
                               "migrate_failures": self.migrate_failures,
                               # datagrams the paths dropped unopened (failed authentication,
                               # replayed, older than the replay window)
                               "paths_dropped": sum(getattr(p, "dropped", 0)
                                                    for p in getattr(st, "paths", []))}
        packet_stats = getattr(self.pc, "packet_stats", None)
        if packet_stats is not None:
            ps = packet_stats()
            out["packet_stats"] = {k: getattr(ps, k) for k in PACKET_COUNTERS if hasattr(ps, k)}
        return out


class RendrTransport(PacketTransport):
    """rendr packet mode over udpflow: two loopback addresses, one path to each."""

    name = "rendr"

    def __init__(self, knobs: dict[str, Any] | None = None) -> None:
        if not rendr_packet_available():
            raise Unavailable(UNAVAILABLE)
        self.knobs = knobs or {}  # FlowConfig overrides, on both ends
        self._pln: Any = None

    async def open_server(self) -> list[Addr]:
        listen = getattr(rendr, "listen_udpflow_packet")  # noqa: B009 (absent before the API)
        self._pln = await listen(f"{HOST}:0", f"{HOST}:0", **self.knobs)
        return [(str(h), int(p)) for h, p in self._pln.addrs]

    async def accept(self) -> PacketEnd:
        pc = await self._pln.accept_packet()
        return _RendrEnd(pc, self._pln)

    async def open_client(self, addrs: list[Addr]) -> PacketEnd:
        dialer = rendr.Dialer(paths=[rendr.PathSpec("udpflow", f"{HOST}:{p}") for _, p in addrs],
                              **self.knobs)
        pc = await getattr(dialer, "dial_packet")()  # noqa: B009 (absent before the API)
        want = min(2, len(addrs))
        for _ in range(200):  # up to 2 s for every path to come up
            if sum(p.state == "up" for p in pc.stats().paths) >= want:
                break
            await asyncio.sleep(0.01)
        return _RendrEnd(pc)


TRANSPORTS: dict[str, type[PacketTransport]] = {
    "raw-proto": RawProtoTransport,
    "raw-reader": RawReaderTransport,
    "rendr": RendrTransport,
}


def make(name: str, knobs: dict[str, Any] | None = None) -> PacketTransport:
    """A fresh transport by name (raises :class:`Unavailable` for rendr without packets);
    ``knobs`` (``FlowConfig`` overrides) apply to rendr only."""
    if name == "rendr":
        return RendrTransport(knobs)
    return TRANSPORTS[name]()
