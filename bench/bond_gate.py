#!/usr/bin/env python3
"""Bond efficiency gate (issue 9): bulk goodput of prime, race and bond over two shaped paths.

Topology: :class:`rendr.testing.netns.NetnsTopology` with two veth paths between a
*client* and a *server* namespace, each path shaped with ``tc tbf`` in both
directions. This kernel has no netem, so delay comes from
:class:`rendr.testing.relay.TcpRelay` (``set_delay``): for a path with delay, a relay
process in the server namespace listens on the path's server address and forwards to
the receiver with half the added round-trip time in each direction (the client ->
relay leg crosses the shaped veth).

Three processes per scenario: the sender in the client namespace, the receiver in the
server namespace (pinned to distinct cores when there are two), the relays (if any)
in the server namespace. Every transfer is a bulk transfer of ``--size-mib`` (32; 8
with ``--short``) MiB, a random 4 MiB block repeated, SHA-256-checked by the receiver;
a single-path transfer over a slower path sends proportionally less (so each lasts
about as long). Goodput = bytes / (sender's first write -> receiver's ``done`` after
the last byte). Kinds, interleaved per round (``--repeat``, 3; ``--short``: 1), medians:

- ``raw pK``: raw TCP over path K (through its relay if delayed): checks the shaping;
- ``prime pK``: a rendr Conn (PRIME) with path K only: the single-path reference;
- ``race``, ``bond``: a rendr Conn in that mode over both paths (UNAVAILABLE while
  ``Dialer(mode=...).dial()`` raises ``rendr.ModeUnavailable``).

Scenarios and goals:

- ``symmetric``: 2 x 50 Mbit/s, no delay: bond >= 1.8 x the best prime single path;
- ``asymmetric``: 50 + 5 Mbit/s, +10 ms and +60 ms round trip: bond >= 0.95 x the best
  prime single path.

Each rendr transfer reports how many bytes each path carried, as both ends counted
them.

``--packet`` (udpflow): packet flows instead of bulk transfers, over the same topology.
The sender offers a constant rate of 1100-byte packets (``symmetric``: 90 Mbit/s,
``asymmetric``: 50 Mbit/s) for ``--duration`` s (8; 3 with ``--short``) as ``prime
pK`` and ``bond``; delivered = payload bytes the receiver read / the sender's offering
time, loss = 1 - received / sent.  Goals: ``symmetric`` bond >= 1.5 x the best prime
single path's delivered rate, ``asymmetric`` >= 0.95 x.

Exit code 0 pass (or skipped: not root, or ip/tc/nft missing), 1 fail; goals
that need BOND fail while it is unavailable unless ``--allow-unavailable``.

Usage::

    sudo PYTHONPATH=src python3 bench/bond_gate.py --short     # CI: 8 MiB, 1 round
    sudo PYTHONPATH=src python3 bench/bond_gate.py             # 32 MiB, 3 rounds
    sudo PYTHONPATH=src python3 bench/bond_gate.py --short --allow-unavailable
    sudo PYTHONPATH=src python3 bench/bond_gate.py --short --transport udpflow
    sudo PYTHONPATH=src python3 bench/bond_gate.py --short --packet
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

import _twoproc as tp
from gatekit import bulk, packet_bulk
from gatekit import common as gk
from rendr.testing.netns import NetnsTopology, unavailable_reason

MIB = 1 << 20


@dataclass(frozen=True)
class Scenario:
    name: str
    rates_mbit: tuple[int, int]
    rtt_ms: tuple[float, float]  # added round trip per path (relay), 0 = direct
    min_ratio: float  # bond / best prime single path
    packet_mbit: float = 0.0  # --packet: the rate offered
    packet_ratio: float = 0.0  # --packet: bond / best prime single path (delivered)


SCENARIOS = [Scenario("symmetric", (50, 50), (0.0, 0.0), 1.8, 90.0, 1.5),
             Scenario("asymmetric", (50, 5), (10.0, 60.0), 0.95, 50.0, 0.95)]
KINDS = ["raw p0", "raw p1", "prime p0", "prime p1", "race", "bond"]
PACKET_KINDS = ["prime p0", "prime p1", "bond"]
PACKET_SIZE = 1100


@dataclass
class Result:
    kind: str
    size: int
    runs: list[tuple[tp.Msg, tp.Msg]] = field(default_factory=list)  # (sender, receiver)
    unavailable: str = ""

    def goodputs(self) -> list[float]:
        """Mbit/s of every run."""
        return [self.size * 8 / float(s["elapsed"]) / 1e6 for s, _ in self.runs]

    @property
    def median(self) -> float:
        g = self.goodputs()
        return statistics.median(g) if g else float("nan")

    def sha_ok(self) -> bool:
        return all(s["expect"] == r["digest"] and r["received"] == self.size
                   and s["answer_ok"] for s, r in self.runs)


class Setup:
    """One scenario's topology and processes."""

    def __init__(self, sc: Scenario, topo: NetnsTopology, args: argparse.Namespace) -> None:
        self.sc, self.topo = sc, topo
        common = ["--no-uvloop"] if args.no_uvloop else []
        cpu_s, cpu_r = tp.core_plan()
        for k, rate in enumerate(sc.rates_mbit):
            topo.rate_limit(k, f"{rate}mbit")
        self.workers: list[tp.Worker] = []
        self.recv = self._worker("recv", topo.server_ns, common, cpu_r)
        self.send = self._worker("send", topo.client_ns, common, cpu_s)
        hosts = [p.server_addr for p in topo.paths]
        self.transport = args.transport
        ports = self.recv.call(cmd="listen", hosts=hosts, transport=args.transport)
        self.rendr_addrs: list[list[Any]] = [[h, p] for h, p in zip(hosts, ports["rendr"],
                                                                      strict=True)]
        self.raw_addrs: list[list[Any]] = [[h, p] for h, p in zip(hosts, ports["raw"],
                                                                    strict=True)]
        delayed = [k for k, rtt in enumerate(sc.rtt_ms) if rtt > 0]
        if delayed:
            relay = self._worker("relay", topo.server_ns, common, None)
            specs = [{"host": hosts[k], "upstream": addrs[k], "delay": sc.rtt_ms[k] / 2e3,
                      "udp": addrs is self.rendr_addrs and args.transport == "udpflow"}
                     for addrs in (self.rendr_addrs, self.raw_addrs) for k in delayed]
            got = relay.call(cmd="relays", relays=specs)["addrs"]
            for (addrs, k), addr in zip([(a, k) for a in (self.rendr_addrs, self.raw_addrs)
                                         for k in delayed], got, strict=True):
                addrs[k] = addr

    def _worker(self, role: str, ns: str, common: list[str], cpu: int | None) -> tp.Worker:
        w = tp.Worker(__file__, role, common, cpu=cpu, wrap=["ip", "netns", "exec", ns],
                      timeout=600.0)
        self.workers.append(w)
        return w

    def close(self) -> None:
        for w in self.workers:
            w.close()

    def transfer(self, res: Result) -> None:
        kind = res.kind
        if kind.startswith("raw"):
            addrs, mode = [self.raw_addrs[int(kind[-1])]], "prime"
        elif kind.startswith("prime"):
            addrs, mode = [self.rendr_addrs[int(kind[-1])]], "prime"
        else:
            addrs, mode = self.rendr_addrs, kind
        s = self.send.call(cmd="send", kind="raw" if kind.startswith("raw") else "rendr",
                           mode=mode, addrs=addrs, size=res.size, transport=self.transport)
        if "unavailable" in s:
            res.unavailable = str(s["unavailable"])
            return
        r = self.recv.call(cmd="result", timeout=60.0)
        if "error" in r:
            raise RuntimeError(f"receiver: {r['error']}")
        res.runs.append((s, r))


