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
from typing import Any

import pytest

import rendr

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _gate(tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    import ssh_netns  # bench/ssh_netns.py, importable through tests/conftest.py

    reason = ssh_netns.unavailable()
    if reason is not None:
        pytest.skip(reason)
    out = tmp_path / "ssh.json"
    env = dict(os.environ)
    src = str(Path(rendr.__file__).resolve().parents[1])  # the rendr under test
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "ssh_netns.py"), "--short", "--json", str(out), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        stdout, stderr = proc.communicate(timeout=100)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the gate removes its namespaces, processes and keys
        stdout, stderr = proc.communicate(timeout=15)
        pytest.fail(f"the ssh gate took more than 100 s: {stdout}{stderr}")
    assert proc.returncode == 0, stdout + stderr
    doc: dict[str, Any] = json.loads(out.read_text())
    assert doc["passed"] is True
    assert "longest gap between lines" in stdout
    return doc, stdout


def _check(doc: dict[str, Any], name: str, stdout: str) -> None:
    (r,) = [r for r in doc["runs"] if r["stack"] == name]
    assert r["ok"], (name, r["problems"], stdout)
    assert (r["session_exit"], r["transfer_exit"]) == (0, 0)
    assert r["lines_in_order"] and r["lines_received"] == doc["lines"]
    assert r["sha_ok"] and len(r["sha256"]) == 64
    assert 0 < r["drop_at_line"] < doc["lines"]
    assert r["longest_gap"] is not None and r["drop_gap"] is not None


@pytest.mark.netns
def test_ssh_through_rendr_local_port_and_mptcp_survive_a_drop(tmp_path: Path) -> None:
    """``rendr connect --local``, and the same under Linux MPTCP when it is there."""
    import ssh_netns

    mptcp_reason = ssh_netns.mptcp_unavailable()
    doc, stdout = _gate(tmp_path)
    _check(doc, "rendr", stdout)
    if mptcp_reason:
        assert doc["mptcp_skipped"] == mptcp_reason
    else:
        _check(doc, "mptcp", stdout)
        (m,) = [r for r in doc["runs"] if r["stack"] == "mptcp"]
        assert m["subflows_before_drop"] >= 4  # a subflow on each path, for both ssh


@pytest.mark.netns
def test_ssh_through_rendr_as_proxycommand_survives_a_drop(tmp_path: Path) -> None:
    """``rendr connect --stdio`` as ssh's ProxyCommand (rendr only)."""
    doc, stdout = _gate(tmp_path, "--via", "stdio", "--no-mptcp")
    assert doc["via"] == "stdio" and doc["mptcp_skipped"] == "--no-mptcp"
    _check(doc, "rendr", stdout)
