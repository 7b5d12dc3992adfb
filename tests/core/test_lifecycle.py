"""Lifecycle transition table, ZombieGuard, and the scheduler factory."""

from __future__ import annotations

import pytest

from rendr.config import FlowConfig
from rendr.core.lifecycle import TRANSITIONS, Lifecycle, ZombieGuard
from rendr.core.scheduler import BondScheduler, PrimeScheduler, RaceScheduler, make_scheduler
from rendr.core.types import Mode, State
from rendr.errors import RendrError


def test_every_state_has_a_row_and_closed_is_final() -> None:
    assert set(TRANSITIONS) == set(State) - {State.INIT}
    assert TRANSITIONS[State.CLOSED] == frozenset()
    for targets in TRANSITIONS.values():
        assert targets <= set(TRANSITIONS)


@pytest.mark.parametrize(("start", "target"), [
    (s, t) for s in TRANSITIONS for t in TRANSITIONS if t is not s and t not in TRANSITIONS[s]
])
def test_illegal_transitions_are_refused(start: State, target: State) -> None:
    life = Lifecycle("x")
    life.state = start
    with pytest.raises(RuntimeError, match="illegal"):
        life.to(target)


def test_budget_linger_and_finish() -> None:
    life = Lifecycle("x")
    life.path_up()
    assert life.state is State.ACTIVE
    life.no_path(1.0, 90.0)
    life.no_path(5.0, 90.0)  # started once
    assert life.state is State.MIGRATING and life.budget_at == 91.0
    life.path_up()
    assert life.state is State.ACTIVE and life.budget_at is None
    assert life.request_close(2.0, 10.0) and not life.request_close(3.0, 10.0)
    assert life.state is State.CLOSING and life.deadline() == 12.0
    life.no_path(4.0, 90.0)  # the budget runs, the state stays CLOSING
    assert life.state is State.CLOSING and life.deadline() == 12.0
    err = RendrError("boom")
    assert life.finish(err) and not life.finish(None)
    assert life.closed and life.error is err and life.deadline() is None
    with pytest.raises(RendrError, match="boom"):
        life.check_open()


def test_zombie_guard() -> None:
    guard = ZombieGuard(limit=2, window=30.0)
    assert guard.strike(0.0) == 0 and guard.strike(1.0) == 0
    assert guard.strike(2.0) == 3  # the third within the window
    guard.progress()
    assert guard.strike(3.0) == 0
    old = ZombieGuard(limit=2, window=30.0)
    assert old.strike(0.0) == 0 and old.strike(1.0) == 0
    assert old.strike(40.0) == 0  # the old strikes left the window
    assert ZombieGuard(limit=0, window=30.0).strike(0.0) == 0


def test_zombie_guard_one_outage_is_one_strike() -> None:
    guard = ZombieGuard(limit=2, window=30.0, settle=0.5)
    for t in (1.0, 1.0, 1.001):  # three paths of one route reset, failover onto each
        guard.lost(t)
        assert guard.strike(t) == 0
    guard.lost(1.002)  # the last one: no live path left
    assert guard.strike(3.0) == 0  # the re-dialled path attaches: the same outage
    guard.lost(5.0)  # a later outage
    assert guard.strike(5.0) == 0
    guard.lost(9.0)  # and a third: the guard fires
    assert guard.strike(9.1) == 3


def test_zombie_guard_outage_spans_at_most_settle() -> None:
    guard = ZombieGuard(limit=2, window=30.0, settle=0.5)
    fired = []
    for i in range(20):  # a path that accepts and dies every 0.1 s
        guard.lost(1.0 + 0.1 * i)
        fired.append(guard.strike(1.05 + 0.1 * i))
    assert fired.index(3) == 10  # strikes at 1.05, 1.55, 2.05: the third ends it


def test_zombie_guard_progress_ends_the_outage() -> None:
    guard = ZombieGuard(limit=1, window=30.0, settle=10.0)
    guard.lost(1.0)
    assert guard.strike(1.0) == 0
    guard.progress()
    guard.lost(2.0)  # within settle, but data moved since: a new outage, a new strike
    assert guard.strike(2.0) == 0
    guard.lost(3.0)
    assert guard.strike(3.0) == 0  # the same outage as the one at 2.0
    assert guard.strike(4.0) == 2  # a death-driven migration with no loss: counted


def test_scheduler_factory() -> None:
    assert isinstance(make_scheduler(Mode.PRIME, FlowConfig(), 0.0), PrimeScheduler)
    assert isinstance(make_scheduler(Mode.RACE, FlowConfig(), 0.0), RaceScheduler)
    assert isinstance(make_scheduler(Mode.BOND, FlowConfig(), 0.0), BondScheduler)
