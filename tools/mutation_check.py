#!/usr/bin/env python3
"""Curated mutation check: break one promise of the engine at a time, and make sure a
test notices.

Each mutant in :data:`MUTANTS` is one exact textual patch of one source file (a short
snippet that must occur exactly once, and its replacement) plus the tests meant to
catch it.  For every mutant the tool copies the working tree (``src/``, ``tests/``,
``pyproject.toml``; uncommitted edits included) to a temporary directory, applies the
patch there, runs the selected tests with ``pytest -x`` under a time bound, and reports
whether the mutant was *killed* (a test failed: which one) or *survived* (every
selected test passed: a promise is unguarded).  The working tree is never modified.

    python3 tools/mutation_check.py                 # every mutant
    python3 tools/mutation_check.py --list          # the table of mutants
    python3 tools/mutation_check.py --only sack-ignored --only no-replay
    python3 tools/mutation_check.py --timeout 60    # bound per mutant (seconds)
    python3 tools/mutation_check.py --all-tests     # count every test that kills each

Before any mutant runs, every snippet is looked up: when the engine's code moved (a
refactor), the tool stops and names the mutants whose snippet is missing or ambiguous;
update their ``file``/``find`` in the table.  A baseline run of the union of the
selected tests on the unmodified copy comes first (``--no-baseline`` skips it): a test
that fails without a mutant would make every mutant look killed.

Exit status: 0 when every mutant was killed, 1 when one survived or the baseline
failed, 2 when the table does not match the sources.  Not part of CI (it runs the
selected tests once per mutant); see docs/mutation.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    """One deliberate break: in ``file``, ``find`` (exactly once) becomes ``replace``."""

    name: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    breaks: str  # the promise it breaks, in a few words


PROMISES = "tests/core/test_promises.py"
FLOW_SIM = "tests/core/test_flow_sim.py"
CARRIER_EOF = "tests/aio/test_carrier_eof.py"
LOOPBACK = "tests/aio/test_loopback.py"

MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        name="carrier-eof-is-app-eof",
        file="src/rendr/core/flow.py",
        find="        self._migration.carrier_failed(path_id, cause, now, detail)\n",
        replace="        if cause is Cause.EOF:\n"
                "            self._finish(None, now)  # MUTANT: a carrier EOF ends the flow\n"
                "            return\n"
                "        self._migration.carrier_failed(path_id, cause, now, detail)\n",
        tests=(f"{PROMISES}::test_carrier_fin_mid_transfer_never_ends_the_flow",
               f"{PROMISES}::test_fin_of_every_path_waits_for_a_new_one", CARRIER_EOF),
        breaks="engine: Flow.path_failed(Cause.EOF) ends the flow (reader gets b'')",
    ),
    Mutant(
        name="conn-carrier-eof-is-app-eof",
        file="src/rendr/aio/driver.py",
        find="        self._driver.carriers.pop(self._pid, None)\n",
        replace="        self._driver.carriers.pop(self._pid, None)\n"
                "        if exc is None:  # MUTANT: the driver closes the conn on carrier EOF\n"
                "            self._flow.abort(self._loop.time())\n",
        tests=(CARRIER_EOF,),
        breaks="driver: _PathSink.carrier_lost(None) closes the Conn (read gets b'')",
    ),
    Mutant(
        name="sack-ignored",
        file="src/rendr/core/sender.py",
        find="for ms, me in self._peer_sacked.missing(start, end):",
        replace="for ms, me in [(start, end)]:  # MUTANT: requeue what the peer SACKed too",
        tests=(f"{PROMISES}::test_failover_resends_nothing_the_peer_sacked",),
        breaks="StreamSender.on_lost re-sends the whole in-flight range of a dead path",
    ),
    Mutant(
        name="duplicate-delivered",
        file="src/rendr/core/recvbuf.py",
        find="            self.dup_bytes += n\n            return 0\n",
        replace="            self.dup_bytes += n\n"
                "            self._ready.append(piece)  # MUTANT: a duplicate is delivered\n"
                "            self.ready_bytes += n\n"
                "            return n\n",
        tests=(f"{PROMISES}::test_duplicate_and_overlapping_pieces_never_reach_the_application",),
        breaks="receive buffer hands an already-received piece to the reader",
    ),
    Mutant(
        name="overlap-trim-off-by-one",
        file="src/rendr/core/recvbuf.py",
        find="piece = piece[cur - offset :]",
        replace="piece = piece[cur - offset + 1 :]  # MUTANT",
        tests=(f"{PROMISES}::test_duplicate_and_overlapping_pieces_never_reach_the_application",),
        breaks="a piece straddling the in-order edge is trimmed one byte too far",
    ),
    Mutant(
        name="overlap-store-off-by-one",
        file="src/rendr/core/recvbuf.py",
        find="self._ooo[s] = keep[s - offset : e - offset]",
        replace="self._ooo[s] = keep[s - offset : e - offset + 1]  # MUTANT",
        tests=(f"{PROMISES}::test_duplicate_and_overlapping_pieces_never_reach_the_application",),
        breaks="an out-of-order piece is held with one byte of its neighbour",
    ),
    Mutant(
        name="no-replay",
        file="src/rendr/core/sender.py",
        find="            self._retx.add(ms, me)\n",
        replace="            pass  # MUTANT: nothing is queued for re-sending\n",
        tests=(f"{FLOW_SIM}::test_kill_active_path_with_data_in_flight",
               f"{PROMISES}::test_carrier_fin_mid_transfer_never_ends_the_flow",
               f"{LOOPBACK}::test_rst_kill_of_active_path_mid_transfer_is_invisible"),
        breaks="what a dead path carried unacknowledged is never re-sent",
    ),
    Mutant(
        name="no-liveness",
        file="src/rendr/core/paths.py",
        find="and now - path.unanswered_since >= self.dead_time(path)):",
        replace="and False):  # MUTANT: unanswered PINGs never kill a path",
        tests=(f"{FLOW_SIM}::test_blackhole_active_path_detected_by_liveness",
               f"{LOOPBACK}::test_blackholed_active_path_fails_over_within_a_second"),
        breaks="a silent (blackholed) path is never declared dead",
    ),
    Mutant(
        name="migrate-resends-in-flight",
        file="src/rendr/core/migration.py",
        find="            self.activate(path_id, EXPLICIT, now)\n",
        replace="            old = self.paths.get(self.active)  # MUTANT: planned move re-sends\n"
                "            if old is not None:\n"
                "                Recovery.on_path_lost(old, self.sender)\n"
                "            self.activate(path_id, EXPLICIT, now)\n",
        tests=(f"{FLOW_SIM}::test_explicit_migrate_mid_transfer",
               f"{LOOPBACK}::test_explicit_migrate_mid_transfer_sends_nothing_twice"),
        breaks="migrate() re-sends the old path's in-flight data (sent twice)",
    ),
    Mutant(
        name="budget-never-fires",
        file="src/rendr/core/lifecycle.py",
        find="self.budget_at = now + budget",
        replace="self.budget_at = None  # MUTANT: no deadline without paths",
        tests=(f"{FLOW_SIM}::test_all_paths_killed_budget_fires",
               f"{LOOPBACK}::test_budget_exhaustion_raises"),
        breaks="with no path left the flow waits forever (no MigrationBudgetExceeded)",
    ),
    Mutant(
        name="replay-not-held",
        file="src/rendr/core/recovery.py",
        find="self.hold_until = now + min(max(hold, _HOLD_MIN), _HOLD_MAX)",
        replace="self.hold_until = None  # MUTANT: re-send before the fresh ACK",
        tests=(f"{FLOW_SIM}::test_failover_under_load_resends_nothing_the_peer_has",),
        breaks="failover re-sends before the peer's fresh ACK (delivered bytes twice)",
    ),
)


@dataclass
class Result:
    name: str
    status: str  # killed, survived, timeout (killed by the bound), error
    by: str
    seconds: float
    output: str = ""


def _ignore(directory: str, names: list[str]) -> set[str]:
    skip = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
    return {n for n in names if n in skip or n.endswith((".so", ".pyd", ".egg-info"))
            or n == "_compiled_sources.sha256"}


def _copy_tree(dest: Path) -> None:
    for name in ("src", "tests", "bench"):  # tests/conftest.py puts bench/ on sys.path
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dest / name, ignore=_ignore)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


def check_table(mutants: tuple[Mutant, ...]) -> list[str]:
    """Problems with the table against the working tree (empty when it matches)."""
    problems = []
    for m in mutants:
        path = ROOT / m.file
        count = path.read_text().count(m.find) if path.is_file() else 0
        if count != 1:
            elsewhere = [str(f.relative_to(ROOT)) for f in sorted((ROOT / "src").rglob("*.py"))
                         if f != path and m.find in f.read_text()]
            what = (f"snippet found {count} times in {m.file} (must be exactly once)"
                    if path.is_file() else f"{m.file} does not exist")
            hint = f"; the snippet is in {', '.join(elsewhere)}" if elsewhere and not count else ""
            problems.append(f"{m.name}: {what}{hint}: {m.find.strip()!r}")
        for test in m.tests:
            if not (ROOT / test.split("::", 1)[0]).is_file():
                problems.append(f"{m.name}: no test file {test}")
    return problems


def _env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree / "src"), env.get("PYTHONPATH", "")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("RENDR_EXPECT_COMPILED", None)
    return env


def _run_pytest(tree: Path, tests: tuple[str, ...], bound: float,
                stop: bool) -> tuple[int | None, str]:
    """Run the tests in ``tree``; (returncode, output), returncode None on the bound."""
    probe = subprocess.run(
        [sys.executable, "-c", "import rendr; print(rendr.__file__)"], cwd=tree,
        env=_env(tree), capture_output=True, text=True, timeout=60)
    if not probe.stdout.strip().startswith(str(tree)):
        raise SystemExit(f"rendr is not imported from the copy {tree}: "
                         f"{probe.stdout.strip() or probe.stderr.strip()}")
    # a test that hangs fails on its own after half the bound (tests/aio: 3/8 of it)
    cmd = [sys.executable, "-m", "pytest", *(["-x"] if stop else []), "-q", "-rfE",
           "-p", "no:cacheprovider", f"--timeout={max(5, int(bound / 2))}", *tests]
    proc = subprocess.Popen(cmd, cwd=tree, env=_env(tree), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=bound)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the pytest run and anything it started
        out, _ = proc.communicate()
        return None, out


_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


def run_one(mutant: Mutant | None, tests: tuple[str, ...], bound: float,
            stop: bool = True) -> Result:
    name = mutant.name if mutant is not None else "(baseline)"
    with tempfile.TemporaryDirectory(prefix="rendr-mutant-") as tmp:
        tree = Path(tmp)
        _copy_tree(tree)
        if mutant is not None:
            target = tree / mutant.file
            text = target.read_text()
            assert text.count(mutant.find) == 1, mutant.name
            target.write_text(text.replace(mutant.find, mutant.replace))
        t0 = time.monotonic()
        rc, out = _run_pytest(tree, tests, bound, stop)
        took = time.monotonic() - t0
    failed = _FAILED.findall(out)
    if rc is None:
        return Result(name, "timeout", f"no verdict within {bound:g} s", took, out)
    if rc == 0:
        return Result(name, "survived", "-", took, out)
    if rc == 1 and failed:
        more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
        return Result(name, "killed", failed[0] + more, took, out)
    if rc == 1 and "Timeout" in out:  # pytest-timeout ended the run inside a test
        return Result(name, "killed", "pytest-timeout (a test hung)", took, out)
    return Result(name, "error", f"pytest exit status {rc}", took, out)


def print_table(results: list[Result]) -> None:
    print("| mutant | result | killed by | seconds |")
    print("| --- | --- | --- | --- |")
    for r in results:
        print(f"| {r.name} | {r.status} | {r.by} | {r.seconds:.1f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="print the mutants and exit")
    ap.add_argument("--only", action="append", metavar="NAME",
                    help="run only this mutant (repeatable)")
    ap.add_argument("--timeout", type=float, default=120.0, metavar="S",
                    help="bound per mutant run, seconds (default 120)")
    ap.add_argument("--all-tests", action="store_true",
                    help="run every selected test of a mutant (default: stop at the first "
                         "failure) and count the ones that kill it")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the run of the selected tests without a mutant")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="print the pytest output of every run")
    args = ap.parse_args(argv)

    mutants = MUTANTS
    if args.only:
        unknown = set(args.only) - {m.name for m in MUTANTS}
        if unknown:
            ap.error(f"unknown mutant(s): {', '.join(sorted(unknown))}")
        mutants = tuple(m for m in MUTANTS if m.name in args.only)
    if args.list:
        for m in mutants:
            print(f"{m.name}\n    {m.file}: {m.breaks}\n    tests: {' '.join(m.tests)}")
        return 0
    problems = check_table(mutants)
    if problems:
        print("The mutant table does not match the sources (update tools/mutation_check.py):",
              *problems, sep="\n  ", file=sys.stderr)
        return 2

    if not args.no_baseline:
        union = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
        base = run_one(None, union, args.timeout * 2)
        verdict = "pass" if base.status == "survived" else base.status
        print(f"baseline (no mutant, {len(union)} test selections): {verdict} in "
              f"{base.seconds:.1f} s", flush=True)
        if base.status != "survived":
            print(base.output, file=sys.stderr)
            print("the selected tests fail without any mutant: fix them first",
                  file=sys.stderr)
            return 1

    results = []
    for m in mutants:
        r = run_one(m, m.tests, args.timeout, stop=not args.all_tests)
        results.append(r)
        print(f"{m.name}: {r.status} ({r.by}, {r.seconds:.1f} s)", flush=True)
        if args.verbose or r.status == "error":
            print(r.output)
    print()
    print_table(results)
    return 0 if all(r.status == "killed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
