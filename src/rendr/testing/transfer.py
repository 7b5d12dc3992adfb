"""One-way bulk transfer between two connected :class:`~rendr.Conn` ends, checked:
the helper the loopback, UDP and QUIC carrier tests share."""

from __future__ import annotations

import asyncio
import hashlib

from ..aio.conn import Conn

__all__ = ["transfer"]


async def transfer(c: Conn, s: Conn, data: bytes, timeout: float = 60) -> None:
    """Write ``data`` and EOF on ``c``; read everything on ``s`` into a reused buffer
    and check its length and SHA-256.

    Raises:
        AssertionError: the reader stalled for ``timeout`` s (both ends' stats in the
            message), or what arrived differs from ``data``.
    """
    async def write() -> None:
        await c.write(data)
        await c.write_eof()

    writer = asyncio.ensure_future(write())
    digest = hashlib.sha256()
    got = 0
    buf = bytearray(1 << 20)

    async def read() -> None:
        nonlocal got
        while n := await s.readinto(buf):
            digest.update(memoryview(buf)[:n])
            got += n

    try:
        await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        writer.cancel()
        raise AssertionError(f"stalled at {got} of {len(data)} bytes: "
                             f"{c.stats()} / {s.stats()}") from None
    await writer
    assert got == len(data), (got, len(data))
    assert digest.digest() == hashlib.sha256(data).digest(), "SHA-256 differs"
