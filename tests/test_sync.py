"""rendr.sync: blocking code on a migrating connection, from plain threads."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest

import rendr
import rendr.sync

MIB = 1 << 20


def _pair() -> tuple[rendr.sync.SyncListener, rendr.sync.Socket, rendr.sync.Socket]:
    ln = rendr.sync.listen(rendr.ListenSpec("tcp", "127.0.0.1:0"),
                           rendr.ListenSpec("tcp", "127.0.0.1:0"))
    client = rendr.sync.dial([rendr.PathSpec("tcp", f"{h}:{p}") for h, p in ln.addrs])
    server, peer = ln.accept(timeout=10)
    assert peer is not None and peer[0] == "127.0.0.1"
    return ln, client, server


def test_send_and_receive_from_threads_with_half_close() -> None:
    ln, client, server = _pair()
    try:
        payload = os.urandom(4 * MIB)
        got = bytearray()

        def reader() -> None:
            buf = bytearray(65536)
            while n := server.recv_into(buf):
                got.extend(buf[:n])

        t = threading.Thread(target=reader)
        t.start()
        view = memoryview(payload)
        for i in range(0, len(payload), 100_000):  # another thread writes meanwhile
            client.sendall(view[i:i + 100_000])
        client.shutdown(socket.SHUT_WR)
        t.join(30)
        assert not t.is_alive()
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        # the other way still works after our half-close
        server.sendall(b"reply")
        assert client.recv(5) == b"reply"
        # the active path can be moved from blocking code too
        other = next(p.id for p in client.conn.stats().paths if p.id != client.conn.active_path)
        client.call(client.conn.migrate(other))
        server.sendall(b"after")
        assert client.recv(5) == b"after"
    finally:
        client.close()
        server.close()
        ln.close()


def test_timeouts_nonblocking_and_makefile() -> None:
    ln, client, server = _pair()
    try:
        client.settimeout(0.2)
        t0 = time.monotonic()
        with pytest.raises(socket.timeout):
            client.recv(10)
        assert 0.15 < time.monotonic() - t0 < 2
        client.setblocking(False)
        with pytest.raises(BlockingIOError):
            client.recv(10)
        client.setblocking(True)
        assert client.gettimeout() is None
        # a line protocol through makefile, as many libraries use it
        wfile = server.makefile("wb")
        wfile.write(b"first line\nsecond line\n")
        wfile.flush()
        rfile = client.makefile("rb")
        assert rfile.readline() == b"first line\n"
        assert rfile.readline() == b"second line\n"
        server.shutdown(socket.SHUT_WR)
        assert rfile.read() == b""  # EOF
    finally:
        client.close()
        server.close()
        ln.close()


def test_short_timeouts_lose_no_bytes() -> None:
    """recv() with a timeout shorter than the gaps between the peer's writes (the way
    paramiko polls): every byte arrives, none dropped by a read that completed just as
    its timeout expired."""
    n = 5000
    with rendr.sync.listen_tcp("127.0.0.1:0") as ln:
        host, port = ln.addrs[0]
        client = rendr.sync.dial([rendr.PathSpec("tcp", f"{host}:{port}")])
        server, _ = ln.accept(timeout=10)

        def send() -> None:
            for i in range(n):
                client.sendall(bytes([i % 251]))
                if i % 20 == 0:
                    time.sleep(0.002)
            client.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        server.settimeout(0.0005)
        got = bytearray()
        timeouts = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                data = server.recv(1)
            except TimeoutError:
                timeouts += 1
                continue
            if not data:
                break
            got += data
        sender.join(5)
        assert timeouts > 0  # the race was exercised
        assert bytes(got) == bytes(i % 251 for i in range(n))
        client.close()
        server.close()


def test_listen_quic_serves_blocking_sockets() -> None:
    pytest.importorskip("qh3")
    with rendr.sync.listen_quic("127.0.0.1:0") as ln:
        (host, port), = ln.addrs
        client = rendr.sync.dial([rendr.PathSpec("quic", f"{host}:{port}",
                                                 options={"insecure": "1"})])
        server, _ = ln.accept(timeout=10)
        try:
            payload = os.urandom(MIB)
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)
            got = bytearray()
            while chunk := server.recv(65536):
                got += chunk
            assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
            assert client.conn.stats().paths[0].transport == "quic"
        finally:
            client.close()
            server.close()
