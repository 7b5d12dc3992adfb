"""Lifecycle transition table, ZombieGuard, and the scheduler factory."""

from __future__ import annotations

import pytest

from rendr.config import FlowConfig
from rendr.core.lifecycle import TRANSITIONS, Lifecycle, ZombieGuard
from rendr.core.scheduler import PrimeScheduler, make_scheduler
from rendr.core.types import Mode, State
from rendr.errors import ModeUnavailable, RendrError


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


def test_scheduler_factory() -> None:
    assert isinstance(make_scheduler(Mode.PRIME, FlowConfig(), 0.0), PrimeScheduler)
    for mode in (Mode.RACE, Mode.BOND):
        with pytest.raises(ModeUnavailable):
            make_scheduler(mode, FlowConfig(), 0.0)
