"""Child-process handlers of the race gate: a packet echo server, a paced echo client,
and UDP relays with faults.

- server (``serve``, ``result``): ``rendr.listen_udpflow_packet`` on two loopback
  addresses; every accepted PacketConn echoes each packet back until the peer closes,
  then its per-path counters and packet counters are queued for ``result``;
- client (``echo``): a PacketConn in a given mode over given paths (``dial_packet()``;
  ``rendr.ModeUnavailable`` is answered as such) sends a 64-byte echo request (sequence
  number, send time, a pattern) every ``1 / pps`` s for ``duration`` s, a reader takes
  every answer's RTT; then up to ``grace`` s for the last answers;
- relay (``relays``, ``relay_stats``): :class:`rendr.testing.udprelay.UdpRelay`
  instances with seeded faults in both directions.

Nothing here prints.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import _twoproc as tp
import rendr
from rendr.testing.udprelay import UdpRelay

from . import common as gk

HOST = "127.0.0.1"
PSK = b"rendr-race-gate-psk-32-bytes-ok!"
_state: dict[str, Any] = {}


# ---------------------------------------------------------------------------- server


async def _echo(pc: rendr.PacketConn) -> dict[str, Any]:
    echoed = 0
    out: dict[str, Any] = {"flow_id": pc.flow_id.hex()}
    try:
        async for pkt in pc:
            await pc.send(pkt)
            echoed += 1
    except rendr.RendrError as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    out.update(echoed=echoed, paths=gk.path_rows(pc), packets=gk.packet_counters(pc))
    return out


async def h_serve(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    pln = await rendr.listen_udpflow_packet(f"{HOST}:0", f"{HOST}:0", psk=PSK)
    ended: dict[str, dict[str, Any]] = {}  # flow id -> its figures
    changed = asyncio.Event()

    def done(flow_id: str, t: asyncio.Task[dict[str, Any]]) -> None:
        exc = t.exception()
        ended[flow_id] = t.result() if exc is None else {"error": repr(exc)}
        changed.set()

    async def accept_loop() -> None:
        while True:
            pc = await pln.accept()
            task = asyncio.create_task(_echo(pc))
            task.add_done_callback(functools.partial(done, pc.flow_id.hex()))

    _state.update(pln=pln, ended=ended, changed=changed,
                  acceptor=asyncio.create_task(accept_loop()))
    return {"addrs": [[h, p] for h, p in pln.addrs]}


async def h_result(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    """The server's figures of the flow ``flow_id`` once it ended (waits ``timeout``)."""
    ended: dict[str, dict[str, Any]] = _state["ended"]
    changed: asyncio.Event = _state["changed"]
    deadline = time.perf_counter() + float(msg["timeout"])
    while msg["flow_id"] not in ended:
        changed.clear()
        left = deadline - time.perf_counter()
        try:
            await asyncio.wait_for(changed.wait(), max(0.0, left))
        except asyncio.TimeoutError:
            return {"error": f"the flow did not end on the server within {msg['timeout']} s"}
    return ended.pop(msg["flow_id"])


# ---------------------------------------------------------------------------- client


async def h_echo(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    duration, interval = float(msg["duration"]), 1.0 / float(msg["pps"])
    addrs = msg["addrs"]
    pc = await gk.dial_udpflow_packets(msg["mode"], addrs, PSK)
    if isinstance(pc, dict):
        return pc
    up = await gk.wait_paths_up(pc, len(addrs))  # up to 3 s for every path
    flow_id = pc.flow_id.hex()
    rtts: list[float] = []
    seen: set[int] = set()
    bad = dup = 0
    sent = 0
    all_back = asyncio.Event()
    sending = True

    async def reader() -> None:
        nonlocal bad, dup
        while True:
            try:
                data = await pc.recv()
            except rendr.RendrError:
                return
            now = time.perf_counter()
            if len(data) != gk.ECHO_SIZE:
                bad += 1
                continue
            seq, t_send, intact = gk.parse_echo(data)
            if not intact:
                bad += 1
            elif seq in seen:
                dup += 1
            else:
                seen.add(seq)
                rtts.append(now - t_send)
            if not sending and len(seen) >= sent:
                all_back.set()

    task = asyncio.create_task(reader())
    t0 = time.perf_counter()
    failure = None  # the flow failed (the engine raised): when and why
    while (at := t0 + sent * interval) < t0 + duration:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        try:
            await pc.send(gk.echo_message(sent, time.perf_counter()))
        except rendr.RendrError as exc:
            failure = f"{type(exc).__name__}: {exc} after {time.perf_counter() - t0:.1f} s"
            break
        sent += 1
    sending = False
    if len(seen) < sent and failure is None:
        try:
            await asyncio.wait_for(all_back.wait(), float(msg["grace"]))
        except asyncio.TimeoutError:
            pass
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    rows = gk.path_rows(pc)
    counters = gk.packet_counters(pc)
    try:
        await asyncio.wait_for(pc.close(), 5.0)
    except (asyncio.TimeoutError, rendr.RendrError):
        pc.abort()
    return {"sent": sent, "answered": len(seen), "bad": bad, "dup": dup, "rtts": rtts,
            "paths": rows, "packets": counters, "paths_up_at_start": up, "failure": failure,
            "flow_id": flow_id, "planned": int(duration / interval)}


# ---------------------------------------------------------------------------- relays


async def h_relays(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    """One UdpRelay per ``{"upstream": [h, p], "faults": {...}, "seed": n}``."""
    relays = []
    for spec in msg["relays"]:
        relay = UdpRelay((spec["upstream"][0], int(spec["upstream"][1])), seed=spec["seed"])
        await relay.start()
        relay.set_faults("both", **spec["faults"])
        relays.append(relay)
    _state["relays"] = relays
    return {"addrs": [list(r.addr) for r in relays]}


async def h_relay_stats(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    return {"stats": [{d: vars(st) for d, st in r.stats.items()} for r in _state["relays"]]}


HANDLERS: dict[str, tp.Handler] = {"serve": h_serve, "result": h_result, "echo": h_echo,
                                   "relays": h_relays, "relay_stats": h_relay_stats}
