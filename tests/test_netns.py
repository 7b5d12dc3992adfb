"""Tests for the network-namespace harness :mod:`rendr.testing.netns`.

The real-network tests need root, iproute2 and nftables; they are skipped with
the reason from :func:`unavailable_reason` otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from rendr.testing.netns import (
    NetnsError,
    NetnsTopology,
    parse_rate,
    unavailable_reason,
)

SILENCE = 0.5  # seconds during which a dropped path must stay completely silent


@pytest.fixture
def netns_ok() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def topo(netns_ok: None) -> Iterator[NetnsTopology]:
    with NetnsTopology(paths=2) as t:
        yield t


def _netns_names() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def _ns_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _thread_ns_id() -> tuple[int, int]:
    return _ns_id(f"/proc/self/task/{threading.get_native_id()}/ns/net")


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def _echo_servers(topo: NetnsTopology) -> AsyncIterator[list[int]]:
    """One echo server per path, its listening socket created in the server netns."""
    socks: list[socket.socket] = []
    with topo.enter("server"):
        for p in topo.paths:
            socks.append(socket.create_server((p.server_addr, 0)))
    servers = [await asyncio.start_server(_echo, sock=s) for s in socks]
    try:
        yield [s.getsockname()[1] for s in socks]
    finally:
        for srv in servers:
            srv.close()
            await srv.wait_closed()


async def _roundtrip(host: str, port: int, payload: bytes = b"hello") -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), 2.0)
    finally:
        writer.close()


# --------------------------------------------------------------------------- pure


def test_parse_rate() -> None:
    assert parse_rate("50mbit") == 50_000_000
    assert parse_rate("800kbit") == 800_000
    assert parse_rate("1.5Gbit") == 1_500_000_000
    assert parse_rate("2mbps") == 16_000_000
    assert parse_rate("1000") == 1000
    assert parse_rate(12345) == 12345
    for bad in ("fast", "10 furlongs", "0mbit", -1):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        NetnsTopology(paths=0)
    with pytest.raises(ValueError):
        NetnsTopology(paths=3, base="10.231.0.0/23")
    with pytest.raises(ValueError):
        NetnsTopology(base="10.231.0.0/25")
    t = NetnsTopology(paths=3, base="10.99.8.0/22")
    assert [(p.client_addr, p.server_addr) for p in t.paths] == [
        ("10.99.8.1", "10.99.8.2"),
        ("10.99.9.1", "10.99.9.2"),
        ("10.99.10.1", "10.99.10.2"),
    ]
    assert t.client_ns != t.server_ns
    assert t.client_ns != NetnsTopology().client_ns
    t.close()  # never opened: a no-op


# --------------------------------------------------------------------------- real netns


@pytest.mark.netns
def test_layout(topo: NetnsTopology) -> None:
    assert len(topo.paths) == 2
    names = _netns_names()
    assert topo.client_ns in names and topo.server_ns in names
    client = topo.run("client", "ip", "-o", "-4", "addr", "show").stdout
    server = topo.run("server", "ip", "-o", "-4", "addr", "show").stdout
    assert "127.0.0.1" in client and "127.0.0.1" in server  # lo is up
    for i, p in enumerate(topo.paths):
        assert p.index == i
        assert p.subnet == f"10.231.{i}.0/24"
        assert (p.client_addr, p.server_addr) == (f"10.231.{i}.1", f"10.231.{i}.2")
        assert f"{p.client_ifname} " in client and f"{p.client_addr}/24" in client
        assert f"{p.server_ifname} " in server and f"{p.server_addr}/24" in server
        assert p.server_addr not in client and p.client_addr not in server
    lo = topo.run("client", "ip", "-o", "link", "show", "lo").stdout
    assert "UP" in lo


@pytest.mark.netns
def test_run_error_contains_stderr(topo: NetnsTopology) -> None:
    with pytest.raises(NetnsError, match="nonexistent0") as ei:
        topo.run("client", "ip", "link", "show", "dev", "nonexistent0")
    assert ei.value.returncode not in (None, 0)
    assert ei.value.stderr
    proc = topo.run("client", "ip", "link", "show", "dev", "nonexistent0", check=False)
    assert proc.returncode != 0


@pytest.mark.netns
def test_enter_switches_only_current_thread(topo: NetnsTopology) -> None:
    original = _thread_ns_id()
    client = _ns_id(topo.ns_path("client"))
    server = _ns_id(topo.ns_path("server"))
    assert len({original, client, server}) == 3

    seen_by_other: list[tuple[int, int]] = []
    entered = threading.Event()
    go = threading.Event()

    def other() -> None:
        go.wait(5)
        seen_by_other.append(_thread_ns_id())

    th = threading.Thread(target=other)
    th.start()  # started before enter(): keeps the original namespace
    with topo.enter("client"):
        assert _thread_ns_id() == client
        with topo.enter("server"):
            assert _thread_ns_id() == server
        assert _thread_ns_id() == client
        entered.set()
        go.set()
        th.join(5)
    assert _thread_ns_id() == original
    assert seen_by_other == [original]

    with pytest.raises(ZeroDivisionError), topo.enter("server"):
        1 / 0  # noqa: B018
    assert _thread_ns_id() == original


@pytest.mark.netns
async def test_tcp_over_each_path(topo: NetnsTopology) -> None:
    with topo.enter("client"):
        peers: list[tuple[str, str]] = []

        async def record(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            peers.append((w.get_extra_info("sockname")[0], w.get_extra_info("peername")[0]))
            await _echo(r, w)

        socks = []
        with topo.enter("server"):
            for p in topo.paths:
                socks.append(socket.create_server((p.server_addr, 0)))
        servers = [await asyncio.start_server(record, sock=s) for s in socks]
        try:
            for p, s in zip(topo.paths, socks, strict=True):
                payload = f"path {p.index}".encode() * 1000
                got = await _roundtrip(p.server_addr, s.getsockname()[1], payload)
                assert got == payload
            # Each connection really ran over its own path (source address of that path).
            assert peers == [(p.server_addr, p.client_addr) for p in topo.paths]
        finally:
            for srv in servers:
                srv.close()
                await srv.wait_closed()


@pytest.mark.netns
async def test_drop_is_silent_and_undrop_restores(topo: NetnsTopology) -> None:
    p0, p1 = topo.paths
    with topo.enter("client"):
        async with _echo_servers(topo) as ports:
            with topo.enter("server"):
                closed = socket.create_server((p0.server_addr, 0))
            closed_port = closed.getsockname()[1]
            closed.close()  # nothing listens on closed_port now

            # Baseline: a closed port answers with RST immediately.
            with pytest.raises(ConnectionRefusedError):
                await asyncio.wait_for(asyncio.open_connection(p0.server_addr, closed_port), 2)

            # A connection established over path 0 before the drop.
            reader, writer = await asyncio.open_connection(p0.server_addr, ports[0])
            writer.write(b"before")
            assert await asyncio.wait_for(reader.readexactly(6), 2) == b"before"

            topo.drop(0)
            topo.drop(0)  # idempotent
            assert topo.is_dropped(0) and not topo.is_dropped(1)

            writer.write(b"during")  # must not raise: the sender sees nothing wrong
            await writer.drain()

            async def connect_times_out(port: int) -> None:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.open_connection(p0.server_addr, port), SILENCE)

            async def nothing_arrives() -> None:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(reader.read(100), SILENCE)

            async def other_path_works() -> None:
                assert await _roundtrip(p1.server_addr, ports[1]) == b"hello"

            await asyncio.gather(
                connect_times_out(ports[0]),
                connect_times_out(closed_port),  # no RST either
                nothing_arrives(),
                other_path_works(),
            )
            assert not writer.is_closing()

            topo.undrop(0)
            topo.undrop(0)  # idempotent
            assert not topo.is_dropped(0)

            assert await _roundtrip(p0.server_addr, ports[0]) == b"hello"
            with pytest.raises(ConnectionRefusedError):
                await asyncio.wait_for(asyncio.open_connection(p0.server_addr, closed_port), 2)
            # TCP retransmission delivers what was sent while the path was dead.
            assert await asyncio.wait_for(reader.readexactly(6), 5) == b"during"
            writer.close()


@pytest.mark.netns
def test_drop_is_silent_for_udp_both_directions(topo: NetnsTopology) -> None:
    with topo.enter("server"):
        srv = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in topo.paths]
    with topo.enter("client"):
        cli = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in topo.paths]
    try:
        for s, p in zip(srv, topo.paths, strict=True):
            s.bind((p.server_addr, 0))
        for c, p in zip(cli, topo.paths, strict=True):
            c.bind((p.client_addr, 0))
        for s in srv + cli:
            s.settimeout(SILENCE)

        def exchange(i: int) -> None:
            cli[i].sendto(b"c2s", srv[i].getsockname())
            data, addr = srv[i].recvfrom(100)
            assert data == b"c2s"
            srv[i].sendto(b"s2c", addr)
            assert cli[i].recv(100) == b"s2c"

        exchange(0)
        topo.drop(0)
        # Neither direction raises on send (no EPERM, no ICMP-induced errors) ...
        cli[0].sendto(b"lost", srv[0].getsockname())
        srv[0].sendto(b"lost", cli[0].getsockname())
        exchange(1)  # ... the other path is unaffected ...
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            srv[0].recv(100)
        with pytest.raises(TimeoutError):
            cli[0].recv(100)  # ... and nothing arrives on path 0.
        assert time.monotonic() - t0 >= SILENCE
        cli[0].sendto(b"lost", srv[0].getsockname())  # still no error afterwards
        topo.undrop(0)
        exchange(0)
    finally:
        for s in srv + cli:
            s.close()


@pytest.mark.netns
async def test_rate_limit(topo: NetnsTopology) -> None:
    p1 = topo.paths[1]
    topo.rate_limit(1, "20mbit")
    for qd in (
        topo.run("client", "tc", "qdisc", "show", "dev", p1.client_ifname).stdout,
        topo.run("server", "tc", "qdisc", "show", "dev", p1.server_ifname).stdout,
    ):
        assert "tbf" in qd and "20Mbit" in qd
    assert "tbf" not in topo.run("client", "tc", "qdisc", "show", "dev", "rc0").stdout

    size = 600_000  # 240 ms at 20 Mbit/s (minus one burst)
    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def sink(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readexactly(size)
        done.set_result(time.monotonic())
        w.close()

    with topo.enter("server"):
        lsock = socket.create_server((p1.server_addr, 0))
    server = await asyncio.start_server(sink, sock=lsock)
    try:
        with topo.enter("client"):
            sock = socket.create_connection((p1.server_addr, lsock.getsockname()[1]), 2)
        _, writer = await asyncio.open_connection(sock=sock)
        t0 = time.monotonic()
        writer.write(b"x" * size)
        await writer.drain()
        elapsed = await asyncio.wait_for(done, 10) - t0
        writer.close()
        assert elapsed >= 0.15, f"{size} bytes took only {elapsed:.3f}s at 20mbit"
    finally:
        server.close()
        await server.wait_closed()

    topo.clear_rate_limit(1)
    topo.clear_rate_limit(1)  # idempotent
    assert "tbf" not in topo.run("client", "tc", "qdisc", "show", "dev", p1.client_ifname).stdout
    assert "tbf" not in topo.run("server", "tc", "qdisc", "show", "dev", p1.server_ifname).stdout


@pytest.mark.netns
def test_close_removes_namespaces(netns_ok: None) -> None:
    topo = NetnsTopology(paths=3)
    with topo:
        assert topo.is_open
        paths = [topo.ns_path("client"), topo.ns_path("server")]
        names = [topo.client_ns, topo.server_ns]
        assert set(names) <= set(_netns_names())
        topo.drop(2)
    assert not topo.is_open
    assert not set(names) & set(_netns_names())
    assert not any(os.path.exists(p) for p in paths)
    topo.close()  # idempotent
    with pytest.raises(RuntimeError), topo.enter("client"):
        pass
    with pytest.raises(RuntimeError):
        topo.drop(0)
    with pytest.raises(RuntimeError):
        topo.open()


@pytest.mark.netns
def test_close_after_partial_setup_failure(netns_ok: None, monkeypatch: pytest.MonkeyPatch) -> None:
    topo = NetnsTopology()
    created: list[str] = []

    def boom(self: NetnsTopology) -> None:
        created.extend(n for n in (self.client_ns, self.server_ns) if n in _netns_names())
        raise NetnsError("simulated failure half-way through setup")

    monkeypatch.setattr(NetnsTopology, "_create_links", boom)
    with pytest.raises(NetnsError, match="simulated"), topo:
        pass
    assert created == [topo.client_ns, topo.server_ns]  # they did exist ...
    assert not set(created) & set(_netns_names())  # ... and were removed
    topo.close()


@pytest.mark.netns
def test_bad_path_index(topo: NetnsTopology) -> None:
    for call in (topo.drop, topo.undrop, topo.is_dropped, topo.clear_rate_limit):
        with pytest.raises(IndexError):
            call(2)
    with pytest.raises(ValueError):
        topo.ns_name("router")  # type: ignore[arg-type]
