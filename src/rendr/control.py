"""The local control socket of a running forwarder: what ``rendr stats`` reads.

``rendr serve/connect --control [ADDRESS]`` serves the JSON snapshot of its
:class:`~rendr.aio.monitor.FlowMonitor` (every live flow and path: state, RTT,
throughput, migrations, counters) on a socket that only this machine can reach:

- a unix socket (the default: ``$XDG_RUNTIME_DIR/rendr/ROLE-PID.sock``, or
  ``/tmp/rendr-UID/ROLE-PID.sock`` without ``XDG_RUNTIME_DIR``), created with mode 0600
  in a directory of mode 0700 (so only the same user can connect), removed on exit;
- or a loopback TCP address (``127.0.0.1:PORT``, ``[::1]:PORT``, ``localhost:PORT``);
  any other address is refused.  A TCP port is open to every local user: prefer the
  unix socket on a shared machine.

The protocol is one line each way: the client sends ``stats\\n``, the server answers
one JSON document and a newline and closes.  The socket is read-only: nothing on it
changes the forwarder.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import logging
import os
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any

from .aio.monitor import FlowMonitor

__all__ = ["ControlError", "ControlServer", "default_control_dir", "default_control_path",
           "fetch_stats", "find_control_sockets", "parse_control_address",
           "start_control_server", "start_default_control_server"]

logger = logging.getLogger("rendr.control")

ControlAddress = str | tuple[str, int]
"""A unix socket path, or a loopback ``(host, port)``."""

_REQUEST_TIMEOUT = 5.0
_MAX_REQUEST = 1024


class ControlError(ValueError):
    """A control address that is not allowed or not usable (one line for the user)."""


# --------------------------------------------------------------------------- addresses


def default_control_dir() -> Path:
    """Where control sockets go by default: ``$XDG_RUNTIME_DIR/rendr`` when that variable
    names a directory, ``<tmp>/rendr-UID`` otherwise."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "rendr"
    return Path(tempfile.gettempdir()) / f"rendr-{os.getuid()}"


def default_control_path(role: str) -> str:
    """The default control socket of this process: ``DIR/ROLE-PID.sock``."""
    return str(default_control_dir() / f"{role}-{os.getpid()}.sock")


def _is_host_port(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(sep) and port.isdigit() and "/" not in value and bool(host)


def parse_control_address(value: str) -> ControlAddress:
    """``HOST:PORT`` (loopback only) -> ``(host, port)``; anything else is a unix socket
    path.  Raises :class:`ControlError` for a host that is not loopback."""
    if not _is_host_port(value):
        return value
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not 0 < int(port) < 65536:
        raise ControlError(f"{value!r}: port out of range")
    _check_loopback(host)
    return host, int(port)


def _check_loopback(host: str) -> None:
    """Raise :class:`ControlError` unless every address ``host`` names is loopback."""
    try:
        addrs = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ControlError(f"control address {host!r}: {exc}") from None
        addrs = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    bad = sorted(str(a) for a in addrs if not a.is_loopback)
    if bad or not addrs:
        raise ControlError(f"control address {host!r} is not loopback ({', '.join(bad)}): "
                           "the control socket is bound to a unix socket or loopback only")


def _private_dir(path: Path) -> None:
    """Make ``path`` a directory only this user can enter (mode 0700), or check that it
    is one."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ControlError(f"{path}: not a private directory of this user (mode "
                           f"{stat.S_IMODE(st.st_mode):o}, owner {st.st_uid})")


def _socket_alive(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(path)
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------- server


class ControlServer:
    """A running control socket (close it to stop; a unix socket's file goes too)."""

    def __init__(self, server: asyncio.Server, address: ControlAddress) -> None:
        self.server = server
        self.address = address
        """The unix socket's path, or the ``(host, port)`` actually bound."""

    def close(self) -> None:
        self.server.close()
        if isinstance(self.address, str):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)

    async def wait_closed(self) -> None:
        await self.server.wait_closed()

    async def __aenter__(self) -> ControlServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


async def start_control_server(monitor: FlowMonitor,
                               address: ControlAddress) -> ControlServer:
    """Serve ``monitor``'s snapshots on ``address`` (a unix socket path, or a loopback
    ``(host, port)``: anything else raises :class:`ControlError`)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), _REQUEST_TIMEOUT)
            command = line.decode("ascii", "replace").strip()
            if command == "stats":
                reply: dict[str, Any] = monitor.snapshot()
            else:
                reply = {"error": f"unknown command {command!r} (try 'stats')"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            logger.debug("control request failed: %s", exc)
        finally:
            writer.close()

    if isinstance(address, tuple):
        host, port = address
        _check_loopback(host)
        server = await asyncio.start_server(handle, host, port, limit=_MAX_REQUEST)
        bound = server.sockets[0].getsockname()
        control = ControlServer(server, (str(bound[0]), int(bound[1])))
    else:
        control = ControlServer(await _start_unix(handle, address), address)
    logger.debug("control socket on %s", _fmt(control.address),
                extra={"event": "control_listening", "control": _fmt(control.address)})
    return control


def _bind_unix(path: str) -> socket.socket:
    """A unix socket bound at ``path`` with mode 0600 (a stale socket there is replaced;
    a live one, or a file that is not a socket, is an error)."""
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ControlError(f"{path}: exists and is not a socket")
        if _socket_alive(path):
            raise OSError(errno.EADDRINUSE, f"{path}: another program is serving it")
        os.unlink(path)  # a stale socket of a program that is gone
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)  # born 0600: no window in which others could connect
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
    except BaseException:
        sock.close()
        raise
    return sock


async def _start_unix(handle: Any, path: str) -> asyncio.Server:
    sock = _bind_unix(path)
    try:
        return await asyncio.start_unix_server(handle, sock=sock, limit=_MAX_REQUEST)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


async def start_default_control_server(monitor: FlowMonitor) -> ControlServer:
    """A control socket at :func:`default_control_path` (in a private directory)."""
    path = default_control_path(monitor.role)
    _private_dir(Path(path).parent)
    return await start_control_server(monitor, path)


def _fmt(address: ControlAddress) -> str:
    if isinstance(address, str):
        return address
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------- client


def fetch_stats(address: ControlAddress, timeout: float = 5.0) -> dict[str, Any]:
    """One snapshot from the control socket at ``address`` (blocking)."""
    if isinstance(address, tuple):
        sock = socket.create_connection(address, timeout=timeout)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
    with sock:
        sock.sendall(b"stats\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    if not data:
        raise OSError(errno.ECONNRESET, "the control socket closed without an answer")
    reply = json.loads(data)
    if not isinstance(reply, dict):
        raise ValueError("the control socket's answer is not a JSON object")
    if "error" in reply:
        raise ValueError(f"control socket: {reply['error']}")
    return reply


def find_control_sockets() -> list[str]:
    """The control sockets in :func:`default_control_dir` that a program answers on."""
    directory = default_control_dir()
    if not directory.is_dir():
        return []
    return sorted(str(p) for p in directory.glob("*.sock") if _socket_alive(str(p)))
