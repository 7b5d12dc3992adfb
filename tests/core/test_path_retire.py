"""Retiring a path (remove_path / PATH_CLOSE) on the simulated network."""

from __future__ import annotations

from rendr.testing.simnet import Side, Sim

D, L = Side.DIALER, Side.LISTENER


def test_unanswered_path_close_does_not_leave_the_path_hanging() -> None:
    """remove_path() on a path that went silent: after a bounded wait the path is
    aborted and what it carried is re-sent on the active path."""
    sim = Sim()
    active = sim.add_path(0.005)
    other = sim.add_path(0.005)
    sim.run(0.5)
    sim.blackhole(other)
    sim.remove_path(D, other)
    sim.run(3.0)
    assert sim.dialer.find_path(other).status.value == "removed"
    assert sim.dialer.active == active
    assert sim.dialer.get_timer() is not None and sim.dialer.get_timer() > sim.now - 1
