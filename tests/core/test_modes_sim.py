"""Modes RACE and BOND, and live mode switches, on the simulated network (virtual
time, deterministic): both directions use the mode, streams stay byte-exact."""

from __future__ import annotations

import pytest

from rendr.config import FlowConfig
from rendr.core.events import EventKind
from rendr.core.scheduler import BondScheduler
from rendr.core.types import Mode
from rendr.errors import ModeSwitchIllegal
from rendr.testing.simnet import Side, Sim

from .test_flow_sim import MIB, assert_exact, assert_no_errors, payload

D, L = Side.DIALER, Side.LISTENER


def sent_per_path(sim: Sim, side: Side) -> dict[int, int]:
    return {pid: p.bytes_sent for pid, p in sim.flows[side].paths.items()}


def transfer_time(mode: Mode, paths: list[tuple[float, float]], size: int,
                  sender: Side = D) -> tuple[float, Sim]:
    sim = Sim(mode=mode, seed=size)
    for delay, rate in paths:
        sim.add_path(delay, rate=rate, sndbuf=128 * 1024)
    data = payload(size, seed=7)
    sim.write(sender, data, eof=True)
    assert sim.run_until(lambda: sim.eof[sender.other], 60)
    assert_exact(sim.received[sender.other], data)
    assert_no_errors(sim)
    return sim.now, sim


# ------------------------------------------------------------------------- race


@pytest.mark.parametrize("sender", [D, L])
def test_race_sends_every_byte_on_every_path(sender: Side) -> None:
    _, sim = transfer_time(Mode.RACE, [(0.005, 20e6), (0.030, 20e6)], 4 * MIB, sender)
    sent = sent_per_path(sim, sender)
    assert all(n >= 4 * MIB for n in sent.values()), sent  # both paths carried it all
    assert sim.flows[sender.other].recv_dups > 0  # the slow path's copies, dropped
    # ACKs race too: the receiver acknowledged on both paths (in PRIME the second
    # path brings back PONGs only)
    _, prime = transfer_time(Mode.PRIME, [(0.005, 20e6), (0.030, 20e6)], 4 * MIB, sender)
    raced = sim.flows[sender].paths[2].frames_received
    assert raced > 2 * prime.flows[sender].paths[2].frames_received + 20, raced


def test_race_latency_is_the_fastest_path() -> None:
    for order in ([(0.050, None), (0.005, None)], [(0.005, None), (0.050, None)]):
        sim = Sim(mode=Mode.RACE)
        for delay, rate in order:
            sim.add_path(delay, rate=rate)
        sim.run(0.5)
        start = sim.now
        sim.write(D, b"ping")
        assert sim.run_until(lambda sim=sim: sim.received[L] == b"ping", 1)
        assert sim.now - start == pytest.approx(0.005)


def test_race_loses_nothing_when_a_path_dies() -> None:
    sim = Sim(mode=Mode.RACE)
    p1 = sim.add_path(0.005, rate=20e6)
    sim.add_path(0.020, rate=20e6)
    data = payload(4 * MIB)
    sim.write(D, data, eof=True)
    sim.at(0.1, lambda: sim.kill(p1))
    assert sim.run_until(lambda: sim.eof[L], 20)
    assert_exact(sim.received[L], data)
    assert_no_errors(sim)


# ------------------------------------------------------------------------- bond


@pytest.mark.parametrize("sender", [D, L])
def test_bond_sums_two_equal_paths(sender: Side) -> None:
    size = 16 * MIB
    one, _ = transfer_time(Mode.PRIME, [(0.010, 10e6)], size, sender)
    two, sim = transfer_time(Mode.BOND, [(0.010, 10e6), (0.010, 10e6)], size, sender)
    assert two < 0.6 * one, (two, one)
    sent = sent_per_path(sim, sender)
    assert all(n > 0.4 * size for n in sent.values()), sent
    assert sim.flows[sender.other].recv_dups == 0


