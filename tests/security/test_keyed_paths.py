"""Issue 7: nobody else can touch a flow.  Raw-socket attacks against a real listener
(the attacker sniffed everything sent in clear: the flow id and path ids) and
loopback flows with authenticated records."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket

import pytest

import rendr
from rendr.core.handshake import HandshakeParser
from rendr.core.wire import PREFACE, FrameType, Hello, Join, JoinAck, Result, data_header
from rendr.testing.rawpeer import RawDialer

MIB = 1 << 20


async def _answer(sock: socket.socket, opening: bytes) -> tuple[int, bytes, bytes] | None:
    """Send ``opening``; the listener's first frame (type, body) and what followed, or
    None when it closed the carrier."""
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, opening)
    parser = HandshakeParser()
    while data := await asyncio.wait_for(loop.sock_recv(sock, 65536), 5):
        if (frame := parser.feed(data)) is not None:
            return frame[0], frame[1], parser.leftover
    return None


async def _connect(addr: tuple[str, int]) -> socket.socket:
    s = socket.socket()
    s.setblocking(False)
    await asyncio.get_running_loop().sock_connect(s, addr)
    return s


async def _closed(sock: socket.socket, within: float = 3.0) -> bool:
    loop = asyncio.get_running_loop()
    try:
        while await asyncio.wait_for(loop.sock_recv(sock, 65536), within):
            pass
        return True
    except asyncio.TimeoutError:
        return False
    except OSError:
        return True


def _run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]



async def _still_works(victim: rendr.Conn, server: rendr.Conn) -> None:
    """The victim's flow still carries data both ends see."""
    await victim.write(b"still mine")
    assert await server.readexactly(10) == b"still mine"


async def _end(victim: rendr.Conn, server: rendr.Conn, lst: rendr.Listener) -> None:
    victim.abort()
    server.abort()
    await lst.close()


def test_sniffed_flow_id_attaches_nothing() -> None:
    """The attacker saw a victim's HELLO (flow id in clear) and tries to attach its own
    path with JOIN, v0-style and with a forged MAC: refused, the victim unaffected."""
    async def main() -> None:
        lst = await rendr.listen_tcp("127.0.0.1:0")
        addr = lst.addrs[0][:2]
        victim = await rendr.Dialer(paths=[rendr.PathSpec("tcp", f"{addr[0]}:{addr[1]}")]
                                    ).dial()
        server = await lst.accept()
        try:
            for join in (Join(victim.flow_id, 7), Join(victim.flow_id, 8, os.urandom(16),
                                                       os.urandom(16))):
                s = await _connect(addr)
                got = await _answer(s, PREFACE + join.encode())
                assert got is not None and got[0] == FrameType.JOIN_ACK
                assert JoinAck.decode(got[1]).result == Result.AUTH_FAILED
                assert await _closed(s)
                s.close()
            assert len(server.stats().paths) == 1
            await _still_works(victim, server)
        finally:
            await _end(victim, server, lst)

    _run(main())


def test_psk_listener_refuses_a_dialer_without_it() -> None:
    async def main() -> None:
        psk = os.urandom(32)
        lst = await rendr.listen_tcp("127.0.0.1:0", psk=psk)
        host, port = lst.addrs[0][:2]
        spec = [rendr.PathSpec("tcp", f"{host}:{port}")]
        try:
            with pytest.raises(rendr.HandshakeError, match="AUTH_FAILED"):
                await rendr.Dialer(paths=spec, psk=os.urandom(32)).dial()
            conn = await rendr.Dialer(paths=spec, psk=psk).dial()
            server = await lst.accept()
            await conn.write(b"hi")
            assert await server.readexactly(2) == b"hi"
            conn.abort()
            server.abort()
        finally:
            await lst.close()

    _run(main())


def test_dialer_pinning_a_server_key_detects_an_impostor() -> None:
    async def main() -> None:
        priv, pub = rendr.generate_server_key()
        real = await rendr.listen_tcp("127.0.0.1:0", server_key=priv)
        other_priv, _ = rendr.generate_server_key()
        impostor = await rendr.listen_tcp("127.0.0.1:0", server_key=other_priv)
        try:
            h, p = real.addrs[0][:2]
            conn = await rendr.Dialer(paths=[rendr.PathSpec("tcp", f"{h}:{p}")],
                                      server_key=pub).dial()
            conn.abort()
            h, p = impostor.addrs[0][:2]
            with pytest.raises(rendr.HandshakeError, match="could not prove"):
                await rendr.Dialer(paths=[rendr.PathSpec("tcp", f"{h}:{p}")],
                                   server_key=pub).dial()
        finally:
            await real.close()
            await impostor.close()

    _run(main())


