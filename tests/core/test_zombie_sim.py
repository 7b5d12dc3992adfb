"""The zombie guard on the simulated network: one outage is one strike, a real zombie
still ends.

What ``bench/soak.py`` found (``bench/repro/zombie_*.py``): paths that fail together
cost one strike each, so one outage ended healthy flows.  Deterministic, virtual time.
"""

from __future__ import annotations

import hashlib
import random

import pytest

import rendr
from rendr.config import FlowConfig
from rendr.core.events import EventKind
from rendr.core.types import State
from rendr.testing.simnet import Side, Sim

D, L = Side.DIALER, Side.LISTENER
MIB = 1 << 20


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def assert_exact(got: bytes | bytearray, want: bytes) -> None:
    assert len(got) == len(want), f"got {len(got)} bytes, want {len(want)}"
    assert hashlib.sha256(got).digest() == hashlib.sha256(want).digest(), "stream corrupted"


def death_migrations(sim: Sim, side: Side) -> list[tuple[int | None, int | None]]:
    return [(m.old_path, m.new_path) for m in sim.events_of(side, EventKind.MIGRATION)
            if m.cause == "death"]


def done_or_failed(sim: Sim) -> bool:
    return (sim.eof[D] and sim.eof[L]) or any(f.state is State.CLOSED for f in sim.flows)


def assert_alive(sim: Sim) -> None:
    for side in Side:
        assert sim.flows[side].error is None, (side, sim.flows[side].error)
        assert sim.read_error[side] is None and sim.write_error[side] is None


# ------------------------------------------------------------ false positives


def test_one_reset_of_three_paths_sharing_a_route_is_one_strike() -> None:
    """bench/repro/zombie_shared_fate_kill.py: three of four paths share a relay and are
    reset at once; each end handles the resets one after the other and fails over onto
    the next doomed path: one outage, not three strikes (the 4th path is healthy)."""
    sim = Sim(FlowConfig(zombie_max_migrations=2))
    shared = [sim.add_path(0.005, rate=5e6) for _ in range(3)]
    other = sim.add_path(0.020, rate=5e6)
    up, down = payload(3 * MIB, 1), payload(3 * MIB, 2)
    sim.write(D, up, eof=True)
    sim.write(L, down, eof=True)

    def kill_relay() -> None:
        for pid in shared:
            sim.kill(pid)

    sim.at(0.3, kill_relay)
    assert sim.run_until(lambda: done_or_failed(sim), 30)
    assert_alive(sim)
    assert_exact(sim.received[L], up)
    assert_exact(sim.received[D], down)
    for side in Side:
        assert sim.flows[side].active == other
        assert sim.flows[side].state is State.ACTIVE


def test_peer_stall_then_redial_is_one_strike() -> None:
    """bench/repro/zombie_after_peer_stall.py: the listener is stopped (here: it notices
    nothing for a long time) while the dialer finds its three paths dead and resets
    them; when it runs again it handles the three resets in one go, then the re-dialled
    path attaches: one outage, the flow goes on."""
    cfg = FlowConfig(zombie_max_migrations=2)
    stopped = cfg.replace(dead_timeout=5.0, suspect_timeout=5.0)
    sim = Sim(cfg, listener_config=stopped)
    pids = [sim.add_path(0.005, rate=5e6) for _ in range(3)]
    up, down = payload(3 * MIB, 3), payload(3 * MIB, 4)
    sim.write(D, up, eof=True)
    sim.write(L, down, eof=True)

    def stall() -> None:
        for pid in pids:
            sim.blackhole(pid)

    def resume() -> None:
        for pid in pids:
            sim.unblackhole(pid)

    sim.at(0.3, stall)
    sim.at(1.8, resume)  # the dialer's RSTs reach the listener at 1.805, all at once
    sim.at(1.81, lambda: sim.add_path(0.005, rate=5e6))  # the re-dialled path
    assert sim.run_until(lambda: done_or_failed(sim), 30)
    assert_alive(sim)
    assert_exact(sim.received[L], up)
    assert_exact(sim.received[D], down)
    # the listener did migrate along the dying paths (the scenario is the one reported)
    assert len(death_migrations(sim, L)) >= 3


