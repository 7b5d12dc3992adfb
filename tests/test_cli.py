"""Tests of the ``rendr`` command-line interface.

The demo runs in a subprocess (``python -m rendr``): it runs its own event loop,
which must not clash with pytest-asyncio's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import rendr
from rendr.cli import main


def _run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="120", NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "rendr", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("loop", ["--uvloop", "--no-uvloop"])
def test_demo_migrates_and_hashes_match(loop: str) -> None:
    proc = _run_cli("demo", "--size-mib", "8", loop, "--timeout", "20")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "killing path #1" in out
    assert "path #1 down (cause: reset)" in out
    assert "migration #1 -> #2 (cause: death)" in out
    assert "SHA-256 match: yes" in out
    assert "migration_count: client 1" in out
    if loop == "--no-uvloop":
        assert "event loop: asyncio" in out


@pytest.mark.timeout(30)
def test_demo_json() -> None:
    """``rendr demo --json``: one JSON object on stdout and nothing else there."""
    proc = _run_cli("demo", "--size-mib", "4", "--json", "--timeout", "20")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)  # the whole of stdout is one object
    assert doc["ok"] is True
    assert doc["size"] == 4 * 1024 * 1024
    assert doc["mode"] == "prime"
    assert doc["compiled"] is rendr.__compiled__
    assert doc["version"] == rendr.__version__
    sha = doc["sha256"]
    assert sha["match"] is True
    assert len(sha["sent"]) == 64 and sha["sent"] == sha["received"] == sha["echoed"]
    assert doc["migrations"]["client"] >= 1
    assert doc["killed_path"] is not None
    paths = {p["id"]: p for p in doc["paths"]}
    assert len(paths) == 2 and {p["kind"] for p in paths.values()} == {"tcp"}
    killed = paths[doc["killed_path"]]
    assert killed["state"] == "down" and killed["down_cause"] == "reset"
    assert all(p["listener_address"] for p in paths.values())
    assert sum(p["bytes_sent"] for p in paths.values()) >= doc["size"]
    assert doc["elapsed_s"] > 0 and doc["mb_per_s"] > 0
    assert doc["error"] is None


def test_demo_json_hash_mismatch_exits_non_zero(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A transfer whose hashes differ is a failure, in JSON as in the tables."""
    import rendr.cli
    from rendr.demo import DemoResult

    async def fake_demo(size: int, *args: object, **kwargs: object) -> DemoResult:
        return DemoResult(sent_digest="a" * 64, received_digest="b" * 64,
                          echoed_digest="b" * 64, size=size, elapsed=0.5, killed_path=1,
                          client_migrations=1, server_migrations=1)

    monkeypatch.setattr(rendr.cli, "run_demo", fake_demo)
    assert main(["demo", "--size-mib", "1", "--json", "--no-uvloop"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["sha256"]["match"] is False
    assert doc["migrations"]["client"] == 1 and doc["paths"] == []


def test_help() -> None:
    assert main(["--help"]) == 0
    assert main(["demo", "--help"]) == 0


def test_help_output(capsys: pytest.CaptureFixture[str]) -> None:
    main(["demo", "--help"])
    out = capsys.readouterr().out
    for option in ("--size-mib", "--paths", "--kill-at", "--no-uvloop"):
        assert option in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert rendr.__version__ in capsys.readouterr().out


def test_version_subprocess() -> None:
    proc = _run_cli("--version")
    assert proc.returncode == 0
    engine = "compiled engine" if rendr.__compiled__ else "pure-Python engine"
    assert proc.stdout.strip() == f"rendr, version {rendr.__version__} ({engine})"


def test_bad_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--paths", "1"]) == 2
    assert "--paths" in capsys.readouterr().err
    assert main(["demo", "--kill-at", "1.0"]) == 2
    assert main(["nosuchcommand"]) == 2
