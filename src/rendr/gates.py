"""``rendr gate``: run the acceptance gates of ``bench/`` and summarise their verdicts.

The gate scripts live in the source checkout's ``bench/`` folder, which is not
installed with the package: :func:`find_bench_dir` looks for it above rendr's own
``__file__`` and above the current directory (``--bench-dir`` overrides).  Each gate
is one or more scripts (:data:`GATES`), run one after another as subprocesses of the
same interpreter, with the rendr being run first on ``PYTHONPATH`` so that the
scripts test the same code.

Arguments: a script whose ``--help`` offers ``--short`` gets it unless ``--full``;
scripts without it get the short arguments CI gives them (``.ci/run``), and in short
mode each script also gets CI's floors (regression guards for a shared 2-core box,
not the goals: ``--full`` runs the goals).  A script whose ``--help`` offers
``--json PATH`` writes its measurements to a temporary file that is copied into
``--report``.  Anything after ``--`` is passed to every script run.

Verdict of a script: exit status 0 PASS, 77 SKIP (the gate cannot run here: not
root, no network namespaces, ...), anything else FAIL (also a timeout).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EXIT_SKIP = 77
MARKER = "g1_migration_throughput.py"
"""A file every ``bench/`` folder of rendr has: how :func:`find_bench_dir` knows it."""


class GateError(Exception):
    """The gates cannot be run at all (no ``bench/`` found, unknown gate name)."""


@dataclass(frozen=True)
class Step:
    """One script of a gate."""

    label: str
    script: str
    """Path relative to ``bench/``."""
    args: tuple[str, ...] = ()
    """Arguments in both modes (first)."""
    short: tuple[str, ...] = ()
    """Arguments in short mode for a script without ``--short`` (what CI gives it)."""
    ci: tuple[str, ...] = ()
    """CI's floors, added in short mode (``.ci/run``)."""
    full: tuple[str, ...] = ()
    """Arguments with ``--full``."""
    key: str = r"\b(PASS|FAIL|SKIP)"
    """Regular expression of the output lines that carry the gate's figures."""


CHECKS = r"^\s*\[(PASS|FAIL|UNAVAILABLE)"  # the check lines of bench/gatekit's verdicts
GATES: dict[str, tuple[Step, ...]] = {
    "g1": (Step("g1", "g1_migration_throughput.py",
                short=("--size-mib", "256", "--repeat", "3"),
                ci=("--min-ratio", "0.5", "--knob", "records=False"),
                key=r"^G1 (two-process|against|PASS|FAIL)"),),
    "g2": (Step("g2", "g2_echo.py", ci=("--max-p99-ratio", "5"),
                key=CHECKS + r"|^G2 (PASS|FAIL)"),),
    "g3": (Step("g3u", "g3u_packet.py",
                ci=("--min-ratio", "0.35", "--max-p95-ratio", "20", "--max-lost", "200"),
                key=r"^G3u (\(|PASS|FAIL)"),
           Step("g3s", "g3s_udp_stream.py", key=r"^\s*\[|^G3s (PASS|FAIL)|byte-exact"),
           Step("g3-quic", "g3_quic.py",
                ci=("--min-ratio", "0.3", "--max-lost", "2000", "--max-p95-ratio", "10"),
                key=CHECKS + r"|^G3 (PASS|FAIL)")),
    "g4": (Step("g4/g5", "g4_g5_netns.py", short=("--quick",),
                key=r"^failover over|^G[45] (PASS|FAIL)|SKIPPED"),),
    "race": (Step("race", "race_gate.py", ci=("--tolerance", "1.0", "--tolerance-ms", "5"),
                  key=CHECKS + r"|^race gate (PASS|FAIL)"),),
    "bond": (Step("bond", "bond_gate.py",
                  ci=("--min-ratio", "symmetric=1.5", "--min-ratio", "asymmetric=0.75"),
                  key=CHECKS + r"|^bond gate (PASS|FAIL)"),
             Step("bond-udpflow", "bond_gate.py", args=("--transport", "udpflow"),
                  ci=("--min-ratio", "symmetric=1.5", "--min-ratio", "asymmetric=0.75"),
                  key=CHECKS + r"|^bond gate (PASS|FAIL)")),
    "ssh": (Step("ssh", "ssh_netns.py",
                 key=r"^(rendr|Linux MPTCP).*: (longest gap|gap at|\d+/\d+ runs)"
                     r"|^ssh gate (PASS|FAIL|SKIP)|^MPTCP column SKIPPED"),),
    "idle": (Step("idle", "idle_paths.py", short=("--flows", "50"),
                  key=r"^idle paths|^IDLE"),),
}
ALIASES = {"g5": "g4"}
ALL = ("g1", "g2", "g3", "g4", "race", "bond", "ssh", "idle")
NAMES = (*ALL, *ALIASES, "all")


