"""rendr for blocking code: a socket-like object over a migrating connection.

::

    import rendr.sync
    sock = rendr.sync.dial(paths=[rendr.PathSpec("tcp", "h1:5555"),
                                  rendr.PathSpec("tcp", "h2:5556")])
    sock.sendall(b"hello")
    print(sock.recv(5))

    with rendr.sync.listen_tcp("0.0.0.0:5555") as ln:
        conn, peer = ln.accept()

Every connection runs on one event loop in a background daemon thread (uvloop when
installed), shared by all of them; the blocking calls hand their work to it and wait.
:class:`Socket` has what libraries that take a socket-like object use (``recv``,
``recv_into``, ``send``, ``sendall``, ``makefile``, ``settimeout``/``gettimeout``,
``setblocking``, ``shutdown``, ``close``, ``getpeername``/``getsockname``, context
manager) and is safe to use from several threads (one reader and one writer at a time;
more wait their turn).  Timeouts raise :class:`TimeoutError` (``socket.timeout``), a
non-blocking ``recv`` with nothing to read :class:`BlockingIOError`.  The admin surface
(``migrate``, ``add_path``, ``stats``...) is on :attr:`Socket.conn` through
:meth:`Socket.call`.
"""

from __future__ import annotations

import asyncio
import io
import socket
import threading
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

from .aio import Conn, Dialer
from .aio import Listener as AioListener
from .aio import listen as aio_listen
from .aio.runner import loop_factory
from .spec import ListenSpec, PathSpec

__all__ = ["Socket", "SyncListener", "dial", "listen", "listen_quic", "listen_tcp"]

T = TypeVar("T")


class _LoopThread:
    """The background event loop every sync connection runs on."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._loop.is_closed():
                factory, _ = loop_factory(True)
                loop = factory()
                thread = threading.Thread(target=loop.run_forever, name="rendr-sync-loop",
                                          daemon=True)
                thread.start()
                cls._loop = loop
            return cls._loop


def _call(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the background loop and wait (at most ``timeout`` seconds: then
    it is cancelled and TimeoutError raised).

    The timeout runs on the loop (``asyncio.wait_for``), not in the calling thread: a
    read that completes just as the timeout expires is returned, never dropped (the
    calling thread cancelling a finished read would lose its bytes, which a protocol
    polling with short timeouts, as paramiko does, eventually hits)."""
    loop = _LoopThread.get()
    if timeout is None:
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    try:
        return asyncio.run_coroutine_threadsafe(bounded(), loop).result()
    except (TimeoutError, asyncio.TimeoutError):
        raise TimeoutError("timed out") from None


def _parse(addr: str) -> tuple[str, int] | None:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


