"""``rendr gate``: the bench/ gates run as subprocesses, their verdicts summarised.

The real argument plumbing runs against the quickest real gate (``bench/idle_paths.py``,
``idle``), once passing and once with a floor it cannot meet; the SKIP verdict and the
``--short``/``--json`` plumbing run against a gate script in a scratch bench/ folder.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from rendr.cli import main
from rendr.gates import ALL, MARKER, GateError, find_bench_dir, resolve

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _run(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str
         ) -> tuple[int, dict[str, Any], str, str]:
    report, md = tmp_path / "report.json", tmp_path / "report.md"
    rc = main(["gate", *args, "-q", "--report", str(report), "--markdown", str(md)])
    out = capsys.readouterr().out
    return rc, json.loads(report.read_text()), md.read_text(), out


def test_idle_gate_passes_with_ci_arguments_and_extra_ones(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, doc, md, out = _run(capsys, tmp_path, "idle", "--bench-dir", str(BENCH),
                            "--script-args", "--flows 5 --max-per-path-kib 100000")
    assert rc == 0, out
    assert doc["passed"] is True and doc["mode"] == "short"
    (res,) = doc["results"]
    assert res["verdict"] == "PASS" and res["returncode"] == 0
    assert res["script"] == "idle_paths.py"
    assert res["argv"][2:] == ["--flows", "50", "--flows", "5", "--max-per-path-kib", "100000"]
    assert "IDLE PASS" in res["key_lines"]
    assert any(x.startswith("idle paths (") and "5 flows x 2 paths" in x
               for x in res["key_lines"])
    assert "idle_paths.py" in out and "PASS" in out and "1 passed, 0 failed" in out
    assert "| idle | `idle_paths.py` | **PASS** |" in md


def test_idle_gate_fails_when_its_floor_is_not_met(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, doc, md, out = _run(capsys, tmp_path, "idle", "--bench-dir", str(BENCH),
                            "--script-args", "--flows 5 --max-per-path-kib 0")
    assert rc == 1
    (res,) = doc["results"]
    assert (res["verdict"], res["returncode"]) == ("FAIL", 1)
    assert "IDLE FAIL" in res["key_lines"]
    assert doc["passed"] is False and "**FAIL**" in md and "0 passed, 1 failed" in out


def test_short_json_and_skip_plumbing(capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / MARKER).write_text("")
    (bench / "ssh_netns.py").write_text(textwrap.dedent("""\
        import argparse, json, sys
        p = argparse.ArgumentParser()
        p.add_argument("--short", action="store_true")
        p.add_argument("--json", metavar="PATH")
        a = p.parse_args()
        json.dump({"short": a.short}, open(a.json, "w"))
        print("ssh gate SKIPPED: not here")
        sys.exit(77)
        """))
    rc, doc, _, out = _run(capsys, tmp_path, "ssh", "--bench-dir", str(bench))
    assert rc == 0  # a SKIP does not fail
    (res,) = doc["results"]
    assert res["verdict"] == "SKIP" and res["data"] == {"short": True}
    assert res["argv"][2] == "--short" and res["argv"][3] == "--json"
    assert res["key_lines"] == ["ssh gate SKIPPED: not here"]
    assert "0 failed, 1 skipped" in out
    # --full: no --short; a gate whose script is missing fails with the reason
    rc, doc, _, _ = _run(capsys, tmp_path, "ssh", "idle", "--full", "--bench-dir", str(bench))
    assert rc == 1
    ssh, idle = doc["results"]
    assert ssh["data"] == {"short": False} and "--short" not in ssh["argv"]
    assert idle["verdict"] == "FAIL" and "idle_paths.py not found" in idle["error"]


def test_bench_not_found_is_one_line(capsys: pytest.CaptureFixture[str],
                                     tmp_path: Path) -> None:
    assert main(["gate", "idle", "--bench-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not rendr's bench/ folder" in err
    with pytest.raises(GateError, match="give --bench-dir"):
        find_bench_dir(starts=[tmp_path])
    assert find_bench_dir(starts=[BENCH / "g4g5"]) == BENCH
    assert main(["gate", "g9"]) == 1
    assert "unknown gate 'g9'" in capsys.readouterr().err


def test_names() -> None:
    assert resolve(["g5", "g4", "ssh"]) == ["g4", "ssh"]
    assert resolve(["idle", "all"]) == ["idle", *[g for g in ALL if g != "idle"]]


def test_arguments_read_from_the_real_scripts_help() -> None:
    """--short where a script's argparse has it, else CI's arguments; --json PATH where
    it takes one; a step's own arguments in both modes."""
    import sys

    from rendr.gates import GATES, build_argv, child_env, script_options

    env = child_env()
    argv = {}
    for gate in ("g1", "bond"):
        for step in GATES[gate]:
            opts = script_options(sys.executable, BENCH / step.script, env)
            json_path = "out.json" if opts.get("--json") is not None else None
            argv[step.label] = (build_argv(step, opts, False, (), json_path),
                                build_argv(step, opts, True, (), None))
    short, full = argv["g1"]
    assert "--short" not in short and short[:4] == ["--size-mib", "256", "--repeat", "3"]
    assert short[-2:] == ["--json", "out.json"] and full == []
    short, full = argv["bond-udpflow"]
    assert short[:3] == ["--transport", "udpflow", "--short"]
    assert full == ["--transport", "udpflow"]
    assert argv["bond"][0][0] == "--short" and "--transport" not in argv["bond"][0]
