#!/usr/bin/env python3
"""Long fat datagram paths in the simulator: time, queue drops and exactness of one
stream over a grid of round trips, link rates, queue depths and random loss.

Method: ``rendr.testing.simnet`` (virtual clock, deterministic per seed), one
udpflow-like datagram path (MTU 1200, a bottleneck ``rate`` each way with a drop-tail
queue of ``--queue`` BDPs, random ``loss`` each way), the dialer writes ``--mib`` MiB
and closes; the cell's figures are the virtual seconds until the listener read EOF
(checked byte-exact), that time over the link's serialization time (``x ideal``), and
the share of the dialer's datagrams the bottleneck queue dropped (its own overshoot;
random loss is counted apart).  ``--mode bond`` adds a second, slow far path (a tenth
of the rate, 4x the round trip) and prints BOND's time against PRIME over the fast
path alone (``bond/prime``: above 1 is faster).

Defaults: 10 / 50 / 150 ms x 10 / 100 Mbit/s x queue 0.25 / 1 / 4 BDP x loss
0 / 1 / 5 %, 8 MiB, seed 1 (54 cells; a few minutes on the pure build).  Prints one
line per cell and a summary; exit status 1 if a transfer fails or is not byte-exact.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from rendr.config import FlowConfig
from rendr.core.types import Mode
from rendr.testing.simnet import Side, Sim, SimPath


class CountingSim(Sim):
    """Counts the datagrams each side offered to a rate-limited path and the queue drops."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.offered = [0, 0]
        self.queue_drops = [0, 0]

    def _datagram(self, path: SimPath, side: Side, data: bytes) -> None:
        self.offered[side] += 1
        if path.rate is not None and path.backlog(side, self.now) + len(data) > path.queue:
            self.queue_drops[side] += 1
        super()._datagram(path, side, data)


def run(mode: Mode, paths: list[tuple[float, float, float, int]], size: int,
        seed: int) -> tuple[float, float]:
    """(virtual seconds, share of the dialer's datagrams dropped by a full queue)."""
    sim = CountingSim(FlowConfig(), mode=mode, seed=seed)
    for delay, rate, loss, queue in paths:
        sim.add_path(delay, rate=rate, mtu=1200, loss=loss, queue=queue)
    data = os.urandom(size)
    sim.write(Side.DIALER, data, close=True)
    if not sim.run_until(lambda: sim.eof[Side.LISTENER], max_time=600):
        raise RuntimeError(f"not done after 600 s: {len(sim.received[Side.LISTENER])} B")
    if bytes(sim.received[Side.LISTENER]) != data:
        raise RuntimeError("not byte-exact")
    d = Side.DIALER
    return sim.now, sim.queue_drops[d] / max(sim.offered[d], 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rtt", type=float, nargs="+", default=[10, 50, 150], help="ms")
    ap.add_argument("--mbit", type=float, nargs="+", default=[10, 100])
    ap.add_argument("--queue", type=float, nargs="+", default=[0.25, 1, 4], help="BDPs")
    ap.add_argument("--loss", type=float, nargs="+", default=[0, 1, 5], help="percent")
    ap.add_argument("--mib", type=float, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mode", choices=["prime", "bond"], default="prime")
    args = ap.parse_args()
    size = int(args.mib * (1 << 20))
    import rendr
    print(f"rendr from {os.path.dirname(rendr.__file__)} (compiled={rendr.__compiled__}); "
          f"{args.mode}, {args.mib:g} MiB, seed {args.seed}")
    failed = 0
    ideal_ratios: list[float] = []
    drops: list[float] = []
    bond_ratios: list[float] = []
    t0 = time.perf_counter()
    for rtt in args.rtt:
        for mbit in args.mbit:
            rate = mbit * 1e6 / 8
            bdp = rate * rtt / 1000
            for q in args.queue:
                queue = max(int(q * bdp), 2400)
                for loss in args.loss:
                    fast = (rtt / 2000, rate, loss / 100, queue)
                    cell = f"{rtt:5g} ms {mbit:5g} Mbit/s queue {q:4g} BDP loss {loss:3g} %"
                    try:
                        seconds, dropped = run(Mode.PRIME, [fast], size, args.seed)
                        line = (f"{cell}: prime {seconds:6.2f} s "
                                f"({seconds / (size / rate):4.2f} x ideal), "
                                f"queue drops {100 * dropped:5.1f} %")
                        ideal_ratios.append(seconds / (size / rate))
                        drops.append(dropped)
                        if args.mode == "bond":
                            slow = (4 * rtt / 2000, rate / 10, loss / 100, max(queue // 10, 2400))
                            both, _ = run(Mode.BOND, [fast, slow], size, args.seed)
                            bond_ratios.append(seconds / both)
                            line += f"; bond {both:6.2f} s, bond/prime {seconds / both:4.2f}"
                    except Exception as e:  # reported per cell
                        failed += 1
                        line = f"{cell}: FAILED {e!r}"
                    print(line, flush=True)
    print(f"{len(ideal_ratios)} cells done, {failed} failed, "
          f"{time.perf_counter() - t0:.0f} s wall")
    if ideal_ratios:
        print(f"x ideal: median {statistics.median(ideal_ratios):.2f}, "
              f"max {max(ideal_ratios):.2f}; queue drops: median "
              f"{100 * statistics.median(drops):.1f} %, max {100 * max(drops):.1f} %")
    if bond_ratios:
        print(f"bond/prime: median {statistics.median(bond_ratios):.2f}, "
              f"min {min(bond_ratios):.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
