"""The ``quic`` carrier (qh3) on loopback: stream flows on a QUIC stream, packet
flows on DATAGRAM frames, flows mixing QUIC and TCP paths, failover, certificate
checks (both loops)."""

from __future__ import annotations

import asyncio
import datetime
import os
from pathlib import Path

import pytest

import rendr
from rendr.carriers.quic import DATAGRAM_MTU
from rendr.testing.transfer import transfer
from rendr.testing.udprelay import UdpRelay

pytest.importorskip("qh3")

PSK = b"quic-carrier-test-psk-0123456789"
INSECURE = {"insecure": "1"}
pytestmark = pytest.mark.timeout(20)


async def _wait_up(conn: rendr.Conn | rendr.PacketConn, n: int) -> None:
    for _ in range(250):
        if sum(p.state == "up" for p in conn.stats().paths) >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not {n} paths up: {conn.stats().paths}")


def _quic(port: int, **options: str) -> rendr.PathSpec:
    return rendr.PathSpec("quic", f"127.0.0.1:{port}", options=options or INSECURE)


async def test_stream_flow_over_quic_is_byte_exact() -> None:
    ln = await rendr.listen_quic("127.0.0.1:0", psk=PSK)
    try:
        c = await rendr.Dialer(paths=[_quic(ln.addrs[0][1])], psk=PSK).dial()
        s = await asyncio.wait_for(ln.accept(), 5)
        await transfer(c, s, os.urandom(4 << 20))
        await transfer(s, c, os.urandom(256 << 10))
        path = c.stats().paths[0]
        assert path.transport == "quic" and path.mtu is None and path.retransmits == 0
        await c.close()
        await asyncio.wait_for(s.wait_closed(), 5)
    finally:
        await ln.close()


async def test_packet_flow_over_quic_datagrams_keeps_boundaries() -> None:
    pln = await rendr.listen_quic_packet("127.0.0.1:0", psk=PSK)
    try:
        pc = await rendr.Dialer(paths=[_quic(pln.addrs[0][1])], psk=PSK).dial_packet()
        spc = await asyncio.wait_for(pln.accept(), 5)
        assert pc.stats().paths[0].mtu == DATAGRAM_MTU
        assert 0 < pc.max_payload < DATAGRAM_MTU
        sizes = [0, 1, 70, pc.max_payload]
        for size in sizes:
            await pc.send(bytes([size % 251]) * size)
        got = [await asyncio.wait_for(spc.recv(), 5) for _ in sizes]
        assert [len(g) for g in got] == sizes
        assert all(g == bytes([len(g) % 251]) * len(g) for g in got)
        await spc.send(b"back")
        assert await asyncio.wait_for(pc.recv(), 5) == b"back"
        with pytest.raises(rendr.PacketTooLarge):
            await pc.send(b"x" * (pc.max_payload + 1))
        pc.abort()
    finally:
        await pln.close()


async def test_a_flow_over_quic_and_tcp_migrates_both_ways_and_fails_over_to_tcp() -> None:
    """One flow, a QUIC path (through a UDP relay) and a TCP path: migrations both
    ways mid-transfer, byte exact; then the QUIC path goes silent and the flow fails
    over to TCP with no error the application sees."""
    ln = await rendr.listen(rendr.ListenSpec("tcp", "127.0.0.1:0"),
                            rendr.ListenSpec("quic", "127.0.0.1:0"), psk=PSK,
                            dead_timeout=0.4)
    relay = UdpRelay(ln.addrs[1], seed=3)
    await relay.start()
    try:
        c = await rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{ln.addrs[0][1]}"),
                                      _quic(relay.addr[1])], psk=PSK, dead_timeout=0.4).dial()
        s = await asyncio.wait_for(ln.accept(), 5)
        await _wait_up(c, 2)
        ids = {p.transport: p.id for p in c.stats().paths}
        data = os.urandom(4 << 20)
        writer = asyncio.ensure_future(c.write(data))
        reader = asyncio.ensure_future(s.readexactly(len(data)))
        for target in ("quic", "tcp", "quic"):
            await asyncio.sleep(0.05)
            await c.migrate(ids[target])
        assert await asyncio.wait_for(reader, 15) == data
        await writer
        assert c.active_path == ids["quic"] and c.migration_count >= 2
        relay.blackhole()  # the QUIC path goes silent: no error, no close
        await transfer(c, s, os.urandom(1 << 20))
        assert c.active_path == ids["tcp"]
        c.abort()
    finally:
        await ln.close()
        await relay.close()


