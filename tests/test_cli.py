"""Tests of the ``rendr`` command-line interface.

The demo runs in a subprocess (``python -m rendr``): it runs its own event loop,
which must not clash with pytest-asyncio's.
"""

from __future__ import annotations

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
