#!/usr/bin/env python3
"""G3s gate: reliable rendr streams over plain UDP (``udpflow``), separate processes.

Sender and receiver run in separate processes (as on two machines), each pinned to its
own core when there are two, both on the same kind of loop (uvloop unless
``--no-uvloop``). In one run:

(a) **integrity under loss**: for each loss rate of ``--losses`` (1 %, 5 %, 20 %) a
    stream of ``--mib`` MiB (256; ``--short``: 8) goes from the client process to the
    server process through the project's UDP fault relay
    (:class:`rendr.testing.udprelay.UdpRelay`, random loss both ways plus reordering:
    ``--reorder`` 2 % of the datagrams held back ``--reorder-gap`` 2 ms). The relay is
    a Python ``DatagramProtocol`` and runs in a third process (``--relay-cpu``: pinned
    there; by default it floats, as this box may have 2 CPUs only), its socket buffers
    raised to 4 MiB so that the kernel adds no loss of its own. The payload is an
    AES-256-CTR key stream (non-repeating, seeded): the sender hashes what it writes,
    the receiver SHA-256-hashes what it reads and compares every byte with the same key
    stream (the first differing offset is reported). Pass: every byte, in order, digest
    identical, both ends clean. Reported: MB/s (the sender's first write -> the
    receiver's answer after EOF), bytes re-sent (``sum(p.retransmits)`` on the sender),
    probe timeouts, the relay's counters per direction, the host's UDP receive-buffer
    drops, time. Each run has a hard ``--timeout`` (auto: by size and loss) and a
    ``--stall`` limit (no byte for that long): the receiver then aborts and both ends
    report where they stood (bytes received, written, unacknowledged, in flight,
    window, RTT), and the gate fails.
(b) **goodput at 0 % loss, no relay** (direct loopback), ``--repeat`` interleaved
    rounds (3; ``--short``: 1) of: a raw UDP blast (1150-byte datagrams as fast as the
    sender can for ``--raw-duration`` s, the receiver counts; ``bench/g3ukit``'s
    ``raw-proto`` ``DatagramProtocol``, and on the default loop also ``raw-reader``, the
    better one being the baseline), a rendr stream over udpflow and a rendr stream over
    TCP, each of ``--goodput-mib`` MiB (256; ``--short``: 32), receivers counting into a
    reused 1 MiB buffer with ``Conn.readinto``. Reported: medians, the paired ratios
    rendr-udpflow / raw UDP and rendr-udpflow / rendr-TCP. Informational: no goal yet.

Both rendr ends use a PSK (so records are sealed, as deployed); ``--knob NAME=VALUE``
overrides a ``FlowConfig`` field on both ends. ``--json PATH`` keeps every measurement.
Verdict: ``G3s PASS`` / ``G3s FAIL`` and exit code 0 / 1 (integrity of every run, and
every goodput transfer complete).

Usage::

    PYTHONPATH=src python bench/g3s_udp_stream.py                  # 256 MiB, uvloop
    PYTHONPATH=src python bench/g3s_udp_stream.py --short          # CI: 8 MiB, 1 round
    PYTHONPATH=src python bench/g3s_udp_stream.py --no-uvloop      # the default loop
    PYTHONPATH=src python bench/g3s_udp_stream.py --losses 0.01 --skip-goodput
    PYTHONPATH=src python bench/g3s_udp_stream.py --skip-integrity --repeat 5
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import hashlib
import json
import math
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

import _twoproc as tp
import rendr
from g3ukit import runs
from g3ukit.transports import make
from rendr.testing.udprelay import UdpRelay

MIB = 1 << 20
CHUNK = MIB  # sender write size; receiver readinto buffer
PSK = b"g3s gate pre-shared key, 32 byte"
RAW_SIZE = 1150  # raw UDP blast payload
SOCK_BUF = 4 * MIB  # the relay's socket buffers
SAMPLE_S = 0.1  # receiver progress sampling
ACCEPT_TIMEOUT_S = 30.0

# ---------------------------------------------------------------------------- payload


class KeyStream:
    """The payload: AES-256-CTR over zeros, so any length, never repeating."""

    def __init__(self, seed: str) -> None:
        key = hashlib.sha256(seed.encode()).digest()
        self._enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        self._zeros = bytes(CHUNK)

    def take(self, n: int) -> bytes:
        """The next ``n`` (<= 1 MiB) bytes."""
        return self._enc.update(self._zeros[:n] if n < CHUNK else self._zeros)


# ---------------------------------------------------------------------------- diagnostics


def path_info(p: Any) -> dict[str, Any]:
    return {"id": p.id, "transport": p.transport, "state": p.state, "srtt": p.srtt,
            "bytes_sent": p.bytes_sent, "bytes_received": p.bytes_received,
            "retransmits": p.retransmits, "last_recv_age": round(p.last_recv_age, 3),
            "down_cause": p.down_cause, "suspect": p.suspect}


def conn_info(conn: Any) -> dict[str, Any]:
    """Public counters of a Conn, plus (best effort, read-only) the engine's loss
    recovery state of each datagram path: where a stalled run stood."""
    st = conn.stats()
    out: dict[str, Any] = {
        "state": str(st.state), "active_path": st.active_path,
        "bytes_written": st.bytes_written, "bytes_read": st.bytes_read,
        "unacked_bytes": st.unacked_bytes, "recv_dups": st.recv_dups,
        "recv_queue_hwm": st.recv_queue_hwm, "migration_count": st.migration_count,
        "retransmits": sum(p.retransmits for p in st.paths),
        "paths": [path_info(p) for p in st.paths],
    }
    flow = getattr(conn, "_flow", None)
    reliable = getattr(flow, "_reliable", None) or {}
    rel: dict[str, Any] = {}
    for pid, r in reliable.items():
        try:
            rel[str(pid)] = {"cwnd": r.cc.cwnd, "in_flight": r.loss.bytes_in_flight,
                             "lost_bytes": r.lost_bytes, "probes": r.probes,
                             "wait_until": r.wait_until, "pto": r.loss.pto_period,
                             "cc": type(r.cc).__name__,
                             "phase": str(getattr(r.cc, "phase", "")),
                             "btl_bw": getattr(r.cc, "btl_bw", None),
                             "min_rtt": getattr(r.cc, "min_rtt", None),
                             "srtt": r.loss.rtt.srtt}
        except AttributeError:  # another build's internals: the public figures suffice
            pass
    out["reliability"] = rel
    out["probes"] = sum(int(v["probes"]) for v in rel.values())
    sender = getattr(flow, "_sender", None)
    if sender is not None:
        out["sender"] = {k: getattr(sender, k, None)
                         for k in ("next_new", "peer_max", "limit", "fin_pending", "fin_acked")}
    error = getattr(flow, "error", None)
    out["flow_error"] = repr(error) if error is not None else None
    return out


# ---------------------------------------------------------------------------- relay (child)

_relay: UdpRelay | None = None


def _big_buffers(sock: socket.socket | None) -> None:
    if sock is not None:
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCK_BUF)


async def relay_start(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    """Start a relay to ``upstream`` with the faults given; answer its address. It
    forwards on this process's loop while the serve loop waits for the next command."""
    global _relay
    relay = UdpRelay((msg["upstream"][0], msg["upstream"][1]), seed=msg["seed"])
    await relay.start()
    relay.set_faults("both", **msg["faults"])
    _big_buffers(relay._front.get_extra_info("socket") if relay._front else None)

    async def grow_upstreams() -> None:  # each client mapping's socket, once it exists
        done: set[int] = set()
        while _relay is relay:
            for m in list(relay._mappings.values()):
                t = m.upstream.transport
                if t is not None and id(t) not in done:
                    done.add(id(t))
                    _big_buffers(t.get_extra_info("socket"))
            await asyncio.sleep(0.005)

    _relay = relay
    asyncio.get_running_loop().create_task(grow_upstreams())
    return {"addr": list(relay.addr)}