async def test_killing_the_quic_socket_fails_over_to_tcp() -> None:
    """The QUIC path's UDP mapping is torn down (the relay forgets it and closes its
    socket, then drops everything): the flow carries on over TCP, byte exact."""
    ln = await rendr.listen(rendr.ListenSpec("quic", "127.0.0.1:0"),
                            rendr.ListenSpec("tcp", "127.0.0.1:0"), psk=PSK,
                            dead_timeout=0.4)
    relay = UdpRelay(ln.addrs[0], seed=4)
    await relay.start()
    try:
        c = await rendr.Dialer(paths=[_quic(relay.addr[1]),
                                      rendr.PathSpec("tcp", f"127.0.0.1:{ln.addrs[1][1]}")],
                               psk=PSK, dead_timeout=0.4).dial()
        s = await asyncio.wait_for(ln.accept(), 5)
        await _wait_up(c, 2)
        ids = {p.transport: p.id for p in c.stats().paths}
        await c.migrate(ids["quic"])
        first = os.urandom(1 << 20)
        await c.write(first)
        assert await asyncio.wait_for(s.readexactly(len(first)), 10) == first
        assert c.active_path == ids["quic"]
        relay.kill()
        relay.blackhole()
        await transfer(c, s, os.urandom(2 << 20))  # written into the dead path first
        assert c.active_path == ids["tcp"]
        quic = next(p for p in c.stats().paths if p.id == ids["quic"])
        assert quic.suspect or quic.state != "up"  # left for being silent
        c.abort()
    finally:
        await ln.close()
        await relay.close()


