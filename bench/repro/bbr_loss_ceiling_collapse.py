#!/usr/bin/env python3
"""On a path with 20 % random loss, BBR's loss ceiling can cut its bandwidth estimate
again and again until a stream crawls.

Found by a randomized fault-schedule run over simulated datagram paths (2026-12-03).
Method: the simulator (``rendr.testing.simnet``), one datagram path, 53.5 ms one way,
20 % random loss each way, no rate limit, PRIME, 1.5 MB one way, 60 s (virtual) per
seed.  A transfer that finishes takes 2-4 s.  Counted: the cuts of ``Bbr``'s loss
ceiling (an interval of at least ``BW_WINDOW`` that lost more than ``LOSS_CEILING`` of
what it settled scales the estimate by ``LOSS_BETA``).  With random loss alone the
share of declared losses hovers around the loss rate, but once the rate is low an
interval settles only two or three datagrams, so one random loss (1224 B acked, 1200 B
lost) is over the ceiling: each cut lowers the rate further, cuts come faster than the
1.25 probe can undo them, and the estimate falls to a few KB/s (about one datagram per
round trip).  A minimum of datagrams per interval before the ceiling applies is the
likely fix.

Prints each seed's outcome; exit status 1 if a transfer did not finish in 60 s.
Usage: ``python3 bench/repro/bbr_loss_ceiling_collapse.py [seed ...]`` (default 1-8).
"""

from __future__ import annotations

import os
import sys

from rendr.config import FlowConfig
from rendr.core import bbr
from rendr.core.types import Mode
from rendr.testing.simnet import Side, Sim

cuts: list[tuple[float, float, float]] = []
_end_round = bbr.Bbr._end_round


def _counting_end_round(self: bbr.Bbr, now: float, sent_at: float, app_limited: bool) -> None:
    before = self.btl_bw
    _end_round(self, now, sent_at, app_limited)
    if before and self.btl_bw <= before * bbr.LOSS_BETA * 1.01:
        cuts.append((now, before, self.btl_bw))


def main() -> int:
    bbr.Bbr._end_round = _counting_end_round  # type: ignore[method-assign]
    seeds = [int(a) for a in sys.argv[1:]] or list(range(1, 9))
    stuck = 0
    for seed in seeds:
        cuts.clear()
        sim = Sim(FlowConfig(), mode=Mode.PRIME, seed=seed)
        pid = sim.add_path(0.0535, mtu=1200, loss=0.2)
        data = os.urandom(1_500_000)
        sim.write(Side.DIALER, data, eof=True)
        def arrived(s: Sim = sim) -> bool:
            return bool(s.eof[Side.LISTENER])

        done = sim.run_until(arrived, 60)
        cc = sim.dialer._reliable[pid].cc
        assert isinstance(cc, bbr.Bbr)
        stuck += not done
        print(f"seed {seed}: {'done' if done else 'NOT DONE'} at {sim.now:.1f} s, "
              f"{len(sim.received[Side.LISTENER])}/{len(data)} B, estimate "
              f"{cc.btl_bw / 1e3:.0f} KB/s, {len(cuts)} loss-ceiling cuts", flush=True)
    print(f"{stuck}/{len(seeds)} transfers did not finish in 60 s")
    return 1 if stuck else 0


if __name__ == "__main__":
    sys.exit(main())
