"""Every script in examples/ runs end to end on loopback (so they cannot rot): each is
a subprocess that must exit 0 and print ``OK`` as its last line within its time limit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_the_examples_are_there() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"echo_migration.py", "port_forward.py", "blocking_socket.py",
            "packet_mode.py"} <= names


@pytest.mark.timeout(90)
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(script: Path) -> None:
    env = dict(os.environ)
    # this checkout's rendr, also for the `python -m rendr` the port forwarder starts
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    output = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, output
    assert proc.stdout.strip().splitlines()[-1] == "OK", output
