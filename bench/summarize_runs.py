#!/usr/bin/env python3
"""Summarise several ``--json`` files of the G1 and echo gates (figures for the docs).

Ratios are only ever formed inside one run (paired reps, same process pair); across
runs the script reports the median of the per-run figures and their range (for a
single file: over its pairs or rounds).

Usage::

    python bench/summarize_runs.py g1-uv-*.json         # G1 runs (one loop)
    python bench/summarize_runs.py rtt-uv-*.json        # echo runs (one loop)
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

MIB = 1 << 20
GIB = 1 << 30


def span(xs: list[float], digits: int = 2) -> str:
    m = statistics.median(xs)
    return f"{m:.{digits}f} ({min(xs):.{digits}f}-{max(xs):.{digits}f})"


def g1(runs: list[dict[str, Any]]) -> None:
    per_run: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        per_run.setdefault(key, []).append(value)

    for run in runs:
        size = run["size"]
        pairs = run["pairs"]
        rate = {k: [size / p[i]["send"]["elapsed"] / 1e6 for p in pairs]
                for i, k in enumerate(("raw", "rendr"))}
        add("ratio", statistics.median(b / a for a, b in zip(rate["raw"], rate["rendr"],
                                                             strict=True)))
        for i, kind in enumerate(("raw", "rendr")):
            add(f"{kind} MB/s", statistics.median(rate[kind]))
            for end in ("send", "recv"):
                add(f"{kind} {end} CPU-s/GiB", statistics.median(
                    p[i][end]["usage"]["cpu_s"] * GIB / size for p in pairs))
                add(f"{kind} {end} faults/MiB", statistics.median(
                    p[i][end]["usage"]["minflt"] * MIB / size for p in pairs))
        add("recv CPU ratio", statistics.median(
            p[1]["recv"]["usage"]["cpu_s"] / p[0]["recv"]["usage"]["cpu_s"] for p in pairs))
        if run.get("single"):
            s_raw, s_ren = run["single"]
            add("single ratio", s_raw["send"]["elapsed"] / s_ren["send"]["elapsed"])
        add("integrity MB/s", size / run["integrity"]["send"]["elapsed"] / 1e6)
    print(f"{len(runs)} runs; {runs[0]['loop']}; {runs[0]['size'] // MIB} MiB; "
          f"{len(runs[0]['pairs'])} pairs per run; median of per-run medians (range):")
    for key, xs in per_run.items():
        print(f"  {key:26} {span(xs, 0 if 'MB/s' in key else 2)}")


def rtt(runs: list[dict[str, Any]]) -> None:
    print(f"{len(runs)} runs; {runs[0]['loop']}; {runs[0]['mode']}; median of per-run medians "
          f"(range), microseconds:")
    per_run: dict[str, list[float]] = {}
    for run in runs:
        res = run["results"]
        for kind, rounds in res.items():
            for q in ("p50", "p99"):
                per_run.setdefault(f"{kind} {q}", []).append(
                    statistics.median(c[q] for c, _ in rounds) * 1e6)
            for i, end in enumerate(("client", "server")):
                per_run.setdefault(f"{kind} CPU/RT {end}", []).append(statistics.median(
                    r[i]["usage"]["cpu_s"] / r[0]["round_trips"] for r in rounds) * 1e6)
        for other in ("raw", "streams"):
            per_run.setdefault(f"P50 ratio rendr/{other}", []).append(statistics.median(
                m[0]["p50"] / o[0]["p50"] for m, o in zip(res["rendr"], res[other],
                                                          strict=True)))
    for key, xs in per_run.items():
        print(f"  {key:26} {span(xs, 2 if 'ratio' in key else 0)}")


def main() -> int:
    runs = []
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as f:
            runs.append(json.load(f))
    if not runs:
        print(__doc__)
        return 2
    if len(runs) == 1:  # one run: spread over its pairs / rounds instead
        run = runs[0]
        if "pairs" in run:
            runs = [{**run, "pairs": [p]} for p in run["pairs"]]
        else:
            n = len(next(iter(run["results"].values())))
            runs = [{**run, "results": {k: [v[i]] for k, v in run["results"].items()}}
                    for i in range(n)]
        print("(one run: median and range over its pairs / rounds)")
    (g1 if "pairs" in runs[0] else rtt)(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
