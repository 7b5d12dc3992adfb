"""Issue 7: an attacker *on* a path (it sees and can write into the victim's own TCP
connection, as anyone who can inject into a TCP stream): injected bytes end that path
only, and a captured session replayed later runs nothing."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os

import pytest

import rendr
from rendr.core.wire import (
    CloseCode,
    FrameType,
    encode_ack,
    encode_activate,
    encode_frame,
    encode_path_close,
    encode_u64,
)

MIB = 1 << 20


class Mitm:
    """A TCP proxy in front of the listener that records what the dialer sent and can
    write bytes of its own into either direction of the live connection."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.sent_by_dialer = bytearray()
        self._writers: dict[str, asyncio.StreamWriter] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    async def _on_client(self, c_reader: asyncio.StreamReader,
                         c_writer: asyncio.StreamWriter) -> None:
        u_reader, u_writer = await asyncio.open_connection(*self.upstream)
        self._writers = {"to_listener": u_writer, "to_dialer": c_writer}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       record: bool) -> None:
            with contextlib.suppress(OSError):
                while data := await reader.read(65536):
                    if record:
                        self.sent_by_dialer += data
                    writer.write(data)
                    await writer.drain()
            writer.close()

        for task in (asyncio.create_task(pipe(c_reader, u_writer, True)),
                     asyncio.create_task(pipe(u_reader, c_writer, False))):
            self._tasks.add(task)

    def inject(self, direction: str, data: bytes) -> None:
        self._writers[direction].write(data)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for w in self._writers.values():
            w.close()
        if self.server is not None:
            self.server.close()


def _run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))  # type: ignore[arg-type]


async def _pump(conn: rendr.Conn, data: bytes) -> None:
    view = memoryview(data)
    for i in range(0, len(data), 64 * 1024):
        await conn.write(view[i:i + 64 * 1024])


async def _read_n(conn: rendr.Conn, n: int) -> bytes:
    return await conn.readexactly(n)


# What the pre-v1 attacks of issue 7 injected: CLOSE(0) (a clean EOF at the server),
# an ACK of everything (a permanent hole), a forged PONG (a 500 s RTT), ACTIVATE with
# the last epoch (steal the flow, the victim's own ACTIVATEs then stale) and
# PATH_CLOSE of the victim's other path.
INJECTED = {
    "close": encode_frame(FrameType.CLOSE, int(CloseCode.NO_ERROR).to_bytes(2, "big")),
    "ack_all": encode_ack(1 << 40, 1 << 41, 0, []),
    "pong": encode_u64(FrameType.PONG, 12345),
    "activate_last_epoch": encode_activate(1, 0xFFFFFFFF, dead_path=2),
    "path_close": encode_path_close(2),
}


async def _inject_mid_transfer(to_listener: bytes | None, to_dialer: bytes | None
                               ) -> tuple[int, int, bool]:
    """4 MiB each way over two paths, one of them through the attacker's proxy, which
    writes ``to_listener`` / ``to_dialer`` into its connection mid-transfer.  Checks
    that every byte arrives once and the flow still works; returns the listener's and
    the dialer's authentication failures, and whether the dialer's proxied path ended."""
    lst = await rendr.listen_tcp("127.0.0.1:0")
    addr = lst.addrs[0][:2]
    mitm = Mitm(addr)
    host, port = await mitm.start()
    try:
        dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"{host}:{port}"),
                                     rendr.PathSpec("tcp", f"{addr[0]}:{addr[1]}")])
        client = await dialer.dial()
        server = await lst.accept()
        for _ in range(500):  # both paths up (the dialer adds the second after the first)
            proxied = {p.id for p in client.stats().paths
                       if p.state == "up" and p.remote_addr.endswith(f":{port}")}
            if proxied and len(client.stats().paths) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(proxied) == 1
        up, down = os.urandom(4 * MIB), os.urandom(4 * MIB)
        r_srv = asyncio.create_task(_read_n(server, len(up)))
        r_cli = asyncio.create_task(_read_n(client, len(down)))
        w_cli = asyncio.create_task(_pump(client, up))
        w_srv = asyncio.create_task(_pump(server, down))
        await asyncio.sleep(0.05)
        if to_listener is not None:
            mitm.inject("to_listener", to_listener)
        if to_dialer is not None:
            mitm.inject("to_dialer", to_dialer)
        await asyncio.gather(w_cli, w_srv)
        got_up, got_down = await asyncio.gather(r_srv, r_cli)
        assert hashlib.sha256(got_up).digest() == hashlib.sha256(up).digest()
        assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest()
        await client.write(b"still here")
        assert await server.readexactly(10) == b"still here"
        # (a re-dialed path through the proxy gets a new id: ids are never reused)
        proxied_gone = all(p.state != "up" for p in client.stats().paths if p.id in proxied)
        failures = (server._driver.flow.auth_failures, client._driver.flow.auth_failures,
                    proxied_gone)
        client.abort()
        server.abort()
        return failures
    finally:
        await mitm.close()
        await lst.close()


