"""The command line of ``bench/soak.py``: flags, the header, one run, the verdict."""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import rendr
from rendr.testing.netns import unavailable_reason

from .orchestrate import Soak
from .params import KIB, Params
from .record import summarize, to_json
from .report import report

EXIT_SKIP = 77


def _range(text: str) -> tuple[float, float]:
    a, _, b = text.partition(":")
    lo, hi = float(a), float(b or a)
    if not 0 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX with 0 <= MIN <= MAX, got {text!r}")
    return lo, hi


def _knob(text: str) -> tuple[str, object]:
    name, _, value = text.partition("=")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise argparse.ArgumentTypeError(f"--knob NAME=VALUE, got {text!r}") from None


def parser(prog: str | None) -> argparse.ArgumentParser:
    d = Params()
    ap = argparse.ArgumentParser(prog=prog, description=(
        "Soak (issue 7): a listener process and FLOWS concurrent flows from PROCS client "
        "processes, each flow over two fault-injecting relays, for MINUTES; zero errors, "
        "every byte verified, no leak at the end."))
    ap.add_argument("--minutes", type=float, default=d.minutes)
    ap.add_argument("--flows", type=int, default=d.flows, help="concurrent flows in all")
    ap.add_argument("--procs", type=int, default=d.procs, help="client processes")
    ap.add_argument("--seed", type=int, default=None, help="default: from the clock (printed)")
    ap.add_argument("--netns", action=argparse.BooleanOptionalAction, default=None,
                    help="real paths in network namespaces with nftables DROPs (default: when "
                         "root with ip/nft; --netns insists, exit 77 if unavailable)")
    ap.add_argument("--json", metavar="PATH", help="write every measurement here ('-': stdout)")
    ap.add_argument("--burst-kib", type=float, default=d.burst / KIB,
                    help="largest burst of each direction of each flow, KiB")
    ap.add_argument("--idle", type=_range, default=d.idle, metavar="MIN:MAX",
                    help="seconds of silence between two bursts")
    ap.add_argument("--flow-life", type=_range, default=d.flow_life, metavar="MIN:MAX",
                    help="seconds a (not long-lived) flow lives")
    ap.add_argument("--long-frac", type=float, default=d.long_frac,
                    help="share of flow slots with one flow for the whole run")
    ap.add_argument("--fault-gap", type=_range, default=d.fault_gap, metavar="MIN:MAX")
    ap.add_argument("--op-gap", type=_range, default=d.op_gap, metavar="MIN:MAX")
    ap.add_argument("--max-slots", type=int, default=d.max_slots,
                    help="most dialer path slots per flow (add_path adds, remove_path removes)")
    ap.add_argument("--drop-gap", type=_range, default=d.drop_gap, metavar="MIN:MAX")
    ap.add_argument("--drop-len", type=_range, default=d.drop_len, metavar="MIN:MAX")
    ap.add_argument("--warmup", type=float, default=0.0,
                    help="seconds (default a quarter of the run, 20..300)")
    ap.add_argument("--sample", type=float, default=d.sample, help="seconds between samples")
    ap.add_argument("--max-rss-growth", type=float, default=d.max_rss_growth,
                    help="MiB/h after warm-up (gated when >= 10 min of samples follow it)")
    ap.add_argument("--knob", type=_knob, action="append", default=[], metavar="NAME=VALUE",
                    help="FlowConfig field for both ends (repeatable)")
    ap.add_argument("--no-uvloop", action="store_true")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="trace the listener's allocations; report the sites that grew")
    ap.add_argument("--debug", action="store_true",
                    help="DEBUG logs of rendr in every child's log (large)")
    ap.add_argument("--rundir", default=None, help="logs go here (default: a new temp dir)")
    return ap


