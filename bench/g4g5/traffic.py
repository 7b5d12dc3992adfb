"""The two connections' traffic: the echo loop and the bulk transfer, both ends.

Each class keeps what its traffic recorded (times, counts, digests) for
:mod:`.analysis` and :mod:`.scenarios` to read.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

import rendr

from .params import KIB, MIB

ECHO_SIZE = 64
BULK_BLOCK = 4 * MIB
BULK_CHUNK = 256 * KIB


def echo_message(seq: int) -> bytes:
    """The 64-byte echo request number ``seq`` (its content is checked on return)."""
    head = seq.to_bytes(8, "big")
    return head + hashlib.blake2b(head, digest_size=ECHO_SIZE - 8).digest()


def bulk_block() -> bytes:
    return os.urandom(BULK_BLOCK)


async def serve_echo(conn: rendr.Conn) -> None:
    """Server end of the echo connection: answer every byte until the client closes."""
    while data := await conn.read(65536):
        await conn.write(data)
    await conn.close()


class EchoLoop:
    """Client end of the echo connection: a request every ``interval`` s; every answer
    is checked (content, order) and its time recorded."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.sent: list[float] = []
        """Send time of request ``i``."""
        self.recv: list[float | None] = []
        """Answer time of request ``i`` (None: not answered yet)."""
        self.stop = asyncio.Event()
        self.sender_done = asyncio.Event()
        self.all_in = asyncio.Event()
        self.bad: str | None = None
        """What was wrong with the first wrong answer."""

    async def sender(self, conn: rendr.Conn) -> None:
        interval = self.interval
        next_at = time.monotonic()
        try:
            while not self.stop.is_set():
                seq = len(self.sent)
                msg = echo_message(seq)
                self.sent.append(time.monotonic())
                self.recv.append(None)
                await conn.write(msg)
                next_at += interval
                delay = next_at - time.monotonic()
                if delay < -0.5:  # we fell far behind (loop stall): don't burst
                    next_at = time.monotonic()
                await asyncio.sleep(max(0.0, delay))
        finally:
            self.sender_done.set()

    async def reader(self, conn: rendr.Conn) -> None:
        expect = 0
        while True:
            data = await conn.readexactly(ECHO_SIZE)
            now = time.monotonic()
            seq = int.from_bytes(data[:8], "big")
            if seq != expect or data != echo_message(expect):
                self.bad = (f"echo answer #{expect} wrong: got seq {seq}"
                            f"{' (content mismatch)' if seq == expect else ''}")
                raise AssertionError(self.bad)
            if expect >= len(self.sent):
                self.bad = f"echo answer #{expect} arrived before it was sent"
                raise AssertionError(self.bad)
            self.recv[expect] = now
            expect += 1
            if self.sender_done.is_set() and expect == len(self.sent):
                self.all_in.set()

    def last_fresh(self, t1: float) -> bool:
        """Whether an answer to a request sent at/after ``t1`` came in."""
        for s, r in zip(reversed(self.sent), reversed(self.recv), strict=True):
            if s < t1:
                return False
            if r is not None:
                return True
        return False


class BulkTransfer:
    """Both ends of the bulk connection: the client writes ``size`` bytes (a block
    repeated) and EOF; the server SHA-256s what it reads and answers digest + length."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.written = 0
        self.received = 0
        """Bytes the server has read so far."""
        self.t_start: float | None = None
        self.t_done: float | None = None
        self.server_digest = b""
        self.client_result = b""
        """The server's answer as the client read it (digest + 8-byte length)."""
        self.progress: list[tuple[float, int]] = []
        """(time, bytes received) samples."""

    async def client(self, conn: rendr.Conn, block: bytes) -> None:
        size = self.size
        mv = memoryview(block)
        self.t_start = time.monotonic()
        while self.written < size:
            off = self.written % len(block)
            n = min(BULK_CHUNK, size - self.written, len(block) - off)
            await conn.write(mv[off : off + n])
            self.written += n
        await conn.write_eof()
        self.client_result = await conn.readexactly(40)
        self.t_done = time.monotonic()
        rest = await conn.read(-1)
        if rest:
            raise AssertionError(f"bulk: {len(rest)} unexpected bytes after the digest")
        await conn.close()

    async def serve(self, conn: rendr.Conn) -> None:
        h = hashlib.sha256()
        while data := await conn.read(1 << 20):
            h.update(data)
            self.received += len(data)
        self.server_digest = h.digest()
        await conn.write(self.server_digest + self.received.to_bytes(8, "big"))
        await conn.close()

    async def sampler(self) -> None:
        while True:
            self.progress.append((time.monotonic(), self.received))
            await asyncio.sleep(0.02)