def packet_transfer(setup: Setup, kind: str, rate_mbit: float,
                    duration: float) -> tuple[tp.Msg, tp.Msg]:
    """One packet flow (``--packet``): the sender's and the receiver's figures."""
    addrs = [setup.rendr_addrs[int(kind[-1])]] if kind[-1].isdigit() else setup.rendr_addrs
    mode = "prime" if kind.startswith("prime") else kind
    s = setup.send.call(cmd="psend", mode=mode, addrs=addrs, rate_mbit=rate_mbit,
                        duration=duration, size=PACKET_SIZE)
    if "unavailable" in s:
        return s, {}
    r = setup.recv.call(cmd="result", timeout=60.0)
    if "error" in r:
        raise RuntimeError(f"receiver: {r['error']}")
    return s, r


def delivered_mbit(s: tp.Msg, r: tp.Msg) -> float:
    return float(r["bytes"]) * 8 / float(s["elapsed"]) / 1e6


def packet_loss(s: tp.Msg, r: tp.Msg) -> float:
    return 1 - int(r["received"]) / max(1, int(s["sent"]))


def run_packet_scenario(sc: Scenario, args: argparse.Namespace, v: gk.Verdict) -> None:
    runs: dict[str, list[tuple[tp.Msg, tp.Msg]]] = {k: [] for k in PACKET_KINDS}
    with NetnsTopology(paths=2, name_prefix="rbond") as topo:
        setup = Setup(sc, topo, args)
        try:
            for rnd in range(args.repeat):
                for kind in PACKET_KINDS:
                    s, r = packet_transfer(setup, kind, sc.packet_mbit, args.duration)
                    if "unavailable" in s:
                        raise RuntimeError(f"{kind}: {s['unavailable']}")
                    runs[kind].append((s, r))
                    print(f"    round {rnd + 1} {kind:8} {delivered_mbit(s, r):7.1f} Mbit/s "
                          f"delivered of {sc.packet_mbit:g} offered, "
                          f"{packet_loss(s, r):.1%} lost", flush=True)
        finally:
            setup.close()
    rates = " + ".join(f"{r} Mbit/s" for r in sc.rates_mbit)
    rtts = " + ".join(f"{t:g} ms" for t in sc.rtt_ms)
    print(f"\n{sc.name} (packets): {rates}, added round trip {rtts}, "
          f"{sc.packet_mbit:g} Mbit/s of {PACKET_SIZE}-byte packets offered")
    print(f"  {'kind':10}{'delivered Mbit/s (median)':>27}{'lost (median)':>15}{'runs':>24}")
    med: dict[str, float] = {}
    for kind in PACKET_KINDS:
        got = [delivered_mbit(s, r) for s, r in runs[kind]]
        lost = [packet_loss(s, r) for s, r in runs[kind]]
        med[kind] = statistics.median(got)
        print(f"  {kind:10}{med[kind]:>27.1f}{statistics.median(lost):>15.1%}"
              f"{' '.join(f'{g:.1f}' for g in got):>24}")
        s, r = runs[kind][-1]
        print("\n".join(gk.path_table(f"{kind} (last run)", s["paths"], r["paths"])))
        if s.get("failure") or r.get("failure"):
            print(f"      failure: sender {s.get('failure')}, receiver {r.get('failure')}")
    best_kind = max(("prime p0", "prime p1"), key=lambda k: med[k])
    v.add(f"{sc.name} (packets): bond >= {sc.packet_ratio:g} x best single path",
          med["bond"] >= sc.packet_ratio * med[best_kind],
          f"bond {med['bond']:.1f} Mbit/s / {best_kind} {med[best_kind]:.1f} Mbit/s = "
          f"{med['bond'] / med[best_kind]:.2f}")


