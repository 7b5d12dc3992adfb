"""Authentication-only records on QUIC paths (issue 10), end to end on loopback.

A QUIC path whose certificate the dialer verified (a CA, or a ``pin``) carries
records that are authenticated but not encrypted (QUIC encrypts them); every other
path of the same flow (an ``insecure`` QUIC path, TCP, udpflow) keeps encrypting.
What the carriers are given to send is captured, and a marker written by the
application must appear in clear on the trusted path only."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import rendr
from rendr.carriers.base import Carrier
from rendr.carriers.quic_tls import certificate_binding

from .test_quic import _ca_and_leaf, _wait_up

pytest.importorskip("qh3")

PSK = b"quic-auth-only-test-psk-01234567"
NAME = "quic.rendr.test"
MARKER = b"<rendr clear-text marker 0123456789>"
pytestmark = pytest.mark.timeout(30)


class _Tap:
    """Everything the carriers of one end were given to write, per path id."""

    def __init__(self) -> None:
        self.sent: dict[int, bytearray] = {}

    def attach(self, carriers: dict[int, Carrier]) -> None:
        for pid, carrier in carriers.items():
            if pid in self.sent:
                continue
            buf = self.sent[pid] = bytearray()
            write = carrier.write

            def tapped(buffers: Sequence[Any], _w: Any = write, _b: bytearray = buf) -> None:
                for b in buffers:
                    _b += bytes(b)
                _w(buffers)

            carrier.write = tapped  # type: ignore[method-assign]

    def clear(self) -> None:
        for buf in self.sent.values():
            buf.clear()


def _cert(tmp: Path) -> tuple[Path, Path, Path, str]:
    """A CA and a leaf for NAME (PEM paths), and the leaf's pin (its binding, hex)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    ca, cert, key = _ca_and_leaf(tmp, NAME)
    der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(Encoding.DER)
    return ca, cert, key, certificate_binding(der).hex()


def _auth_only(conn: rendr.Conn | rendr.PacketConn) -> set[int]:
    return set(conn._driver.flow.auth_only)


