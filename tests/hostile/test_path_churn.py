"""Issue 6: a long-lived flow on a flapping link.  Dead and retired paths must leave
the engine's hot structures, so per-event work does not grow with history, and path
ids are still never reused."""

from __future__ import annotations

import pytest

from rendr.config import FlowConfig
from rendr.core.types import Cause, Role
from rendr.errors import RendrError
from rendr.testing.simnet import Side, Sim

FLAPS = 2000


def test_thousands_of_backup_path_deaths_leave_the_engine_the_same_size() -> None:
    sim = Sim(FlowConfig(migration_budget=30.0), seed=7)
    sim.add_path(0.002)
    sizes = []
    for i in range(FLAPS):
        pid = sim.add_path(0.002)
        sim.run(sim.now + 0.01)
        sim.kill(pid) if i % 2 else sim.remove_path(Side.DIALER, pid)
        sim.write(Side.DIALER, b"ping %d\n" % i)
        sim.run(sim.now + 0.05)
        if i in (100, FLAPS - 1):
            sizes.append([len(f.paths) for f in sim.flows])
    # the hot structure holds the live path (and a path still being retired), not history
    assert sizes[0] == sizes[1]
    assert max(sizes[1]) <= 3
    for flow in sim.flows:
        stats = flow.stats(sim.now)
        assert len(stats.paths) <= 3 + flow.config.max_paths + 32  # bounded history
        assert flow.migration_count == 0 or flow.role is Role.DIALER
    assert bytes(sim.received[Side.LISTENER]) == b"".join(b"ping %d\n" % i for i in range(FLAPS))


def test_a_pruned_path_id_is_never_reused() -> None:
    sim = Sim(FlowConfig(), seed=1)
    sim.add_path(0.002)
    pid = sim.add_path(0.002)
    sim.kill(pid)
    sim.run(sim.now + 1.0)
    flow = sim.dialer
    assert pid not in flow.paths  # pruned
    assert flow.path_id_used(pid)
    with pytest.raises(RendrError, match="already"):
        flow.add_path(pid, now=sim.now)
    flow.path_failed(pid, Cause.RESET, sim.now)  # a late report about it is ignored
