"""G4/G5 on a real network: silent path loss under load, then path recovery.

Runs the scenario of ``bench/g4_g5_netns.py`` in-process in a short form (the
scenario code lives in the package ``bench/g4g5``, importable as ``g4g5``: see
``tests/conftest.py``): two rendr connections (echo every 10 ms + a shaped bulk
transfer) over two veth paths between two network namespaces; the active path is
black-holed with nftables mid-transfer, later restored, re-added explicitly and
migrated to.

The netns tests need root, iproute2 and nftables and are skipped otherwise; the
tests of the measurement and verdict logic run everywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from g4g5.analysis import analyze_echo
from g4g5.params import KIB, MIB, quick_params
from g4g5.probes import host_of
from g4g5.record import RunResult
from g4g5.report import report_run
from g4g5.run import run_in_netns
from g4g5.traffic import ECHO_SIZE, echo_message
from rendr.testing.netns import unavailable_reason

# --------------------------------------------------------------------------- pure logic


def _echo_trace(drop_at: float, resume_at: float, rtt: float = 0.002,
                end: float = 3.0) -> tuple[list[float], list[float | None]]:
    """Requests every 10 ms; answers take ``rtt``, except that nothing is answered
    between ``drop_at`` and ``resume_at``, when everything pending arrives at once."""
    sent: list[float] = []
    recv: list[float | None] = []
    for i in range(int(end * 100)):
        t = i / 100
        sent.append(t)
        answer = t + rtt
        if answer >= drop_at:
            answer = max(answer, resume_at)
        recv.append(answer)
    return sent, recv


def test_analyze_echo_measures_from_drop_to_first_fresh_answer() -> None:
    sent, recv = _echo_trace(drop_at=1.0, resume_at=1.7)
    a = analyze_echo(sent, recv, t0=1.0, t1=1.015)
    assert a.failover == pytest.approx(0.7)  # the request sent at 1.02, answered at 1.7
    assert a.first_any_after == pytest.approx(0.7)
    assert a.stuck == 2  # sent at 1.00 and 1.01, before the drop completed
    assert a.baseline_p50 == pytest.approx(0.002)
    assert a.baseline_p99 == pytest.approx(0.002)
    assert a.around_max == pytest.approx(0.7)  # the request sent at 1.00
    assert a.around_p50 == pytest.approx(0.002)
    assert a.overall_max == pytest.approx(0.7)


def test_analyze_echo_ignores_stale_answers_after_the_drop() -> None:
    # answers to pre-drop requests trickle in after t1, but no request sent after the
    # drop is ever answered: that is no recovery
    sent = [0.00, 0.01, 0.02, 0.03, 0.04]
    recv: list[float | None] = [0.002, 0.012, 0.05, None, None]
    a = analyze_echo(sent, recv, t0=0.015, t1=0.025)
    assert a.failover is None
    assert a.first_any_after == pytest.approx(0.035)
    assert a.stuck == 1
    # a fresh answer is what counts, however late
    recv[3] = 0.9
    recv[4] = 0.9
    a = analyze_echo(sent, recv, t0=0.015, t1=0.025)
    assert a.failover == pytest.approx(0.885)


def test_echo_messages_differ_and_are_checkable() -> None:
    m0, m1 = echo_message(0), echo_message(1)
    assert len(m0) == len(m1) == ECHO_SIZE
    assert m0 != m1 and m0[8:] != m1[8:]
    assert int.from_bytes(m1[:8], "big") == 1


def _passing_result() -> RunResult:
    r = RunResult(drop_index=0, bulk_in_flight_at_drop=True, echo_ok=True, sha_ok=True,
                  echo_active_index_after=1, g5_ran=True, g5_checks={"a": True, "b": True})
    r.echo = analyze_echo(*_echo_trace(1.0, 1.6), t0=1.0, t1=1.015)
    return r


@pytest.mark.parametrize(
    ("change", "g4_ok", "g5_ok"),
    [
        ({}, True, True),
        ({"sha_ok": False}, False, True),
        ({"echo_ok": False}, False, True),
        ({"bulk_in_flight_at_drop": False}, False, True),
        ({"echo_active_index_after": 0}, False, True),
        ({"drop_index": None}, False, True),
        ({"errors": ["echo-reader: ConnAborted"]}, False, False),
        ({"g5_ran": False}, True, False),
        ({"g5_checks": {"a": True, "recv_dups unchanged": False}}, True, False),
    ],
)
def test_verdicts(change: dict[str, Any], g4_ok: bool, g5_ok: bool) -> None:
    r = dataclasses.replace(_passing_result(), **change)
    assert r.g4_pass is g4_ok
    assert r.g5_pass is g5_ok


@pytest.mark.parametrize(("resume", "ok"), [(1.6, True), (6.5, False), (None, False)])
def test_failover_limit_verdict(resume: float | None, ok: bool) -> None:
    r = _passing_result()
    if resume is None:
        sent, recv = _echo_trace(1.0, 1e9, end=3.0)
        recv = [x if x is not None and x < 1e8 else None for x in recv]
    else:
        sent, recv = _echo_trace(1.0, resume, end=max(3.0, resume + 1))
    r.echo = analyze_echo(sent, recv, t0=1.0, t1=1.015)
    assert r.g4_pass is ok


# --------------------------------------------------------------------------- real network


@pytest.fixture
def netns_ok() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def _loops() -> list[object]:
    loops: list[object] = ["asyncio"]
    try:
        import uvloop  # noqa: F401
    except ImportError:
        loops.append(pytest.param("uvloop", marks=pytest.mark.skip("uvloop not installed")))
    else:
        loops.append("uvloop")
    return loops


@pytest.mark.netns
@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop", _loops())
def test_g4_g5_failover_and_recovery(netns_ok: None, loop: str) -> None:
    p = quick_params(bulk_bytes=32 * MIB, rate="100mbit", settle_after_recovery=0.5,
                     recovery_wait=10.0, bulk_timeout=20.0, redial_limit=12.0)
    r = run_in_netns(p, use_uvloop=(loop == "uvloop"))
    lines: list[str] = []
    report_run(1, r, lines.append)
    report = "\n".join(lines)

    # no exception surfaced to the application, nothing hung
    assert r.errors == [], report
    # G4: the active path was dropped while the bulk transfer was in flight
    assert r.drop_index is not None, report
    assert r.bulk_in_flight_at_drop, report
    assert r.bulk_received_at_drop < p.bulk_bytes, report
    # ... the engine noticed (liveness timeout) and failed over on both connections
    assert any(c.startswith("echo:") and ":timeout" in c for c in r.path_down_causes), report
    assert any(c.startswith("bulk:") and ":timeout" in c for c in r.path_down_causes), report
    assert r.echo_active_index_after is not None, report
    assert r.echo_active_index_after != r.drop_index, report
    # ... echo answers resumed within the limit
    assert r.echo is not None and r.failover is not None, report
    assert 0.0 < r.failover <= 5.0, report
    # ... and every echo answer came back, correct and in order
    assert r.echo_ok, report
    assert r.echo_sent == r.echo_received > 100, report
    # ... every bulk byte arrived: same SHA-256 on both ends, right length
    assert r.sha_ok, report
    assert r.sha_server == r.sha_expected, report
    assert r.bulk_received == p.bulk_bytes, report
    assert r.g4_pass, report

    # G5: the dialer re-dialed the recovered path on its own
    assert r.g5_ran, report
    assert r.redial_s is not None and r.redial_s <= p.redial_limit, report
    # ... add_path over the recovered address gave a new path, migrate made it active
    assert r.added_path_id is not None, report
    assert r.added_path_id not in (r.redial_path_id, r.echo_active_after), report
    assert host_of(r.added_remote) == r.drop_addr, report
    assert r.g5_active_client == r.added_path_id, report
    assert r.g5_active_server == r.added_path_id, report
    # ... 256 KiB came back byte-exact, over that path
    assert r.g5_bytes == 256 * KIB and r.g5_echo_exact, report
    assert r.g5_path_sent >= 256 * KIB, report
    assert r.g5_path_received >= 256 * KIB, report
    assert r.g5_server_path_received >= 256 * KIB, report
    # ... without duplicates or reordering during the clean migration
    assert r.g5_dups_client[0] == r.g5_dups_client[1], report
    assert r.g5_dups_server[0] == r.g5_dups_server[1], report
    assert r.g5_hwm_client[0] == r.g5_hwm_client[1], report
    assert r.g5_hwm_server[0] == r.g5_hwm_server[1], report
    # ... and a migration back to the re-dialed path with 256 KiB in flight sends
    # nothing twice and stays byte-exact
    assert r.g5_load_inflight > 0, report
    assert r.g5_load_exact, report
    assert r.g5_load_dups == (0, 0), report
    assert r.g5_pass, report
