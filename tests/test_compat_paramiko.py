"""paramiko over ``rendr.sync``: an SSH client and server in one process, talking over
a rendr flow's blocking socket (``paramiko.Transport(sock)``): password auth, an exec
channel, and an SFTP put/get of 1 MiB checked by SHA-256, with a migration to the
other path between the two.  Skipped when paramiko is not installed."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

paramiko = pytest.importorskip("paramiko")

import rendr  # noqa: E402
import rendr.sync  # noqa: E402

MIB = 1 << 20
USER, PASSWORD = "rendr", "s3cret"

pytestmark = pytest.mark.timeout(60)


class _Server(paramiko.ServerInterface):  # type: ignore[misc]
    """Password auth; ``exec`` echoes its command back in upper case, exit status 7."""

    def check_auth_password(self, username: str, password: str) -> int:
        ok = (username, password) == (USER, PASSWORD)
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: Any, command: bytes) -> bool:
        def run() -> None:
            channel.sendall(b"echo: " + command.upper())
            channel.send_exit_status(7)
            # EOF, not close(): this thread may run before paramiko has sent the exec
            # request's SUCCESS, and a CLOSE that overtakes it makes the client's
            # exec_command() fail with "Channel closed" (seen once in CI); an EOF
            # does not end the wait, and the client closes the channel itself
            channel.shutdown_write()

        threading.Thread(target=run, daemon=True).start()
        return True


class _Handle(paramiko.SFTPHandle):  # type: ignore[misc]
    def stat(self) -> Any:
        f = self.readfile if hasattr(self, "readfile") else self.writefile
        return paramiko.SFTPAttributes.from_stat(os.fstat(f.fileno()))


def _sftp_server_for(root: Path) -> type:
    """An SFTP server interface serving files in ``root`` (open, stat, remove)."""

    class _SFTP(paramiko.SFTPServerInterface):  # type: ignore[misc]
        def _local(self, path: str) -> Path:
            return root / path.lstrip("/")

        def open(self, path: str, flags: int, attr: Any) -> Any:
            local = self._local(path)
            writing = flags & (os.O_WRONLY | os.O_RDWR)
            handle = _Handle(flags)
            if writing:
                handle.writefile = open(local, "wb")  # noqa: SIM115 (SFTP closes it)
            else:
                handle.readfile = open(local, "rb")  # noqa: SIM115
            return handle

        def stat(self, path: str) -> Any:
            return paramiko.SFTPAttributes.from_stat(os.stat(self._local(path)))

        lstat = stat

        def remove(self, path: str) -> int:
            self._local(path).unlink()
            return paramiko.SFTP_OK

    return _SFTP


@pytest.fixture
def ssh(tmp_path: Path) -> Iterator[tuple[Any, rendr.sync.Socket, Path]]:
    """(client transport, client socket, server root) over a two-path rendr flow."""
    listener = rendr.sync.listen(rendr.ListenSpec("tcp", "127.0.0.1:0"),
                                 rendr.ListenSpec("tcp", "127.0.0.1:0"))
    paths = [rendr.PathSpec("tcp", f"{h}:{p}") for h, p in listener.addrs]
    client_sock = rendr.sync.dial(paths)
    server_sock, _ = listener.accept(timeout=10)
    root = tmp_path / "srv"
    root.mkdir()

    server = paramiko.Transport(server_sock)
    server.add_server_key(paramiko.ECDSAKey.generate())
    server.set_subsystem_handler("sftp", paramiko.SFTPServer, _sftp_server_for(root))
    server.start_server(threading.Event(), server=_Server())  # not blocking

    client = paramiko.Transport(client_sock)
    client.connect(username=USER, password=PASSWORD)  # host key not checked (throwaway key)
    try:
        yield client, client_sock, root
    finally:
        client.close()
        server.close()
        listener.close()


def test_exec_channel_over_rendr(ssh: tuple[Any, rendr.sync.Socket, Path]) -> None:
    client, _, _ = ssh
    assert client.is_authenticated()
    channel = client.open_session(timeout=10)
    channel.settimeout(10)
    channel.exec_command("hello over rendr")
    out = b""
    while chunk := channel.recv(4096):
        out += chunk
    assert out == b"echo: HELLO OVER RENDR"
    assert channel.recv_exit_status() == 7


def test_wrong_password_is_refused(tmp_path: Path) -> None:
    """The SSH handshake really runs end to end: a wrong password fails auth."""
    listener = rendr.sync.listen_tcp("127.0.0.1:0")
    host, port = listener.addrs[0]
    client_sock = rendr.sync.dial([rendr.PathSpec("tcp", f"{host}:{port}")])
    server_sock, _ = listener.accept(timeout=10)
    server = paramiko.Transport(server_sock)
    server.add_server_key(paramiko.ECDSAKey.generate())
    server.start_server(threading.Event(), server=_Server())  # not blocking
    client = paramiko.Transport(client_sock)
    try:
        with pytest.raises(paramiko.AuthenticationException):
            client.connect(username=USER, password="wrong")
    finally:
        client.close()
        server.close()
        listener.close()


def test_sftp_put_get_1mib_with_a_migration(
        ssh: tuple[Any, rendr.sync.Socket, Path], tmp_path: Path) -> None:
    """SFTP put then get of 1 MiB, the flow moved to its other path in between; the
    server's copy and the fetched copy both match the original's SHA-256."""
    client, sock, root = ssh
    original = tmp_path / "original.bin"
    data = os.urandom(MIB)
    original.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()

    sftp = paramiko.SFTPClient.from_transport(client)
    assert sftp is not None
    sftp.get_channel().settimeout(10)
    attrs = sftp.put(str(original), "/uploaded.bin")
    assert attrs.st_size == MIB
    assert hashlib.sha256((root / "uploaded.bin").read_bytes()).hexdigest() == digest

    conn = sock.conn
    before = conn.active_path
    other = next(p.id for p in conn.stats().paths if p.id != before)
    sock.call(conn.migrate(other))
    fetched = tmp_path / "fetched.bin"
    sftp.get("/uploaded.bin", str(fetched))
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == digest
    assert conn.active_path == other != before
    assert conn.migration_count >= 1
    sftp.close()
