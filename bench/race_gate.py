#!/usr/bin/env python3
"""Race gate (issue 9): packet echo over udpflow, race against prime pinned on one path.

Three processes on loopback: the echo *server* (``rendr.listen_udpflow_packet`` on two
addresses, every packet echoed back), the *client* (a PacketConn from
``Dialer(...).dial_packet()``), pinned to distinct cores when there are two, and the
*relays* (:class:`rendr.testing.udprelay.UdpRelay`, seeded, faults in both directions).
The client sends a 64-byte echo request every ``1 / --pps`` s (100/s; ``--short``: 150/s)
for ``--duration`` s per run (60; ``--short``: 7) and takes each answer's RTT; lost =
requests never answered (after up to ``--grace`` s).

Paths: ``clean`` = the server's first address directly; ``lossy`` = a relay to its
second address with ``--loss`` (30 %) loss and ``--jitter`` (40 ms) uniform jitter in
each direction; ``jitterA`` / ``jitterB`` = relays to the first / second address with
``--jitter`` only (different seeds).

Runs (each a fresh PacketConn): ``prime clean``, ``prime lossy`` (for reference),
``race clean+lossy``, ``prime jitterA``, ``prime jitterB``, ``race jitterA+B``. A race
run is UNAVAILABLE while ``dial_packet()`` raises ``rendr.ModeUnavailable``.

Goals:

1. race clean+lossy loses no packet (every request answered, none corrupted);
2. race clean+lossy P99 is no worse than prime clean P99 (allowing noise: <= P99 x
   (1 + ``--tolerance``, 0.2) + ``--tolerance-ms`` (1 ms));
3. race jitterA+B P99 < the lower of prime jitterA P99 and prime jitterB P99.

Without RACE the goals are UNAVAILABLE and fail the gate unless ``--allow-unavailable``.
Exit code 0 pass, 1 fail.

Usage::

    PYTHONPATH=src python3 bench/race_gate.py --short        # CI: 6 runs of 7 s
    PYTHONPATH=src python3 bench/race_gate.py                # 6 runs of 60 s
    PYTHONPATH=src python3 bench/race_gate.py --short --allow-unavailable
"""

from __future__ import annotations

import argparse
import random
import sys
from typing import Any

import _twoproc as tp
from gatekit import common as gk
from gatekit import packet_echo

RUNS = [("prime clean", "prime", ["clean"]), ("prime lossy", "prime", ["lossy"]),
        ("race clean+lossy", "race", ["clean", "lossy"]),
        ("prime jitterA", "prime", ["jitterA"]), ("prime jitterB", "prime", ["jitterB"]),
        ("race jitterA+B", "race", ["jitterA", "jitterB"])]


def run_all(args: argparse.Namespace, seed: int) -> tuple[dict[str, tp.Msg], list[Any]]:
    common = ["--no-uvloop"] if args.no_uvloop else []
    cpu_c, cpu_s = tp.core_plan()
    workers: list[tp.Worker] = []
    try:
        server = tp.Worker(__file__, "server", common, cpu=cpu_s)
        workers.append(server)
        client = tp.Worker(__file__, "client", common, cpu=cpu_c,
                           timeout=args.duration + args.grace + 60)
        workers.append(client)
        relay = tp.Worker(__file__, "relay", common, cpu=None)
        workers.append(relay)
        addrs = server.call(cmd="serve")["addrs"]
        jitter = {"jitter": args.jitter}
        specs = [{"upstream": addrs[1], "faults": {"loss": args.loss, **jitter}, "seed": seed},
                 {"upstream": addrs[0], "faults": jitter, "seed": seed + 1},
                 {"upstream": addrs[1], "faults": jitter, "seed": seed + 2}]
        r = relay.call(cmd="relays", relays=specs)["addrs"]
        paths = {"clean": addrs[0], "lossy": r[0], "jitterA": r[1], "jitterB": r[2]}
        out: dict[str, tp.Msg] = {}
        for name, mode, names in RUNS:
            c = client.call(cmd="echo", mode=mode, addrs=[paths[n] for n in names],
                            duration=args.duration, pps=args.pps, grace=args.grace)
            if "unavailable" not in c:
                c["server"] = server.call(cmd="result", flow_id=c["flow_id"], timeout=30.0)
                s = gk.rtt_summary(c["rtts"])
                print(f"    {name:18} sent {c['sent']}, answered {c['answered']}, P99 "
                      f"{gk.ms(s['p99'])}"
                      + (f"; FLOW FAILED: {c['failure']}" if c["failure"] else ""), flush=True)
            else:
                print(f"    {name:18} UNAVAILABLE: {c['unavailable']}", flush=True)
            out[name] = c
        stats = relay.call(cmd="relay_stats")["stats"]
    finally:
        for w in workers:
            w.close()
    return out, stats


