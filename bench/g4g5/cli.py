"""The command line: flags, logging, the runs one after another, the exit status."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from rendr.testing.netns import unavailable_reason

from .params import MIB, Params, quick_params
from .record import RunResult
from .report import report_run, report_summary
from .run import run_in_netns

EXIT_SKIP = 77
DESCRIPTION = "G4/G5 gates: silent path loss and path recovery on a real network (Linux netns)."


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true",
                        help="short CI version (64 MiB bulk at 200 mbit)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run G4 (+G5) N times on fresh topologies; median failover")
    parser.add_argument("--bulk-mib", type=int, default=None,
                        help="bulk transfer size (default 512, quick 64)")
    parser.add_argument("--rate", default=None,
                        help="tc tbf rate of both paths (default 1gbit, quick 200mbit; "
                             "'none' = unshaped)")
    parser.add_argument("--drop-after", type=float, default=1.0,
                        help="seconds of traffic before the drop")
    parser.add_argument("--failover-limit", type=float, default=5.0)
    parser.add_argument("--failover-target", type=float, default=0.3)
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--debug", action="store_true", help="DEBUG logging of rendr")
    parser.add_argument("--log-file", default=None, help="write logs here (default stderr)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")

    level = logging.DEBUG if args.debug else logging.WARNING
    logging.basicConfig(level=level, filename=args.log_file,
                        format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    if args.debug:
        logging.getLogger("g4g5").setLevel(logging.DEBUG)

    reason = unavailable_reason()
    if reason is not None:
        print(f"G4/G5 SKIPPED: {reason}")
        return EXIT_SKIP
    use_uvloop = not args.no_uvloop
    if use_uvloop:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            print("note: uvloop not installed, using the asyncio loop")
            use_uvloop = False

    p = quick_params() if args.quick else Params()
    if args.bulk_mib is not None:
        p.bulk_bytes = args.bulk_mib * MIB
    if args.rate is not None:
        p.rate = None if args.rate.lower() == "none" else args.rate
    p.drop_after = args.drop_after
    p.failover_limit = args.failover_limit
    p.failover_target = args.failover_target

    print(f"G4/G5 netns gate: {'quick' if args.quick else 'full'}, bulk "
          f"{p.bulk_bytes / MIB:.0f} MiB, paths shaped to {p.rate or 'unshaped'}, drop after "
          f"{p.drop_after:g} s, echo every {p.echo_interval * 1e3:.0f} ms, "
          f"loop={'uvloop' if use_uvloop else 'asyncio'}, {args.repeat} run(s)", flush=True)
    results: list[RunResult] = []
    for i in range(args.repeat):
        try:
            r = run_in_netns(p, use_uvloop)
        except Exception as exc:  # topology or loop trouble outside the scenario
            r = RunResult(failover_limit=p.failover_limit, failover_target=p.failover_target)
            r.errors.append(f"run crashed: {type(exc).__name__}: {exc}")
            r.diagnostics.append(traceback.format_exc())
        results.append(r)
        report_run(i + 1, r)
        sys.stdout.flush()
    return 0 if report_summary(results, p) else 1