def _ca_and_leaf(tmp: Path, name: str) -> tuple[Path, Path, Path]:
    """A test CA and a leaf certificate for ``name`` it signed: (ca, cert, key) PEMs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rendr test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp / "ca.pem", tmp / "leaf.pem", tmp / "leaf.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


async def test_ca_signed_certificate_verifies_and_a_wrong_name_fails(tmp_path: Path) -> None:
    ca, cert, key = _ca_and_leaf(tmp_path, "quic.rendr.test")
    ln = await rendr.listen_quic("127.0.0.1:0", tls=(str(cert), str(key)), psk=PSK)
    port = ln.addrs[0][1]
    try:
        good = rendr.PathSpec("quic", f"127.0.0.1:{port}",
                              options={"server_name": "quic.rendr.test", "ca": str(ca)})
        c = await rendr.Dialer(paths=[good], psk=PSK).dial()
        s = await asyncio.wait_for(ln.accept(), 5)
        await transfer(c, s, os.urandom(64 << 10))
        c.abort()
        wrong = rendr.PathSpec("quic", f"127.0.0.1:{port}",
                               options={"server_name": "other.rendr.test", "ca": str(ca)})
        with pytest.raises(rendr.HandshakeError, match="quic"):
            await rendr.Dialer(paths=[wrong], psk=PSK, handshake_timeout=3).dial()
        untrusted = rendr.PathSpec("quic", f"127.0.0.1:{port}",
                                   options={"server_name": "quic.rendr.test"})
        with pytest.raises(rendr.HandshakeError):
            await rendr.Dialer(paths=[untrusted], psk=PSK, handshake_timeout=3).dial()
    finally:
        await ln.close()


async def test_rebind_path_moves_a_quic_path_to_a_new_socket_during_a_transfer() -> None:
    ln = await rendr.listen_quic("127.0.0.1:0", psk=PSK)
    try:
        c = await rendr.Dialer(paths=[_quic(ln.addrs[0][1])], psk=PSK).dial()
        s = await asyncio.wait_for(ln.accept(), 5)
        pid = c.active_path
        data = os.urandom(3 << 20)
        writer = asyncio.ensure_future(c.write(data))
        reader = asyncio.ensure_future(s.readexactly(len(data)))
        seen = set()
        for _ in range(3):
            await asyncio.sleep(0.05)
            await c.rebind_path(pid)
            seen.add(next(p.local_addr for p in c.stats().paths if p.id == pid))
        assert await asyncio.wait_for(reader, 15) == data
        await writer
        assert len(seen) == 3  # three fresh sockets
        assert c.stats().quic_rebinds == 3 and c.migration_count == 0
        await transfer(s, c, os.urandom(256 << 10))  # the server sends to the new one
        with pytest.raises(rendr.RendrError):
            await s.rebind_path(pid)  # the listener did not dial it
        c.abort()
    finally:
        await ln.close()


async def test_rebind_path_during_a_datagram_flood() -> None:
    pln = await rendr.listen_quic_packet("127.0.0.1:0", psk=PSK)
    try:
        pc = await rendr.Dialer(paths=[_quic(pln.addrs[0][1])], psk=PSK).dial_packet()
        spc = await asyncio.wait_for(pln.accept(), 5)
        got: list[int] = []

        async def receive() -> None:
            while True:
                got.append(int.from_bytes((await spc.recv())[:4], "big"))

        receiving = asyncio.ensure_future(receive())
        n = 3000
        for i in range(n):
            await pc.send(i.to_bytes(4, "big") + bytes(196))
            if i % 1000 == 500:
                await pc.rebind_path(pc.active_path)
            if i % 50 == 0:
                await asyncio.sleep(0.001)
        for _ in range(200):
            if len(got) >= n:
                break
            await asyncio.sleep(0.01)
        receiving.cancel()
        assert pc.stats().quic_rebinds == 3
        # DATAGRAM frames are unreliable: the few in flight on the old socket's last
        # packets may be lost, nothing else
        assert len(set(got)) >= n - 50, f"{n - len(set(got))} lost"
        assert got[-1] == n - 1
        pc.abort()
    finally:
        await pln.close()


async def test_passive_nat_rebinding_keeps_the_quic_path() -> None:
    """The client's address changes under the QUIC connection (a NAT rebinding in
    the relay): QUIC validates the new address and the flow goes on, byte exact,
    with no migration."""
    ln = await rendr.listen_quic("127.0.0.1:0", psk=PSK)
    relay = UdpRelay(ln.addrs[0], seed=7)
    await relay.start()
    try:
        c = await rendr.Dialer(paths=[_quic(relay.addr[1])], psk=PSK).dial()
        s = await asyncio.wait_for(ln.accept(), 5)
        await _transfer_part(c, s, os.urandom(512 << 10))
        relay.rebind()
        await _transfer_part(c, s, os.urandom(512 << 10))
        await _transfer_part(s, c, os.urandom(512 << 10))
        assert c.migration_count == 0
        assert all(p.state == "up" for p in c.stats().paths)
        c.abort()
    finally:
        await ln.close()
        await relay.close()


async def _transfer_part(c: rendr.Conn, s: rendr.Conn, data: bytes) -> None:
    writer = asyncio.ensure_future(c.write(data))
    assert await asyncio.wait_for(s.readexactly(len(data)), 10) == data
    await writer


async def test_quic_paths_bind_the_server_certificate_on_both_ends() -> None:
    """Both ends of a QUIC path hold the same channel binding (SHA-256 of the server's
    leaf certificate; each listen address has its own development certificate); a
    flow with a QUIC HELLO path and a QUIC JOIN path works (both handshakes covered
    the binding)."""
    from rendr.carriers.quic_tls import certificate_binding

    ln = await rendr.listen_quic("127.0.0.1:0", "127.0.0.1:0", psk=PSK)
    try:
        c = await rendr.Dialer(paths=[_quic(ln.addrs[0][1]), _quic(ln.addrs[1][1])],
                               psk=PSK).dial()
        s = await asyncio.wait_for(ln.accept(), 5)
        await _wait_up(c, 2)
        carriers = c._driver.carriers
        server_carriers = s._driver.carriers
        assert len(carriers) == 2 and carriers.keys() == server_carriers.keys()
        for pid, carrier in carriers.items():
            want = certificate_binding(carrier.quic.get_peercert().public_bytes())
            assert len(want) == 32
            assert carrier.binding == want == server_carriers[pid].binding
        await transfer(c, s, os.urandom(64 << 10))
        c.abort()
    finally:
        await ln.close()


async def test_a_certificate_other_than_the_listeners_fails_the_handshake(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the dialer's QUIC saw is not the certificate the listener binds (someone
    in the middle terminating QUIC with their own certificate): the listener cannot
    prove the flow's keys (HELLO), and a JOIN on such a path is refused."""
    import rendr.carriers.quic as quic_mod

    real = quic_mod.certificate_binding
    ln = await rendr.listen_quic("127.0.0.1:0", "127.0.0.1:0", psk=PSK)
    try:
        # HELLO over a path whose certificate is "another one"
        monkeypatch.setattr(quic_mod, "certificate_binding",
                            lambda der: real(b"mitm" + der))
        with pytest.raises((rendr.HandshakeError, OSError), match="QUIC certificate"):
            await rendr.Dialer(paths=[_quic(ln.addrs[0][1])], psk=PSK,
                               connect_timeout=3).dial()
        # a flow opened over a good path; then a JOIN over a "MITM" one is refused
        monkeypatch.setattr(quic_mod, "certificate_binding", real)
        c = await rendr.Dialer(paths=[_quic(ln.addrs[0][1])], psk=PSK).dial()
        s = await asyncio.wait_for(ln.accept(), 5)
        monkeypatch.setattr(quic_mod, "certificate_binding",
                            lambda der: real(b"mitm" + der))
        with pytest.raises((rendr.HandshakeError, OSError), match="AUTH_FAILED"):
            await c.add_path(_quic(ln.addrs[1][1]))
        assert len([p for p in c.stats().paths if p.state == "up"]) == 1
        await transfer(c, s, os.urandom(16 << 10))
        c.abort()
    finally:
        await ln.close()


