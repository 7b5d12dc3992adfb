"""Issue 6: a listener under a flood keeps its caps, and legitimate flows go on.

Raw sockets against a real listener on loopback, bounded in count and time."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

import rendr
from rendr.errors import HandshakeError


async def _silent_sockets(addr: tuple[str, int], n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        await asyncio.get_running_loop().sock_connect(s, addr)
        socks.append(s)
    return socks


def _closed_by_peer(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def test_pending_handshake_caps_and_first_frame_timeout() -> None:
    async def main() -> None:
        lst = await rendr.listen_tcp("127.0.0.1:0", max_pending_per_source=4,
                                     first_frame_timeout=0.4)
        try:
            addr = lst.addrs[0]
            socks = await _silent_sockets(addr, 12)
            await asyncio.sleep(0.15)
            refused = sum(_closed_by_peer(s) for s in socks)
            assert refused >= 8, f"only {refused} of 12 refused above the per-source cap"
            # the 4 admitted ones hear nothing and are dropped at the first-frame timeout
            await asyncio.sleep(0.5)
            assert all(_closed_by_peer(s) for s in socks)
            for s in socks:
                s.close()
            # the slots are free again: a legitimate dial works
            dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"{addr[0]}:{addr[1]}")])
            conn = await dialer.dial()
            server = await lst.accept()
            await conn.write(b"ok")
            assert await server.readexactly(2) == b"ok"
            conn.abort()
            server.abort()
        finally:
            await lst.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_flows_per_listener_cap_refuses_with_busy() -> None:
    async def main() -> None:
        lst = await rendr.listen_tcp("127.0.0.1:0", max_flows=2)
        try:
            host, port = lst.addrs[0]
            dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"{host}:{port}")])
            a = await dialer.dial()
            b = await dialer.dial()
            with pytest.raises(HandshakeError, match="BUSY"):
                await dialer.dial()
            await a.write(b"still fine")  # existing flows are untouched
            sa = await lst.accept()
            assert await sa.readexactly(10) == b"still fine"
            a.abort()
            sa.abort()
            deadline = time.monotonic() + 3
            while True:  # the listener forgets the aborted flow: room for a new one
                try:
                    c = await dialer.dial()
                    break
                except HandshakeError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
            c.abort()
            b.abort()
        finally:
            await lst.close()

    asyncio.run(asyncio.wait_for(main(), 20))
