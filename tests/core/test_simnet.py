"""The simulator's own fault model (rendr.testing.simnet): what ``Sim.fin`` does to a
carrier, so that tests built on it test the engine and not the simulator."""

from __future__ import annotations

import random

import pytest

from rendr.config import FlowConfig
from rendr.core.events import EventKind
from rendr.core.types import State
from rendr.testing.simnet import Side, Sim

D, L = Side.DIALER, Side.LISTENER
MIB = 1 << 20


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def downs(sim: Sim, side: Side, pid: int) -> list[tuple[str, float]]:
    return [(str(e.cause), e.at) for e in sim.events_of(side, EventKind.PATH_DOWN)
            if e.path_id == pid]


@pytest.mark.parametrize("near", [D, L])
def test_fin_delivers_what_is_in_flight_then_eof(near: Side) -> None:
    """``near`` is told EOF at once; every byte ``near`` had already sent on the path
    arrives, in order, and only then is the far end told EOF; nothing is reset.  (One
    path: with a second one, the dialer's ACTIVATE naming the dead path may reach the
    listener first, and the listener then drops the path itself.)"""
    delay = 0.010
    sim = Sim(FlowConfig(dead_timeout=5.0))
    p1 = sim.add_path(delay, rate=10e6)
    data = payload(MIB)
    sim.write(near, data, eof=True)  # near's direction of p1 is busy at the FIN
    seen: dict[str, float] = {}

    def fin() -> None:
        pipe = sim.paths[p1].pipes[near]
        seen["in_flight"] = sum(len(d) for _, kind, d in pipe.items if d is not None)
        seen["received_before"] = sim.flows[near.other].paths[p1].bytes_received
        seen["eof_due"] = max(sim.now, pipe.tx_free_at) + delay
        sim.fin(p1, near=near)

    t_fin = 0.05
    sim.at(t_fin, fin)
    sim.at(1.0, lambda: sim.add_path(delay))  # the dialer re-dials
    sim.run(2.0)
    assert sim.eof[near.other] and sim.received[near.other] == data
    assert seen["in_flight"] > 64 * 1024, "the FIN must queue behind bytes in flight"
    far_got = sim.flows[near.other].find_path(p1).bytes_received - seen["received_before"]
    assert far_got == seen["in_flight"], "every byte in flight before the FIN arrived"
    assert downs(sim, near, p1) == [("eof", t_fin)]
    assert downs(sim, near.other, p1) == [("eof", pytest.approx(seen["eof_due"]))]
    assert seen["eof_due"] > t_fin + delay  # the FIN waited for the backlog
    assert sim.paths[p1].closed == [True, True]
    for side in Side:
        assert sim.flows[side].state is State.ACTIVE and sim.flows[side].error is None
        assert len(sim.events_of(side, EventKind.PATH_DOWN)) == 1
        assert "reset" not in [c for c, _ in downs(sim, side, p1)]


def test_fin_on_a_blackholed_path_is_held_with_the_bytes() -> None:
    sim = Sim(FlowConfig(dead_timeout=5.0))
    p1 = sim.add_path(0.010)
    sim.run(0.5)
    sim.blackhole(p1)
    sim.fin(p1, near=D)
    sim.run(1.0)
    assert downs(sim, D, p1) == [("eof", 0.5)]
    assert downs(sim, L, p1) == []  # a blackhole reports nothing
    sim.unblackhole(p1)
    sim.run(2.0)
    assert downs(sim, L, p1) == [("eof", pytest.approx(1.01))]


def test_fin_after_kill_or_fin_is_a_no_op() -> None:
    sim = Sim()
    p1 = sim.add_path(0.010)
    p2 = sim.add_path(0.010)
    sim.add_path(0.010)
    sim.run(0.2)
    sim.kill(p1)
    sim.fin(p1)
    sim.fin(p2, near=L)
    sim.fin(p2, near=L)
    sim.run(1.0)
    assert downs(sim, D, p1) == [("reset", 0.2)]
    assert downs(sim, L, p1) == [("reset", pytest.approx(0.21))]
    assert downs(sim, L, p2) == [("eof", 0.2)]
    assert downs(sim, D, p2) == [("eof", pytest.approx(0.21))]
