"""PATH_REPORT, the delivery reports of packet flows in BOND (core/pathreport.py):
when they are sent, what they cost, and what a hostile or broken report does (it is
clamped or ignored and counted, never an error)."""

from __future__ import annotations

from rendr.config import FlowConfig
from rendr.core.pathreport import HEADROOM, MIN_SHARE, REPORT_INTERVAL
from rendr.core.types import Mode, State
from rendr.core.wire import PATH_REPORT, Kind, encode_frame, encode_path_report
from rendr.testing.simnet import Side, Sim

SIZE = 1000


def bond_sim(mode: Mode = Mode.BOND, until: float = 1.0) -> Sim:
    sim = Sim(FlowConfig(), mode=mode, seed=1, kind=Kind.PACKET)
    sim.add_path(0.010, rate=4e6, mtu=1200)
    sim.add_path(0.010, rate=4e6, mtu=1200)
    sim.offer_packets(Side.DIALER, SIZE, 2e6, 0.1, until)
    sim.run(until)
    return sim


def test_reports_flow_about_every_interval_while_packets_arrive_in_bond_only() -> None:
    sim = bond_sim(until=1.1)
    reporter = sim.listener._inbound._reporter
    assert reporter is not None
    assert 0.8 / REPORT_INTERVAL <= reporter.reports <= 1.0 / REPORT_INTERVAL + 2
    rates = sim.dialer._packets_out.rates  # type: ignore[union-attr]
    assert rates.reports >= reporter.reports - 2
    assert rates.clamped == rates.ignored == 0
    for pid in (1, 2):  # 1 MB/s each, nothing lost
        assert abs(rates.rate(pid) - 1e6) < 0.1e6
        assert rates.loss(pid) < 0.01
    sim.run(2.0)  # packets stop: so do the reports
    n = reporter.reports
    sim.run(3.0)
    assert reporter.reports == n
    prime = bond_sim(Mode.PRIME)
    assert prime.listener._inbound._reporter.reports == 0  # type: ignore[union-attr]


def _inject(sim: Sim, frame: bytes) -> None:
    sim.call(Side.DIALER, lambda f, now: f.receive(1, frame, now))


def test_hostile_reports_are_clamped_or_ignored_and_counted() -> None:
    sim = bond_sim()
    flow = sim.dialer
    rates = flow._packets_out.rates  # type: ignore[union-attr]
    ignored, clamped = rates.ignored, rates.clamped
    _inject(sim, encode_frame(PATH_REPORT, bytes(5)))  # malformed
    _inject(sim, encode_frame(PATH_REPORT, bytes.fromhex("0000000000000001 05")))  # truncated
    _inject(sim, encode_path_report(1, [(2, 1, 1)]))  # older than the latest
    _inject(sim, encode_path_report(1 << 62, [(99, 1, 1)]))  # a path we do not have
    assert rates.ignored == ignored + 4
    # a claim beyond what was sent on path 2 (the clock jump is bounded by ours)
    _inject(sim, encode_path_report((1 << 62) + 1, [(2, 1 << 60, 1 << 60)]))
    assert rates.clamped == clamped + 1
    assert rates.rate(2) <= 2 * 2e6  # at most twice what was sent (the clock is ours)
    assert rates.share(2) <= HEADROOM * rates.rate(2)
    _inject(sim, encode_path_report((1 << 62) + 2, [(2, 0, 0)]))  # counters going back
    assert rates.clamped == clamped + 2
    assert flow.state is not State.CLOSED
    sim.run(2.0)  # and the flow goes on
    assert flow.state is not State.CLOSED


def test_a_path_reported_to_deliver_nothing_keeps_a_small_share() -> None:
    sim = bond_sim()
    rates = sim.dialer._packets_out.rates  # type: ignore[union-attr]
    # the listener hears nothing on path 2 from now on
    sim.paths[2].rate = 2e3  # (PINGs still pass: the path stays up)
    sim.offer_packets(Side.DIALER, SIZE, 2e6, 1.0, 3.0)
    sim.run(3.0)
    shares = rates.shares(list(sim.dialer._paths), sim.now)
    assert shares is not None
    assert shares[1] / sum(shares) <= MIN_SHARE * 1.01
    assert rates.loss(2) > 0.9


def test_without_reports_the_weights_decide() -> None:
    """A peer that does not report (it predates PATH_REPORT, which it skips): BOND
    stripes by ``PathSpec.weight``, the prior, as before."""
    sim = Sim(FlowConfig(), mode=Mode.BOND, seed=1, kind=Kind.PACKET)
    sim.add_path(0.010, rate=4e6, mtu=1200)
    sim.add_path(0.010, rate=4e6, mtu=1200)
    sim.listener._inbound._reporter = None  # an older peer
    sim.dialer.paths[1].weight = 3.0
    sim.offer_packets(Side.DIALER, SIZE, 2e6, 0.1, 1.0)
    sim.run(1.5)
    p1, p2 = (sim.dialer.paths[i].pkts_out for i in (1, 2))
    assert p1 == 3 * p2 or abs(p1 - 3 * p2) <= 3
    assert sim.dialer._packets_out.rates.reports == 0  # type: ignore[union-attr]
