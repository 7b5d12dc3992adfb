"""A carrier's clean EOF (TCP FIN) mid-transfer is invisible to the application, on
real sockets, on the default loop and on uvloop: ``read()`` never returns ``b""``
before the peer's own clean close, and every byte arrives once.

The FIN comes from the fault relay in front of the active path (``TcpRelay.fin``),
toward the receiving end, the sending end or both."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

import rendr

from .conftest import close_pair, drain_all, make_pair

MIB = 1 << 20


@pytest.mark.parametrize(("sender", "toward"), [("client", "upstream"), ("client", "both"),
                                                ("server", "client")])
async def test_carrier_fin_mid_transfer_is_invisible(sender: str, toward: str) -> None:
    pair = await make_pair()
    try:
        src, dst = (pair.client, pair.server) if sender == "client" else (pair.server,
                                                                         pair.client)
        data = os.urandom(8 * MIB)
        reader = asyncio.create_task(drain_all(dst))  # returns at the first b""
        finned = pair.client.active_path
        view = memoryview(data)
        for i in range(0, len(data), MIB):
            await src.write(view[i : i + MIB])
            if i == 2 * MIB:
                pair.relay_of(finned).fin(toward)  # the active path's carrier FINs
        await src.write_eof()
        got = await asyncio.wait_for(reader, 20)
        assert len(got) == len(data), f"b'' after {len(got)} of {len(data)} bytes"
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        # the FIN reached the end it was sent toward as a carrier EOF
        fin_events = pair.server_events if toward == "upstream" else pair.events
        causes = [e.cause for e in fin_events
                  if e.kind is rendr.EventKind.PATH_DOWN and e.path_id == finned]
        assert causes == ["eof"], causes
        assert pair.client.active_path != finned
        moved = {p.id: p.bytes_sent for p in src.stats().paths}
        assert moved[finned] > 0 and moved[pair.client.active_path] > 0, moved  # mid-transfer
        assert not dst.is_closed and not src.is_closed
        # still one connection, both ways: the receiver answers, then both close cleanly
        await dst.write(b"got it")
        assert await asyncio.wait_for(src.readexactly(6), 5) == b"got it"
        await dst.write_eof()
        assert await asyncio.wait_for(src.read(10), 5) == b""
        await asyncio.wait_for(asyncio.gather(src.close(), dst.close()), 10)
    finally:
        await close_pair(pair)