def test_paths_found_dead_in_one_timer_pass_fail_over_once() -> None:
    """Two silent paths found dead by the same liveness pass: the flow goes straight to
    the live path, never onto the other dead one."""
    cfg = FlowConfig(suspect_timeout=0.6, dead_timeout=0.6)  # no suspect step first
    sim = Sim(cfg)
    p1, p2 = sim.add_path(0.005), sim.add_path(0.005)
    p3 = sim.add_path(0.015)
    sim.write(D, payload(2 * MIB, 5))

    def blackhole() -> None:
        sim.blackhole(p1)
        sim.blackhole(p2)

    sim.at(0.5, blackhole)
    sim.at(0.5, lambda: sim.write(D, payload(MIB, 6)))
    sim.run(3.0)
    assert death_migrations(sim, D) == [(p1, p3)]
    assert sim.dialer.active == sim.listener.active == p3
    assert_alive(sim)


# ------------------------------------------------------------ real zombies still end


@pytest.mark.parametrize("cycle", [0.1, 0.3, 1.0])
def test_path_that_accepts_and_dies_in_a_loop_is_a_zombie(cycle: float) -> None:
    """One path, re-dialled every ``cycle`` s, dies 1 ms after it attaches, before
    anything it carries arrives: no data ever moves, the guard ends the flow (however
    fast it flaps: an outage spans at most ``zombie_settle``)."""
    cfg = FlowConfig(zombie_max_migrations=2, migration_budget=60.0)
    sim = Sim(cfg)
    first = sim.add_path(0.010)
    sim.at(1.0, lambda: sim.kill(first))
    sim.at(1.0, lambda: sim.write(D, payload(MIB, 7)))
    attached: list[int] = []

    def flap() -> None:
        if sim.dialer.state is State.CLOSED:
            return
        pid = sim.add_path(0.010)
        attached.append(pid)
        sim.at(sim.now + 0.001, lambda: sim.kill(pid))
        sim.at(sim.now + cycle, flap)

    sim.at(1.0 + cycle, flap)
    settle = cfg.zombie_settle
    step = max(cycle, settle)
    deadline = 1.0 + (cfg.zombie_max_migrations + 1) * step + 2 * cycle
    assert sim.run_until(lambda: sim.dialer.state is State.CLOSED, deadline)
    assert isinstance(sim.dialer.error, rendr.ZombieFlow)
    assert len(attached) >= cfg.zombie_max_migrations + 1
    assert sim.received[L] == b""


def test_failover_chain_dying_one_by_one_is_a_zombie() -> None:
    """Failover targets that each die a settle interval after the last: separate
    outages, no data moves: the third one ends the flow."""
    cfg = FlowConfig(zombie_max_migrations=2)
    sim = Sim(cfg)
    pids = [sim.add_path(0.010) for _ in range(5)]
    gap = cfg.zombie_settle + 0.1
    for i in range(4):
        sim.at(1.0 + gap * i, lambda pid=pids[i]: sim.kill(pid))
    sim.run(1.0 + 4 * gap)
    assert sim.dialer.state is State.CLOSED
    assert isinstance(sim.dialer.error, rendr.ZombieFlow)
    assert sim.events_of(D, EventKind.CLOSED)[0].at == pytest.approx(1.0 + 2 * gap)


def test_settle_must_leave_room_for_the_strikes_in_the_window() -> None:
    """A settle interval so long that a flapping path's strikes leave the window
    before enough of them gather would disable the guard: refused."""
    with pytest.raises(ValueError, match="zombie_settle"):
        FlowConfig(zombie_max_migrations=2, zombie_window=1.0, zombie_settle=0.5)
    FlowConfig(zombie_max_migrations=2, zombie_window=1.0, zombie_settle=0.4)
    FlowConfig(zombie_max_migrations=0, zombie_window=1.0, zombie_settle=5.0)  # off