def report(args: argparse.Namespace, runs: dict[str, tp.Msg], relay_stats: list[Any],
           v: gk.Verdict) -> None:
    print(f"\npacket echo, {args.pps:g}/s for {args.duration:g} s per run (RTT):")
    print(f"  {'run':18}{'sent':>7}{'lost':>7}{'bad':>5}{'P50':>12}{'P99':>12}{'P99.9':>12}"
          f"{'max':>12}")
    summ: dict[str, dict[str, float]] = {}
    for name, _, _ in RUNS:
        c = runs[name]
        if "unavailable" in c:
            print(f"  {name:18}  UNAVAILABLE ({c['unavailable']})")
            continue
        s = summ[name] = gk.rtt_summary(c["rtts"])
        print(f"  {name:18}{c['sent']:>7}{c['sent'] - c['answered']:>7}{c['bad']:>5}"
              f"{gk.ms(s['p50']):>12}{gk.ms(s['p99']):>12}{gk.ms(s['p999']):>12}"
              f"{gk.ms(s['max']):>12}")
    for name, _, _ in RUNS:
        c = runs[name]
        if "unavailable" not in c and c["failure"]:
            print(f"  {name}: the flow FAILED ({c['failure']}): {c['sent']} of "
                  f"{c['planned']} requests sent")
    for name, _, _ in RUNS:
        c = runs[name]
        if "unavailable" not in c:
            srv = c["server"]
            print("\n".join(gk.path_table(name, c["paths"], srv.get("paths", []))))
            print(f"      packets: dialer {c['packets']} | listener "
                  f"{srv.get('packets', srv.get('error'))}")
    for label, st in zip(("lossy", "jitterA", "jitterB"), relay_stats, strict=True):
        print(f"  relay {label}: " + "; ".join(
            f"{d} received {x['received']} forwarded {x['forwarded']} lost {x['lost']}"
            for d, x in st.items()))

    race1, race2 = runs["race clean+lossy"], runs["race jitterA+B"]
    clean = summ["prime clean"]
    if "unavailable" in race1:
        why = race1["unavailable"]
        v.add("race clean+lossy: no packet lost", None, f"race unavailable ({why})")
        v.add("race clean+lossy P99 no worse than prime clean", None,
              f"race unavailable; prime clean P99 {gk.ms(clean['p99'])}")
    else:
        lost = race1["sent"] - race1["answered"]
        v.add("race clean+lossy: no packet lost",
              lost == 0 and race1["bad"] == 0 and not race1["failure"],
              f"{race1['answered']}/{race1['sent']} answered, {race1['bad']} corrupted"
              + (f"; flow failed: {race1['failure']}" if race1["failure"] else ""))
        r99 = summ["race clean+lossy"]["p99"]
        limit = clean["p99"] * (1 + args.tolerance) + args.tolerance_ms / 1e3
        v.add("race clean+lossy P99 no worse than prime clean", r99 <= limit,
              f"{gk.ms(r99)} vs prime clean {gk.ms(clean['p99'])} (limit {gk.ms(limit)})")
    j = min(summ["prime jitterA"]["p99"], summ["prime jitterB"]["p99"])
    if "unavailable" in race2:
        v.add("race jitterA+B P99 < either path alone", None,
              f"race unavailable; prime jitterA/B P99 {gk.ms(summ['prime jitterA']['p99'])}"
              f" / {gk.ms(summ['prime jitterB']['p99'])}")
    else:
        r99 = summ["race jitterA+B"]["p99"]
        v.add("race jitterA+B P99 < either path alone", r99 < j and not race2["failure"],
              f"{gk.ms(r99)} vs {gk.ms(j)} (the lower of prime jitterA/B)"
              + (f"; flow failed: {race2['failure']}" if race2["failure"] else ""))
    for name in ("prime lossy", "prime clean", "prime jitterA", "prime jitterB"):
        c = runs[name]
        v.info(name, f"{c['sent'] - c['answered']}/{c['sent']} lost"
               + (f"; the flow FAILED: {c['failure']}" if c["failure"] else ""))
    pinned_ok = not any(runs[n]["failure"] for n in ("prime clean", "prime jitterA",
                                                     "prime jitterB"))
    v.add("the prime references (clean, jitterA, jitterB) ran to the end", pinned_ok,
          "a reference flow failed" if not pinned_ok else "yes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gk.common_args(parser)
    parser.add_argument("--duration", type=float, help="seconds per run (60; --short 7)")
    parser.add_argument("--pps", type=float, help="echo requests per second (100; --short 150)")
    parser.add_argument("--grace", type=float, default=2.0, help="seconds for late answers")
    parser.add_argument("--loss", type=float, default=0.3, help="lossy path, per direction")
    parser.add_argument("--jitter", type=float, default=0.04, help="seconds, per direction")
    parser.add_argument("--tolerance", type=float, default=0.2)
    parser.add_argument("--tolerance-ms", type=float, default=1.0)
    args = parser.parse_args()
    if args.role:
        return tp.serve(packet_echo.HANDLERS, use_uvloop=not args.no_uvloop, cpu=args.cpu)
    args.duration = args.duration or (7.0 if args.short else 60.0)
    args.pps = args.pps or (150.0 if args.short else 100.0)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(tp.header(not args.no_uvloop))
    print(f"race gate: {len(RUNS)} runs of {args.duration:g} s at {args.pps:g} echo/s; lossy "
          f"path {args.loss:.0%} loss + {args.jitter * 1e3:g} ms jitter per direction; "
          f"relay seed {seed}", flush=True)
    runs, relay_stats = run_all(args, seed)
    v = gk.Verdict("race gate", args.allow_unavailable)
    report(args, runs, relay_stats, v)
    print("\n".join(v.lines()))
    return v.exit_code


if __name__ == "__main__":
    sys.exit(main())
