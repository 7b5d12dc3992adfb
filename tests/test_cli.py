"""Tests of the ``rendr`` command-line interface.

The demo runs in a subprocess (``python -m rendr``): it runs its own event loop,
which must not clash with pytest-asyncio's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

import rendr
from rendr.cli import main


def _run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="120", NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "rendr", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("loop", ["--uvloop", "--no-uvloop"])
def test_demo_over_tcp_paths_migrates_and_hashes_match(loop: str) -> None:
    """``--paths 2``: two TCP paths; the active one is reset and the flow migrates."""
    proc = _run_cli("demo", "--paths", "2", "--size-mib", "8", loop, "--timeout", "20")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "killing path #1 (tcp: the relay resets" in out
    assert "path #1 down (cause: reset)" in out
    assert "migration #1 -> #2 (cause: death)" in out
    assert "SHA-256 match: yes" in out
    assert "migration_count: client 1" in out
    assert "mode:            prime" in out
    if loop == "--no-uvloop":
        assert "event loop: asyncio" in out


@pytest.mark.timeout(30)
def test_demo_default_kinds_prints_events_and_no_live_display() -> None:
    """The default demo (tcp, udpflow and quic paths) into a pipe: the event lines
    and the final report, no live display's escape sequences or repeated frames."""
    proc = _run_cli("demo", "--size-mib", "4", "--timeout", "20")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for kind in ("tcp", "udpflow", "quic"):
        assert f"│ {kind}" in out
    assert "killing path #" in out and "down (cause:" in out
    assert "migration #" in out
    assert "SHA-256 match: yes" in out
    assert "\x1b" not in out and "received ━" not in out
    assert "development certificate" not in proc.stderr


def _json_demo(*args: str) -> dict[str, Any]:
    proc = _run_cli("demo", "--size-mib", "4", "--json", "--timeout", "20", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)  # the whole of stdout is one object
    assert doc["ok"] is True
    assert doc["size"] == doc["received"] == 4 * 1024 * 1024
    assert doc["compiled"] is rendr.__compiled__
    assert doc["version"] == rendr.__version__
    sha = doc["sha256"]
    assert sha["match"] is True
    assert len(sha["sent"]) == 64 and sha["sent"] == sha["received"] == sha["echoed"]
    assert doc["killed_path"] is not None and doc["killed_path_down"] is True
    paths = {p["id"]: p for p in doc["paths"]}
    killed = paths[doc["killed_path"]]
    assert killed["state"] == "down" and killed["kind"] == doc["killed_kind"]
    if killed["kind"] == "tcp":
        assert doc["kill_method"] == "reset" and killed["down_cause"] == "reset"
    else:
        assert doc["kill_method"] == "blackhole" and killed["down_cause"] == "timeout"
    assert all(p["listener_address"] for p in paths.values())
    assert sum(p["bytes_sent"] for p in paths.values()) >= doc["size"]
    assert doc["elapsed_s"] > 0 and doc["mb_per_s"] > 0
    assert doc["error"] is None
    return doc


@pytest.mark.timeout(30)
def test_demo_json() -> None:
    """``rendr demo --json``: one JSON object on stdout and nothing else there; three
    paths of different kinds by default; prime mode migrates."""
    doc = _json_demo()
    assert doc["mode"] == "prime" and doc["migrations"]["client"] >= 1
    assert doc["kinds"] == ["tcp", "udpflow", "quic"]
    assert sorted(p["kind"] for p in doc["paths"]) == ["quic", "tcp", "udpflow"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["prime", "race", "bond"])
def test_demo_json_modes(mode: str) -> None:
    """Every mode survives the kill of a path (udpflow and quic here: a blackhole
    noticed by PINGs); in race and bond more than one path carries data."""
    doc = _json_demo("--mode", mode, "--kinds", "udpflow,quic,tcp")
    assert doc["mode"] == mode
    assert doc["kinds"] == ["udpflow", "quic", "tcp"]
    if mode == "prime":
        assert doc["migrations"]["client"] >= 1
    else:
        assert sum(p["bytes_sent"] > 0 for p in doc["paths"]) >= 2


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
    for option in ("--size-mib", "--kinds", "--paths", "--mode", "--kill-at", "--no-uvloop"):
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
    assert main(["demo", "--kinds", "tcp"]) == 2
    assert main(["demo", "--kinds", "tcp,sctp"]) == 2
    assert "sctp" in capsys.readouterr().err
    assert main(["demo", "--kinds", "tcp,quic", "--paths", "2"]) == 2
    assert main(["demo", "--mode", "fastest"]) == 2
    assert main(["nosuchcommand"]) == 2


def test_demo_verdict_is_mode_aware() -> None:
    """prime needs a migration; race and bond need the killed path down (they may not
    migrate at all: every path carries data)."""
    from rendr.demo import DemoResult

    same = {"sent_digest": "a" * 64, "received_digest": "a" * 64, "echoed_digest": "a" * 64}
    assert DemoResult(**same, mode=rendr.Mode.PRIME, client_migrations=1).ok
    assert not DemoResult(**same, mode=rendr.Mode.PRIME).ok
    assert not DemoResult(**same, mode=rendr.Mode.PRIME, client_migrations=1,
                          error="timed out").ok
    # race/bond: no client stats, so the killed path was never seen down
    assert not DemoResult(**same, mode=rendr.Mode.RACE, client_migrations=1, killed_path=1).ok