async def test_a_qh3_error_while_building_packets_costs_a_transmit_not_the_path() -> None:
    """qh3 2.1 raised "packet builder capacity exhausted" from ``datagrams_to_send``
    in a G3 paced run; the exception escaped the carrier's transmit (a loop callback
    error, and its datagrams waited for the next write).  It is counted, and the next
    transmit sends what qh3 still holds."""
    ln = await rendr.listen_quic("127.0.0.1:0", psk=PSK)
    try:
        c = await rendr.Dialer(paths=[_quic(ln.addrs[0][1])], psk=PSK).dial()
        s = await asyncio.wait_for(ln.accept(), 5)
        (carrier,) = c._driver.carriers.values()
        real = carrier.quic.datagrams_to_send
        fails = [2]

        def flaky(now: float) -> list[tuple[bytes, tuple[str, int]]]:
            if fails[0]:
                fails[0] -= 1
                raise RuntimeError("packet builder capacity exhausted")
            return real(now)

        carrier.quic.datagrams_to_send = flaky  # type: ignore[method-assign]
        await transfer(c, s, os.urandom(1 << 20))
        assert fails == [0] and carrier.transmit_errors == 2
        assert c.stats().paths[0].state == "up"
        await c.close()
        await asyncio.wait_for(s.wait_closed(), 5)
    finally:
        await ln.close()
