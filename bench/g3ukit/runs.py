"""One G3u run: the receiver's counting loop and the sender's max-rate or paced loop.

Every datagram starts with :data:`HDR` = ``(seq, send_time, kind)``, network order,
then zero padding to the payload size (200 bytes by default). ``send_time`` is the
sender's ``time.perf_counter()``; only the sender reads it back (echo RTT), so the two
processes' clocks never meet. Kinds:

- :data:`DATA`: counted by the receiver (distinct sequence numbers, duplicates apart);
- :data:`ECHO`: counted too, and sent back unchanged by the receiver; the sender takes
  ``perf_counter() - send_time`` of each echo that returns as one RTT sample;
- :data:`END`: after the data, ``seq`` = how many data datagrams were sent; sent
  :data:`END_COPIES` times. The receiver stops :data:`GRACE_S` after the first END,
  at EOF (rendr's clean close), or after :data:`IDLE_S` without a datagram.

The receiver's rate is ``distinct / (last - first arrival)`` of data datagrams.
Nothing here prints.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from typing import Any

import _twoproc as tp
from g3ukit.transports import PacketEnd, PacketTransport

HDR = struct.Struct("!QdB")
DATA, ECHO, END = 0, 1, 3
END_COPIES = 5
GRACE_S = 0.3  # receiver: reading on after the first END (late datagrams, reordering)
IDLE_S = 2.0  # receiver: stop after this long without a datagram once traffic began
START_TIMEOUT_S = 15.0  # receiver: give up when nothing arrives for this long at start
MAX_BATCH = 256  # max-rate sender: sends between two loop iterations
TICK_S = 0.001  # paced sender: batch period
PACED_MAX_BATCH_S = 0.002  # paced sender: most sent in one batch, in seconds of traffic


def udp_snmp() -> dict[str, int]:
    """The host's ``Udp:`` counters from /proc/net/snmp (empty where unreadable)."""
    try:
        with open("/proc/net/snmp", encoding="ascii") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:], strict=False)}


