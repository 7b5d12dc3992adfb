"""Child-process handlers of the bond gate's packet mode (``--packet``).

- receiver: :func:`accept_packets` (started by ``bulk.h_listen``) takes every packet
  connection of the gate's listener and reads it to its end (the sender's close),
  counting packets and bytes; its figures go to the same ``result`` queue as the bulk
  transfers';
- sender (``psend``): a PacketConn in a given mode over given paths offers ``rate_mbit``
  Mbit/s of ``size``-byte packets (paced every millisecond, ``send()`` waiting while
  the queue is full) for ``duration`` seconds, then closes.

Nothing here prints (the children talk JSON lines through ``_twoproc``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import _twoproc as tp
import rendr

from . import common as gk

PSK = b"rendr-bond-gate-psk-32-bytes-ok!"


async def _sink(pc: rendr.PacketConn) -> dict[str, Any]:
    got = nbytes = 0
    first = last = 0.0
    error = None
    try:
        async for pkt in pc:
            last = time.perf_counter()
            if not got:
                first = last
            got += 1
            nbytes += len(pkt)
    except rendr.RendrError as exc:
        error = f"{type(exc).__name__}: {exc}"
    out = {"kind": "packets", "received": got, "bytes": nbytes, "recv_s": last - first,
           "paths": gk.path_rows(pc), "packets": gk.packet_counters(pc), "failure": error}
    try:
        await asyncio.wait_for(pc.close(), 5.0)
    except (asyncio.TimeoutError, rendr.RendrError):
        pc.abort()
    return out


def accept_packets(ln: rendr.Listener,
                   results: asyncio.Queue[dict[str, Any]]) -> asyncio.Task[None]:
    """Read every packet connection ``ln`` accepts; queue each one's figures."""

    async def loop() -> None:
        while True:
            pc = await ln.accept_packet()
            task = asyncio.create_task(_sink(pc))
            task.add_done_callback(
                lambda t: results.put_nowait(t.result() if t.exception() is None else
                                             {"kind": "packets", "error": repr(t.exception())}))

    return asyncio.create_task(loop())


async def h_psend(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    """Offer ``rate_mbit`` of ``size``-byte packets for ``duration`` s in ``mode``."""
    addrs = msg["addrs"]
    rate = float(msg["rate_mbit"]) * 1e6 / 8
    duration = float(msg["duration"])
    pc = await gk.dial_udpflow_packets(msg["mode"], addrs, PSK)
    if isinstance(pc, dict):
        return pc
    up = await gk.wait_paths_up(pc, len(addrs))
    for _ in range(200):  # every path's first RTT sample (BOND leaves out far paths)
        if all(p.srtt is not None for p in pc.stats().paths if p.state == "up"):
            break
        await asyncio.sleep(0.01)
    size = min(int(msg["size"]), pc.max_payload)
    payload = bytes(size)
    sent = 0
    t0 = time.perf_counter()
    failure = None
    while (now := time.perf_counter()) < t0 + duration:
        due = int((now - t0) * rate / size) + 1
        try:
            while sent < due:
                await pc.send(payload)
                sent += 1
        except rendr.RendrError as exc:
            failure = f"{type(exc).__name__}: {exc}"
            break
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - t0
    rows = gk.path_rows(pc)
    counters = gk.packet_counters(pc)
    try:
        await asyncio.wait_for(pc.close(), 10.0)
    except (asyncio.TimeoutError, rendr.RendrError):
        pc.abort()
    return {"sent": sent, "size": size, "elapsed": elapsed, "paths": rows,
            "packets": counters, "paths_up_at_start": up, "failure": failure}


HANDLERS: dict[str, tp.Handler] = {"psend": h_psend}