def test_bond_on_asymmetric_paths_is_no_worse_than_the_best_one() -> None:
    size = 16 * MIB
    fast = [(0.005, 10e6)]
    both = [(0.005, 10e6), (0.030, 1e6)]
    alone, _ = transfer_time(Mode.PRIME, fast, size)
    bonded, sim = transfer_time(Mode.BOND, both, size)
    assert bonded <= 1.0 * alone, (bonded, alone)
    assert sim.listener.recv_queue_hwm < 4 * MIB  # the slow path held little back


@pytest.mark.parametrize("sender", [D, L])
@pytest.mark.parametrize(("slow_delay", "bound"), [(0.030, 1.0), (0.060, 1.1)])
def test_bond_with_the_slow_path_active_is_no_worse_than_the_fast_one(
        sender: Side, slow_delay: float, bound: float) -> None:
    """The slow path came up first (the active one): ACKs went on it, so every ACK for
    the fast path waited out the slow path's round trip, the fast path's sending was
    held to what that round trip allows, and bond fell far below the fast path alone
    (simulated, 60 ms: 10.2 s against 1.7 s; in the bond gate 27 against 48 Mbit/s
    whenever the 5 Mbit/s path connected first).  BOND moves its ACKs to a path whose
    round trip is clearly shorter.  (With a 60 ms slow path bond is 1.08x the fast
    path alone in either order: what the earliest-completion rule leaves on the slow
    path.)"""
    size = 16 * MIB
    alone, _ = transfer_time(Mode.PRIME, [(0.005, 10e6)], size, sender)
    bonded, sim = transfer_time(Mode.BOND, [(slow_delay, 1e6), (0.005, 10e6)], size, sender)
    assert bonded <= bound * alone, (bonded, alone)
    assert sim.flows[sender.other].recv_queue_hwm < 4 * MIB


def test_bond_skips_a_stuck_path() -> None:
    bonded, sim = transfer_time(Mode.BOND, [(0.005, 10e6), (0.600, 10e6)], 8 * MIB)
    alone, _ = transfer_time(Mode.PRIME, [(0.005, 10e6)], 8 * MIB)
    assert bonded <= 1.1 * alone, (bonded, alone)
    scheduler = sim.dialer.modes.scheduler
    assert isinstance(scheduler, BondScheduler) and scheduler.stuck_skips >= 1
    assert sim.dialer.stats(sim.now).bond_stuck_skips == scheduler.stuck_skips


def test_bond_resends_a_dead_paths_data_on_the_survivor() -> None:
    sim = Sim(mode=Mode.BOND)
    p1 = sim.add_path(0.010, rate=10e6)
    p2 = sim.add_path(0.010, rate=10e6)
    data = payload(8 * MIB)
    sim.write(D, data, eof=True)
    sim.at(0.2, lambda: sim.kill(p1))
    assert sim.run_until(lambda: sim.eof[L], 20)
    assert_exact(sim.received[L], data)
    assert sim.dialer.paths[p2].retransmits > 0
    assert_no_errors(sim)


# ---------------------------------------------------------------- mode switches


def _switch(sim: Sim, side: Side, mode: Mode) -> None:
    sim.call(side, lambda f, now: f.set_mode(mode, now))


def test_switches_under_load_both_directions_byte_exact() -> None:
    sim = Sim()
    sim.add_path(0.005, rate=10e6)
    sim.add_path(0.020, rate=10e6)
    data = payload(24 * MIB)
    back = payload(16 * MIB, seed=3)
    sim.write(D, data, eof=True)
    sim.write(L, back, eof=True)
    plan = [(0.1, D, Mode.RACE), (0.3, D, Mode.PRIME), (0.5, L, Mode.BOND),
            (0.7, D, Mode.PRIME), (0.9, L, Mode.RACE), (1.1, D, Mode.PRIME)]
    modes: list[tuple[Mode, Mode]] = []
    for at, side, mode in plan:
        sim.at(at, lambda side=side, mode=mode: _switch(sim, side, mode))
        # (a MODE answer may wait behind a burst of DATA already in the carrier)
        sim.at(at + 0.19, lambda: modes.append((sim.dialer.mode, sim.listener.mode)))
    assert sim.run_until(lambda: sim.eof[L] and sim.eof[D], 60)
    assert sim.now > 1.3, "every switch must happen under load"
    assert_exact(sim.received[L], data)
    assert_exact(sim.received[D], back)
    assert modes == [(m, m) for _, _, m in plan]  # both ends agreed, every time
    for side in Side:
        assert sim.flows[side].modes.switches == len(plan)
        assert sim.flows[side].stats(sim.now).mode_switches == len(plan)
        assert len(sim.events_of(side, EventKind.MODE_CHANGE)) >= len(plan)
    assert_no_errors(sim)