def size_for(kind: str, sc: Scenario, size: int) -> int:
    """Single-path transfers over a slower path send proportionally less."""
    if kind[-1].isdigit():
        share = sc.rates_mbit[int(kind[-1])] / max(sc.rates_mbit)
        return max(MIB, int(size * share) // MIB * MIB)
    return size


def run_scenario(sc: Scenario, args: argparse.Namespace) -> dict[str, Result]:
    results = {k: Result(k, size_for(k, sc, args.size_mib * MIB)) for k in KINDS}
    with NetnsTopology(paths=2, name_prefix="rbond") as topo:
        setup = Setup(sc, topo, args)
        try:
            for rnd in range(args.repeat):
                for kind in KINDS:
                    res = results[kind]
                    if res.unavailable:
                        continue
                    setup.transfer(res)
                    if res.runs and len(res.runs) == rnd + 1:
                        print(f"    round {rnd + 1} {kind:8} {res.goodputs()[-1]:7.1f} Mbit/s",
                              flush=True)
        finally:
            setup.close()
    return results


def report(sc: Scenario, results: dict[str, Result], v: gk.Verdict) -> None:
    rates = " + ".join(f"{r} Mbit/s" for r in sc.rates_mbit)
    rtts = " + ".join(f"{t:g} ms" for t in sc.rtt_ms)
    print(f"\n{sc.name}: {rates}, added round trip {rtts}")
    print(f"  {'kind':10}{'MiB':>6}{'Mbit/s (median)':>18}{'runs':>30}  sha256")
    for kind in KINDS:
        res = results[kind]
        if res.unavailable:
            print(f"  {kind:10}{res.size // MIB:>6}{'UNAVAILABLE':>18}  {res.unavailable}")
            continue
        runs = " ".join(f"{g:.1f}" for g in res.goodputs())
        print(f"  {kind:10}{res.size // MIB:>6}{res.median:>18.1f}{runs:>30}  "
              f"{'ok' if res.sha_ok() else 'MISMATCH'}")
    for kind in ("prime p0", "prime p1", "race", "bond"):
        res = results[kind]
        if res.runs:
            s, r = res.runs[-1]
            print("\n".join(gk.path_table(f"{kind} (last run)", s["paths"], r["paths"])))
            print(f"      first srtt sample (ms, per path): {s['idle_srtt_ms']}; "
                  f"paths up at the start {s['paths_up_at_start']}")
    v.add(f"{sc.name}: every transfer complete, SHA-256 identical",
          all(r.sha_ok() for r in results.values()),
          ", ".join(f"{k} {'ok' if r.sha_ok() else 'MISMATCH'}" for k, r in results.items()
                    if r.runs))
    best_kind = max(("prime p0", "prime p1"), key=lambda k: results[k].median)
    best = results[best_kind].median
    bond = results["bond"]
    if bond.unavailable:
        v.add(f"{sc.name}: bond >= {sc.min_ratio:g} x best single path", None,
              f"bond unavailable ({bond.unavailable}); best single path {best_kind} "
              f"{best:.1f} Mbit/s")
    else:
        v.add(f"{sc.name}: bond >= {sc.min_ratio:g} x best single path",
              bond.median >= sc.min_ratio * best,
              f"bond {bond.median:.1f} Mbit/s / {best_kind} {best:.1f} Mbit/s = "
              f"{bond.median / best:.2f}")
    race = results["race"]
    v.info(f"{sc.name}: race", f"unavailable ({race.unavailable})" if race.unavailable else
           f"{race.median:.1f} Mbit/s = {race.median / best:.2f} x {best_kind}")
    for k in (0, 1):
        raw = results[f"raw p{k}"]
        v.info(f"{sc.name}: shaping of path {k}",
               f"raw TCP {raw.median:.1f} Mbit/s of {sc.rates_mbit[k]} Mbit/s configured; "
               f"prime p{k} {results[f'prime p{k}'].median:.1f} Mbit/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gk.common_args(parser)
    parser.add_argument("--size-mib", type=int, help="per transfer (default 32; --short 8)")
    parser.add_argument("--repeat", type=int, help="rounds (default 3; --short 1)")
    parser.add_argument("--transport", choices=["tcp", "udpflow"], default="tcp",
                        help="the rendr paths' carrier (raw stays TCP; udpflow delay comes "
                             "from a UdpRelay)")
    parser.add_argument("--packet", action="store_true",
                        help="packet flows (udpflow) offered a constant rate, not bulk streams")
    parser.add_argument("--duration", type=float,
                        help="--packet: seconds each flow offers packets (default 8; --short 3)")
    parser.add_argument("--scenario", choices=[s.name for s in SCENARIOS], action="append",
                        help="run only this one (repeatable)")
    parser.add_argument("--min-ratio", action="append", default=[], metavar="NAME=RATIO",
                        help="a regression floor instead of the goal for one scenario "
                             "(CI on a noisy machine), e.g. asymmetric=0.8")
    args = parser.parse_args()
    floors = dict(item.split("=", 1) for item in args.min_ratio)
    if args.role:
        return tp.serve({**bulk.HANDLERS, **packet_bulk.HANDLERS},
                        use_uvloop=not args.no_uvloop, cpu=args.cpu)
    args.size_mib = args.size_mib or (8 if args.short else 32)
    args.repeat = args.repeat or (1 if args.short else 3)
    args.duration = args.duration or (3.0 if args.short else 8.0)
    if args.packet:
        args.transport = "udpflow"
    why = unavailable_reason()
    if why is not None:
        print(f"bond gate SKIPPED: {why}")
        return 0
    print(tp.header(not args.no_uvloop))
    print(f"bond gate: {args.size_mib} MiB per transfer, {args.repeat} round(s); netns, "
          "tc tbf per path, delay from TcpRelay", flush=True)
    v = gk.Verdict("bond gate", args.allow_unavailable)
    for sc in SCENARIOS:
        if args.scenario and sc.name not in args.scenario:
            continue
        if sc.name in floors:
            sc = dataclasses.replace(sc, min_ratio=float(floors[sc.name]))
            print(f"  {sc.name}: floor {sc.min_ratio} (not the goal)", flush=True)
        print(f"  {sc.name}...", flush=True)
        if args.packet:
            run_packet_scenario(sc, args, v)
            continue
        report(sc, run_scenario(sc, args), v)
    print("\n".join(v.lines()))
    return v.exit_code


if __name__ == "__main__":
    sys.exit(main())
