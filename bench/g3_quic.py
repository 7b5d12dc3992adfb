#!/usr/bin/env python3
"""G3 — QUIC gate: rendr over the ``quic`` carrier against raw qh3, two processes.

Sender and receiver run in separate processes (``bench/_twoproc.py``), each pinned
to its own core when there are two, both on the same loop (uvloop when installed,
unless ``--no-uvloop``).  Payloads are 200 bytes (``--size``) with the header of
``bench/g3ukit/runs.py`` (sequence number, send time, kind); the max-rate and paced
loops are that module's, the transports ``bench/g3qkit/transports.py``:

- ``raw-qh3``: qh3's own asyncio API (``serve``/``connect``), one DATAGRAM frame per
  send, one ``transmit()`` per loop iteration;
- ``rendr``: ``rendr.listen_quic_packet`` on two loopback sockets, a dialer with a
  QUIC path to each (development certificate, ``insecure``: rendr encrypts its sealed
  datagrams); with ``--auth-only`` the dialer pins the certificate instead, so the
  datagrams are authenticated only (QUIC encrypts them; issue 10).

(a) **max rate**: ``--repeat`` interleaved rounds (raw, then rendr), ``--duration`` s
each; received pps = distinct datagrams / the receiver's first -> last arrival.
Goal: median paired ratio rendr / raw received pps >= 0.8 (``--min-ratio``; the
``--short`` CI floor is lower, see below).

(b) **paced**: ``--pps`` for ``--paced-duration`` s (1 ms batches), 1 in
``--echo-every`` datagrams echoed by the receiver (RTT = sender's clock); raw then
rendr, ``--paced-repeat`` pairs.  The rendr sender migrates ``--migrations`` times,
evenly spaced, alternating ``conn.rebind_path(active)`` (QUIC connection migration:
new local socket, new connection ID) and ``conn.migrate()`` to the other QUIC path.
The receiver counts arrivals in 10 ms bins; *recovery* after a migration is the time
until a 50 ms window receives >= 90 % of the offered rate (0: no dip; when the sender
could not hold ``--pps``, the rate it reached is the reference, and a note says so).  Goals: no
application loss, echo RTT P95 < 2x raw's, recovery < 200 ms after every
migration.

(c) **stream** (``--skip-stream`` to omit): ``--stream-mib`` MiB (64; full 256) of
random bytes over one rendr stream flow with a QUIC path and a TCP path, the sender
calling ``migrate()`` between them ``--stream-migrations`` times; the receiver checks
SHA-256 (exact).  Raw qh3 stream throughput (one QUIC stream, same size) in the same
run.  Goal: goodput >= 0.8x raw (reported; the ``--short`` floor is lower).

(d) **QUIC-only stream** (``--skip-quic-stream`` to omit): the same transfer over a
rendr flow with one QUIC path and nothing else, like for like with raw qh3 (same
processes, loop, 1 MiB writes): ``--quic-stream-repeat`` interleaved rounds of raw
qh3, rendr with encrypted records (``insecure`` path) and rendr with
authentication-only records (pinned certificate).  Reported, not gated: the medians
and the ratios rendr / raw and authentication-only / encrypted.

Verdict ``G3 PASS`` / ``G3 FAIL``, exit code 0 / 1.  ``--short`` (CI, ~40 s on a
2-core box): (a) 2 s x 1 round, (b) 8 s at 20k pps with 10 migrations, (c) 64 MiB;
floors for a noisy shared 2-core box: ``--min-ratio 0.5``, ``--max-lost 50``,
``--max-p95-ratio 4``, recovery < 1 s, stream ratio >= 0.4 — the real goals are the
defaults of the full run (0.8, 0, 2, 200 ms, 0.8).

Usage::

    PYTHONPATH=src python bench/g3_quic.py            # full (~3 min): 3 rounds, 30 s paced
    PYTHONPATH=src python bench/g3_quic.py --short    # CI
    PYTHONPATH=src python bench/g3_quic.py --paced-duration 300   # the 5-minute run
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import statistics
import sys
from dataclasses import dataclass
from typing import Any

import _twoproc as tp
from g3qkit import stream as qs
from g3qkit.transports import BIN_S, Binned, make, recovery_times, share_certificate
from g3ukit import runs

# ---------------------------------------------------------------------------- child side


async def h_recv(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    tr = make(msg["transport"])
    addrs = await tr.open_server()
    say({"addrs": addrs})
    end = Binned(await asyncio.wait_for(tr.accept(), 30.0))
    usage0 = tp.Usage.now()
    res = await runs.receive(end)
    res["usage"] = tp.Usage.now().since(usage0)
    res["info"] = end.info()
    res["bins_t0"] = end.t0
    res["bins"] = end.bins
    await end.close()
    return res


async def h_send(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    return await runs.run_sender(make(msg["transport"]), msg)


HANDLERS: dict[str, tp.Handler] = {"recv": h_recv, "send": h_send, **qs.HANDLERS}
QUIC_ONLY = ("raw-qh3", "rendr-quic", "rendr-quic-auth")
"""(d)'s transports, in the order of each round."""


