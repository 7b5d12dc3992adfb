"""Reliable byte streams over udpflow paths (loss recovery, congestion control and
pacing per path) on real sockets, through the project's UDP fault relay; and flows
that mix a TCP path with a udpflow path (both loops)."""

from __future__ import annotations

import asyncio
import os

import pytest

import rendr
from rendr.testing.relay import TcpRelay
from rendr.testing.transfer import transfer
from rendr.testing.udprelay import UdpRelay

PSK = b"udp-stream-test-psk-0123456789ab"


async def _transfer_part(c: rendr.Conn, s: rendr.Conn, data: bytes) -> None:
    """Write ``data`` on ``c`` and read exactly that much on ``s`` (no EOF)."""
    writer = asyncio.ensure_future(c.write(data))
    got = await asyncio.wait_for(s.readexactly(len(data)), 60)
    await writer
    assert got == data


@pytest.mark.parametrize("loss", [0.0, 0.01, 0.05, 0.2])
async def test_stream_is_byte_exact_through_loss_and_reordering(loss: float) -> None:
    ln = await rendr.listen_udpflow("127.0.0.1:0", psk=PSK)
    relay = UdpRelay(ln.addrs[0], seed=int(loss * 100) + 1)
    await relay.start()
    try:
        c = await rendr.Dialer(paths=[rendr.PathSpec("udpflow", f"127.0.0.1:{relay.addr[1]}")],
                               psk=PSK).dial()
        s = await asyncio.wait_for(ln.accept(), 5)
        relay.set_faults("both", loss=loss, reorder=0.03, reorder_gap=0.002)
        size = (2 << 20) if loss < 0.1 else (512 << 10)
        await transfer(c, s, os.urandom(size))
        sent = relay.stats["up"]
        if loss:
            assert sent.lost > 0
            assert sum(p.retransmits for p in c.stats().paths) > 0  # recovered, not lucky
        path = c.stats().paths[0]
        assert path.transport == "udpflow" and path.mtu == 1200 - 9
        await c.close()
        await asyncio.wait_for(s.wait_closed(), 20)
    finally:
        await ln.close()
        await relay.close()


async def test_both_directions_at_once_over_udpflow() -> None:
    ln = await rendr.listen_udpflow("127.0.0.1:0", psk=PSK)
    try:
        c = await rendr.Dialer(paths=[rendr.PathSpec("udpflow", f"127.0.0.1:{ln.addrs[0][1]}")],
                               psk=PSK).dial()
        s = await asyncio.wait_for(ln.accept(), 5)
        await asyncio.gather(transfer(c, s, os.urandom(3 << 20)),
                             transfer(s, c, os.urandom(3 << 20)))
        c.abort()
    finally:
        await ln.close()


async def test_a_flow_over_tcp_and_udpflow_migrates_and_fails_over_between_them() -> None:
    """One flow, a TCP path and a udpflow path: planned migrations both ways while
    data flows, then the active udpflow path goes silent (blackhole): the flow fails
    over to TCP and delivers every byte."""
    ln = await rendr.listen(rendr.ListenSpec("tcp", "127.0.0.1:0"),
                            rendr.ListenSpec("udpflow", "127.0.0.1:0"), psk=PSK)
    tcp_relay = TcpRelay(ln.addrs[0])
    await tcp_relay.start()
    udp_relay = UdpRelay(ln.addrs[1], seed=5)
    await udp_relay.start()
    try:
        c = await rendr.Dialer(paths=[
            rendr.PathSpec("tcp", f"127.0.0.1:{tcp_relay.addr[1]}"),
            rendr.PathSpec("udpflow", f"127.0.0.1:{udp_relay.addr[1]}")], psk=PSK).dial()
        s = await asyncio.wait_for(ln.accept(), 5)
        for _ in range(200):
            if sum(p.state == "up" for p in c.stats().paths) == 2:
                break
            await asyncio.sleep(0.02)
        by_transport = {p.transport: p.id for p in c.stats().paths}
        data = os.urandom(6 << 20)
        moving = asyncio.ensure_future(_transfer_part(c, s, data))
        for target in ("udpflow", "tcp", "udpflow"):
            await asyncio.sleep(0.05)
            await c.migrate(by_transport[target])
        await moving
        assert c.active_path == by_transport["udpflow"]
        udp_relay.blackhole()  # the active path goes silent: no error, no RST
        await transfer(c, s, os.urandom(2 << 20))  # fails over to TCP meanwhile
        assert c.active_path == by_transport["tcp"]
        assert c.migration_count >= 3  # (the first migrate may find udpflow active)
        c.abort()
    finally:
        await ln.close()
        await tcp_relay.close()
        await udp_relay.close()