def percentile(sorted_xs: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (``nan`` when empty)."""
    if not sorted_xs:
        return math.nan
    k = max(0, math.ceil(p / 100 * len(sorted_xs)) - 1)
    return sorted_xs[k]


# ---------------------------------------------------------------------------- receiver


async def receive(end: PacketEnd) -> dict[str, Any]:
    """Count distinct datagrams and echo the ECHO ones until END/EOF/idle."""
    seen = bytearray(1 << 20)
    st: dict[str, Any] = {"distinct": 0, "dups": 0, "echoed": 0, "first": 0.0, "last": 0.0,
                          "end_total": None, "end_at": None, "stop": ""}
    perf = time.perf_counter
    unpack = HDR.unpack_from

    async def reader() -> None:
        nonlocal seen
        distinct = dups = echoed = 0
        first = last = 0.0
        size = len(seen)
        recv = end.recv
        try:
            while True:
                data = await recv()
                seq, _ts, kind = unpack(data)
                if kind == END:
                    if st["end_at"] is None:
                        st["end_at"] = perf()
                        st["end_total"] = seq
                    continue
                last = perf()
                if not first:
                    first = st["first"] = last
                if seq >= size:
                    seen += bytes(max(size, seq + 1 - size))
                    size = len(seen)
                if seen[seq]:
                    dups += 1
                else:
                    seen[seq] = 1
                    distinct += 1
                if kind == ECHO:
                    await end.send(data)
                    echoed += 1
                if not (distinct + dups) & 0xFF:  # now and then, for the watcher
                    st.update(distinct=distinct, dups=dups, echoed=echoed, last=last)
        except EOFError:
            st["stop"] = "eof"
        except Exception as exc:  # the end failed: report it with the counts so far
            st["stop"] = f"error {type(exc).__name__}: {exc}"
        finally:
            st.update(distinct=distinct, dups=dups, echoed=echoed, last=last)

    task = asyncio.create_task(reader())
    t0 = activity = perf()
    count = 0
    while not task.done():
        await asyncio.sleep(0.05)
        now = perf()
        if st["distinct"] + st["dups"] != count or st["end_at"] is not None:
            count = st["distinct"] + st["dups"]
            activity = now
        if st["end_at"] is not None and now - st["end_at"] >= GRACE_S:
            st["stop"] = "end"
            break
        if not st["first"] and now - t0 > START_TIMEOUT_S:
            st["stop"] = "nothing arrived"
            break
        if st["first"] and now - activity > IDLE_S:
            st["stop"] = "idle"
            break
    if not task.done():
        task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    span = st["last"] - st["first"]
    return {"distinct": st["distinct"], "dups": st["dups"], "echoed": st["echoed"],
            "end_total": st["end_total"], "stop": st["stop"] or "eof",
            "rx_span": span, "rx_pps": st["distinct"] / span if span > 0 else 0.0}


# ---------------------------------------------------------------------------- sender


class _Echoes:
    """The sender's reader: RTT of every returning ECHO datagram."""

    def __init__(self, end: PacketEnd) -> None:
        self.end = end
        self.rtts: list[float] = []
        self.other = 0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        perf = time.perf_counter
        unpack = HDR.unpack_from
        rtts = self.rtts
        try:
            while True:
                data = await self.end.recv()
                now = perf()
                _seq, ts, kind = unpack(data)
                if kind == ECHO:
                    rtts.append(now - ts)
                else:
                    self.other += 1
        except EOFError:
            pass

    async def stop(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except (asyncio.CancelledError, Exception):  # closing may fail the reader
            pass


async def _finish(end: PacketEnd, echoes: _Echoes, sent: int, linger: float) -> dict[str, Any]:
    """Linger for late echoes, announce the count (END), close; RTT figures in µs."""
    await asyncio.sleep(linger)
    for _ in range(END_COPIES):
        await end.send(HDR.pack(sent, 0.0, END) + bytes(32))
        await asyncio.sleep(0.01)
    await echoes.stop()
    info = end.info()
    await end.close()
    rtts = sorted(r * 1e6 for r in echoes.rtts)
    return {"echoes": len(rtts), "rtt_p50": percentile(rtts, 50),
            "rtt_p95": percentile(rtts, 95), "rtt_p99": percentile(rtts, 99),
            "rtt_max": rtts[-1] if rtts else math.nan, "info": info}


async def send_max(end: PacketEnd, duration: float, size: int) -> dict[str, Any]:
    """Send as fast as possible for ``duration`` s: MAX_BATCH sends, then one yield."""
    pad = bytes(size - HDR.size)
    pack = HDR.pack
    perf = time.perf_counter
    send = end.send
    echoes = _Echoes(end)
    seq = 0
    t0 = perf()
    stop = t0 + duration
    now = t0
    while now < stop:
        for _ in range(MAX_BATCH):
            await send(pack(seq, now, DATA) + pad)
            seq += 1
        await asyncio.sleep(0)
        now = perf()
    elapsed = perf() - t0
    out = await _finish(end, echoes, seq, 0.2)
    out.update(sent=seq, elapsed=elapsed, tx_pps=seq / elapsed, migrations=0)
    return out


async def send_paced(end: PacketEnd, duration: float, size: int, pps: float, echo_every: int,
                     migrations: int) -> dict[str, Any]:
    """Send ``pps`` datagrams/s for ``duration`` s in ~1 ms batches; migrate evenly.

    Each tick sends the datagrams due since the start (``pps x elapsed`` minus those
    sent), at most :data:`PACED_MAX_BATCH_S` worth in one go, so that a sender that
    falls behind still returns to the loop (to read echoes) between batches; behind
    schedule it yields with ``sleep(0)``, else it sleeps :data:`TICK_S`. The run ends
    after ``duration`` s whatever was sent: ``tx_pps`` below ``pps`` means this process
    could not keep the rate (``behind_ticks``: ticks that began more than a batch behind).
    Every ``echo_every``-th datagram asks for an echo. ``migrations`` calls of
    ``end.migrate()`` at ``duration * i / (migrations + 1)``; their durations are kept.
    """
    pad = bytes(size - HDR.size)
    pack = HDR.pack
    perf = time.perf_counter
    send = end.send
    cap = max(64, int(pps * PACED_MAX_BATCH_S))
    marks = [duration * (i + 1) / (migrations + 1) for i in range(migrations)]
    echoes = _Echoes(end)
    done_migrations = 0
    migrate_s: list[float] = []
    seq = 0
    max_backlog = 0
    behind_ticks = 0
    ticks = 0
    t0 = perf()
    now = t0
    while now - t0 < duration:
        due = int((now - t0) * pps)
        backlog = due - seq
        max_backlog = max(max_backlog, backlog)
        stop = seq + min(backlog, cap)
        while seq < stop:
            kind = ECHO if seq % echo_every == 0 else DATA
            await send(pack(seq, perf(), kind) + pad)
            seq += 1
        if marks and now - t0 >= marks[0]:
            marks.pop(0)
            m0 = perf()
            if await end.migrate():
                done_migrations += 1
                migrate_s.append(perf() - m0)
        ticks += 1
        if backlog > cap:
            behind_ticks += 1
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(TICK_S)
        now = perf()
    elapsed = now - t0
    out = await _finish(end, echoes, seq, 0.5)
    out.update(sent=seq, elapsed=elapsed, tx_pps=seq / elapsed, migrations=done_migrations,
               migrate_ms_max=max(migrate_s) * 1e3 if migrate_s else 0.0,
               max_backlog=max_backlog, behind_ticks=behind_ticks, ticks=ticks,
               echo_requests=(seq + echo_every - 1) // echo_every)
    return out


async def run_sender(tr: PacketTransport, msg: dict[str, Any]) -> dict[str, Any]:
    """A gate's ``send`` handler: open ``tr``'s client end to ``msg["addrs"]`` and run
    the max-rate (``msg["mode"] == "max"``) or paced sender, with its CPU usage."""
    end = await asyncio.wait_for(tr.open_client([(h, p) for h, p in msg["addrs"]]), 30.0)
    usage0 = tp.Usage.now()
    if msg["mode"] == "max":
        res = await send_max(end, msg["duration"], msg["size"])
    else:
        res = await send_paced(end, msg["duration"], msg["size"], msg["pps"],
                               msg["echo_every"], msg["migrations"])
    res["usage"] = tp.Usage.now().since(usage0)
    return res
