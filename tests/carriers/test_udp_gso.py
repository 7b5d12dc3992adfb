"""udpflow's batched sends and reads: a flush of equal-size datagrams goes out in GSO
trains (Linux UDP_SEGMENT) and is read back in GRO trains (UDP_GRO), and what arrives
is exactly the datagrams sent, one by one, in order; a socket that cannot segment falls
back to one send per datagram."""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
from typing import Any

import pytest

from rendr.carriers.udpbase import (
    _GRO_CMSG,
    GSO_SEGMENTS,
    UDP_GRO,
    _Sender,
    enable_gro,
    split_gro,
)

HDR = b"\x03" + bytes(range(8))


def _pair() -> tuple[socket.socket, socket.socket]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setblocking(False)
    tx.connect(rx.getsockname())
    rx.settimeout(2.0)
    return tx, rx


def _datagrams() -> list[bytes]:
    # 150 of 1191 bytes (three trains of at most 64), a shorter one ending the last
    # train, then two more of another size
    out = [bytes([i % 251]) * 1191 for i in range(150)]
    out.append(b"short")
    out += [b"x" * 700, b"y" * 700]
    return out


def test_split_gro_cuts_at_the_segment_size() -> None:
    anc = [(socket.SOL_UDP, UDP_GRO, (4).to_bytes(4, sys.byteorder))]
    assert split_gro(b"aaaabbbbcc", anc) == [b"aaaa", b"bbbb", b"cc"]
    assert split_gro(b"aaaa", anc) == [b"aaaa"]
    assert split_gro(b"abc", []) == [b"abc"]


async def _send(tx: socket.socket, bufs: list[bytes]) -> _Sender:
    sender = _Sender(asyncio.get_running_loop(), tx, lambda: None, lambda: None)
    sender.send_each(HDR, bufs)
    return sender


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux UDP GSO")
def test_trains_arrive_as_the_datagrams_sent() -> None:
    tx, rx = _pair()
    try:
        bufs = _datagrams()
        sender = asyncio.run(_send(tx, bufs))
        got = [rx.recv(65535) for _ in bufs]
        assert got == [HDR + b for b in bufs]
        assert sender.trains >= 3 and sender.dropped == 0
    finally:
        tx.close()
        rx.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux UDP GRO")
def test_a_gro_socket_reads_trains_split_back_into_the_datagrams() -> None:
    tx, rx = _pair()
    try:
        if not enable_gro(rx):
            pytest.skip("no UDP_GRO here")
        bufs = _datagrams()
        asyncio.run(_send(tx, bufs))
        got: list[bytes] = []
        reads = 0
        while len(got) < len(bufs):
            data, anc, _, _ = rx.recvmsg(65535, _GRO_CMSG)
            reads += 1
            got += split_gro(data, anc)
        assert got == [HDR + b for b in bufs]
        assert reads <= len(bufs)
    finally:
        tx.close()
        rx.close()


class _NoGso:
    """A socket whose GSO sends fail as on a device without checksum offload."""

    type = socket.SOCK_DGRAM

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.tries = 0

    def sendmsg(self, *args: Any) -> int:
        self.tries += 1
        raise OSError(errno.EIO, "Input/output error")

    def send(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        return len(data)

    def fileno(self) -> int:
        return -1


def test_a_socket_that_cannot_segment_sends_one_by_one() -> None:
    async def main() -> tuple[_NoGso, _Sender]:
        sock = _NoGso()
        sender = _Sender(asyncio.get_running_loop(), sock,  # type: ignore[arg-type]
                         lambda: None, lambda: None)
        bufs = [b"a" * 100] * (2 * GSO_SEGMENTS)
        sender.send_each(HDR, bufs)
        sender.send_each(HDR, bufs)  # GSO is off now: not tried again
        return sock, sender

    sock, sender = asyncio.run(main())
    assert sock.tries == 1
    assert sock.sent == [HDR + b"a" * 100] * (4 * GSO_SEGMENTS)
    assert sender.dropped == 0 and sender.trains == 0


async def test_gro_only_for_sockets_that_carry_stream_flows() -> None:
    """GRO helps a stream's trains of full datagrams and hurt packet mode at 100k pps
    (the receiver's kernel buffer filled sooner: 24k of 3M lost), so a udpflow socket
    reads with GRO only once it carries a stream flow's path."""
    import rendr

    psk = b"gro-only-for-streams-0123456789a"
    pln = await rendr.listen_udpflow_packet("127.0.0.1:0", psk=psk)
    ln = await rendr.listen_udpflow("127.0.0.1:0", psk=psk)
    try:
        spec = [rendr.PathSpec("udpflow", f"127.0.0.1:{pln.addrs[0][1]}")]
        pc = await rendr.Dialer(paths=spec, psk=psk).dial_packet()
        peer = await pln.accept()
        await pc.send(b"x")
        assert await peer.recv() == b"x"
        conn = await rendr.Dialer(paths=[rendr.PathSpec(
            "udpflow", f"127.0.0.1:{ln.addrs[0][1]}")], psk=psk).dial()
        await ln.accept()
        packet_carriers = list(pc._driver.carriers.values())
        stream_carriers = list(conn._driver.carriers.values())
        assert packet_carriers and stream_carriers
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        gro = enable_gro(probe)  # this kernel has it (else nothing here may use it)
        probe.close()
        assert not any(c._gro for c in packet_carriers)
        assert all(c._gro is gro for c in stream_carriers)
        await pc.close()
        await conn.close()
    finally:
        await pln.close()
        await ln.close()
