"""Child-process handlers of the bond gate: a bulk receiver, a bulk sender, TCP relays.

- receiver (``listen``, ``result``): one rendr listener with a TCP address per path and
  a raw TCP server per path, each accepting in the background; every accepted
  connection is read to its end (SHA-256 of every byte, first/last byte times), answered
  ``done`` and its figures queued for ``result``;
- sender (``send``): one transfer of ``size`` bytes (a random 4 MiB block repeated),
  raw TCP or rendr in a given mode over given paths; elapsed = first write -> the
  receiver's ``done``; ``rendr.ModeUnavailable`` from ``dial()`` is answered as such;
- relay (``relays``): :class:`rendr.testing.relay.TcpRelay` instances adding delay.

Nothing here prints (the children talk JSON lines through ``_twoproc``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import _twoproc as tp
import rendr
from rendr.testing.payload import repeated_digest
from rendr.testing.relay import TcpRelay
from rendr.testing.udprelay import UdpRelay

from . import common as gk
from . import packet_bulk

MIB = 1 << 20
PSK = b"rendr-bond-gate-psk-32-bytes-ok!"
_state: dict[str, Any] = {}

# ---------------------------------------------------------------------------- receiver


async def _sink_rendr(conn: rendr.Conn) -> dict[str, Any]:
    digest = hashlib.sha256()
    buf = bytearray(MIB)
    view = memoryview(buf)
    got = 0
    first = last = 0.0
    while n := await conn.readinto(buf):
        if not got:
            first = time.perf_counter()
        digest.update(view[:n])
        got += n
        last = time.perf_counter()
    rows = gk.path_rows(conn)
    await conn.write(b"done")
    try:
        await asyncio.wait_for(conn.close(), 10.0)
    except (asyncio.TimeoutError, rendr.RendrError):
        conn.abort()
    return {"kind": "rendr", "received": got, "digest": digest.hexdigest(),
            "recv_s": last - first, "paths": rows}


async def _sink_raw(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    digest = hashlib.sha256()
    got = 0
    first = last = 0.0
    while data := await reader.read(MIB):
        if not got:
            first = time.perf_counter()
        digest.update(data)
        got += len(data)
        last = time.perf_counter()
    writer.write(b"done")
    await writer.drain()
    writer.close()
    _state["results"].put_nowait({"kind": "raw", "received": got, "recv_s": last - first,
                                  "digest": digest.hexdigest(), "paths": []})


async def h_listen(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    """A rendr listener on every host (one TCP address each) and a raw server on each."""
    results: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    _state["results"] = results
    transport = msg.get("transport", "tcp")
    ln = await rendr.listen(*[rendr.ListenSpec(transport, f"{h}:0") for h in msg["hosts"]],
                            psk=PSK)
    raws = [await asyncio.start_server(_sink_raw, h, 0) for h in msg["hosts"]]

    async def accept_loop() -> None:
        while True:
            conn = await ln.accept()
            task = asyncio.create_task(_sink_rendr(conn))
            task.add_done_callback(
                lambda t: results.put_nowait(t.result() if t.exception() is None else
                                             {"kind": "rendr", "error": repr(t.exception())}))

    _state.update(ln=ln, raws=raws, acceptor=asyncio.create_task(accept_loop()),
                  packet_acceptor=packet_bulk.accept_packets(ln, results))
    return {"rendr": [p for _, p in ln.addrs],
            "raw": [s.sockets[0].getsockname()[1] for s in raws]}


async def h_result(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    """The figures of the next transfer that ended."""
    res: dict[str, Any] = await asyncio.wait_for(_state["results"].get(), msg["timeout"])
    return res


# ---------------------------------------------------------------------------- sender


async def _send_all(write: Any, size: int) -> None:
    mv = memoryview(tp.payload_block())
    sent = 0
    while sent < size:
        off = sent % len(mv)
        n = min(MIB, size - sent, len(mv) - off)
        await write(mv[off:off + n])
        sent += n


async def h_send(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    """One transfer: ``kind`` raw (first address only) or rendr in ``mode`` over all."""
    size, addrs = int(msg["size"]), msg["addrs"]
    expect = repeated_digest(tp.payload_block(), size).hex()
    if msg["kind"] == "raw":
        host, port = addrs[0]
        reader, writer = await asyncio.open_connection(host, port)

        async def raw_write(data: memoryview) -> None:
            writer.write(data)
            await writer.drain()

        t0 = time.perf_counter()
        await _send_all(raw_write, size)
        writer.write_eof()
        answer = await reader.readexactly(4)
        elapsed = time.perf_counter() - t0
        writer.close()
        return {"elapsed": elapsed, "expect": expect, "answer_ok": answer == b"done",
                "paths": []}
    dialer = rendr.Dialer(mode=gk.mode_of(msg["mode"]),
                          paths=[rendr.PathSpec(msg.get("transport", "tcp"), f"{h}:{p}")
                                 for h, p in addrs], psk=PSK)
    try:
        conn = await dialer.dial()
    except rendr.ModeUnavailable as exc:
        return {"unavailable": f"{type(exc).__name__}: {exc}"}
    up = await gk.wait_paths_up(conn, len(addrs))  # up to 3 s for every path
    for _ in range(200):  # the idle round trip of each path (up to 2 s for a PONG)
        if all(p.srtt is not None for p in conn.stats().paths if p.state == "up"):
            break
        await asyncio.sleep(0.01)
    idle = [None if p.srtt is None else round(p.srtt * 1e3, 2) for p in conn.stats().paths]
    t0 = time.perf_counter()
    await _send_all(conn.write, size)
    await conn.write_eof()
    answer = await conn.readexactly(4)
    elapsed = time.perf_counter() - t0
    stats = conn.stats()
    rows = gk.path_rows(conn)
    await conn.close()
    return {"elapsed": elapsed, "expect": expect, "answer_ok": answer == b"done",
            "paths": rows, "paths_up_at_start": up, "idle_srtt_ms": idle, "mode": str(stats.mode),
            "migration_count": stats.migration_count}


# ---------------------------------------------------------------------------- relays


async def h_relays(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    """Start one relay per ``{"host", "upstream": [h, p], "delay", "udp"}`` (a TcpRelay,
    or with ``udp`` a UdpRelay delaying each direction by ``delay``); their addresses."""
    relays: list[TcpRelay | UdpRelay] = []
    for spec in msg["relays"]:
        upstream = (spec["upstream"][0], int(spec["upstream"][1]))
        if spec.get("udp"):
            udp = UdpRelay(upstream, host=spec["host"])
            await udp.start()
            udp.set_faults("both", delay=float(spec["delay"]))
            relays.append(udp)
            continue
        relay = TcpRelay(upstream, host=spec["host"])
        await relay.start()
        relay.set_delay(float(spec["delay"]))
        relays.append(relay)
    _state.setdefault("relays", []).extend(relays)
    return {"addrs": [list(r.addr) for r in relays]}


HANDLERS: dict[str, tp.Handler] = {"listen": h_listen, "result": h_result, "send": h_send,
                                   "relays": h_relays}
