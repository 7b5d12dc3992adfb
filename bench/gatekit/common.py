"""Verdicts, percentiles, echo messages and per-path statistics for the issue-9 gates."""

from __future__ import annotations

import argparse
import asyncio
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import rendr

PASS, FAIL, UNAVAILABLE, INFO = "PASS", "FAIL", "UNAVAILABLE", "info"


# ---------------------------------------------------------------------------- verdicts


@dataclass
class Check:
    """One goal of a gate: its status (PASS / FAIL / UNAVAILABLE / info) and figures."""

    name: str
    status: str
    detail: str


@dataclass
class Verdict:
    """The checks of one gate run and the exit code they give."""

    gate: str
    allow_unavailable: bool
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, ok: bool | None, detail: str) -> None:
        """``ok`` None: the goal needs a mode this engine does not have (UNAVAILABLE)."""
        status = UNAVAILABLE if ok is None else PASS if ok else FAIL
        self.checks.append(Check(name, status, detail))

    def info(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, INFO, detail))

    @property
    def failed(self) -> bool:
        return any(c.status == FAIL for c in self.checks) or (
            not self.allow_unavailable and any(c.status == UNAVAILABLE for c in self.checks))

    def lines(self) -> list[str]:
        out = [f"{self.gate} checks:"]
        for c in self.checks:
            out.append(f"  [{c.status:11}] {c.name}: {c.detail}")
        if any(c.status == UNAVAILABLE for c in self.checks):
            out.append("  UNAVAILABLE goals need RACE/BOND, which this engine does not have "
                       + ("(--allow-unavailable: they do not fail the gate)"
                          if self.allow_unavailable else
                          "(they FAIL the gate; --allow-unavailable lets them pass)"))
        missing = sum(c.status == UNAVAILABLE for c in self.checks)
        note = f" ({missing} goal(s) UNAVAILABLE, not measured)" if missing else ""
        out.append(f"{self.gate} {'FAIL' if self.failed else 'PASS'}{note}")
        return out

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def common_args(parser: argparse.ArgumentParser) -> None:
    """Flags every gate takes."""
    parser.add_argument("--short", action="store_true", help="the CI version (about a minute)")
    parser.add_argument("--no-uvloop", action="store_true", help="the default asyncio loop")
    parser.add_argument("--allow-unavailable", action="store_true",
                        help="goals that need RACE/BOND, absent from this engine, do not fail")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random choices")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)


# ---------------------------------------------------------------------------- modes


MODES = {"prime": rendr.Mode.PRIME, "race": rendr.Mode.RACE, "bond": rendr.Mode.BOND}


def mode_of(name: str) -> rendr.Mode:
    return MODES[name]


# ---------------------------------------------------------------------------- percentiles


def packet_counters(pc: rendr.PacketConn) -> dict[str, int]:
    """A packet conn's ``packet_stats()`` as a dict."""
    ps = pc.packet_stats()
    return {k: int(getattr(ps, k)) for k in ("sent", "received", "dups", "too_old",
                                             "overflow", "dropped")}


async def dial_udpflow_packets(mode: str, addrs: list[Any], psk: bytes) -> Any:
    """A packet conn in ``mode`` over one udpflow path to each of ``addrs``, or a
    reply dict saying the mode is unavailable."""
    dialer = rendr.Dialer(mode=mode_of(mode), psk=psk,
                          paths=[rendr.PathSpec("udpflow", f"{h}:{p}") for h, p in addrs])
    try:
        return await dialer.dial_packet()
    except rendr.ModeUnavailable as exc:
        return {"unavailable": f"{type(exc).__name__}: {exc}"}


