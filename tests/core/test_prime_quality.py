"""PRIME mode moves to a clearly better path on quality (dialer-driven), with hysteresis."""

from __future__ import annotations

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

