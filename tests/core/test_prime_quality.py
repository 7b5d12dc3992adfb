"""PRIME mode moves to a clearly better path on quality (dialer-driven), with hysteresis."""

from __future__ import annotations

import pytest

from rendr.config import FlowConfig
from rendr.core.events import EventKind
from rendr.testing.simnet import Side, Sim

D, L = Side.DIALER, Side.LISTENER


def quality_migrations(sim: Sim, side: Side) -> list[tuple[int | None, int | None, str | None]]:
    return [(e.old_path, e.new_path, e.cause) for e in sim.events_of(side, EventKind.MIGRATION)]


def test_moves_to_a_clearly_faster_path_after_dwell() -> None:
    sim = Sim(FlowConfig(prime_cooldown=0.0))
    slow = sim.add_path(0.060)  # first path: active
    fast = sim.add_path(0.005)
    sim.run(2.0)  # less than the 3 s dwell (plus a ping period to notice)
    assert sim.dialer.active == slow
    sim.run(6.0)
    assert sim.dialer.active == fast
    assert sim.listener.active == fast  # the listener follows
    assert (slow, fast, "quality") in quality_migrations(sim, D)


def test_similar_paths_do_not_flap() -> None:
    sim = Sim(FlowConfig(prime_cooldown=0.0))
    a = sim.add_path(0.020)
    sim.add_path(0.018)  # 10 % better: inside the 25 % hysteresis
    sim.run(30.0)
    assert sim.dialer.active == a
    assert not quality_migrations(sim, D)


def test_small_absolute_gain_is_ignored() -> None:
    sim = Sim(FlowConfig(prime_cooldown=0.0))
    a = sim.add_path(0.002)
    sim.add_path(0.0005)  # 75 % better but only 3 ms of RTT: below the 5 ms floor
    sim.run(20.0)
    assert sim.dialer.active == a


def test_cooldown_limits_quality_switches() -> None:
    sim = Sim(FlowConfig(prime_cooldown=15.0))
    slow = sim.add_path(0.060)
    fast = sim.add_path(0.005)
    sim.run(10.0)  # dwell met, but the flow is younger than the cooldown
    assert sim.dialer.active == slow
    sim.run(20.0)
    assert sim.dialer.active == fast


def test_switching_can_be_disabled() -> None:
    sim = Sim(FlowConfig(prime_switch=False))
    slow = sim.add_path(0.060)
    sim.add_path(0.005)
    sim.run(30.0)
    assert sim.dialer.active == slow



def test_moves_off_a_jittery_path_of_the_same_minimum_rtt() -> None:
    sim = Sim(FlowConfig(prime_cooldown=0.0), seed=3)
    jittery = sim.add_path(0.020, jitter=0.060)  # first path: active
    steady = sim.add_path(0.020)
    sim.run(12.0)
    assert sim.dialer.active == steady, sim.dialer.paths[jittery].rtt.rttvar
    assert (jittery, steady, "quality") in quality_migrations(sim, D)


def test_fails_back_to_a_better_path_once_it_recovered() -> None:
    sim = Sim(FlowConfig(prime_cooldown=0.0))
    fast = sim.add_path(0.005)
    slow = sim.add_path(0.060)
    sim.run(1.0)
    sim.blackhole(fast)  # silent for less than its dead time: suspect, then back
    sim.run(1.4)
    assert sim.dialer.active == slow
    sim.unblackhole(fast)
    sim.run(2.0)
    assert sim.dialer.active == slow  # the lost PINGs count against it for a while
    sim.run(15.0)  # it answers every PING again; after the dwell, back to it
    assert sim.dialer.active == fast
    assert quality_migrations(sim, D)[-1] == (slow, fast, "quality")


def test_ping_loss_worsens_a_paths_score_and_quality() -> None:
    from rendr.core.framing import StreamDeframer
    from rendr.core.path import LOSS_WEIGHT, PathState

    def path() -> PathState:
        return PathState(1, transport="t", local_addr="a", remote_addr="b", now=0.0,
                         deframer=StreamDeframer(lambda *a: 0, lambda *a: 0))

    clean, lossy = path(), path()
    now = 0.0
    for i in range(40):
        now += 0.1
        for p in (clean, lossy):
            p.pings.append((2 * i, now))
            p.pings.append((2 * i + 1, now))
            # the clean path answers every PING; the lossy one only every second one
            if p is clean:
                assert p.on_pong(2 * i, now + 0.010)
            assert p.on_pong(2 * i + 1, now + 0.010)
    assert clean.ping_loss < 0.01
    assert 0.4 < lossy.ping_loss < 0.6
    cq, lq = clean.quality(), lossy.quality()
    assert cq is not None and lq is not None
    assert lq - cq == pytest.approx(LOSS_WEIGHT * lossy.ping_loss, abs=0.01)
    assert lossy.score() > clean.score() + 0.2
