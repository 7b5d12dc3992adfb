"""A fake event loop and UDP socket for driving the udpflow carrier without sockets
(the datagram vectors and the udpflow fuzz targets): the carrier's own code runs as
it does on a real loop, and every datagram it sends is recorded, split as the kernel
would split a GSO train."""

from __future__ import annotations

import socket
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

from rendr.carriers.udpbase import UDP_SEGMENT

LISTENER_ADDR = ("192.0.2.1", 4433)
DIALER_ADDR = ("198.51.100.7", 50000)


class FakeHandle:
    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]
                 ) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeFuture:
    def __init__(self) -> None:
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, _value: object) -> None:
        self._done = True


class FakeLoop:
    """What the udpflow carrier asks of its loop; time moves only by :meth:`advance`."""

    def __init__(self) -> None:
        self.now = 0.0
        self.readers: dict[int, Callable[[], object]] = {}
        self.writers: dict[int, Callable[[], object]] = {}
        self.timers: list[FakeHandle] = []

    def time(self) -> float:
        return self.now

    def add_reader(self, fd: int, callback: Callable[[], object]) -> None:
        self.readers[fd] = callback

    def remove_reader(self, fd: int) -> None:
        self.readers.pop(fd, None)

    def add_writer(self, fd: int, callback: Callable[[], object]) -> None:
        self.writers[fd] = callback

    def remove_writer(self, fd: int) -> None:
        self.writers.pop(fd, None)

    def create_future(self) -> FakeFuture:
        return FakeFuture()

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any
                   ) -> FakeHandle:
        handle = FakeHandle(self.now + delay, callback, args)
        self.timers.append(handle)
        return handle

    def advance(self, seconds: float) -> None:
        """Move the clock, running the timers that fall due, in order."""
        end = self.now + seconds
        while True:
            due = [t for t in self.timers if not t.cancelled and t.when <= end]
            if not due:
                break
            first = min(due, key=lambda t: t.when)
            self.timers.remove(first)
            self.now = max(self.now, first.when)
            first.callback(*first.args)
        self.timers = [t for t in self.timers if not t.cancelled]
        self.now = end


class FakeSocket:
    """A UDP socket that records what is sent: ``sent`` holds ``(address, datagram)``
    (address None: a connected socket's peer)."""

    type = socket.SOCK_DGRAM

    def __init__(self, name: tuple[str, int], peer: tuple[str, int] | None = None) -> None:
        self._name = name
        self._peer = peer
        self._fd = 100
        self.sent: list[tuple[tuple[Any, ...] | None, bytes]] = []
        self.inbox: deque[tuple[bytes, tuple[Any, ...]]] = deque()
        """What the socket has to read: ``(datagram, source address)``."""

    def fileno(self) -> int:
        return self._fd

    def getsockname(self) -> tuple[str, int]:
        return self._name

    def getpeername(self) -> tuple[str, int]:
        assert self._peer is not None
        return self._peer

    def setsockopt(self, *_args: object) -> None:
        raise OSError("no GRO here")

    def getsockopt(self, *_args: object) -> int:
        return 0

    def close(self) -> None:
        self._fd = -1

    def send(self, data: bytes) -> int:
        self.sent.append((None, bytes(data)))
        return len(data)

    def sendto(self, data: bytes, addr: tuple[Any, ...]) -> int:
        self.sent.append((addr, bytes(data)))
        return len(data)

    def sendmsg(self, buffers: list[bytes], ancdata: Any = (), _flags: int = 0,
                addr: tuple[Any, ...] | None = None) -> int:
        data = b"".join(bytes(b) for b in buffers)
        seg = 0
        for level, kind, cdata in ancdata:
            if level == socket.SOL_UDP and kind == UDP_SEGMENT:
                seg = int.from_bytes(cdata[:2], sys.byteorder)
        if seg:  # a GSO train: the kernel sends it as datagrams of seg bytes
            for k in range(0, len(data), seg):
                self.sent.append((addr, data[k : k + seg]))
        else:
            self.sent.append((addr, data))
        return len(data)

    def recv(self, _size: int) -> bytes:
        return self.recvfrom(_size)[0]

    def recvfrom(self, _size: int) -> tuple[bytes, tuple[Any, ...]]:
        if not self.inbox:
            raise BlockingIOError
        return self.inbox.popleft()

    def deliver(self, loop: FakeLoop, datagram: bytes, addr: tuple[Any, ...]) -> bool:
        """``datagram`` arrives from ``addr``: the loop calls the socket's reader (as
        on readiness); False when nothing reads the socket any more."""
        reader = loop.readers.get(self._fd)
        if reader is None:
            return False
        self.inbox.append((datagram, addr))
        reader()
        self.inbox.clear()
        return True

    def take(self) -> list[tuple[tuple[Any, ...] | None, bytes]]:
        out = self.sent
        self.sent = []
        return out