# ---------------------------------------------------------------------------- parent side


@dataclass
class Run:
    transport: str
    send: tp.Msg
    recv: tp.Msg

    @property
    def sent(self) -> int:
        return int(self.send["sent"])

    @property
    def lost(self) -> int:
        return self.sent - int(self.recv["distinct"])

    @property
    def rx_pps(self) -> float:
        return float(self.recv["rx_pps"])

    def cpu_us(self, end: str) -> float:
        n = self.sent if end == "send" else int(self.recv["distinct"]) + int(self.recv["dups"])
        return float(getattr(self, end)["usage"]["cpu_s"]) * 1e6 / n if n else math.nan

    def recovery(self, pps: float) -> list[float]:
        """Recovery after each migration, against the rate the sender reached (the
        offered rate, or less when this process could not hold it: see the note)."""
        marks = self.send["info"].get("migrate_at", [])
        rate = min(pps, float(self.send["tx_pps"]))
        return recovery_times(self.recv["bins_t0"], self.recv["bins"], marks, rate)

    def summary(self, pps: float | None = None) -> str:
        s = (f"{self.transport:8} sent {self.send['tx_pps'] / 1e3:6.1f}k pps, received "
             f"{self.rx_pps / 1e3:6.1f}k pps, lost {self.lost}, CPU µs/datagram send "
             f"{self.cpu_us('send'):.1f} recv {self.cpu_us('recv'):.1f}")
        if pps is not None:
            s += (f"; echoes {self.send['echoes']}/{self.send['echo_requests']}, RTT µs P50 "
                  f"{self.send['rtt_p50']:.0f} P95 {self.send['rtt_p95']:.0f} P99 "
                  f"{self.send['rtt_p99']:.0f}, sender behind in {self.send['behind_ticks']}/"
                  f"{self.send['ticks']} ticks")
            info = self.send["info"]
            if "migrate_kind" in info:
                rec = self.recovery(pps)
                s += (f"; migrations {' '.join(k[0] for k in info['migrate_kind'])} "
                      f"(r=rebind_path, m=migrate; stats: {info['quic_rebinds']} rebinds, "
                      f"{info['migration_count']} migrations; failures "
                      f"{info['migrate_failures'] or 'none'}), recovery ms "
                      f"{' '.join(f'{x * 1e3:.0f}' for x in rec)}")
        return s


