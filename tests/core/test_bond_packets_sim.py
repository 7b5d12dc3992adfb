"""BOND packet flows over datagram paths of different rates (simulated network,
virtual clock): packets are striped by each path's delivery as the receiver reports
it (PATH_REPORT, docs/wire.md), not by ``PathSpec.weight`` alone.

Each path has a bottleneck rate and a drop-tail queue; the dialer's application
offers a constant rate of 1100-byte packets for a few seconds and the listener's
application reads everything.  Before delivery reports, BOND split packets by weight
(1:1 here): a 4 + 1 MB/s pair offered 4.5 MB/s lost about 28 % on the slow path,
and a 5 + 0.5 MB/s pair offered 4 MB/s delivered about 2.5 MB/s, far less than the
fast path alone."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from rendr.config import FlowConfig
from rendr.core.types import Mode
from rendr.core.wire import Kind
from rendr.testing.simnet import Side, Sim

SIZE = 1100
START, STOP = 0.2, 4.2
STEADY = 1.2  # the window measured: [STEADY, STOP]; before it the sender learns
Path = tuple[float, float]  # one-way delay, rate (bytes/s)


@dataclass
class Outcome:
    offered: float  # bytes/s
    delivered: float  # bytes/s read by the listener's application, in the window
    loss: float  # of what was offered in the window
    total_loss: float  # of everything offered


def run(mode: Mode, paths: list[Path], offered: float, seed: int = 1,
        loss: tuple[float, ...] = (0.0, 0.0)) -> Outcome:
    sim = Sim(FlowConfig(), mode=mode, seed=seed, kind=Kind.PACKET)
    for (delay, rate), lost in zip(paths, loss, strict=False):
        sim.add_path(delay, rate=rate, mtu=1200, queue=64 * 1024, loss=lost)
    sim.offer_packets(Side.DIALER, SIZE, offered, START, STOP)
    sim.run(STEADY)
    read0 = sim.packets_read[Side.LISTENER]
    sent0 = sim.dialer.packet_stats()[0]
    sim.run(STOP)
    read1 = sim.packets_read[Side.LISTENER]
    sent1 = sim.dialer.packet_stats()[0]
    sim.run(STOP + 0.5)  # what is still queued arrives
    span = STOP - STEADY
    total = sim.dialer.packet_stats()[0]
    assert sim.packets_refused[Side.DIALER] == 0
    return Outcome(offered, (read1 - read0) * SIZE / span,
                   1 - (read1 - read0) / max(1, sent1 - sent0),
                   1 - sim.packets_read[Side.LISTENER] / max(1, total))


def test_bond_packets_follow_delivery_rates_not_weights() -> None:
    """4 + 1 MB/s offered 4.5 MB/s: more than either path, less than both."""
    out = run(Mode.BOND, [(0.010, 4e6), (0.015, 1e6)], 4.5e6)
    assert out.loss < 0.03, out
    assert out.delivered > 0.96 * 4.5e6, out
    assert out.total_loss < 0.06, out


def test_bond_packets_beyond_both_paths_deliver_about_their_sum() -> None:
    out = run(Mode.BOND, [(0.010, 4e6), (0.015, 1e6)], 6e6)
    assert out.delivered > 0.92 * 5e6, out


@pytest.mark.parametrize("offered", [4e6, 6e6])
def test_bond_packets_next_to_a_slow_far_path_are_no_worse_than_the_fast_path(
        offered: float) -> None:
    fast: Path = (0.007, 5e6)
    slow: Path = (0.032, 0.5e6)
    one = run(Mode.PRIME, [fast], offered)
    both = run(Mode.BOND, [fast, slow], offered)
    assert both.delivered >= 0.97 * one.delivered, (one, both)
    if offered < fast[1]:
        assert both.loss < 0.03, both


@pytest.mark.parametrize("loss", [(0.02, 0.02), (0.0, 0.05)])
def test_bond_packets_over_randomly_lossy_paths(loss: tuple[float, float]) -> None:
    """Random loss is no load: a path that loses 2 or 5 % whatever it carries keeps
    its share while it has room (the loss floor of its own samples), and a lost
    PING no longer takes it out of BOND (it did: the other path overflowed, 9.6 %
    lost instead of 2 % with 2 x 3 MB/s offered 5)."""
    out = run(Mode.BOND, [(0.010, 3e6), (0.010, 3e6)], 5e6, seed=3, loss=loss)
    assert out.delivered > 0.97 * 5e6 * (1 - max(loss)), out
    assert out.loss < max(loss) + 0.015, out


def test_a_path_whose_delivery_falls_gets_less() -> None:
    """Two equal paths; one is throttled to a fifth mid-flow: its share follows."""
    sim = Sim(FlowConfig(), mode=Mode.BOND, seed=1, kind=Kind.PACKET)
    sim.add_path(0.010, rate=3e6, mtu=1200, queue=64 * 1024)
    p2 = sim.add_path(0.010, rate=3e6, mtu=1200, queue=64 * 1024)
    sim.offer_packets(Side.DIALER, SIZE, 3.5e6, START, 5.0)
    sim.run(2.0)
    sim.paths[p2].rate = 0.6e6
    sim.run(3.0)
    read0, sent0 = sim.packets_read[Side.LISTENER], sim.dialer.packet_stats()[0]
    sim.run(5.0)
    read1, sent1 = sim.packets_read[Side.LISTENER], sim.dialer.packet_stats()[0]
    assert 1 - (read1 - read0) / (sent1 - sent0) < 0.03


def test_a_far_path_is_left_out_of_bond_packets_as_of_streams() -> None:
    """A path whose RTT is 4x the best and 200 ms more is skipped (as for a stream):
    the fast one carries everything it can."""
    sim = Sim(FlowConfig(), mode=Mode.BOND, seed=1, kind=Kind.PACKET)
    sim.add_path(0.005, rate=5e6, mtu=1200, queue=64 * 1024)
    far = sim.add_path(0.150, rate=5e6, mtu=1200, queue=64 * 1024)
    sim.offer_packets(Side.DIALER, SIZE, 2e6, START, 2.0)
    sim.run(1.0)
    before = sim.dialer.paths[far].pkts_out
    sim.run(2.5)
    assert sim.dialer.paths[far].pkts_out == before
    assert sim.dialer.modes.scheduler.stuck_skips >= 1  # type: ignore[attr-defined]
    assert sim.packets_read[Side.LISTENER] == sim.dialer.packet_stats()[0]


def test_stats_show_what_the_reports_say_each_path_delivered() -> None:
    """``stats().paths``: packets sent/received per path on both ends, and on the
    sender the delivery rate and loss BOND stripes by (None before a report)."""
    sim = Sim(FlowConfig(), mode=Mode.BOND, seed=1, kind=Kind.PACKET)
    fast = sim.add_path(0.010, rate=4e6, mtu=1200, queue=64 * 1024)
    slow = sim.add_path(0.015, rate=1e6, mtu=1200, queue=64 * 1024)
    before = {p.id: p for p in sim.dialer.stats(0.0).paths}
    assert before[fast].delivery_rate is None and before[fast].packets_sent == 0
    sim.offer_packets(Side.DIALER, SIZE, 4.5e6, START, STOP)
    sim.run(STOP)
    sent = {p.id: p for p in sim.dialer.stats(STOP).paths}
    got = {p.id: p for p in sim.listener.stats(STOP).paths}
    for pid in (fast, slow):
        assert sent[pid].packets_sent > 0 and got[pid].packets_received > 0
        assert got[pid].packets_received <= sent[pid].packets_sent
        assert sent[pid].delivery_rate is not None and sent[pid].delivery_loss is not None
        assert 0.0 <= sent[pid].delivery_loss < 0.2
    assert sum(p.packets_sent for p in sent.values()) == sim.dialer.packet_stats()[0]
    rate_fast, rate_slow = sent[fast].delivery_rate, sent[slow].delivery_rate
    assert rate_fast is not None and rate_slow is not None
    assert 2.5e6 < rate_fast < 4.4e6 and 0.5e6 < rate_slow < 1.1e6, (rate_fast, rate_slow)
