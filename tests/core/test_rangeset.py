"""RangeSet against a reference model: a Python set of ints."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rendr.core.rangeset import RangeSet

FAST = settings(max_examples=300, deadline=None, derandomize=True)

U = 80  # universe of the model: [0, U)


def runs(values: set[int], lo: int | None = None, hi: int | None = None) -> list[tuple[int, int]]:
    """Maximal runs of consecutive ints of ``values`` (within [lo, hi)), as half-open ranges."""
    out: list[tuple[int, int]] = []
    for v in sorted(values):
        if (lo is not None and v < lo) or (hi is not None and v >= hi):
            continue
        if out and out[-1][1] == v:
            out[-1] = (out[-1][0], v + 1)
        else:
            out.append((v, v + 1))
    return out


def check(rs: RangeSet, model: set[int]) -> None:
    ranges = rs.as_list()
    for s, e in ranges:
        assert s < e, f"empty range in {ranges}"
    for (_, e1), (s2, _) in pairwise(ranges):
        assert e1 < s2, f"ranges not sorted, disjoint and non-adjacent: {ranges}"
    assert ranges == runs(model)
    assert list(rs) == ranges
    assert len(rs) == len(ranges)
    assert bool(rs) == bool(model)
    assert rs.total() == len(model)
    if model:
        assert rs.first() == ranges[0]


span = st.tuples(st.integers(-5, U + 5), st.integers(-5, U + 5))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), span),
        st.tuples(st.just("subtract"), span),
        st.tuples(st.just("remove_below"), st.integers(-5, U + 5)),
        st.tuples(st.just("pop_first"), st.integers(1, 20)),
    ),
    max_size=40,
)


@FAST
@given(ops, st.lists(span, max_size=5))
def test_rangeset_matches_set_model(operations: list, initial: list[tuple[int, int]]) -> None:
    model: set[int] = set()
    for s, e in initial:
        model |= set(range(s, e))
    rs = RangeSet(initial)
    check(rs, model)
    for op, arg in operations:
        if op == "add":
            s, e = arg
            rs.add(s, e)
            model |= set(range(s, e))
        elif op == "subtract":
            s, e = arg
            rs.subtract(s, e)
            model -= set(range(s, e))
        elif op == "remove_below":
            rs.remove_below(arg)
            model = {v for v in model if v >= arg}
        else:
            if not model:
                with pytest.raises(IndexError):
                    rs.pop_first(arg)
                continue
            lo = min(model)
            run_end = lo
            while run_end in model:
                run_end += 1
            want = (lo, min(run_end, lo + arg))
            assert rs.pop_first(arg) == want
            model -= set(range(*want))
        check(rs, model)


@FAST
@given(st.lists(span, max_size=8), span, st.lists(st.integers(-5, U + 5), max_size=10))
def test_missing_and_contains_match_model(adds: list[tuple[int, int]],
                                          query: tuple[int, int], probes: list[int]) -> None:
    rs = RangeSet()
    model: set[int] = set()
    for s, e in adds:
        rs.add(s, e)
        model |= set(range(s, e))
    s, e = query
    holes = set(range(s, e)) - model
    assert rs.missing(s, e) == runs(holes, s, e)
    for v in probes:
        assert rs.contains(v) == (v in model)
    # missing() is a query: it must not change the set
    check(rs, model)


@FAST
@given(st.lists(span, max_size=10), st.integers(0, 12))
def test_as_list_most(adds: list[tuple[int, int]], most: int) -> None:
    rs = RangeSet(adds)
    assert rs.as_list(most) == rs.as_list()[:most]


def test_adjacent_ranges_merge() -> None:
    rs = RangeSet()
    rs.add(10, 20)
    rs.add(20, 30)
    rs.add(0, 10)
    assert rs.as_list() == [(0, 30)]


def test_subtract_splits_a_range() -> None:
    rs = RangeSet([(0, 100)])
    rs.subtract(40, 60)
    assert rs.as_list() == [(0, 40), (60, 100)]
    rs.subtract(0, 1)
    rs.subtract(99, 200)
    assert rs.as_list() == [(1, 40), (60, 99)]


def test_empty_and_inverted_spans_are_ignored() -> None:
    rs = RangeSet([(5, 5), (9, 3)])
    assert not rs
    rs.add(0, 10)
    rs.subtract(7, 2)
    rs.subtract(4, 4)
    assert rs.as_list() == [(0, 10)]
    assert rs.missing(5, 5) == []
    assert rs.missing(8, 3) == []


def test_missing_on_empty_set() -> None:
    assert RangeSet().missing(3, 9) == [(3, 9)]


def test_large_offsets() -> None:
    big = 1 << 62
    rs = RangeSet([(big, big + 10), (big + 20, big + 30)])
    assert rs.missing(big - 5, big + 25) == [(big - 5, big), (big + 10, big + 20)]
    rs.remove_below(big + 25)
    assert rs.as_list() == [(big + 25, big + 30)]
    assert rs.pop_first(1 << 40) == (big + 25, big + 30)
    assert not rs


def test_iteration_is_over_a_snapshot() -> None:
    rs = RangeSet([(0, 1), (2, 3), (4, 5)])
    seen = []
    for s, e in rs:
        rs.subtract(s, e)
        seen.append((s, e))
    assert seen == [(0, 1), (2, 3), (4, 5)]
    assert not rs


def test_highest() -> None:
    rs = RangeSet([(0, 1), (2, 3), (4, 5)])
    assert rs.highest(2) == [(2, 3), (4, 5)]
    assert rs.highest(5) == [(0, 1), (2, 3), (4, 5)]
    assert rs.highest(0) == []
