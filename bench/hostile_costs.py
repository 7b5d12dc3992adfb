#!/usr/bin/env python3
"""What hostile or long-lived peers cost the engine: a fragment bomb, and path churn.

- **fragment bomb**: a listener engine fed 1-byte DATA frames at every other offset of
  its receive window, in descending order (each one kept out of order, none ever
  deliverable).  Prints how many frames it took before ending the flow (or all of
  them), the Python heap it grew by (tracemalloc) and the CPU time.
- **path churn**: an engine that attached and lost ``N`` backup paths, then the cost of
  one flush-and-timer pass (``transmits`` + ``closes`` + ``get_timer``) with one live
  path; per-event cost must not grow with how many paths the flow ever had.

Usage: ``python3 bench/hostile_costs.py [--window-mib 1] [--churn 0,300,1500]``
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc

import rendr
from rendr.config import FlowConfig
from rendr.core.flow import Flow
from rendr.core.types import Cause, Role, State
from rendr.core.wire import data_header

MIB = 1 << 20


def fragment_bomb(window: int) -> tuple[int, int, float, bool]:
    """(frames fed, heap growth in bytes, CPU seconds, flow ended)."""
    flow = Flow(role=Role.LISTENER, flow_id=b"F" * 16, config=FlowConfig(recv_window=window),
                now=0.0, peer_window=MIB)
    flow.add_path(1, now=0.0)
    flow.transmits(0.0)
    stream = b"".join(data_header(off, 1) + b"x" for off in range(window - 2, 0, -2))
    step = 13 * 5000  # 5000 frames per carrier read
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    cpu0 = time.process_time()
    fed = 0
    for i in range(0, len(stream), step):
        flow.receive(1, stream[i : i + step], 0.001)
        fed += min(step, len(stream) - i) // 13
        if flow.state is State.CLOSED:
            break
    cpu = time.process_time() - cpu0
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return fed, grown, cpu, flow.state is State.CLOSED


def churn_pass_cost(deaths: int, passes: int = 20000) -> float:
    """Microseconds per flush-and-timer pass after ``deaths`` backup-path deaths."""
    flow = Flow(role=Role.DIALER, flow_id=b"F" * 16, now=0.0, peer_window=8 * MIB)
    flow.add_path(1, now=0.0)
    now = 0.0
    for pid in range(2, deaths + 2):
        now += 0.001
        flow.add_path(pid, now=now)
        flow.path_failed(pid, Cause.RESET, now)
        flow.transmits(now)
        flow.closes()
        flow.events()
    start = time.perf_counter()
    for _ in range(passes):
        flow.transmits(now)
        flow.closes()
        flow.get_timer()
    return (time.perf_counter() - start) / passes * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window-mib", type=float, default=1.0)
    parser.add_argument("--churn", default="0,300,1500")
    args = parser.parse_args()
    print(f"hostile costs (rendr {rendr.__version__}, compiled={rendr.__compiled__}, "
          f"Python {sys.version.split()[0]})")
    window = int(args.window_mib * MIB)
    total = window // 2 - 1
    fed, grown, cpu, ended = fragment_bomb(window)
    print(f"fragment bomb, {window / MIB:g} MiB window, {total} one-byte frames offered: "
          f"{'flow ended after' if ended else 'all accepted:'} {fed} frames, "
          f"heap +{grown / MIB:.1f} MiB, {cpu:.2f} CPU-s")
    for n in (int(x) for x in args.churn.split(",")):
        print(f"path churn: after {n} backup-path deaths, one flush+timer pass "
              f"{churn_pass_cost(n):.2f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