async def wait_paths_up(conn: Any, want: int, timeout: float = 3.0) -> int:
    """Wait (up to ``timeout``) until ``want`` paths of ``conn`` are up; return how many are."""
    for _ in range(int(timeout / 0.01)):
        if sum(p.state == "up" for p in conn.stats().paths) >= want:
            break
        await asyncio.sleep(0.01)
    return sum(p.state == "up" for p in conn.stats().paths)


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``xs``; nan when empty."""
    if not xs:
        return math.nan
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return s[k]


def rtt_summary(rtts: list[float]) -> dict[str, float]:
    """P50 / P99 / P99.9 / max of RTTs in seconds, and their count."""
    return {"n": float(len(rtts)), "p50": percentile(rtts, 50), "p99": percentile(rtts, 99),
            "p999": percentile(rtts, 99.9), "max": max(rtts) if rtts else math.nan}


def ms(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x * 1e3:.2f} ms"


# ---------------------------------------------------------------------------- echo messages

ECHO_SIZE = 64
_HEAD = struct.Struct("!Qd")


def echo_message(seq: int, t_send: float) -> bytes:
    """``ECHO_SIZE`` bytes: the sequence number, the send time, then a pattern of ``seq``."""
    pad = bytes((seq + i) & 0xFF for i in range(ECHO_SIZE - _HEAD.size))
    return _HEAD.pack(seq, t_send) + pad


def parse_echo(data: bytes) -> tuple[int, float, bool]:
    """(seq, send time, whether the pattern is intact) of an echoed message."""
    seq, t_send = _HEAD.unpack_from(data)
    return seq, t_send, data == echo_message(seq, t_send)


# ---------------------------------------------------------------------------- path stats


def path_rows(conn: Any) -> list[dict[str, Any]]:
    """Per-path counters of a Conn/PacketConn (``stats().paths``) as JSON-able dicts."""
    rows = []
    # a datagram path's congestion control (engine internals: informational only)
    reliable = getattr(getattr(conn, "_flow", None), "_reliable", None) or {}
    for p in conn.stats().paths:
        row = {"id": p.id, "state": p.state, "remote": p.remote_addr,
               "bytes_sent": p.bytes_sent, "bytes_received": p.bytes_received,
               "frames_sent": p.frames_sent, "frames_received": p.frames_received,
               "retransmits": p.retransmits,
               "srtt_ms": None if p.srtt is None else round(p.srtt * 1e3, 2)}
        rel = reliable.get(p.id)
        if rel is not None:
            cc = rel.cc
            row["cc"] = (f"{type(cc).__name__} {getattr(cc, 'phase', '')} cwnd {cc.cwnd} "
                         f"bw {getattr(cc, 'btl_bw', 0) / 1e6:.2f} MB/s "
                         f"lost {rel.lost_bytes} probes {rel.probes}")
        rows.append(row)
    return rows


def path_table(label: str, dialer_rows: list[dict[str, Any]],
               listener_rows: list[dict[str, Any]]) -> list[str]:
    """Lines: how much each path carried, as each end counted it (sent / received)."""
    out = [f"  {label}, per path: dialer sent/received | listener sent/received, bytes "
           "(sent: stream payload, 0 for packets; received: all carrier bytes) and frames "
           "(sent: DATA frames; received: all frames)"]
    ids = sorted({r["id"] for r in dialer_rows} | {r["id"] for r in listener_rows})
    d = {r["id"]: r for r in dialer_rows}
    li = {r["id"]: r for r in listener_rows}
    for pid in ids:
        a, b = d.get(pid), li.get(pid)

        def cell(r: dict[str, Any] | None) -> str:
            if r is None:
                return "-"
            return (f"{r['bytes_sent']}/{r['bytes_received']} "
                    f"({r['frames_sent']}/{r['frames_received']} fr)")

        where = (a or b or {}).get("remote", "?")
        out.append(f"      path {pid} ({where}): {cell(a)} | {cell(b)}"
                   + (f", srtt {a['srtt_ms']} ms" if a and a.get("srtt_ms") is not None else "")
                   + (f", re-sent {a['retransmits']}" if a and a.get("retransmits") else "")
                   + (f", {a['cc']}" if a and a.get("cc") else ""))
    return out
