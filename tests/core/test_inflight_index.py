"""SACK accounting of a path's in-flight ranges (``PathState.sacked``) is exact and
does not walk every range in flight on each ACK (it did: with a hole at the front of
a few thousand UDP datagrams in flight each ACK cost milliseconds of CPU, and the
sender fell from megabytes to a few hundred kilobytes per second)."""

from __future__ import annotations

import random
from bisect import bisect_right

from rendr.config import FlowConfig
from rendr.core.framing import StreamDeframer
from rendr.core.inflight import InflightIndex
from rendr.core.path import PathState
from rendr.core.paths import PathSet
from rendr.core.recovery import Recovery


def _naive(inflight: list[tuple[int, int]], ranges: list[tuple[int, int]]) -> int:
    """The definition (the engine's former walk over every range)."""
    starts = [s for s, _ in ranges]
    total = 0
    for s, e in inflight:
        i = max(bisect_right(starts, s) - 1, 0)
        while i < len(ranges):
            rs, re = ranges[i]
            if rs >= e:
                break
            total += max(0, min(e, re) - max(s, rs))
            i += 1
    return total


def _path() -> PathState:
    return PathState(1, transport="t", local_addr="a", remote_addr="b", now=0.0,
                     deframer=StreamDeframer(lambda *a: 0, lambda *a: 0))


def _sack(rng: random.Random, lo: int, hi: int) -> list[tuple[int, int]]:
    cuts = sorted(rng.sample(range(lo, hi + 1), min(2 * rng.randint(0, 16), hi - lo + 1)))
    return [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)
            if cuts[i] < cuts[i + 1]]


def test_sacked_matches_the_definition_under_random_sends_resends_and_acks() -> None:
    rng = random.Random(7)
    for _ in range(60):
        paths = PathSet(FlowConfig())
        p = _path()
        paths.add(p)
        top = cum = 0
        for step in range(300):
            r = rng.random()
            if r < 0.55:  # new data, one datagram's worth (sometimes a large range)
                n = rng.choice((1, 500, 1150, 1150, 1150, 5000))
                Recovery.on_sent(p, top, top + n, False, step)
                top += n
            elif r < 0.75 and top > cum:  # a re-send below newer ranges (may overlap)
                s = rng.randrange(cum, top)
                e = min(top, s + rng.randint(1, 2000))
                Recovery.on_sent(p, s, e, True, step)
            else:  # an ACK: the cumulative offset moves up, SACK ranges above it
                cum = rng.randint(cum, max(cum, top - rng.randint(0, 3000)))
                ranges = _sack(rng, cum + 1, top + 100) if top > cum else []
                Recovery.on_acked(paths, cum, ranges, step)
                want = _naive(list(p.inflight), ranges) if ranges and p.inflight else 0
                assert p.sacked == want
                assert len(p.inflight_index) == len(p.inflight)


def test_an_ack_above_a_hole_does_not_walk_everything_in_flight() -> None:
    paths = PathSet(FlowConfig())
    p = _path()
    paths.add(p)
    n = 5000
    for i in range(n):
        Recovery.on_sent(p, i * 1150, (i + 1) * 1150, False, 0.0)
    index = p.inflight_index
    before = index.examined
    for k in range(2, 1000):  # the first datagram lost: the peer SACKs the rest
        Recovery.on_acked(paths, 0, [(1150, k * 1150)], 0.001 * k)
        assert p.sacked == (k - 1) * 1150
    assert index.examined - before < 10 * 1000  # was ~n per ACK


def test_the_index_mirrors_a_resend_and_the_cumulative_ack() -> None:
    idx = InflightIndex()
    idx.append(0, 10)
    idx.append(10, 20)
    idx.insert(0, 5)
    assert idx.covered([(0, 20)]) == 25
    idx.popleft(0, 5)
    assert idx.covered([(0, 20)]) == 20 and len(idx) == 2
    idx.clear()
    assert idx.covered([(0, 20)]) == 0 and len(idx) == 0


def test_ranges_with_the_same_start_leave_in_the_order_they_are_named() -> None:
    idx = InflightIndex()
    idx.append(0, 10)
    idx.append(10, 20)
    idx.insert(5, 7)  # two re-sends of the same start
    idx.insert(5, 9)
    assert idx.covered([(0, 20)]) == 26
    idx.popleft(0, 10)
    idx.popleft(5, 9)  # the second one at that start
    assert idx.covered([(6, 20)]) == 1 + 10
    idx.popleft(5, 7)
    assert idx.covered([(0, 20)]) == 10 and len(idx) == 1
