"""A path's in-flight ranges stay in offset order, so the cumulative ACK releases
re-sends too (found by the random fault schedules in BOND: after a path died, its
ranges re-sent on the survivor sat behind newer ones and counted in flight for
ever, so the survivor's allowance never freed and the flow stalled)."""

from __future__ import annotations

from rendr.config import FlowConfig
from rendr.core.framing import StreamDeframer
from rendr.core.path import PathState
from rendr.core.paths import PathSet
from rendr.core.recovery import Recovery


def _path() -> PathState:
    return PathState(1, transport="t", local_addr="a", remote_addr="b", now=0.0,
                     deframer=StreamDeframer(lambda *a: 0, lambda *a: 0))


def test_a_resend_below_newer_ranges_is_released_by_the_cumulative_ack() -> None:
    paths = PathSet(FlowConfig())
    p = _path()
    paths.add(p)
    Recovery.on_sent(p, 2000, 3000, False, 0.0)
    Recovery.on_sent(p, 3000, 4000, False, 0.0)
    Recovery.on_sent(p, 1000, 2000, True, 0.1)  # a re-send of a dead path's range
    assert list(p.inflight) == [(1000, 2000), (2000, 3000), (3000, 4000)]
    assert p.inflight_bytes == 3000
    Recovery.on_acked(paths, 3000, [], 0.2)
    assert list(p.inflight) == [(3000, 4000)] and p.inflight_bytes == 1000
    Recovery.on_acked(paths, 3000, [(3000, 4000)], 0.3)
    assert p.sacked == 1000
