"""NewReno (RFC 9002 7 / appendix B) and the Pacer (7.7), rule by rule, plus a
hypothesis check of NewReno's invariants under any sequence of events."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rendr.core.congestion import CongestionController, NewReno, Pacer
from rendr.core.path import RttEstimator

MDS = 1200


def test_windows() -> None:
    cc = NewReno(MDS)
    assert cc.cwnd == cc.initial_window == 10 * MDS
    assert cc.min_window == 2 * MDS
    assert cc.ssthresh is None and cc.in_slow_start
    assert NewReno(1500).cwnd == 15_000
    assert NewReno(MDS, initial_window=MDS).cwnd == 2 * MDS  # never below the minimum
    with pytest.raises(ValueError):
        NewReno(0)


def test_room() -> None:
    cc = NewReno(MDS)
    assert cc.room(0) == 10 * MDS
    assert cc.room(4 * MDS) == 6 * MDS
    assert cc.room(11 * MDS) == 0


def test_slow_start_grows_by_bytes_acked() -> None:
    cc = NewReno(MDS)
    cc.on_acked(MDS, 0.0, 0.1)
    assert cc.cwnd == 11 * MDS
    cc.on_acked(5 * MDS, 0.05, 0.15)
    assert cc.cwnd == 16 * MDS
    assert cc.acked_bytes == 6 * MDS


def test_congestion_avoidance_one_datagram_per_window() -> None:
    cc = NewReno(MDS)
    cc.cwnd = 20 * MDS
    cc.on_lost(MDS, 0.0, 1.0)  # halve: 10 MDS, ssthresh 10 MDS
    assert cc.cwnd == cc.ssthresh == 10 * MDS and not cc.in_slow_start
    for _ in range(9):
        cc.on_acked(MDS, 1.5, 2.0)
    assert cc.cwnd == 10 * MDS  # 9 of 10 datagrams acked: not yet
    cc.on_acked(MDS, 1.5, 2.0)
    assert cc.cwnd == 11 * MDS
    for _ in range(11):
        cc.on_acked(MDS, 1.5, 2.0)
    assert cc.cwnd == 12 * MDS


def test_one_reduction_per_recovery_period() -> None:
    cc = NewReno(MDS)
    cc.cwnd = 40 * MDS
    cc.on_lost(MDS, 0.5, 1.0)
    assert cc.cwnd == 20 * MDS and cc.recovery_start == 1.0
    cc.on_lost(3 * MDS, 0.9, 1.1)  # sent before the period began: same congestion event
    cc.on_lost(MDS, 1.0, 1.2)
    assert cc.cwnd == 20 * MDS
    cc.on_lost(MDS, 1.05, 1.3)  # sent after it began: a new event
    assert cc.cwnd == 10 * MDS and cc.recovery_start == 1.3
    assert cc.lost_bytes == 6 * MDS


def test_no_growth_in_recovery() -> None:
    cc = NewReno(MDS)
    cc.on_lost(MDS, 0.5, 1.0)
    assert cc.cwnd == 5 * MDS
    cc.on_acked(4 * MDS, 0.9, 1.1)  # sent before recovery began
    assert cc.cwnd == 5 * MDS and cc.in_recovery(0.9)
    for _ in range(5):
        cc.on_acked(MDS, 1.01, 1.2)  # sent after: recovery is over
    assert cc.cwnd == 6 * MDS and not cc.in_recovery(1.01)


def test_minimum_window_on_repeated_losses() -> None:
    cc = NewReno(MDS)
    for k in range(10):
        cc.on_lost(MDS, float(k), k + 0.5)
    assert cc.cwnd == cc.min_window == 2 * MDS


def test_persistent_congestion() -> None:
    cc = NewReno(MDS)
    cc.cwnd = 30 * MDS
    cc.on_lost(MDS, 0.5, 1.0)
    cc.on_persistent_congestion()
    assert cc.cwnd == 2 * MDS and cc.ssthresh == 15 * MDS
    assert cc.in_slow_start and cc.recovery_start is None
    cc.on_acked(MDS, 0.9, 1.5)  # the recovery period ended with the collapse
    assert cc.cwnd == 3 * MDS


def test_app_limited_does_not_grow() -> None:
    cc = NewReno(MDS)
    cc.on_acked(MDS, 0.0, 0.1, app_limited=True)
    assert cc.cwnd == 10 * MDS
    cc.on_lost(MDS, 0.0, 0.2)
    for _ in range(20):
        cc.on_acked(MDS, 0.5, 0.6, app_limited=True)
    assert cc.cwnd == 5 * MDS


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(["ack", "lost", "pc", "sent"]),
                          st.integers(1, 20 * MDS), st.floats(0.0, 1.0), st.booleans()),
                max_size=200))
def test_newreno_invariants(events: list[tuple[str, int, float, bool]]) -> None:
    """Whatever happens: the window stays at or above the minimum, losses never grow
    it, acknowledgements never shrink it, and a reduction at most halves it."""
    cc = NewReno(MDS)
    now = 0.0
    for kind, n, dt, flag in events:
        now += dt
        before = cc.cwnd
        if kind == "ack":
            cc.on_acked(n, now - dt * 2, now, app_limited=flag)
            assert cc.cwnd >= before
            if flag:
                assert cc.cwnd == before
        elif kind == "lost":
            cc.on_lost(n, now - dt * 3, now)
            assert cc.cwnd <= before
            assert cc.cwnd >= min(before, max(before // 2, cc.min_window))
        elif kind == "pc":
            cc.on_persistent_congestion()
            assert cc.cwnd == cc.min_window
        else:
            cc.on_sent(n)
            assert cc.cwnd == before
        assert cc.cwnd >= cc.min_window


# ------------------------------------------------------------------ pacer


def pacer(cwnd: int = 100 * MDS, srtt: float | None = 0.1) -> tuple[Pacer, NewReno,
                                                                    RttEstimator]:
    cc = NewReno(MDS)
    cc.cwnd = cwnd
    rtt = RttEstimator()
    if srtt is not None:
        rtt.update(srtt, 0.0)
    p = Pacer(cc, rtt)  # an RttEstimator is an RttSource
    return p, cc, rtt


def test_pacing_rate() -> None:
    p, cc, rtt = pacer()
    assert p.rate() == pytest.approx(1.25 * 100 * MDS / 0.1)
    cc.cwnd = 50 * MDS
    assert p.rate() == pytest.approx(1.25 * 50 * MDS / 0.1)
    rtt.update(0.3, 1.0)  # srtt 0.125
    assert p.rate() == pytest.approx(1.25 * 50 * MDS / 0.125)


def test_no_pacing_without_an_rtt_sample() -> None:
    p, _, _ = pacer(srtt=None)
    assert p.rate() is None
    for _ in range(100):
        assert p.next_send_time(0.0) is None
        p.on_sent(0.0, MDS)


def test_burst_then_paced() -> None:
    p, _, _ = pacer()
    rate = 1.25 * 100 * MDS / 0.1
    sent = 0
    while p.next_send_time(0.0) is None:
        p.on_sent(0.0, MDS)
        sent += 1
    assert sent == 10  # the burst
    at = p.next_send_time(0.0)
    assert at == pytest.approx(MDS / rate)
    assert p.next_send_time(at / 2) == pytest.approx(at)  # waiting does not move it
    assert at is not None and p.next_send_time(at) is None
    p.on_sent(at, MDS)
    assert p.next_send_time(at) == pytest.approx(at + MDS / rate)


def test_bucket_is_capped_at_the_burst() -> None:
    p, _, _ = pacer()
    for _ in range(10):
        p.on_sent(0.0, MDS)
    p.next_send_time(100.0)  # a long idle time fills no more than the burst
    assert p.tokens == p.burst == 10 * MDS
    sent = 0
    while p.next_send_time(100.0) is None:
        p.on_sent(100.0, MDS)
        sent += 1
    assert sent == 10


def test_paced_sending_matches_the_rate() -> None:
    """A sender sending whenever the pacer allows sends rate * T (+ the burst) in T."""
    p, _, _ = pacer(cwnd=20 * MDS, srtt=0.05)
    rate = 1.25 * 20 * MDS / 0.05
    now = 0.0
    sent = 0
    while now < 2.0:
        at = p.next_send_time(now)
        if at is None:
            p.on_sent(now, MDS)
            sent += MDS
        else:
            now = at
    assert sent == pytest.approx(rate * 2.0 + 10 * MDS, rel=0.01)


def test_pacer_rejects_a_zero_burst() -> None:
    cc: CongestionController = NewReno(MDS)
    with pytest.raises(ValueError):
        Pacer(cc, RttEstimator(), burst_datagrams=0)
