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

from typing import Any

import pytest

import rendr
from g4g5.analysis import (
    analyze_echo,
    first_migration_after,
    longest_stall,
    migration_causes,
    path_down_causes,
)
from g4g5.params import KIB, MIB, quick_params
from g4g5.probes import host_of
from g4g5.record import BulkResult, Drop, EchoResult, Recovery, RunResult
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


def test_longest_stall_counts_only_before_the_end() -> None:
    samples = [(0.0, 0), (0.1, 10), (0.2, 10), (0.5, 10), (0.6, 20), (0.7, 30), (2.0, 30)]
    assert longest_stall(samples, total=30) == pytest.approx(0.4)  # 10 bytes from 0.1 to 0.5
    assert longest_stall([], total=30) == 0.0


def test_engine_events_relative_to_the_drop() -> None:
    kind = rendr.EventKind
    events = [
        (9.0, "bulk", rendr.Event(kind=kind.MIGRATION, at=0.0, old_path=1, new_path=2,
                                  cause="explicit")),
        (10.7, "echo", rendr.Event(kind=kind.PATH_DOWN, at=0.0, path_id=1, cause="timeout")),
        (10.702, "echo", rendr.Event(kind=kind.MIGRATION, at=0.0, old_path=1, new_path=2,
                                     cause="death")),
    ]
    assert first_migration_after(events, "echo", 10.0) == pytest.approx(0.702)
    assert first_migration_after(events, "bulk", 10.0) is None
    assert path_down_causes(events, 10.0) == ["echo:1:timeout@+700ms"]
    assert migration_causes(events, 10.0) == ["bulk:1->2:explicit@-1000ms",
                                              "echo:1->2:death@+702ms"]
    assert migration_causes(events, None) == ["bulk:1->2:explicit", "echo:1->2:death"]


def _passing_result() -> RunResult:
    r = RunResult(drop=Drop(index=0), echo=EchoResult(ok=True, active_index_after=1),
                  bulk=BulkResult(in_flight_at_drop=True, sha_ok=True),
                  g5=Recovery(ran=True, checks={"a": True, "b": True}))
    r.echo.timing = analyze_echo(*_echo_trace(1.0, 1.6), t0=1.0, t1=1.015)
    return r


@pytest.mark.parametrize(
    ("change", "g4_ok", "g5_ok"),
    [
        ({}, True, True),
        ({"bulk.sha_ok": False}, False, True),
        ({"echo.ok": False}, False, True),
        ({"bulk.in_flight_at_drop": False}, False, True),
        ({"echo.active_index_after": 0}, False, True),
        ({"drop.index": None}, False, True),
        ({"errors": ["echo-reader: ConnAborted"]}, False, False),
        ({"g5.ran": False}, True, False),
        ({"g5.checks": {"a": True, "recv_dups unchanged": False}}, True, False),
    ],
)
def test_verdicts(change: dict[str, Any], g4_ok: bool, g5_ok: bool) -> None:
    r = _passing_result()
    for path, value in change.items():  # "group.field" or a field of the run itself
        *group, name = path.split(".")
        setattr(getattr(r, group[0]) if group else r, name, value)
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
    r.echo.timing = analyze_echo(sent, recv, t0=1.0, t1=1.015)
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
    assert r.drop.index is not None, report
    assert r.bulk.in_flight_at_drop, report
    assert r.bulk.received_at_drop < p.bulk_bytes, report
    # ... the engine noticed (liveness timeout) and failed over on both connections
    assert any(c.startswith("echo:") and ":timeout" in c for c in r.path_down_causes), report
    assert any(c.startswith("bulk:") and ":timeout" in c for c in r.path_down_causes), report
    assert r.echo.active_index_after is not None, report
    assert r.echo.active_index_after != r.drop.index, report
    # ... echo answers resumed within the limit
    assert r.echo.timing is not None and r.failover is not None, report
    assert 0.0 < r.failover <= 5.0, report
    # ... and every echo answer came back, correct and in order
    assert r.echo.ok, report
    assert r.echo.sent == r.echo.received > 100, report
    # ... every bulk byte arrived: same SHA-256 on both ends, right length
    assert r.bulk.sha_ok, report
    assert r.bulk.sha_server == r.bulk.sha_expected, report
    assert r.bulk.received == p.bulk_bytes, report
    assert r.g4_pass, report

    # G5: the dialer re-dialed the recovered path on its own
    assert r.g5.ran, report
    assert r.g5.redial_s is not None and r.g5.redial_s <= p.redial_limit, report
    # ... add_path over the recovered address gave a new path, migrate made it active
    assert r.g5.added_path_id is not None, report
    assert r.g5.added_path_id not in (r.g5.redial_path_id, r.echo.active_after), report
    assert host_of(r.g5.added_remote) == r.drop.addr, report
    assert r.g5.active_client == r.g5.added_path_id, report
    assert r.g5.active_server == r.g5.added_path_id, report
    # ... 256 KiB came back byte-exact, over that path
    assert r.g5.echo_size == 256 * KIB and r.g5.echo_exact, report
    assert r.g5.path_sent >= 256 * KIB, report
    assert r.g5.path_received >= 256 * KIB, report
    assert r.g5.server_path_received >= 256 * KIB, report
    # ... without duplicates or reordering during the clean migration
    assert r.g5.dups_client[0] == r.g5.dups_client[1], report
    assert r.g5.dups_server[0] == r.g5.dups_server[1], report
    assert r.g5.hwm_client[0] == r.g5.hwm_client[1], report
    assert r.g5.hwm_server[0] == r.g5.hwm_server[1], report
    # ... and a migration back to the re-dialed path with 256 KiB in flight sends
    # nothing twice and stays byte-exact
    assert r.g5.load.inflight > 0, report
    assert r.g5.load.exact, report
    assert r.g5.load.dups == (0, 0), report
    assert r.g5_pass, report
