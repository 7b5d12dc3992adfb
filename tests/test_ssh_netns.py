"""OpenSSH through ``rendr connect``/``rendr serve`` on two real paths, next to Linux
MPTCP: runs ``bench/ssh_netns.py --short`` (the gate of issue 11) as CI does and
checks its verdict and figures.

Needs root, ``ip netns``, nftables, sshd and ssh (skipped with the reason otherwise);
the MPTCP column is checked only when ``mptcpize`` and the kernel's MPTCP are there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import rendr

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.netns
def test_ssh_session_and_transfer_survive_a_drop_of_the_active_path(tmp_path: Path) -> None:
    import ssh_netns  # bench/ssh_netns.py, importable through tests/conftest.py

    reason = ssh_netns.unavailable()
    if reason is not None:
        pytest.skip(reason)
    mptcp_reason = ssh_netns.mptcp_unavailable()
    out = tmp_path / "ssh.json"
    env = dict(os.environ)
    src = str(Path(rendr.__file__).resolve().parents[1])  # the rendr under test
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run(
        [sys.executable, str(BENCH / "ssh_netns.py"), "--short", "--json", str(out)],
        capture_output=True, text=True, timeout=110, env=env, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["passed"] is True
    runs = {r["stack"]: r for r in doc["runs"]}
    for name in ["rendr"] + ([] if mptcp_reason else ["mptcp"]):
        r = runs[name]
        assert r["ok"], (name, r["problems"], proc.stdout)
        assert (r["session_exit"], r["transfer_exit"]) == (0, 0)
        assert r["lines_in_order"] and r["lines_received"] == doc["lines"]
        assert r["sha_ok"] and len(r["sha256"]) == 64
        assert 0 < r["drop_at_line"] < doc["lines"]
        assert r["longest_gap"] is not None
    if mptcp_reason:
        assert doc["mptcp_skipped"] == mptcp_reason
    else:
        assert runs["mptcp"]["subflows_before_drop"] >= 4  # a subflow on each path, twice
    assert "longest gap between lines" in proc.stdout