def _git(where: str, *args: str) -> str:
    try:
        return subprocess.run(["git", "-C", where, *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def header(p: Params, mode: str) -> str:
    """Which rendr runs (its directory, and its commit when that is a git checkout)."""
    where = os.path.dirname(os.path.dirname(os.path.abspath(rendr.__file__)))
    rev = _git(where, "describe", "--always", "--dirty")
    edited = [x.strip() for x in _git(where, "status", "--porcelain", "--", ".").split("\n")
              if x.strip()] if rev else []
    build = (f"commit {rev}" + (f" (edited: {', '.join(edited[:6])})" if edited else "")
             if rev else "not a git checkout")
    return (f"rendr {rendr.__version__} from {where} ({build}; compiled={rendr.__compiled__}); "
            f"Python {platform.python_version()}, loop "
            f"{'uvloop' if p.use_uvloop else 'asyncio'}; {os.cpu_count()} CPUs, load "
            f"{os.getloadavg()[0]:.2f}; {mode}; seed {p.seed}; {p.flows} flows in {p.procs} "
            f"client processes for {p.minutes:g} min")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    a = parser(prog).parse_args(argv)
    if a.flows < 1 or a.procs < 1 or a.minutes <= 0:
        print("--flows, --procs and --minutes must be positive", file=sys.stderr)
        return 2
    reason = unavailable_reason()
    if a.netns and reason is not None:
        print(f"soak --netns SKIPPED: {reason}")
        return EXIT_SKIP
    netns = reason is None if a.netns is None else bool(a.netns)
    use_uvloop = not a.no_uvloop
    if use_uvloop:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            use_uvloop = False
    p = Params(minutes=a.minutes, flows=a.flows, procs=min(a.procs, a.flows),
               seed=a.seed if a.seed is not None else int(time.time()) % 1_000_000,
               netns=netns, use_uvloop=use_uvloop, warmup=a.warmup, sample=a.sample,
               burst=int(a.burst_kib * KIB), idle=a.idle, flow_life=a.flow_life,
               long_frac=a.long_frac, fault_gap=a.fault_gap, op_gap=a.op_gap,
               max_slots=max(2, a.max_slots), drop_gap=a.drop_gap,
               drop_len=a.drop_len, max_rss_growth=a.max_rss_growth, knobs=dict(a.knob),
               debug=a.debug, tracemalloc=a.tracemalloc)
    mode = ("netns: two real veth paths (nftables DROPs) behind the relays" if netns else
            "loopback relays only" + (f" (no netns: {reason})" if reason else " (--no-netns)"))
    rundir = a.rundir or tempfile.mkdtemp(prefix=f"rendr-soak-{p.seed}-")
    os.makedirs(rundir, exist_ok=True)
    to_stderr = a.json == "-"

    def out(line: str) -> None:
        print(line, file=sys.stderr if to_stderr else sys.stdout, flush=True)

    head = header(p, mode)
    out(f"== rendr soak: {head}")
    out(f"   each flow: 2 relays; each way bursts of up to {p.burst / KIB:g} KiB in "
        f"random-sized writes, {p.idle[0]:g}-{p.idle[1]:g} s apart; "
        f"lives {p.flow_life[0]:g}-{p.flow_life[1]:g} s ({p.long_frac:.0%} of slots: the "
        f"whole run); per flow a relay fault every {p.fault_gap[0]:g}-{p.fault_gap[1]:g} s "
        f"(kill / blackhole {p.blackhole_len[0]:g}-{p.blackhole_len[1]:g} s / stall "
        f"{p.stall_len[0]:g}-{p.stall_len[1]:g} s), an admin call every "
        f"{p.op_gap[0]:g}-{p.op_gap[1]:g} s" + (
            f"; a DROP of one real path ({p.drop_len[0]:g}-{p.drop_len[1]:g} s) every "
            f"{p.drop_gap[0]:g}-{p.drop_gap[1]:g} s" if netns else ""))
    out(f"   warm-up {p.warmup_s:.0f} s; samples every {p.sample:g} s; logs in {rundir}")
    soak = Soak(p, rundir, out)
    r = soak.run()
    r.header = head
    s = summarize(r, p)
    report(r, s, p, out)
    if a.json:
        text = json.dumps(to_json(r, s), indent=1, default=str)
        if a.json == "-":
            print(text)
        else:
            with open(a.json, "w", encoding="utf-8") as f:
                f.write(text)
    return 0 if s.passed else 1