def test_race_to_bond_is_illegal_and_changes_nothing() -> None:
    sim = Sim(mode=Mode.RACE)
    sim.add_path(0.005)
    with pytest.raises(ModeSwitchIllegal, match="through prime"):
        _switch(sim, D, Mode.BOND)
    assert sim.dialer.mode is Mode.RACE and sim.dialer.modes.pending is None
    _switch(sim, D, Mode.PRIME)
    with pytest.raises(ModeSwitchIllegal, match="in progress"):
        _switch(sim, D, Mode.BOND)
    sim.run(0.1)
    assert (sim.dialer.mode, sim.listener.mode) == (Mode.PRIME, Mode.PRIME)


def test_crossed_requests_the_dialers_wins() -> None:
    sim = Sim()
    sim.add_path(0.010)
    sim.run(0.05)
    _switch(sim, D, Mode.RACE)
    _switch(sim, L, Mode.BOND)
    sim.run(0.2)
    assert (sim.dialer.mode, sim.listener.mode) == (Mode.RACE, Mode.RACE)
    assert sim.dialer.modes.refused is None
    assert sim.listener.modes.refused is not None and sim.listener.modes.pending is None


def test_a_lost_request_is_sent_again() -> None:
    sim = Sim()
    p1 = sim.add_path(0.010)
    sim.add_path(0.010)
    sim.run(0.05)
    sim.blackhole(p1)
    sim.blackhole(2)
    _switch(sim, D, Mode.BOND)
    sim.run(0.3)
    assert sim.dialer.modes.pending is Mode.BOND and sim.listener.mode is Mode.PRIME
    sim.unblackhole(2)
    sim.run(1.5)
    assert (sim.dialer.mode, sim.listener.mode) == (Mode.BOND, Mode.BOND)
    assert sim.dialer.modes.pending is None


def test_mode_change_is_not_a_config_knob_bond_sees_config() -> None:
    cfg = FlowConfig()
    sim = Sim(cfg, mode=Mode.BOND)
    assert isinstance(sim.dialer.modes.scheduler, BondScheduler)
    assert sim.dialer.modes.scheduler.config is cfg


def test_a_repeated_illegal_request_is_refused_again() -> None:
    # a repeat (its seq already seen) must not be answered as if it had succeeded
    from rendr.core.modeswitch import ModeSwitch
    from rendr.core.types import Role
    from rendr.core.wire import MODE_ACK, MODE_REFUSED, decode_mode

    listener = ModeSwitch(Mode.RACE, Role.LISTENER, FlowConfig(), 0.0)
    dialer = ModeSwitch(Mode.PRIME, Role.DIALER, FlowConfig(), 0.0)
    frame = dialer.request(Mode.BOND, 0.0)  # the ends disagree: BOND is illegal from RACE
    assert frame is not None
    body = frame[4:]
    for _ in range(2):  # the first answer, then the answer to a repeat
        answer, changed = listener.on_frame(*decode_mode(body))
        assert answer is not None and not changed
        _, mode, flags = decode_mode(answer[4:])
        assert (Mode(mode), flags) == (Mode.RACE, MODE_ACK | MODE_REFUSED)
    dialer.on_frame(*decode_mode(answer[4:]))
    assert dialer.refused is not None and dialer.mode is Mode.PRIME