@pytest.mark.parametrize("encrypt", [True, False])
def test_records_carry_a_flow_exactly_across_a_path_kill(encrypt: bool) -> None:
    """With records on (encrypted or authenticated only): 4 MiB both ways, the active
    path reset in the middle, every byte once."""
    from tests.aio.conftest import close_pair, drain_all, make_pair, pump

    async def main() -> None:
        pair = await make_pair(records=True, encrypt=encrypt)
        try:
            up, down = os.urandom(4 * MIB), os.urandom(4 * MIB)
            r_srv = asyncio.create_task(drain_all(pair.server))
            r_cli = asyncio.create_task(drain_all(pair.client))

            async def send(conn: rendr.Conn, data: bytes) -> None:
                await pump(conn, data[: len(data) // 2])
                await pump(conn, data[len(data) // 2 :])
                await conn.write_eof()

            writers = asyncio.gather(send(pair.client, up), send(pair.server, down))
            await asyncio.sleep(0.05)
            pair.relay_of(pair.client.active_path).kill()
            await writers
            got_up, got_down = await asyncio.gather(r_srv, r_cli)
            assert hashlib.sha256(got_up).digest() == hashlib.sha256(up).digest()
            assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest()
            assert pair.client._driver.flow.records and pair.client._driver.flow.keys
        finally:
            await close_pair(pair)

    _run(main())


def test_injected_and_replayed_bytes_end_only_their_path() -> None:
    """Records on: the attacker holds the flow's keys for path 1 only as a legitimate
    dialer would (RawDialer); on path 2 it sends an unsealed frame, and on path 3 it
    replays path 1's first record: each fails authentication and ends its path; the
    flow reads on, only what path 1 carried."""
    async def main() -> None:
        lst = await rendr.listen_tcp("127.0.0.1:0", records=True)
        addr = lst.addrs[0][:2]
        peer = RawDialer(config=rendr.FlowConfig(records=True))
        try:
            s1 = await _connect(addr)
            got = await _answer(s1, peer.hello())
            assert got is not None and Hello.decode(got[1], ack=True).result == Result.OK
            peer.on_hello_ack(got[1])
            first = peer.seal(data_header(0, 5) + b"hello")
            await asyncio.get_running_loop().sock_sendall(s1, first)
            server = await lst.accept()  # (once the first record confirmed the keys)
            assert await server.readexactly(5) == b"hello"
            for path_id, payload in ((2, data_header(5, 5) + b"EVIL!"), (3, first)):
                s = await _connect(addr)
                got = await _answer(s, peer.join(path_id) + payload)
                assert got is not None and JoinAck.decode(got[1]).result == Result.OK
                assert await _closed(s), f"path {path_id} was not ended"
                s.close()
            assert server._driver.flow.auth_failures == 2
            await asyncio.get_running_loop().sock_sendall(
                s1, peer.seal(data_header(5, 5) + b"world"))
            assert await server.readexactly(5) == b"world"
            server.abort()
            s1.close()
        finally:
            await lst.close()

    _run(main())


@pytest.mark.parametrize("jump", [1000, 5000])
def test_activate_epoch_may_not_jump_to_the_end(jump: int) -> None:
    """Issue 7's theft pinned the epoch at 2^32 - 1 so that the victim's own
    ACTIVATEs looked stale.  Even from an authenticated path an epoch may move at
    most MAX_EPOCH_STEP (1024) ahead: 1000 is followed, 5000 is a protocol error."""
    from rendr.core.wire import encode_activate

    async def main() -> None:
        lst = await rendr.listen_tcp("127.0.0.1:0")
        addr = lst.addrs[0][:2]
        peer = RawDialer()
        try:
            s1 = await _connect(addr)
            got = await _answer(s1, peer.hello())
            assert got is not None and Hello.decode(got[1], ack=True).result == Result.OK
            peer.on_hello_ack(got[1])
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(s1, peer.seal(encode_activate(1, jump)
                                                   + data_header(0, 2) + b"hi"))
            server = await lst.accept()
            if jump <= 1024:
                assert await server.readexactly(2) == b"hi"
                assert server._driver.flow._migration.epoch == jump
                server.abort()
            else:
                with pytest.raises(rendr.ProtocolError):
                    await server.readexactly(2)
            s1.close()
        finally:
            await lst.close()

    _run(main())


def test_forged_joins_cannot_lock_the_victim_out() -> None:
    """The attacker knows the flow id and opens more forged JOINs than a flow may have
    paths (and one naming the victim's own path id): every one is refused before it
    takes a slot, so the victim's own ``add_path()`` still succeeds and its first path
    is untouched."""
    async def main() -> None:
        lst = await rendr.listen_tcp("127.0.0.1:0")
        addr = lst.addrs[0][:2]
        spec = rendr.PathSpec("tcp", f"{addr[0]}:{addr[1]}")
        victim = await rendr.Dialer(paths=[spec]).dial()
        server = await lst.accept()
        try:
            socks = [await _connect(addr) for _ in range(20)]
            answers = await asyncio.gather(*(
                _answer(s, PREFACE + Join(victim.flow_id, i, os.urandom(16),
                                          os.urandom(16)).encode())
                for i, s in enumerate(socks)))
            for got in answers:
                assert got is not None and got[0] == FrameType.JOIN_ACK
                assert JoinAck.decode(got[1]).result == Result.AUTH_FAILED
            for s in socks:
                s.close()
            assert len(server.stats().paths) == 1
            await victim.add_path(spec)
            for _ in range(100):
                if len(server.stats().paths) == 2:
                    break
                await asyncio.sleep(0.02)
            assert len(server.stats().paths) == 2
            await _still_works(victim, server)
        finally:
            await _end(victim, server, lst)

    _run(main())


def test_turning_records_off_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """``records=False`` leaves frames unauthenticated on a carrier that does not
    authenticate itself: like running without ``psk``/``server_key``, it is said in a
    start-up warning, not left silent."""
    with caplog.at_level("WARNING", logger="rendr"):
        rendr.Dialer(paths=[rendr.PathSpec("tcp", "127.0.0.1:9")], psk=b"k" * 16,
                     records=False)
    assert any("records=False" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="rendr"):
        rendr.Dialer(paths=[rendr.PathSpec("tcp", "127.0.0.1:9")], psk=b"k" * 16)
    assert not caplog.records