async def _both_ways(c: rendr.Conn, s: rendr.Conn, size: int = 96 << 10) -> None:
    data = MARKER * (size // len(MARKER)) + os.urandom(4096)
    await c.write(data)
    assert await asyncio.wait_for(s.readexactly(len(data)), 10) == data
    back = os.urandom(4096) + MARKER * (size // len(MARKER))
    await s.write(back)
    assert await asyncio.wait_for(c.readexactly(len(back)), 10) == back


async def test_only_the_verified_quic_path_of_a_mixed_flow_drops_encryption(
        tmp_path: Path) -> None:
    """One flow over four paths: QUIC with the CA checked, QUIC ``insecure`` (same
    listener certificate), TCP and udpflow.  Application bytes travel in clear
    (authenticated) on the verified QUIC path only, in both directions; on every
    other path the marker never appears in what the carriers send."""
    ca, cert, key, _ = _cert(tmp_path)
    tls = {"certfile": str(cert), "keyfile": str(key)}
    ln = await rendr.listen(rendr.ListenSpec("quic", "127.0.0.1:0", options=tls),
                            rendr.ListenSpec("quic", "127.0.0.1:0", options=tls),
                            rendr.ListenSpec("tcp", "127.0.0.1:0"),
                            rendr.ListenSpec("udpflow", "127.0.0.1:0"), psk=PSK)
    try:
        ports = [a[1] for a in ln.addrs]
        verified = rendr.PathSpec("quic", f"127.0.0.1:{ports[0]}",
                                  options={"server_name": NAME, "ca": str(ca)})
        insecure = rendr.PathSpec("quic", f"127.0.0.1:{ports[1]}",
                                  options={"insecure": "1"})
        c = await rendr.Dialer(paths=[verified, insecure,
                                      rendr.PathSpec("tcp", f"127.0.0.1:{ports[2]}"),
                                      rendr.PathSpec("udpflow", f"127.0.0.1:{ports[3]}")],
                               psk=PSK).dial()
        s = await asyncio.wait_for(ln.accept(), 5)
        await _wait_up(c, 4)
        by_addr = {p.remote_addr: p.id for p in c.stats().paths}
        ids = [by_addr[f"127.0.0.1:{port}"] for port in ports]
        carriers = c._driver.carriers
        assert carriers[ids[0]].verified and not carriers[ids[1]].verified
        assert carriers[ids[1]].binding  # insecure: bound, but not verified
        assert _auth_only(c) == _auth_only(s) == {ids[0]}
        for end in (c, s):
            assert {p.id: p.encrypted for p in end.stats().paths} == {
                ids[0]: False, ids[1]: True, ids[2]: True, ids[3]: True}
        tap_c, tap_s = _Tap(), _Tap()
        tap_c.attach(carriers)
        tap_s.attach(s._driver.carriers)
        for pid in ids:
            await c.migrate(pid)
            tap_c.clear()
            tap_s.clear()
            await _both_ways(c, s)
            clear = pid == ids[0]
            assert (MARKER in tap_c.sent[pid]) is clear, pid
            assert (MARKER in tap_s.sent[pid]) is clear, pid
            assert len(tap_c.sent[pid]) > 96 << 10  # the bytes did go this way
            for other in ids:
                assert MARKER not in tap_c.sent[other] or other == ids[0]
        c.abort()
    finally:
        await ln.close()


async def test_a_pinned_self_signed_certificate_verifies_and_a_wrong_pin_fails(
        tmp_path: Path) -> None:
    """``pin`` (the SHA-256 of the certificate) verifies a self-signed certificate:
    the path is authenticated only; another pin fails the QUIC path's setup."""
    _, cert, key, pin = _cert(tmp_path)
    ln = await rendr.listen_quic("127.0.0.1:0", tls=(str(cert), str(key)), psk=PSK)
    port = ln.addrs[0][1]
    try:
        c = await rendr.Dialer(paths=[rendr.PathSpec("quic", f"127.0.0.1:{port}",
                                                     options={"pin": pin})],
                               psk=PSK).dial()
        s = await asyncio.wait_for(ln.accept(), 5)
        (pid,) = c._driver.carriers
        assert _auth_only(c) == _auth_only(s) == {pid}
        tap = _Tap()
        tap.attach(c._driver.carriers)
        await _both_ways(c, s)
        assert MARKER in tap.sent[pid]
        c.abort()
        wrong = "00" * 32
        with pytest.raises(rendr.HandshakeError, match="pin"):
            await rendr.Dialer(paths=[rendr.PathSpec("quic", f"127.0.0.1:{port}",
                                                     options={"pin": wrong})],
                               psk=PSK, handshake_timeout=3).dial()
    finally:
        await ln.close()


@pytest.mark.parametrize("end", ["dialer", "listener"])
async def test_either_end_can_keep_encryption_on_a_verified_path(tmp_path: Path,
                                                                 end: str) -> None:
    """``trust_carrier=False`` on either end: the verified QUIC path encrypts."""
    _, cert, key, pin = _cert(tmp_path)
    ln = await rendr.listen_quic("127.0.0.1:0", tls=(str(cert), str(key)), psk=PSK,
                                 trust_carrier=end != "listener")
    try:
        c = await rendr.Dialer(paths=[rendr.PathSpec("quic", f"127.0.0.1:{ln.addrs[0][1]}",
                                                     options={"pin": pin})],
                               psk=PSK, trust_carrier=end != "dialer").dial()
        s = await asyncio.wait_for(ln.accept(), 5)
        (pid,) = c._driver.carriers
        assert c._driver.carriers[pid].verified
        assert _auth_only(c) == _auth_only(s) == set()
        tap = _Tap()
        tap.attach(c._driver.carriers)
        await _both_ways(c, s)
        assert MARKER not in tap.sent[pid]
        c.abort()
    finally:
        await ln.close()


async def test_a_quic_join_is_authenticated_only_and_migrates_with_tcp_byte_exact(
        tmp_path: Path) -> None:
    """The flow opens over TCP (encrypted); a verified QUIC path JOINs (authenticated
    only, agreed in JOIN/JOIN_ACK); migrations both ways mid-transfer are byte exact."""
    _, cert, key, pin = _cert(tmp_path)
    ln = await rendr.listen(rendr.ListenSpec("tcp", "127.0.0.1:0"),
                            rendr.ListenSpec("quic", "127.0.0.1:0",
                                             options={"certfile": str(cert),
                                                      "keyfile": str(key)}), psk=PSK)
    try:
        c = await rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{ln.addrs[0][1]}")],
                               psk=PSK).dial()
        s = await asyncio.wait_for(ln.accept(), 5)
        tcp = c.active_path
        quic = await c.add_path(rendr.PathSpec("quic", f"127.0.0.1:{ln.addrs[1][1]}",
                                               options={"pin": pin}))
        await _wait_up(c, 2)
        assert _auth_only(c) == _auth_only(s) == {quic}
        tap = _Tap()
        tap.attach(c._driver.carriers)
        await c.migrate(quic)
        data = MARKER * 40000 + os.urandom(1 << 20)
        writer = asyncio.ensure_future(c.write(data))
        reader = asyncio.ensure_future(s.readexactly(len(data)))
        back = os.urandom(1 << 20) + MARKER * 40000
        writer2 = asyncio.ensure_future(s.write(back))
        reader2 = asyncio.ensure_future(c.readexactly(len(back)))
        for target in (tcp, quic, tcp, quic):
            await asyncio.sleep(0.03)
            await c.migrate(target)
        assert await asyncio.wait_for(reader, 15) == data
        assert await asyncio.wait_for(reader2, 15) == back
        await writer
        await writer2
        assert c.migration_count >= 5
        assert MARKER in tap.sent[quic] and MARKER not in tap.sent[tcp]
        c.abort()
    finally:
        await ln.close()


async def test_packet_flow_on_a_verified_quic_path_is_authenticated_only(
        tmp_path: Path) -> None:
    """QUIC DATAGRAM frames of a packet flow: sealed datagrams authenticated only on a
    pinned path (the payload visible to the carrier), encrypted on an insecure one."""
    _, cert, key, pin = _cert(tmp_path)
    for options, clear in (({"pin": pin}, True), ({"insecure": "1"}, False)):
        pln = await rendr.listen_quic_packet("127.0.0.1:0", tls=(str(cert), str(key)),
                                             psk=PSK)
        try:
            pc = await rendr.Dialer(paths=[rendr.PathSpec(
                "quic", f"127.0.0.1:{pln.addrs[0][1]}", options=options)],
                psk=PSK).dial_packet()
            spc = await asyncio.wait_for(pln.accept(), 5)
            (pid,) = pc._driver.carriers
            assert _auth_only(pc) == _auth_only(spc) == ({pid} if clear else set())
            tap = _Tap()
            tap.attach(pc._driver.carriers)
            for _ in range(20):
                await pc.send(MARKER)
            got = await asyncio.wait_for(spc.recv(), 5)
            assert got == MARKER
            assert any(MARKER in bytes(d) for d in [tap.sent[pid]]) is clear
            pc.abort()
        finally:
            await pln.close()