def resolve(names: Sequence[str]) -> list[str]:
    """Gate names (aliases, ``all``) to the gates to run, each once, in the given order."""
    out: list[str] = []
    for name in names:
        name = name.lower()
        if name == "all":
            wanted: Sequence[str] = ALL
        elif name in GATES or name in ALIASES:
            wanted = [ALIASES.get(name, name)]
        else:
            raise GateError(f"unknown gate {name!r} (choose from {', '.join(NAMES)})")
        out += [w for w in wanted if w not in out]
    return out


# --------------------------------------------------------------------------- where


def find_bench_dir(override: str | os.PathLike[str] | None = None,
                   starts: Sequence[Path] | None = None) -> Path:
    """The ``bench/`` folder of the source checkout.

    *override* (``--bench-dir``) must be such a folder.  Otherwise the folders above
    rendr's ``__file__`` and above the current directory (or *starts*) are searched
    for a ``bench/`` holding the gates.
    """
    if override is not None:
        path = Path(override)
        if not (path / MARKER).is_file():
            raise GateError(f"{path} is not rendr's bench/ folder (no {MARKER} in it)")
        return path.resolve()
    if starts is None:
        starts = [Path(__file__).resolve().parent, Path.cwd().resolve()]
    for start in starts:
        for folder in (start, *start.parents):
            if (folder / "bench" / MARKER).is_file():
                return folder / "bench"
    raise GateError("cannot find the bench/ folder of a rendr source checkout above "
                    + " or ".join(str(s) for s in starts)
                    + " (the gates are not installed with the package): give --bench-dir")


# --------------------------------------------------------------------------- running


@dataclass
class Result:
    """What one script run gave."""

    gate: str
    step: str
    script: str
    argv: list[str]
    verdict: str = "FAIL"
    returncode: int | None = None
    seconds: float = 0.0
    key_lines: list[str] = field(default_factory=list)
    output: str = ""
    data: Any = None
    """What the script wrote with ``--json PATH``, if it takes it."""
    error: str = ""


_OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)(?:[ =]([A-Z][A-Z_]*))?")