def one_run(recv: tp.Worker, send: tp.Worker, transport: str, **params: Any) -> Run:
    ready = recv.call(cmd="recv", transport=transport)
    send.send(cmd="send", transport=transport, addrs=ready["addrs"], **params)
    s = send.recv()
    r = recv.recv()
    return Run(transport, s, r)


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def main_parent(args: argparse.Namespace) -> int:
    use_uvloop = not args.no_uvloop
    cpu_send, cpu_recv = tp.core_plan()
    print(tp.header(use_uvloop))
    print(f"two processes: sender on CPU {cpu_send}, receiver on CPU {cpu_recv}; "
          f"{args.size}-byte payloads; the machine may be shared (see load average)",
          flush=True)
    common = ["--no-uvloop"] if args.no_uvloop else []
    share_certificate()  # one certificate for every process: the dialers can pin it
    ren = "rendr-auth" if args.auth_only else "rendr"
    print("rendr's QUIC paths: " + ("certificate pinned: authentication-only records"
                                     if args.auth_only else "insecure: encrypted records"),
          flush=True)
    timeout = max(args.duration, args.paced_duration) + 90.0
    recv = tp.Worker(__file__, "recv", common, cpu=cpu_recv, timeout=timeout)
    send = tp.Worker(__file__, "send", common, cpu=cpu_send, timeout=timeout)
    kinds = ["raw-qh3", ren]
    max_runs: dict[str, list[Run]] = {k: [] for k in kinds}
    paced: dict[str, list[Run]] = {k: [] for k in kinds}
    stream: dict[str, list[tp.Msg]] = {"raw-qh3": [], ren: []}
    qstream: dict[str, list[tp.Msg]] = {k: [] for k in QUIC_ONLY}
    checks: list[tuple[str, bool, str]] = []
    try:
        if not args.skip_max:
            print(f"(a) max rate, {args.duration:g} s per run, {args.repeat} interleaved "
                  "round(s)", flush=True)
            for i in range(args.repeat):
                for k in kinds:
                    r = one_run(recv, send, k, mode="max", duration=args.duration,
                                size=args.size)
                    max_runs[k].append(r)
                    print(f"  round {i + 1}: {r.summary()}", flush=True)
        if not args.skip_paced:
            print(f"(b) paced, {args.pps:g} pps for {args.paced_duration:g} s, echo 1 in "
                  f"{args.echo_every}, {args.paced_repeat} pair(s), rendr migrates "
                  f"{args.migrations} times", flush=True)
            for i in range(args.paced_repeat):
                for k in kinds:
                    r = one_run(recv, send, k, mode="paced", duration=args.paced_duration,
                                size=args.size, pps=args.pps, echo_every=args.echo_every,
                                migrations=args.migrations if k == ren else 0)
                    paced[k].append(r)
                    print(f"  pair {i + 1}: {r.summary(args.pps)}", flush=True)
        if not args.skip_stream:
            print(f"(c) stream, {args.stream_mib} MiB, {args.stream_repeat} round(s); rendr "
                  f"over a QUIC + a TCP path, {args.stream_migrations} migrations",
                  flush=True)
            for i in range(args.stream_repeat):
                for k in ("raw-qh3", ren):
                    res = qs.run(recv, send, k, args.stream_mib << 20,
                                 args.stream_migrations)
                    stream[k].append(res)
                    print(f"  round {i + 1}: {qs.summary(k, res)}", flush=True)
        if not args.skip_quic_stream:
            print(f"(d) QUIC-only stream, {args.stream_mib} MiB, {args.quic_stream_repeat} "
                  "interleaved round(s): raw qh3, rendr encrypted, rendr authentication-only",
                  flush=True)
            for i in range(args.quic_stream_repeat):
                for k in QUIC_ONLY:
                    res = qs.run(recv, send, k, args.stream_mib << 20, 0)
                    qstream[k].append(res)
                    print(f"  round {i + 1}: {qs.summary(k, res)}", flush=True)
    except (RuntimeError, TimeoutError) as exc:
        print(f"G3 FAIL: a run did not complete: {exc}")
        return 1
    finally:
        send.close()
        recv.close()

    loop = tp.loop_label(use_uvloop)
    print(f"\nG3 (loop={loop}) checks, medians over runs:")
    if not args.skip_max:
        ratios = [b.rx_pps / a.rx_pps if a.rx_pps else 0.0
                  for a, b in zip(max_runs["raw-qh3"], max_runs[ren], strict=True)]
        ratio = med(ratios)
        checks.append(("max rate rendr/raw pps", ratio >= args.min_ratio,
                       f"rendr {med([r.rx_pps for r in max_runs[ren]]) / 1e3:.1f}k vs raw "
                       f"qh3 {med([r.rx_pps for r in max_runs['raw-qh3']]) / 1e3:.1f}k pps "
                       f"received, paired ratio {ratio:.2f} (floor {args.min_ratio}, goal 0.8)"))
    if not args.skip_paced:
        raw_rs, ren_rs = paced["raw-qh3"], paced[ren]
        lost = sum(max(0, r.lost) for r in ren_rs)
        checks.append(("paced: application loss", lost <= args.max_lost,
                       f"rendr lost {lost} of {sum(r.sent for r in ren_rs)} (raw lost "
                       f"{sum(max(0, r.lost) for r in raw_rs)}; floor {args.max_lost}, goal 0)"))
        raw_p = {p: med([r.send[f'rtt_p{p}'] for r in raw_rs]) for p in (50, 95, 99)}
        ren_p = {p: med([r.send[f'rtt_p{p}'] for r in ren_rs]) for p in (50, 95, 99)}
        p95_ratio = ren_p[95] / raw_p[95] if raw_p[95] > 0 else math.inf
        checks.append(("paced: echo RTT P95 vs raw", p95_ratio < args.max_p95_ratio,
                       f"rendr P50/P95/P99 {ren_p[50]:.0f}/{ren_p[95]:.0f}/{ren_p[99]:.0f} µs, "
                       f"raw {raw_p[50]:.0f}/{raw_p[95]:.0f}/{raw_p[99]:.0f} µs, P95 ratio "
                       f"{p95_ratio:.2f} (max {args.max_p95_ratio}, goal 2)"))
        kinds_done = [r.send["info"]["migrate_kind"] for r in ren_rs]
        mig_ok = all(k.count("rebind") >= args.migrations // 2
                     and k.count("migrate") >= args.migrations // 2 for k in kinds_done)
        rec = [x for r in ren_rs for x in r.recovery(args.pps)]
        worst = max(rec) if rec else math.inf
        checks.append(("paced: migrations done", mig_ok,
                       f"{[k.count('rebind') for k in kinds_done]} rebind_path + "
                       f"{[k.count('migrate') for k in kinds_done]} migrate() per run "
                       f"(want >= {args.migrations // 2} of each)"))
        checks.append(("paced: recovery after each migration", worst <= args.max_recovery,
                       f"worst {worst * 1e3:.0f} ms, median {med(rec) * 1e3:.0f} ms over "
                       f"{len(rec)} migrations (bins {BIN_S * 1e3:.0f} ms; max "
                       f"{args.max_recovery * 1e3:.0f} ms, goal 200 ms)"))
        slow = [r for r in [*raw_rs, *ren_rs] if r.send["tx_pps"] < 0.95 * args.pps]
        if slow:
            print(f"  note: {len(slow)} paced run(s) reached only "
                  f"{min(r.send['tx_pps'] for r in slow) / 1e3:.1f}k of {args.pps / 1e3:g}k pps")
    if not args.skip_stream:
        ok_sha = all(r["sha_ok"] for r in stream[ren])
        raw_mb = med([r["mb_s"] for r in stream["raw-qh3"]])
        ren_mb = med([r["mb_s"] for r in stream[ren]])
        ratio = ren_mb / raw_mb if raw_mb else 0.0
        migs = [r.get("migrations", 0) for r in stream[ren]]
        checks.append(("stream: SHA-256 exact", ok_sha and all(
            m >= args.stream_migrations for m in migs),
            f"{args.stream_mib} MiB, digests {'match' if ok_sha else 'DIFFER'}, "
            f"migrations {migs}"))
        checks.append(("stream: goodput vs raw qh3 stream", ratio >= args.min_stream_ratio,
                       f"rendr {ren_mb:.1f} MB/s vs raw qh3 {raw_mb:.1f} MB/s = {ratio:.2f} "
                       f"(floor {args.min_stream_ratio}, goal 0.8)"))
    if not args.skip_quic_stream:
        mb = {k: med([r["mb_s"] for r in qstream[k]]) for k in QUIC_ONLY}
        raw_mb, enc_mb, auth_mb = (mb[k] for k in QUIC_ONLY)
        pairs = list(zip(*(qstream[k] for k in QUIC_ONLY), strict=True))
        auth_enc = med([c["mb_s"] / b["mb_s"] for _, b, c in pairs])
        ok_sha = all(r["sha_ok"] for k in QUIC_ONLY[1:] for r in qstream[k])
        print(f"  [INFO] QUIC-only stream (medians of {len(pairs)} interleaved round(s)): raw "
              f"qh3 {raw_mb:.1f} MB/s, rendr encrypted {enc_mb:.1f} MB/s ({enc_mb / raw_mb:.2f}x "
              f"raw), rendr authentication-only {auth_mb:.1f} MB/s ({auth_mb / raw_mb:.2f}x "
              f"raw; goal 0.8), paired authentication-only / encrypted {auth_enc:.2f}; "
              f"SHA-256 {'ok' if ok_sha else 'MISMATCH'}")
        checks.append(("QUIC-only stream: SHA-256 exact", ok_sha,
                       f"{args.stream_mib} MiB x {len(pairs)} round(s) x 2 rendr variants"))
    ok = True
    for name, good, detail in checks:
        ok = ok and good
        print(f"  [{'PASS' if good else 'FAIL'}] {name}: {detail}")
    print("G3 PASS" if ok else "G3 FAIL")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="CI mode (~40 s), lower floors")
    parser.add_argument("--no-uvloop", action="store_true", help="the default asyncio loop")
    parser.add_argument("--duration", type=float, help="max-rate run, s (5; --short 2)")
    parser.add_argument("--repeat", type=int, help="max-rate rounds (3; --short 1)")
    parser.add_argument("--pps", type=float, help="paced rate (30000; --short 20000)")
    parser.add_argument("--paced-duration", type=float, help="paced run, s (30; --short 8)")
    parser.add_argument("--paced-repeat", type=int, default=1)
    parser.add_argument("--migrations", type=int, default=10)
    parser.add_argument("--echo-every", type=int, default=100)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--stream-mib", type=int, help="stream part, MiB (256; --short 64)")
    parser.add_argument("--stream-repeat", type=int, help="stream rounds (3; --short 1)")
    parser.add_argument("--stream-migrations", type=int, default=4)
    parser.add_argument("--min-ratio", type=float, help="max rate floor (0.8; --short 0.5)")
    parser.add_argument("--max-lost", type=int, help="paced loss floor (0; --short 50)")
    parser.add_argument("--max-p95-ratio", type=float, help="(2; --short 4)")
    parser.add_argument("--max-recovery", type=float, help="s (0.2; --short 1.0)")
    parser.add_argument("--min-stream-ratio", type=float, help="(0.8; --short 0.4)")
    parser.add_argument("--skip-max", action="store_true")
    parser.add_argument("--skip-paced", action="store_true")
    parser.add_argument("--skip-stream", action="store_true")
    parser.add_argument("--skip-quic-stream", action="store_true")
    parser.add_argument("--quic-stream-repeat", type=int, help="(d) rounds (3; --short 1)")
    parser.add_argument("--auth-only", action="store_true",
                        help="rendr's QUIC paths pin the certificate: authentication-only "
                             "records (default: insecure, encrypted records)")
    parser.add_argument("--role", choices=["recv", "send"], help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        for name in ("rendr.listener", "rendr.dialer", "rendr.carriers.quic"):
            logging.getLogger(name).setLevel(logging.ERROR)
        return tp.serve(HANDLERS, use_uvloop=not args.no_uvloop, cpu=args.cpu)
    for name, full, quick in (("duration", 5.0, 2.0), ("repeat", 3, 1), ("pps", 30000.0, 20000.0),
                              ("paced_duration", 30.0, 8.0), ("stream_mib", 256, 64),
                              ("stream_repeat", 3, 1), ("quic_stream_repeat", 3, 1),
                              ("min_ratio", 0.8, 0.5),
                              ("max_lost", 0, 50), ("max_p95_ratio", 2.0, 4.0),
                              ("max_recovery", 0.2, 1.0), ("min_stream_ratio", 0.8, 0.4)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.short else full)
    return main_parent(args)


if __name__ == "__main__":
    sys.exit(main())