@pytest.mark.parametrize("frame", sorted(INJECTED))
def test_bytes_injected_into_a_live_path_end_only_that_path(frame: str) -> None:
    """Mid-transfer the attacker writes a well-formed frame (each of the pre-v1
    attacks) into the listener's side of the victim's active connection, then garbage
    into the dialer's side: each end drops that path (auth), the flow goes on over its
    other path, every byte arrives once, no EOF."""
    async def main() -> None:
        at_listener, at_dialer, proxied_gone = await _inject_mid_transfer(
            INJECTED[frame], os.urandom(300))
        assert at_listener >= 1
        # the dialer drops the path on the garbage, unless the listener's notice that
        # the path ended (on the other path) came first: the garbage then still sat
        # behind megabytes in the proxy's buffers (seen once in a full-suite run)
        assert at_dialer >= 1 or proxied_gone

    _run(main())


def test_garbage_injected_toward_the_dialer_ends_only_that_path() -> None:
    """The dialer's side alone (nothing else ends the path first): the dialer counts
    the forgery, drops that path, and the flow goes on, every byte once."""
    async def main() -> None:
        at_listener, at_dialer, proxied_gone = await _inject_mid_transfer(
            None, os.urandom(300))
        assert at_dialer >= 1 and proxied_gone and at_listener == 0

    _run(main())


def test_a_captured_session_replayed_later_runs_nothing() -> None:
    """The attacker recorded every byte a dialer sent in a whole session (a request)
    and replays it to the listener after the session closed: the listener answers
    the HELLO with a fresh key share, so the replayed records fail and the
    application never reads a byte of the request again."""
    async def main() -> None:
        lst = await rendr.listen_tcp("127.0.0.1:0")
        addr = lst.addrs[0][:2]
        mitm = Mitm(addr)
        host, port = await mitm.start()
        try:
            client = await rendr.Dialer(paths=[rendr.PathSpec("tcp", f"{host}:{port}")]).dial()
            server = await lst.accept()
            await client.write(b"TRANSFER 100 EUR")
            await client.write_eof()
            assert await server.read(1 << 16) == b"TRANSFER 100 EUR"
            assert await server.read(1 << 16) == b""
            await server.close()
            await client.close()
            captured = bytes(mitm.sent_by_dialer)
            assert b"TRANSFER" not in captured  # encrypted on the wire

            _reader, writer = await asyncio.open_connection(*addr)
            writer.write(captured)
            await writer.drain()
            replayed: list[bytes] = []

            async def serve() -> None:
                conn = await lst.accept()
                with contextlib.suppress(rendr.RendrError, OSError):
                    while data := await conn.read(1 << 16):
                        replayed.append(data)

            task = asyncio.create_task(serve())
            await asyncio.sleep(1.5)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert replayed == []
            writer.close()
        finally:
            await mitm.close()
            await lst.close()

    _run(main())