def script_options(python: str, script: Path, env: dict[str, str]) -> dict[str, str | None]:
    """The long options ``script --help`` lists, each with its metavar (or None)."""
    proc = subprocess.run([python, str(script), "--help"], capture_output=True, text=True,
                          env=env, timeout=120, check=False, cwd=script.parent.parent)
    if proc.returncode != 0:
        raise GateError(f"{script.name} --help failed (exit {proc.returncode}): "
                        f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    opts: dict[str, str | None] = {}
    for m in _OPTION.finditer(proc.stdout):
        opts.setdefault(m.group(1), m.group(2))
    return opts


def child_env() -> dict[str, str]:
    """The environment of the scripts: this rendr first on ``PYTHONPATH``."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parent.parent)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != src]
    env["PYTHONPATH"] = os.pathsep.join([src, *parts])
    return env


def build_argv(step: Step, opts: dict[str, str | None], full: bool,
               extra: Sequence[str], json_path: str | None) -> list[str]:
    args = list(step.args)
    if full:
        args += step.full
    else:
        args += ["--short"] if "--short" in opts else list(step.short)
        args += step.ci
    if json_path is not None:
        args += ["--json", json_path]
    return [*args, *extra]


def run_step(gate: str, step: Step, bench: Path, *, full: bool, extra: Sequence[str],
             timeout: float | None, python: str = sys.executable,
             echo: Callable[[str], None] | None = None) -> Result:
    """Run one script; its output goes to *echo* line by line as it comes."""
    script = bench / step.script
    res = Result(gate=gate, step=step.label, script=step.script, argv=[])
    if not script.is_file():
        res.error = f"{script} not found"
        return res
    env = child_env()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rendr-gate-") as tmp:
        try:
            opts = script_options(python, script, env)
        except (GateError, subprocess.TimeoutExpired) as exc:
            res.error = str(exc)
            res.seconds = time.monotonic() - t0
            return res
        json_path = (os.path.join(tmp, "out.json")
                     if opts.get("--json") is not None else None)
        res.argv = [python, str(script),
                    *build_argv(step, opts, full, extra, json_path)]
        proc = subprocess.Popen(res.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, errors="replace",
                                env=env, cwd=bench.parent)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, kill) if timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        lines: list[str] = []
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                if echo is not None:
                    echo(lines[-1])
            res.returncode = proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        res.seconds = time.monotonic() - t0
        res.output = "\n".join(lines)
        if json_path is not None and os.path.exists(json_path):
            try:
                with open(json_path, encoding="utf-8") as f:
                    res.data = json.load(f)
            except ValueError as exc:
                res.error = f"--json output unreadable: {exc}"
    if timed_out.is_set():
        res.error = f"timed out after {timeout:.0f} s"
    res.verdict = ("PASS" if res.returncode == 0 and not timed_out.is_set()
                   else "SKIP" if res.returncode == EXIT_SKIP else "FAIL")
    pattern = re.compile(step.key)
    res.key_lines = [ln.strip() for ln in lines if pattern.search(ln)][-8:]
    if not res.key_lines:
        res.key_lines = [ln.strip() for ln in lines if ln.strip()][-2:]
    return res


def run_gates(names: Sequence[str], bench: Path, *, full: bool = False,
              extra: Sequence[str] = (), timeout: float | None = None,
              echo: Callable[[str], None] | None = None,
              on_start: Callable[[str, Step], None] | None = None,
              on_done: Callable[[Result], None] | None = None) -> list[Result]:
    """Run the named gates' scripts one after another."""
    results: list[Result] = []
    for gate in resolve(names):
        for step in GATES[gate]:
            if on_start is not None:
                on_start(gate, step)
            res = run_step(gate, step, bench, full=full, extra=extra, timeout=timeout,
                           echo=echo)
            results.append(res)
            if on_done is not None:
                on_done(res)
    return results


def passed(results: Sequence[Result]) -> bool:
    """No script failed (SKIPs do not fail)."""
    return all(r.verdict != "FAIL" for r in results)


# --------------------------------------------------------------------------- reports


def report_json(results: Sequence[Result], *, full: bool, bench: Path) -> dict[str, Any]:
    import rendr

    return {"rendr": rendr.__version__, "compiled": bool(rendr.__compiled__),
            "python": sys.version.split()[0], "mode": "full" if full else "short",
            "bench_dir": str(bench), "passed": passed(results),
            "results": [asdict(r) for r in results]}


def report_markdown(results: Sequence[Result], *, full: bool) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", "<br>")

    out = [f"Gates ({'full' if full else 'short'}): "
           f"{'PASS' if passed(results) else 'FAIL'}", "",
           "| gate | script | verdict | duration | figures |", "|---|---|---|---|---|"]
    for r in results:
        figures = "<br>".join(cell(x) for x in ([r.error] if r.error else []) + r.key_lines)
        out.append(f"| {r.step} | `{r.script}` | **{r.verdict}** | {r.seconds:.1f} s "
                   f"| {figures} |")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- command


def _table(results: Sequence[Result], full: bool) -> Any:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    colour = {"PASS": "green", "FAIL": "bold red", "SKIP": "yellow"}
    table = Table(title=f"rendr gates ({'full' if full else 'short'})", box=box.SIMPLE_HEAD,
                  show_lines=True)
    for col in ("gate", "script", "verdict", "duration", "key figures"):
        table.add_column(col, no_wrap=col != "key figures",
                         justify="right" if col == "duration" else "left")
    for r in results:
        figures = "\n".join(escape(x) for x in ([r.error] if r.error else []) + r.key_lines)
        table.add_row(r.step, r.script, f"[{colour[r.verdict]}]{r.verdict}[/]",
                      f"{r.seconds:.1f} s", figures)
    return table


def _command() -> Any:
    import shlex

    import click
    from rich.console import Console
    from rich.markup import escape

    @click.command(name="gate")
    @click.argument("names", nargs=-1, required=True, metavar=f"{{{'|'.join(NAMES)}}}...")
    @click.option("--full", is_flag=True,
                  help="The gates' own goals and sizes (long); default: CI's short runs.")
    @click.option("--bench-dir", type=click.Path(file_okay=False), metavar="DIR",
                  help="The checkout's bench/ folder (default: found above rendr or the "
                       "current directory).")
    @click.option("--script-args", "script_args", default="", metavar="ARGS",
                  help="Extra arguments for every script run (shell-quoted string).")
    @click.option("--timeout", type=click.FloatRange(min=1), metavar="SECONDS",
                  help="Per script (default: 1800 short, none with --full).")
    @click.option("--report", "report_path", type=click.Path(dir_okay=False), metavar="PATH",
                  help="Write verdicts, figures, output and the scripts' --json data here.")
    @click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False),
                  metavar="PATH", help="Write the summary table as Markdown here.")
    @click.option("-q", "--quiet", is_flag=True, help="Do not echo the scripts' output.")
    def gate(names: tuple[str, ...], full: bool, bench_dir: str | None, script_args: str,
             timeout: float | None, report_path: str | None, markdown_path: str | None,
             quiet: bool) -> int:
        """Run acceptance gates from the checkout's bench/ (g1, g2, g3, g4/g5, race,
        bond, ssh, idle, or all) and summarise their verdicts.

        Each script runs with this interpreter and this rendr; exit status 0 is PASS,
        77 SKIP (cannot run here), anything else FAIL.  Exit status: 0 when nothing
        failed."""
        try:
            wanted = resolve(names)
            bench = find_bench_dir(bench_dir)
        except GateError as exc:
            raise click.ClickException(str(exc)) from None
        out = Console(width=None if sys.stdout.isatty() else 160)
        err = Console(stderr=True, highlight=False)
        if timeout is None and not full:
            timeout = 1800.0

        def started(gate: str, step: Step) -> None:
            err.print(f"[bold]== {escape(step.label)}[/]: {escape(step.script)}")

        def done(res: Result) -> None:
            err.print(f"== {escape(res.step)}: {res.verdict} in {res.seconds:.1f} s"
                      + (f" ({escape(res.error)})" if res.error else ""))

        results = run_gates(
            wanted, bench, full=full, extra=shlex.split(script_args), timeout=timeout,
            echo=None if quiet else (lambda line: err.print(escape(line), style="dim")),
            on_start=started, on_done=done)
        out.print(_table(results, full))
        ok = passed(results)
        out.print(f"gates: {'PASS' if ok else 'FAIL'} "
                  f"({sum(r.verdict == 'PASS' for r in results)} passed, "
                  f"{sum(r.verdict == 'FAIL' for r in results)} failed, "
                  f"{sum(r.verdict == 'SKIP' for r in results)} skipped)")
        if report_path:
            Path(report_path).write_text(json.dumps(report_json(results, full=full,
                                                                bench=bench), indent=1))
        if markdown_path:
            Path(markdown_path).write_text(report_markdown(results, full=full))
        return 0 if ok else 1

    return gate


gate_command = _command()
"""The ``rendr gate`` click command (registered by :mod:`rendr.cli`)."""
