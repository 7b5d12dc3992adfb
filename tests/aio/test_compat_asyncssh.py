"""asyncssh over rendr: client and server in one process, the SSH connection carried
by a two-path rendr flow through asyncssh's ``tunnel=`` hook (:mod:`rendr.aio.tunnel`):
password auth, an exec session, and SFTP put/get of 1 MiB checked by SHA-256 while the
active path is reset.  Skipped when asyncssh is not installed.

``asyncssh.connect(sock=...)`` cannot take a rendr flow: asyncssh passes ``sock`` to
``loop.create_connection(sock=...)``, which needs an OS socket, and no single OS socket
carries a flow (see rendr/aio/tunnel.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

asyncssh = pytest.importorskip("asyncssh")

import rendr  # noqa: E402
from rendr.aio.tunnel import Tunnel  # noqa: E402
from rendr.testing.relay import TcpRelay  # noqa: E402

MIB = 1 << 20
USER, PASSWORD = "rendr", "s3cret"

pytestmark = pytest.mark.timeout(40)


class _Server(asyncssh.SSHServer):  # type: ignore[misc]
    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return (username, password) == (USER, PASSWORD)


async def _shout(process: Any) -> None:
    """The exec handler: stdin back in upper case, prefixed by the command."""
    data = await process.stdin.read()
    process.stdout.write(f"{process.command}: {data.upper()}")
    process.exit(3)


class _Setup:
    def __init__(self, listener: rendr.Listener, relays: list[TcpRelay],
                 acceptor: Any, root: Path) -> None:
        self.listener = listener
        self.relays = relays
        self.acceptor = acceptor
        self.root = root
        self.dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{r.addr[1]}")
                                          for r in relays])

    async def connect(self, password: str = PASSWORD) -> Any:
        return await asyncio.wait_for(asyncssh.connect(
            "rendr.test", tunnel=Tunnel(dialer=self.dialer), known_hosts=None,
            username=USER, password=password, client_keys=None, agent_path=None), 10)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[_Setup]:
    listener = await rendr.listen_tcp("127.0.0.1:0")
    relays = [TcpRelay(("127.0.0.1", listener.addrs[0][1])) for _ in range(2)]
    for relay in relays:
        await relay.start()
    root = tmp_path / "srv"
    root.mkdir()
    acceptor = await asyncssh.listen(
        tunnel=Tunnel(listener=listener),
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        server_factory=_Server, process_factory=_shout,
        sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(root)))
    try:
        yield _Setup(listener, relays, acceptor, root)
    finally:
        acceptor.close()
        await acceptor.wait_closed()
        await listener.close()
        for relay in relays:
            await relay.close()


async def test_exec_over_a_rendr_tunnel(setup: _Setup) -> None:
    async with await setup.connect() as ssh:
        result = await asyncio.wait_for(ssh.run("shout", input="hello rendr"), 10)
    assert result.stdout == "shout: HELLO RENDR"
    assert result.exit_status == 3


async def test_wrong_password_is_refused(setup: _Setup) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        await setup.connect(password="wrong")


async def test_sftp_1mib_across_a_path_kill(setup: _Setup, tmp_path: Path) -> None:
    """SFTP put, then get while the active path's TCP connection is reset: both copies
    match the original's SHA-256 and the flow migrated."""
    data = os.urandom(MIB)
    digest = hashlib.sha256(data).hexdigest()
    original = tmp_path / "original.bin"
    original.write_bytes(data)
    fetched = tmp_path / "fetched.bin"
    async with await setup.connect() as ssh:
        conn = ssh.get_extra_info("rendr_conn")
        assert isinstance(conn, rendr.Conn)
        async with ssh.start_sftp_client() as sftp:
            await asyncio.wait_for(sftp.put(str(original), "/uploaded.bin"), 10)
            served = setup.root / "uploaded.bin"
            assert hashlib.sha256(served.read_bytes()).hexdigest() == digest

            stats = conn.stats()
            remote = next(p.remote_addr for p in stats.paths if p.id == stats.active_path)
            victim = next(r for r in setup.relays if remote.endswith(f":{r.addr[1]}"))
            loop = asyncio.get_running_loop()
            loop.call_later(0.005, victim.kill)  # mid-transfer, on loopback
            await asyncio.wait_for(sftp.get("/uploaded.bin", str(fetched),
                                            block_size=16384), 15)
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == digest
    assert conn.migration_count >= 1
