"""Every test stops within a bound, on the default loop and on uvloop.

Each case runs pytest in a subprocess on a deliberately hanging test, with this
project's pytest configuration (pyproject.toml) and, for loopback tests, its
tests/aio/conftest.py, and checks that the run ends soon with the right report."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

try:
    import uvloop  # noqa: F401
    HAVE_UVLOOP = True
except ImportError:  # pragma: no cover - platforms without uvloop
    HAVE_UVLOOP = False


def run_pytest(where: Path, *args: str, bound: float = 30.0) -> tuple[str, float]:
    """pytest in ``where`` (which holds a copy of our pyproject.toml); output, seconds."""
    shutil.copy(ROOT / "pyproject.toml", where / "pyproject.toml")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=where, capture_output=True, text=True, timeout=bound)
    return proc.stdout + proc.stderr, time.monotonic() - t0


@pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop is not installed")
def test_hung_uvloop_run_is_ended_by_the_configured_timeout(tmp_path: Path) -> None:
    """The loop waits in C for an event that never comes: pytest-timeout's signal
    method would never get to run; the configured thread method ends the run."""
    (tmp_path / "test_hang.py").write_text(
        "import asyncio\n"
        "import uvloop\n\n"
        "def test_hang():\n"
        "    async def forever():\n"
        "        await asyncio.get_running_loop().create_future()\n"
        "    uvloop.run(forever())\n")
    out, took = run_pytest(tmp_path, "-o", "timeout=2", "test_hang.py")
    assert "Timeout" in out and "Stack of MainThread" in out, out
    assert took < 30, took


def test_hung_loopback_test_fails_alone_on_each_loop(tmp_path: Path) -> None:
    """A loopback test that awaits forever is cancelled on its loop after 3/4 of its
    timeout and fails with the stack it was stuck in; the run goes on."""
    aio = tmp_path / "aio"
    aio.mkdir()
    (aio / "__init__.py").write_text("")
    shutil.copy(ROOT / "tests" / "aio" / "conftest.py", aio / "conftest.py")
    (aio / "test_hang.py").write_text(
        "import asyncio\n"
        "import pytest\n\n"
        "@pytest.mark.timeout(2)\n"
        "async def test_hang():\n"
        "    await asyncio.get_running_loop().create_future()  # stuck here\n\n"
        "async def test_after():\n"
        "    await asyncio.sleep(0)\n")
    out, took = run_pytest(tmp_path, "-q", "aio")
    loops = 2 if HAVE_UVLOOP else 1
    assert f"{loops} failed, {loops} passed" in out, out
    # Count in the FAILURES section only: whether the short summary repeats the whole
    # message depends on the pytest version and the terminal width.
    failures = out.split("short test summary info")[0]
    assert failures.count("still running after 1.5 s on its event loop") == loops, out
    assert "# stuck here" in out, out
    assert "+ Timeout +" not in out, out  # the run-ending bound was not needed
    assert took < 30, took