async def relay_stop(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    global _relay
    relay, _relay = _relay, None
    assert relay is not None
    stats = {d: vars(s).copy() for d, s in relay.stats.items()}
    await relay.close()
    return {"stats": stats}


# ---------------------------------------------------------------------------- streams (child)


async def stream_recv(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    """Listen (udpflow or tcp), accept one Conn, read to EOF (hash and compare with
    ``verify``), answer ``done``. Gives up at ``deadline`` s or after ``stall`` s
    without a byte: aborts the flow and reports how far it got."""
    knobs = msg.get("knobs", {})
    if msg["transport"] == "udpflow":
        ln = await rendr.listen_udpflow("127.0.0.1:0", psk=PSK, **knobs)
    else:
        ln = await rendr.listen(rendr.ListenSpec("tcp", "127.0.0.1:0"), psk=PSK, **knobs)
    say({"addr": list(ln.addrs[0])})
    out: dict[str, Any] = {"received": 0, "stop": ""}
    try:
        conn = await asyncio.wait_for(ln.accept(), ACCEPT_TIMEOUT_S)
    except asyncio.TimeoutError:
        await ln.close()
        return {**out, "stop": "no connection accepted"}
    verify = bool(msg["verify"])
    expect = KeyStream(msg["seed"]) if verify else None
    digest = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    state: dict[str, Any] = {"received": 0, "first_bad": None, "first": 0.0, "last": 0.0}
    perf = time.perf_counter

    async def reader() -> None:
        received = 0
        while True:
            n = await conn.readinto(buf)
            if not n:
                return
            if verify:
                assert expect is not None
                digest.update(view[:n])
                want = expect.take(n)
                if state["first_bad"] is None and view[:n] != want:
                    i = next(i for i in range(n) if buf[i] != want[i])
                    state["first_bad"] = received + i
            received += n
            state["received"] = received
            state["last"] = perf()
            if not state["first"]:
                state["first"] = state["last"]

    t0 = perf()
    task = asyncio.create_task(reader())
    usage0 = tp.Usage.now()
    progress_at, seen, max_gap = t0, 0, 0.0
    every = float(msg.get("progress") or 0.0)
    told = t0
    stop = ""
    while not task.done():
        await asyncio.wait({task}, timeout=SAMPLE_S)
        now = perf()
        if every and now - told >= every:
            told = now
            say({"progress": state["received"], "t": now - t0})
        if state["received"] != seen:
            max_gap = max(max_gap, now - progress_at)
            seen, progress_at = int(state["received"]), now
        if now - t0 > msg["deadline"]:
            stop = f"timeout after {msg['deadline']:.0f} s"
        elif now - progress_at > msg["stall"]:
            stop = f"stalled: no byte for {msg['stall']:.0f} s"
        if stop and not task.done():
            out["at_stop"] = conn_info(conn)
            task.cancel()
            conn.abort()
            break
    try:
        await task
        stop = stop or "eof"
    except asyncio.CancelledError:
        pass
    except Exception as exc:  # the flow failed: report with the counts so far
        stop = f"error {type(exc).__name__}: {exc}"
        out["at_stop"] = conn_info(conn)
    usage = tp.Usage.now().since(usage0)
    out.update(received=state["received"], stop=stop, first_bad=state["first_bad"],
               digest=digest.hexdigest() if verify else None, usage=usage,
               rx_span=float(state["last"]) - float(state["first"]),
               max_gap=max(max_gap, perf() - progress_at if stop != "eof" else 0.0))
    if stop == "eof":
        try:
            await asyncio.wait_for(conn.write(b"done"), 10.0)
            await asyncio.wait_for(conn.close(), 20.0)
        except (asyncio.TimeoutError, rendr.RendrError, OSError) as exc:
            out["close_error"] = f"{type(exc).__name__}: {exc}"
            conn.abort()
    out["info"] = conn_info(conn)
    await ln.close()
    return out


async def stream_send(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    """Dial, write ``size`` bytes of the key stream in 1 MiB writes, ``write_eof``,
    wait for the receiver's ``done``; all within ``deadline`` s."""
    size = int(msg["size"])
    host, port = msg["addr"]
    dialer = rendr.Dialer(paths=[rendr.PathSpec(msg["transport"], f"{host}:{port}")], psk=PSK,
                          **msg.get("knobs", {}))
    data = KeyStream(msg["seed"])
    digest = hashlib.sha256() if msg["verify"] else None
    out: dict[str, Any] = {"sent": 0, "stop": ""}
    conn: Any = None
    start = end = 0.0

    async def run() -> None:
        nonlocal conn, start, end
        conn = await dialer.dial()
        start = time.perf_counter()
        sent = 0
        zeros = bytes(CHUNK)
        while sent < size:
            n = min(CHUNK, size - sent)
            chunk = data.take(n) if digest is not None else zeros[:n]
            if digest is not None:
                digest.update(chunk)
            await conn.write(chunk)
            sent += n
            out["sent"] = sent
        await conn.write_eof()
        out["answer_ok"] = await conn.readexactly(4) == b"done"
        end = time.perf_counter()

    usage0 = tp.Usage.now()
    try:
        await asyncio.wait_for(run(), msg["deadline"])
        out["stop"] = "done"
    except asyncio.TimeoutError:
        out["stop"] = f"timeout after {msg['deadline']:.0f} s"
    except Exception as exc:  # the flow failed (e.g. the receiver aborted a stalled run)
        out["stop"] = f"error {type(exc).__name__}: {exc}"
    out["usage"] = tp.Usage.now().since(usage0)
    out["elapsed"] = end - start if end else math.nan
    out["digest"] = digest.hexdigest() if digest is not None else None
    if conn is not None:
        out["info"] = conn_info(conn)
        if out["stop"] == "done":
            try:
                await asyncio.wait_for(conn.close(), 20.0)
            except (asyncio.TimeoutError, rendr.RendrError, OSError) as exc:
                out["close_error"] = f"{type(exc).__name__}: {exc}"
                conn.abort()
        else:
            conn.abort()
    return out


# ---------------------------------------------------------------------------- raw UDP (child)


async def raw_recv(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    tr = make(msg["transport"])
    addrs = await tr.open_server()
    say({"addr": list(addrs[0])})
    end = await asyncio.wait_for(tr.accept(), ACCEPT_TIMEOUT_S)
    usage0 = tp.Usage.now()
    res = await runs.receive(end)
    res["usage"] = tp.Usage.now().since(usage0)
    await end.close()
    return res


async def raw_send(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    tr = make(msg["transport"])
    end = await asyncio.wait_for(tr.open_client([(msg["addr"][0], msg["addr"][1])]), 30.0)
    usage0 = tp.Usage.now()
    res = await runs.send_max(end, msg["duration"], RAW_SIZE)
    res["usage"] = tp.Usage.now().since(usage0)
    return res


HANDLERS: dict[str, tp.Handler] = {
    "relay_start": relay_start, "relay_stop": relay_stop,
    "stream_recv": stream_recv, "stream_send": stream_send,
    "raw_recv": raw_recv, "raw_send": raw_send,
}


# ---------------------------------------------------------------------------- parent


@dataclass
class Transfer:
    """One stream transfer (rendr over udpflow or tcp), its two ends' reports."""

    transport: str
    size: int
    loss: float | None  # None: direct, no relay
    seed: str
    send: tp.Msg
    recv: tp.Msg
    relay: dict[str, Any] = field(default_factory=dict)
    kernel_drops: int = 0
    wall: float = 0.0

    @property
    def rate(self) -> float:
        e = float(self.send.get("elapsed", math.nan))
        return self.size / e if e > 0 else math.nan

    @property
    def exact(self) -> bool:
        """Every byte delivered, identical (when verified), both ends done."""
        r, s = self.recv, self.send
        ok = (r["stop"] == "eof" and s["stop"] == "done" and r["received"] == self.size
              and bool(s.get("answer_ok")))
        if r.get("digest") is not None:
            ok = ok and r["digest"] == s["digest"] and r["first_bad"] is None
        return ok

    @property
    def retransmits(self) -> int:
        return int(self.send.get("info", {}).get("retransmits", 0))

    @property
    def probes(self) -> int:
        return int(self.send.get("info", {}).get("probes", 0))

    def relay_line(self) -> str:
        if not self.relay:
            return ""
        parts = []
        for d in ("up", "down"):
            st = self.relay[d]
            parts.append(f"{d} {st['received']} in, {st['lost']} lost, {st['reordered']} "
                         f"reordered, {st['forwarded']} out")
        return "; relay " + " | ".join(parts)

    def stall_line(self) -> str:
        """Where a failed run stood, from both ends."""
        r, s = self.recv, self.send
        lines = [f"    receiver: stop={r['stop']!r} received {r['received']} of {self.size} "
                 f"bytes, first differing offset {r.get('first_bad')}"]
        at = r.get("at_stop") or r.get("info")
        if at:
            lines.append(f"    receiver conn: {json.dumps(at, default=str)}")
        lines.append(f"    sender: stop={s['stop']!r} wrote {s['sent']} bytes")
        if s.get("info"):
            lines.append(f"    sender conn: {json.dumps(s['info'], default=str)}")
        return "\n".join(lines)


def auto_timeout(mib: int, loss: float) -> float:
    """A generous hard limit: 120 s + 0.3 s/MiB + 25 s/MiB per unit of loss (5.3 s/MiB
    at 20 %, where this box measured ~3.6 s/MiB)."""
    return 120.0 + mib * (0.3 + 25.0 * loss)


def stream_transfer(recv: tp.Worker, send: tp.Worker, transport: str, size: int, seed: str,
                    verify: bool, deadline: float, stall: float, knobs: dict[str, Any],
                    relay: tp.Worker | None = None, relay_seed: int = 0,
                    faults: dict[str, float] | None = None, progress: float = 0.0) -> Transfer:
    """One transfer; with ``progress`` the receiver reports every that many s (printed)."""
    before = runs.udp_snmp()
    t0 = time.perf_counter()
    ready = recv.call(cmd="stream_recv", transport=transport, verify=verify, seed=seed,
                      deadline=deadline, stall=stall, knobs=knobs, progress=progress)
    addr = ready["addr"]
    relay_stats: dict[str, Any] = {}
    if relay is not None:
        addr = relay.call(cmd="relay_start", upstream=addr, seed=relay_seed,
                          faults=faults or {})["addr"]
    try:
        send.send(cmd="stream_send", transport=transport, addr=addr, size=size, seed=seed,
                  verify=verify, deadline=deadline + 30.0, knobs=knobs)
        r = recv.recv()
        while "progress" in r:
            print(f"    ... {r['t']:6.0f} s: {r['progress'] / MIB:8.1f} of {size / MIB:.0f} MiB "
                  f"received", flush=True)
            r = recv.recv()
        s = send.recv()
    finally:
        if relay is not None:
            relay_stats = relay.call(cmd="relay_stop")["stats"]
    wall = time.perf_counter() - t0
    after = runs.udp_snmp()
    drops = after.get("RcvbufErrors", 0) - before.get("RcvbufErrors", 0)
    loss = faults.get("loss") if faults else None
    return Transfer(transport, size, loss, seed, s, r, relay_stats, drops, wall)


@dataclass
class RawRun:
    transport: str
    send: tp.Msg
    recv: tp.Msg
    kernel_drops: int

    @property
    def rate(self) -> float:
        """Received payload bytes/s, first -> last arrival."""
        return float(self.recv["rx_pps"]) * RAW_SIZE

    @property
    def loss_pct(self) -> float:
        sent = int(self.send["sent"])
        return 100.0 * (sent - int(self.recv["distinct"])) / sent if sent else math.nan

    @property
    def ok(self) -> bool:
        return int(self.recv["distinct"]) > 0


def raw_run(recv: tp.Worker, send: tp.Worker, transport: str, duration: float) -> RawRun:
    before = runs.udp_snmp()
    ready = recv.call(cmd="raw_recv", transport=transport)
    send.send(cmd="raw_send", transport=transport, addr=ready["addr"], duration=duration)
    s = send.recv()
    r = recv.recv()
    after = runs.udp_snmp()
    return RawRun(transport, s, r, after.get("RcvbufErrors", 0) - before.get("RcvbufErrors", 0))


def med(xs: list[float], fmt: str = "{:.1f}") -> str:
    ys = [x for x in xs if not math.isnan(x)]
    if not ys:
        return "n/a"
    m = fmt.format(statistics.median(ys))
    return m if len(ys) == 1 else f"{m} ({fmt.format(min(ys))}-{fmt.format(max(ys))})"


def cpu(msg: tp.Msg) -> float:
    u = msg.get("usage") or {}
    wall = u.get("wall1", 0.0) - u.get("wall0", 0.0)
    return float(u.get("cpu_s", 0.0)) / wall if wall > 0 else math.nan


def run(args: argparse.Namespace) -> int:
    use_uvloop = not args.no_uvloop
    loop = tp.loop_label(use_uvloop)
    cpu_send, cpu_recv = (None, None) if args.no_pin else tp.core_plan()
    head = tp.header(use_uvloop)
    print(head)
    print(f"processes: sender on CPU {cpu_send}, receiver on CPU {cpu_recv}, relay on CPU "
          f"{args.relay_cpu} (None: not pinned); PSK on both ends"
          + (f"; FlowConfig overrides {args.knob}" if args.knob else ""), flush=True)
    common = ["--no-uvloop"] if args.no_uvloop else []
    biggest = max([auto_timeout(args.mib, x) for x in args.losses] + [300.0])
    limit = (args.timeout or biggest) + 120.0  # backstop: a child silent past its own limit
    recv = tp.Worker(__file__, "recv", common, cpu=cpu_recv, timeout=limit)
    send = tp.Worker(__file__, "send", common, cpu=cpu_send, timeout=limit)
    relay = (tp.Worker(__file__, "relay", common, cpu=args.relay_cpu, timeout=60.0)
             if not args.skip_integrity else None)
    integrity: list[Transfer] = []
    raws: dict[str, list[RawRun]] = {}
    udps: list[Transfer] = []
    tcps: list[Transfer] = []
    failures: list[str] = []
    raw_kinds = ["raw-proto"] if use_uvloop else ["raw-proto", "raw-reader"]
    try:
        if relay is not None:
            faults = {"reorder": args.reorder, "reorder_gap": args.reorder_gap}
            print(f"(a) integrity: {args.mib} MiB through the UDP relay per loss rate, "
                  f"reorder {args.reorder:g} (gap {args.reorder_gap * 1e3:g} ms), both ways, "
                  f"relay seed {args.seed}+i", flush=True)
            for i, loss in enumerate(args.losses):
                deadline = args.timeout or auto_timeout(args.mib, loss)
                seed = f"g3s-{args.seed + i}"  # the payload's key; the relay's seed too
                t = stream_transfer(recv, send, "udpflow", args.mib * MIB, seed, True,
                                    deadline, args.stall, args.knob, relay, args.seed + i,
                                    {**faults, "loss": loss}, args.progress)
                integrity.append(t)
                r, s = t.recv, t.send
                print(f"  loss {loss * 100:4.1f} %: {'byte-exact' if t.exact else 'FAILED'} "
                      f"{t.rate / 1e6:6.2f} MB/s, {t.wall:.1f} s; re-sent "
                      f"{t.retransmits / MIB:.1f} MiB ({100 * t.retransmits / t.size:.1f} %), "
                      f"probes {t.probes}, recv dups "
                      f"{r.get('info', {}).get('recv_dups')}, max gap {r['max_gap']:.2f} s, "
                      f"CPU send {cpu(s):.2f} recv {cpu(r):.2f}, kernel drops "
                      f"{t.kernel_drops}{t.relay_line()}", flush=True)
                if not t.exact:
                    failures.append(f"integrity at {loss * 100:g} % loss")
                    print(t.stall_line(), flush=True)
                    print(f"    repro: PYTHONPATH=src python bench/g3s_udp_stream.py "
                          f"--skip-goodput --mib {args.mib} --losses {loss} --seed "
                          f"{args.seed + i} --reorder {args.reorder} --reorder-gap "
                          f"{args.reorder_gap} --timeout {deadline:g} --stall {args.stall:g}"
                          f"{'' if use_uvloop else ' --no-uvloop'} "
                          f"(relay seed {args.seed + i})", flush=True)
        if not args.skip_goodput:
            size = args.goodput_mib * MIB
            deadline = args.timeout or auto_timeout(args.goodput_mib, 0.0)
            raws = {k: [] for k in raw_kinds}
            print(f"(b) goodput at 0 % loss, direct loopback, {args.repeat} interleaved "
                  f"round(s): raw UDP {RAW_SIZE}-byte blast for {args.raw_duration:g} s "
                  f"({', '.join(raw_kinds)}), rendr udpflow and rendr tcp "
                  f"{args.goodput_mib} MiB each", flush=True)
            for i in range(args.repeat):
                line = []
                for k in raw_kinds:
                    rr = raw_run(recv, send, k, args.raw_duration)
                    raws[k].append(rr)
                    line.append(f"{k} {rr.rate / 1e6:.1f} MB/s (sent "
                                f"{float(rr.send['tx_pps']) * RAW_SIZE / 1e6:.1f}, lost "
                                f"{rr.loss_pct:.1f} %, kernel drops {rr.kernel_drops})")
                    if not rr.ok:
                        failures.append(f"raw {k} round {i + 1} received nothing")
                for kind, bucket in (("udpflow", udps), ("tcp", tcps)):
                    t = stream_transfer(recv, send, kind, size, f"g3s-goodput-{i}", False,
                                        deadline, args.stall, args.knob)
                    bucket.append(t)
                    line.append(f"rendr-{kind} {t.rate / 1e6:.1f} MB/s (CPU send "
                                f"{cpu(t.send):.2f} recv {cpu(t.recv):.2f}, re-sent "
                                f"{t.retransmits}, kernel drops {t.kernel_drops})")
                    if not t.exact:
                        failures.append(f"goodput rendr-{kind} round {i + 1} incomplete")
                        print(t.stall_line(), flush=True)
                print(f"  round {i + 1}: " + "; ".join(line), flush=True)
    except (RuntimeError, TimeoutError) as exc:  # a child failed or went silent
        failures.append(f"a run did not complete: {exc}")
        print(f"  {failures[-1]}", flush=True)
    finally:
        send.close()
        recv.close()
        if relay is not None:
            relay.close()

    summary: list[str] = []
    if integrity:
        summary.append("integrity " + ", ".join(
            f"{t.loss * 100 if t.loss is not None else 0:g} % "
            f"{'ok' if t.exact else 'FAIL'} {t.rate / 1e6:.2f} MB/s" for t in integrity))
    base = ""
    ratio_raw = ratio_tcp = math.nan
    if udps and all(raws.values()):
        base = max(raw_kinds, key=lambda k: statistics.median(r.rate for r in raws[k]))
        pairs = list(zip(raws[base], udps, tcps, strict=False))
        r_raw = [u.rate / b.rate for b, u, _ in pairs]
        r_tcp = [u.rate / t.rate for _, u, t in pairs]
        ratio_raw, ratio_tcp = statistics.median(r_raw), statistics.median(r_tcp)
        print(f"\n(b) medians (min-max) over {len(pairs)} round(s), loop={loop}:")
        for k in raw_kinds:
            print(f"  raw UDP {k:12} received MB/s {med([r.rate / 1e6 for r in raws[k]])}, "
                  f"loss % {med([r.loss_pct for r in raws[k]])}, CPU send "
                  f"{med([cpu(r.send) for r in raws[k]], '{:.2f}')} recv "
                  f"{med([cpu(r.recv) for r in raws[k]], '{:.2f}')}")
        for name, ts in (("rendr udpflow", udps), ("rendr tcp", tcps)):
            print(f"  {name:20} MB/s {med([t.rate / 1e6 for t in ts])}, CPU send "
                  f"{med([cpu(t.send) for t in ts], '{:.2f}')} recv "
                  f"{med([cpu(t.recv) for t in ts], '{:.2f}')}")
        print(f"  rendr-udpflow / raw UDP ({base}), median paired: {med(r_raw, '{:.3f}')} "
              f"(informational)")
        print(f"  rendr-udpflow / rendr-tcp, median paired: {med(r_tcp, '{:.3f}')} "
              f"(informational)")
        summary.append(
            f"goodput 0 % loss: rendr-udpflow "
            f"{statistics.median(t.rate for t in udps) / 1e6:.1f} MB/s, raw UDP ({base}) "
            f"{statistics.median(r.rate for r in raws[base]) / 1e6:.1f} MB/s (ratio "
            f"{ratio_raw:.3f}), rendr-tcp {statistics.median(t.rate for t in tcps) / 1e6:.1f} "
            f"MB/s (ratio {ratio_tcp:.3f})")

    ok = not failures
    sizes = ([] if args.skip_integrity else [f"{args.mib} MiB through the relay"]) + (
        [] if args.skip_goodput else [f"goodput {args.goodput_mib} MiB"])
    print(f"G3s ({', '.join(sizes)}, loop={loop}): "
          + "; ".join(summary) + (f"; failures: {'; '.join(failures)}" if failures else ""))
    if args.json:
        record = {
            "header": head, "loop": loop, "args": {k: v for k, v in vars(args).items()
                                                   if k not in ("role", "cpu")},
            "integrity": [vars(t) for t in integrity],
            "raw": {k: [vars(r) for r in v] for k, v in raws.items()},
            "rendr_udpflow": [vars(t) for t in udps], "rendr_tcp": [vars(t) for t in tcps],
            "baseline": base, "ratio_udpflow_raw": ratio_raw, "ratio_udpflow_tcp": ratio_tcp,
            "failures": failures, "pass": ok,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1, default=str)
    print("G3s PASS" if ok else "G3s FAIL")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--short", action="store_true",
                        help="CI size: --mib 8, --goodput-mib 32, --repeat 1, --raw-duration 1")
    parser.add_argument("--mib", type=int, help="integrity transfer size (default 256)")
    parser.add_argument("--losses", default="0.01,0.05,0.20",
                        help="loss rates of the integrity runs (default %(default)s)")
    parser.add_argument("--reorder", type=float, default=0.02)
    parser.add_argument("--reorder-gap", type=float, default=0.002)
    parser.add_argument("--seed", type=int, default=1, help="relay seed of the first loss rate")
    parser.add_argument("--timeout", type=float, default=0.0,
                        help="hard limit per transfer, s (0: auto by size and loss)")
    parser.add_argument("--stall", type=float, default=30.0,
                        help="abort a transfer after this long without a byte (s)")
    parser.add_argument("--progress", type=float, default=30.0,
                        help="integrity runs: print progress every this many s (0: off)")
    parser.add_argument("--goodput-mib", type=int, help="goodput transfer size (default 256)")
    parser.add_argument("--repeat", type=int, help="goodput rounds (default 3)")
    parser.add_argument("--raw-duration", type=float, help="raw UDP blast, s (default 3)")
    parser.add_argument("--skip-integrity", action="store_true")
    parser.add_argument("--skip-goodput", action="store_true")
    parser.add_argument("--relay-cpu", type=int, help="pin the relay process to this CPU")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--no-pin", action="store_true", help="do not pin sender/receiver")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement here")
    parser.add_argument("--knob", metavar="NAME=VALUE", action="append", default=[],
                        help="override a FlowConfig field on both rendr ends")
    parser.add_argument("--role", choices=["recv", "send", "relay"], help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        return tp.serve(HANDLERS, use_uvloop=not args.no_uvloop, cpu=args.cpu)
    short = args.short
    args.mib = args.mib or (8 if short else 256)
    args.goodput_mib = args.goodput_mib or (32 if short else 256)
    args.repeat = args.repeat or (1 if short else 3)
    args.raw_duration = args.raw_duration or (1.0 if short else 3.0)
    try:
        args.losses = [float(x) for x in args.losses.split(",") if x.strip()]
        args.knob = {k: ast.literal_eval(v) for k, v in (kv.split("=", 1) for kv in args.knob)}
    except (ValueError, SyntaxError):
        parser.error("--losses takes numbers, --knob NAME=VALUE with a Python literal")
    if args.repeat < 1 or args.mib < 1 or args.goodput_mib < 1:
        parser.error("--repeat, --mib and --goodput-mib must be at least 1")
    if args.skip_integrity and args.skip_goodput:
        parser.error("nothing to run")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
