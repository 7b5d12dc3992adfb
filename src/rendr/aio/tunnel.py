"""A rendr flow as a *tunnel*: the ``tunnel=`` hook of asyncssh (and of any library
that opens its connections through an object with ``create_connection(factory, host,
port)`` / ``create_server(factory, host, port)``).

::

    import asyncssh
    import rendr
    from rendr.aio.tunnel import Tunnel

    # server
    listener = await rendr.listen_tcp("0.0.0.0:5555")
    server = await asyncssh.listen(tunnel=Tunnel(listener=listener),
                                   server_host_keys=[key], ...)
    # client: SSH over a migrating two-path flow
    dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", "h1:5555"),
                                 rendr.PathSpec("tcp", "h2:5556")])
    async with asyncssh.connect("h1", tunnel=Tunnel(dialer=dialer), ...) as ssh: ...

Why not ``asyncssh.connect(sock=...)``: asyncssh hands ``sock`` to
``loop.create_connection(sock=...)``, which needs an OS socket; no single OS socket
carries a rendr flow (``rendr.sync.Socket.fileno()`` is -1), and asyncssh takes no
``(reader, writer)`` pair.  Its tunnel hook only needs an :class:`asyncio.Protocol`
driven by a transport, which is what :class:`~rendr.ConnTransport` is.

This module does not import asyncssh: the objects only follow its (duck-typed) tunnel
protocol.  The host and port asyncssh passes are ignored; the dialer's paths decide
where the flow goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ..errors import RendrError
from .dialer import Dialer
from .listener import Listener
from .streams import ConnTransport

__all__ = ["Tunnel", "TunnelServer"]

logger = logging.getLogger("rendr.tunnel")


def _parse(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


class TunnelServer:
    """What :meth:`Tunnel.create_server` returns: runs a protocol on every flow the
    listener accepts until :meth:`close` (the shape of an :class:`asyncio.Server` that
    asyncssh's acceptor uses: ``close``, ``wait_closed``, ``get_addresses``,
    ``get_port``)."""

    def __init__(self, listener: Listener, factory: Callable[[str, int], Any]) -> None:
        self._listener = listener
        self._factory = factory
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        async for conn in self._listener:
            stats = conn.stats()
            peer = next((p.remote_addr for p in stats.paths if p.id == stats.active_path),
                        ":0")
            try:
                protocol = self._factory(*_parse(peer))
            except Exception:
                logger.exception("tunnel protocol factory failed; aborting the flow")
                conn.abort(reason="no protocol for this flow")
                continue
            ConnTransport(conn, protocol)

    def get_addresses(self) -> list[tuple[str, int]]:
        """The listener's addresses."""
        return [(a[0], a[1]) for a in self._listener.addrs]

    def get_port(self) -> int:
        """The listener's port if it has one, else 0."""
        ports = {port for _, port in self.get_addresses()}
        return ports.pop() if len(ports) == 1 else 0

    def close(self) -> None:
        """Stop accepting (flows already accepted go on); the listener stays open."""
        self._task.cancel()

    async def wait_closed(self) -> None:
        """Wait until accepting stopped."""
        with contextlib.suppress(asyncio.CancelledError, RendrError):
            await self._task


class Tunnel:
    """Opens asyncssh's (or another library's) connections over rendr flows.

    Give ``dialer`` to connect (:meth:`create_connection`), ``listener`` to serve
    (:meth:`create_server`).  The tunnel object does not own them: close the listener
    yourself.
    """

    def __init__(self, *, dialer: Dialer | None = None,
                 listener: Listener | None = None) -> None:
        self.dialer = dialer
        self.listener = listener

    async def create_connection(self, session_factory: Callable[[], Any],
                                remote_host: str = "", remote_port: int = 0
                                ) -> tuple[ConnTransport, Any]:
        """Dial a flow and run ``session_factory()``'s protocol on it; returns
        ``(transport, protocol)``.  ``remote_host``/``remote_port`` are ignored."""
        if self.dialer is None:
            raise ValueError("Tunnel.create_connection needs a dialer")
        conn = await self.dialer.dial()
        protocol = session_factory()
        return ConnTransport(conn, protocol), protocol

    async def create_server(self, session_factory: Callable[[str, int], Any],
                            listen_host: str = "", listen_port: int = 0) -> TunnelServer:
        """Run ``session_factory(peer_host, peer_port)``'s protocol on every flow the
        listener accepts.  ``listen_host``/``listen_port`` are ignored."""
        if self.listener is None:
            raise ValueError("Tunnel.create_server needs a listener")
        return TunnelServer(self.listener, session_factory)

    def close(self) -> None:
        """Nothing to release: the flows close with their SSH connections."""

    async def wait_closed(self) -> None:
        """Nothing to wait for (see :meth:`close`)."""
