"""A clean close over a datagram path that drops the FIN or its ACK for a long time
(simulated network, virtual clock)."""

from __future__ import annotations

import logging

import pytest

from rendr.config import FlowConfig
from rendr.core.reliability import FIN_WAIT_MAX
from rendr.core.types import State
from rendr.testing.simnet import Side, Sim

D, L = Side.DIALER, Side.LISTENER


@pytest.mark.parametrize("outage", [4.0, 7.5])
def test_fin_through_a_long_outage_still_closes_cleanly(
        outage: float, caplog: pytest.LogCaptureFixture) -> None:
    """The path drops every datagram for ``outage`` seconds right after ``close()``,
    then heals.  The FIN keeps being re-sent (at most ``FIN_WAIT_MAX`` apart), so the
    close ends cleanly within ``linger`` (10 s) and the peer reads EOF, no error.
    Before: the FIN's wait doubled from the first probe timeout (1 s, no RTT sample
    yet) to 60 s -- sends at 0, 1, 3 and 7 s, the next at 15 s -- so after a 7.5 s
    outage the linger ran out and the close aborted (the peer: ConnAborted), though
    every byte had arrived."""
    sim = Sim(FlowConfig(linger=10.0, dead_timeout=30.0, migration_budget=60.0), seed=1)
    pid = sim.add_path(0.005, mtu=1200)
    sim.write(D, b"x" * 10_000)
    assert sim.run_until(lambda: len(sim.received[L]) == 10_000, 5)
    sim.paths[pid].loss = 1.0
    healed_at = sim.now + outage
    sim.at(healed_at, lambda: setattr(sim.paths[pid], "loss", 0.0))
    with caplog.at_level(logging.WARNING, logger="rendr"):
        sim.close(D)
        assert sim.run_until(lambda: all(f.state is State.CLOSED for f in sim.flows),
                             sim.now + 15)
    assert "linger expired" not in caplog.text
    assert sim.flows[D].error is None and sim.flows[L].error is None
    assert sim.eof[L] and bytes(sim.received[L]) == b"x" * 10_000
    # the close took the outage plus at most one FIN wait (and a round trip)
    assert sim.now <= healed_at + FIN_WAIT_MAX + 0.1
