"""Listening TCP sockets whose accept loop rendr owns, on every event loop.

uvloop (libuv) accepts one connection per readiness event, i.e. per loop iteration:
behind a busy loop (100-200 ms iterations with a few hundred flows) the kernel's
accept queue filled up and re-dials, JOINs and HELLOs waited there for seconds,
longer than the dialer's ``handshake_timeout`` (``bench/repro/uvloop_single_accept.py``).
asyncio's selector loop accepts up to ``backlog`` connections per readiness event.

:class:`TcpServer` does the latter on any loop: it watches each listening socket with
``loop.add_reader``, accepts up to ``backlog`` connections non-blocking when it is
readable, and gives each to the loop with ``loop.connect_accepted_socket`` (so the
transports stay the loop's own, uvloop's included).  Loops without ``add_reader``
(Windows' proactor) serve the same sockets with ``loop.create_server``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

__all__ = ["TcpServer", "open_tcp_server"]

logger = logging.getLogger("rendr.carriers.accept")

ACCEPT_RETRY_DELAY = 1.0
"""Seconds accepting pauses after the process ran out of file descriptors or memory
(the connections wait in the kernel's queue meanwhile), as asyncio does."""

_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class TcpServer:
    """Listening sockets and their accept loop (a :class:`~rendr.carriers.base.CarrierServer`).

    Attributes:
        sockets: the listening sockets (one per bound address).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sockets: list[socket.socket],
                 factory: ProtocolFactory, backlog: int) -> None:
        self._loop = loop
        self.sockets = sockets
        self._factory = factory
        self._backlog = max(1, backlog)
        self._handing: set[asyncio.Task[object]] = set()
        self._watched: set[int] = set()
        self._fallback: list[asyncio.AbstractServer] = []
        self._closed = False

    async def start(self) -> None:
        """Start accepting."""
        for sock in self.sockets:
            try:
                self._watch(sock)
            except NotImplementedError:  # a loop without add_reader (proactor)
                self._fallback.append(await self._loop.create_server(
                    self._factory, sock=sock, backlog=self._backlog))

    def _watch(self, sock: socket.socket) -> None:
        if self._closed:
            return
        self._loop.add_reader(sock.fileno(), self._accept_ready, sock)
        self._watched.add(sock.fileno())

    def _accept_ready(self, sock: socket.socket) -> None:
        """The socket is readable: accept what is queued, up to ``backlog``."""
        for _ in range(self._backlog):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # the queue is empty
            except ConnectionAbortedError:
                continue  # reset while queued
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRNOS:
                    logger.error("accept on %s failed: %r", _name(sock), exc)
                    return
                logger.warning("accept on %s: %s; pausing accepts for %g s",
                               _name(sock), exc, ACCEPT_RETRY_DELAY)
                self._loop.remove_reader(sock.fileno())
                self._watched.discard(sock.fileno())
                self._loop.call_later(ACCEPT_RETRY_DELAY, self._watch, sock)
                return
            conn.setblocking(False)
            self._hand_over(conn)

    def _hand_over(self, conn: socket.socket) -> None:
        """Give ``conn`` to the loop: it makes the transport and the protocol."""
        task: asyncio.Task[object] = self._loop.create_task(
            self._loop.connect_accepted_socket(self._factory, conn))
        self._handing.add(task)

        def done(t: asyncio.Task[object]) -> None:
            self._handing.discard(t)
            if t.cancelled() or t.exception() is not None:
                if not t.cancelled():
                    logger.info("could not set up an accepted connection: %r",
                                t.exception())
                conn.close()

        task.add_done_callback(done)

    def close(self) -> None:
        """Stop accepting and close the listening sockets (accepted carriers stay)."""
        if self._closed:
            return
        self._closed = True
        for fd in self._watched:
            self._loop.remove_reader(fd)
        self._watched.clear()
        for server in self._fallback:
            server.close()
        for sock in self.sockets:
            sock.close()

    async def wait_closed(self) -> None:
        """Wait until connections accepted before :meth:`close` are handed over."""
        for server in self._fallback:
            await server.wait_closed()
        if self._handing:
            await asyncio.wait(set(self._handing))


def _name(sock: socket.socket) -> str:
    try:
        return repr(sock.getsockname())
    except OSError:
        return "a closed socket"


async def open_tcp_server(host: str | None, port: int, factory: ProtocolFactory,
                          backlog: int = 128, reuse_address: bool = True) -> TcpServer:
    """Bind and listen on every address ``host`` resolves to (None: all interfaces, as
    ``loop.create_server`` does), and start accepting.

    Raises:
        OSError: an address could not be bound.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, family=socket.AF_UNSPEC,
                                   type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:  # e.g. IPv6 disabled in the kernel
                logger.debug("cannot create a socket for %r", address)
                continue
            sockets.append(sock)
            if reuse_address:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(exc.errno, f"error while attempting to bind on address "
                                         f"{address!r}: {exc.strerror}") from None
            sock.listen(backlog)
            sock.setblocking(False)
        if not sockets:
            raise OSError(f"no address to listen on for {host!r}")
        server = TcpServer(loop, sockets, factory, backlog)
        await server.start()
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return server