class Socket:
    """A blocking, socket-like view of a rendr :class:`~rendr.Conn` (see the module)."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        """The connection (its coroutine methods: through :meth:`call`)."""
        self._timeout: float | None = None
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------- reading

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Up to ``bufsize`` bytes; ``b""`` only at the peer's clean EOF."""
        if bufsize <= 0:
            return b""
        with self._read_lock:
            return _call(self._read(bufsize), self._wait_limit())

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Fill ``buffer`` (at most ``nbytes`` if given); 0 only at the peer's EOF."""
        view = memoryview(buffer).cast("B")
        if nbytes:
            view = view[:nbytes]
        if not len(view):
            return 0
        with self._read_lock:
            return _call(self._readinto(view), self._wait_limit())

    async def _read(self, n: int) -> bytes:
        self._check_ready()
        return await self.conn.read(n)

    async def _readinto(self, view: memoryview) -> int:
        self._check_ready()
        return await self.conn.readinto(view)

    def _check_ready(self) -> None:
        """(On the loop) a non-blocking read with nothing to read."""
        if self._timeout == 0 and not self.conn._flow.readable:
            raise BlockingIOError("no data to read")

    # ------------------------------------------------------------- writing

    def send(self, data: bytes | bytearray | memoryview, flags: int = 0) -> int:
        """Send all of ``data`` (rendr buffers it); returns its length."""
        self.sendall(data)
        return len(memoryview(data).cast("B"))

    def sendall(self, data: bytes | bytearray | memoryview, flags: int = 0) -> None:
        """Send all of ``data``; returns once it is in the send buffer."""
        payload = bytes(data)  # the caller may reuse its buffer once we return
        with self._write_lock:
            _call(self.conn.write(payload), self._wait_limit())

    def shutdown(self, how: int) -> None:
        """``SHUT_WR``/``SHUT_RDWR``: half-close (the peer reads EOF); ``SHUT_RD``:
        nothing to do (reads still return what arrives)."""
        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            _call(self.conn.write_eof())

    def close(self) -> None:
        """Deliver everything written, then close the flow (bounded by ``linger``)."""
        if not self._closed:
            self._closed = True
            _call(self.conn.close())

    def abort(self) -> None:
        """End the flow at once (the peer sees an abort)."""
        self._closed = True
        loop = _LoopThread.get()
        asyncio.run_coroutine_threadsafe(self._abort(), loop).result()

    async def _abort(self) -> None:
        self.conn.abort()

    # ------------------------------------------------------------- socket surface

    def settimeout(self, value: float | None) -> None:
        if value is not None and value < 0:
            raise ValueError("timeout must be >= 0 or None")
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def _wait_limit(self) -> float | None:
        return self._timeout if self._timeout else None

    def _address(self, which: str) -> tuple[str, int] | None:
        stats = self.conn.stats()
        for path in stats.paths:
            if path.id == stats.active_path:
                return _parse(path.remote_addr if which == "peer" else path.local_addr)
        return None

    def getpeername(self) -> tuple[str, int] | None:
        """The active path's remote address (it changes when the flow migrates)."""
        return self._address("peer")

    def getsockname(self) -> tuple[str, int] | None:
        """The active path's local address."""
        return self._address("sock")

    def fileno(self) -> int:
        """-1: there is no single OS socket behind a flow."""
        return -1

    def makefile(self, mode: str = "r", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> Any:
        """A file object over the connection, like :meth:`socket.socket.makefile`."""
        raw = _RawConnIO(self, "r" in mode, "w" in mode)
        size = io.DEFAULT_BUFFER_SIZE if buffering is None or buffering < 0 else buffering
        binary = "b" in mode
        if size == 0:
            if not binary:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buffered: io.BufferedIOBase
        if raw.readable() and raw.writable():
            buffered = io.BufferedRWPair(raw, raw, size)
        elif raw.readable():
            buffered = io.BufferedReader(raw, size)
        else:
            buffered = io.BufferedWriter(raw, size)
        if binary:
            return buffered
        return io.TextIOWrapper(buffered, encoding, errors, newline)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine (e.g. ``sock.conn.migrate(2)``) on the connection's loop."""
        return _call(coro, timeout)

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<rendr.sync.Socket {self.conn!r}>"


class _RawConnIO(io.RawIOBase):
    def __init__(self, sock: Socket, reading: bool, writing: bool) -> None:
        self._sock = sock
        self._reading = reading
        self._writing = writing

    def readable(self) -> bool:
        return self._reading

    def writable(self) -> bool:
        return self._writing

    def readinto(self, buffer: Any) -> int:
        return self._sock.recv_into(buffer)

    def write(self, data: Any) -> int:
        self._sock.sendall(data)
        return len(memoryview(data).cast("B"))


class SyncListener:
    """A blocking listener: :meth:`accept` returns ``(Socket, peer address)``."""

    def __init__(self, listener: AioListener) -> None:
        self.listener = listener

    @property
    def addrs(self) -> list[tuple[str, int]]:
        """Where it listens (host, port)."""
        return [(a[0], a[1]) for a in self.listener.addrs]

    def accept(self, timeout: float | None = None) -> tuple[Socket, tuple[str, int] | None]:
        """The next connection (TimeoutError after ``timeout`` seconds)."""
        sock = Socket(_call(self.listener.accept(), timeout))
        return sock, sock.getpeername()

    def close(self) -> None:
        _call(self.listener.close())

    def __enter__(self) -> SyncListener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def dial(paths: Iterable[PathSpec], **dialer_options: Any) -> Socket:
    """Open a flow (the keywords of :class:`rendr.Dialer`: ``mode``, ``psk``,
    ``server_key``, FlowConfig knobs...) and return it as a :class:`Socket`."""
    async def go() -> Conn:
        return await Dialer(paths=list(paths), **dialer_options).dial()

    return Socket(_call(go()))


def listen(*specs: ListenSpec, **options: Any) -> SyncListener:
    """Listen on every spec (the keywords of :func:`rendr.listen`)."""
    async def go() -> AioListener:
        return await aio_listen(*specs, **options)

    return SyncListener(_call(go()))


def listen_tcp(address: str, **options: Any) -> SyncListener:
    """Listen on one TCP address (``"host:port"``)."""
    return listen(ListenSpec("tcp", address), **options)


def listen_quic(*addresses: str, tls: str | tuple[str, str] | None = None,
                alpn: str | None = None, **options: Any) -> SyncListener:
    """Listen for stream flows over QUIC on each ``"host:port"`` (needs ``qh3``; the
    arguments of :func:`rendr.listen_quic`: ``tls=None`` is a self-signed development
    certificate, which dialers accept only with ``options={"insecure": "1"}``)::

        with rendr.sync.listen_quic("0.0.0.0:5556", tls=("cert.pem", "key.pem")) as ln:
            sock, peer = ln.accept()
    """
    from .aio.listener import quic_specs

    return listen(*quic_specs(addresses, tls, alpn), **options)
