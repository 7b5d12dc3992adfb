"""Modes on real sockets: RACE and BOND dialed, live switches in both directions,
the illegal switch, packets raced over udpflow (both loops)."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

import rendr

PSK = b"modes-test-psk-0123456789abcdef!"
MIB = 1 << 20


async def _stream_pair(mode: rendr.Mode, n_paths: int = 2,
                       ) -> tuple[rendr.Listener, rendr.Conn, rendr.Conn]:
    ln = await rendr.listen(*[rendr.ListenSpec("tcp", "127.0.0.1:0")] * n_paths, psk=PSK)
    dialer = rendr.Dialer(mode=mode, psk=PSK, paths=[
        rendr.PathSpec("tcp", f"127.0.0.1:{port}") for _, port in ln.addrs])
    client = await asyncio.wait_for(dialer.dial(), 5)
    server = await asyncio.wait_for(ln.accept(), 5)

    async def both_up() -> None:
        while (sum(p.state == "up" for p in client.stats().paths) < n_paths  # noqa: ASYNC110
               or sum(p.state == "up" for p in server.stats().paths) < n_paths):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(both_up(), 5)
    return ln, client, server


async def _pump(src: rendr.Conn, dst: rendr.Conn, data: bytes) -> bytes:
    async def write() -> None:
        await src.write(data)

    async def read() -> bytes:
        got = bytearray()
        while len(got) < len(data):
            chunk = await dst.read(1 << 20)
            assert chunk, "unexpected EOF"
            got += chunk
        return bytes(got)

    _, got = await asyncio.wait_for(asyncio.gather(write(), read()), 30)
    return got


def _sent(conn: rendr.Conn) -> list[int]:
    return [p.bytes_sent for p in sorted(conn.stats().paths, key=lambda p: p.id)]


@pytest.mark.parametrize("mode", [rendr.Mode.RACE, rendr.Mode.BOND])
async def test_both_directions_use_the_dialed_mode(mode: rendr.Mode) -> None:
    ln, client, server = await _stream_pair(mode)
    try:
        assert client.mode is mode and server.mode is mode
        up, down = os.urandom(8 * MIB), os.urandom(8 * MIB)
        got_up, got_down = await asyncio.gather(_pump(client, server, up),
                                                _pump(server, client, down))
        assert hashlib.sha256(got_up).digest() == hashlib.sha256(up).digest()
        assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest()
        for conn in (client, server):  # the listener schedules by the mode too
            sent = _sent(conn)
            assert all(n > MIB // 4 for n in sent), (mode, conn.role, sent)
            if mode is rendr.Mode.RACE:
                assert sum(sent) > 8 * MIB * 1.2, sent  # copies
        if mode is rendr.Mode.BOND:
            assert client.stats().recv_dups == 0 and server.stats().recv_dups == 0
    finally:
        client.abort()
        server.abort()
        await ln.close()


async def test_live_switches_from_either_end_lose_and_duplicate_nothing() -> None:
    ln, client, server = await _stream_pair(rendr.Mode.PRIME)
    seen: list[rendr.Mode] = []
    try:
        data = os.urandom(24 * MIB)

        async def switcher() -> None:
            for conn, mode in [(client, rendr.Mode.RACE), (server, rendr.Mode.PRIME),
                               (server, rendr.Mode.BOND), (client, rendr.Mode.PRIME)]:
                await asyncio.sleep(0.05)
                await asyncio.wait_for(conn.set_mode(mode), 10)
                seen.append(mode)
                assert conn.mode is mode

        got, _ = await asyncio.gather(_pump(client, server, data), switcher())
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        assert seen == [rendr.Mode.RACE, rendr.Mode.PRIME, rendr.Mode.BOND, rendr.Mode.PRIME]
        await asyncio.sleep(0.1)
        assert client.mode is server.mode is rendr.Mode.PRIME
        await client.write(b"end")
        assert await asyncio.wait_for(server.read(10), 5) == b"end"
    finally:
        client.abort()
        server.abort()
        await ln.close()


async def test_race_to_bond_raises() -> None:
    ln, client, server = await _stream_pair(rendr.Mode.RACE, n_paths=1)
    try:
        with pytest.raises(rendr.ModeSwitchIllegal):
            await client.set_mode(rendr.Mode.BOND)
        with pytest.raises(rendr.ModeSwitchIllegal):
            await server.set_mode(rendr.Mode.BOND)
        assert client.mode is server.mode is rendr.Mode.RACE
        await client.set_mode(rendr.Mode.RACE)  # a no-op
        await client.set_mode(rendr.Mode.PRIME)
        await client.set_mode(rendr.Mode.BOND)
        await asyncio.sleep(0.05)
        assert client.mode is server.mode is rendr.Mode.BOND
    finally:
        client.abort()
        server.abort()
        await ln.close()


async def test_raced_packets_arrive_once_over_udpflow() -> None:
    pln = await rendr.listen_udpflow_packet("127.0.0.1:0", "127.0.0.1:0", psk=PSK)
    try:
        dialer = rendr.Dialer(mode=rendr.Mode.RACE, psk=PSK, paths=[
            rendr.PathSpec("udpflow", f"127.0.0.1:{port}") for _, port in pln.addrs])
        pc = await asyncio.wait_for(dialer.dial_packet(), 5)
        spc = await asyncio.wait_for(pln.accept(), 5)
        while sum(p.state == "up" for p in spc.stats().paths) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        n = 300
        for i in range(n):
            await pc.send(i.to_bytes(4, "big"))
            if i % 20 == 19:
                await asyncio.sleep(0.002)
        got = []
        while len(got) < n:
            got.append(await asyncio.wait_for(spc.recv(), 5))
        assert sorted(int.from_bytes(g, "big") for g in got) == list(range(n))
        await asyncio.sleep(0.2)
        assert spc.stats().recv_dups >= n // 2  # the other path's copies, dropped
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(spc.recv(), 0.2)  # and nothing more
        pc.abort()
    finally:
        await pln.close()


@pytest.mark.timeout(60)
async def test_an_idle_lossy_udpflow_path_stays_up() -> None:
    # Before: an idle path PINGs once a second and was dead 0.6 s after one lost
    # PING or PONG (half the time at 30 % loss each way), so it flapped; and a
    # listener dropped a freshly joined path whose JOIN answer was lost before the
    # dialer's re-sent opening could fetch it again.
    from rendr.testing.udprelay import UdpRelay

    pln = await rendr.listen_udpflow_packet("127.0.0.1:0", psk=PSK)
    relay = UdpRelay(pln.addrs[0], seed=7)
    relay.set_faults("both", loss=0.3, jitter=0.01)
    await relay.start()
    try:
        dialer = rendr.Dialer(psk=PSK, paths=[rendr.PathSpec("udpflow",
                                                             f"127.0.0.1:{relay.addr[1]}")])
        pc = await asyncio.wait_for(dialer.dial_packet(), 15)
        spc = await asyncio.wait_for(pln.accept(), 15)
        await asyncio.sleep(5)  # idle
        for conn in (pc, spc):
            downs = [p for p in conn.stats().paths if p.state != "up"]
            assert not downs, [(p.id, p.down_cause) for p in downs]
        assert [p.ping_loss > 0.1 for p in pc.stats().paths] == [True]  # it was lossy
        pc.abort()
        spc.abort()
    finally:
        await pln.close()
        await relay.close()
