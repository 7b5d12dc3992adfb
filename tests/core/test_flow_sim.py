"""Two Flow engines back to back on the simulated network (rendr.testing.simnet).

Everything here runs in virtual time and is deterministic: no sockets, no clock.
"""

from __future__ import annotations

import hashlib
import random

import pytest

import rendr
from rendr.config import FlowConfig
from rendr.core.events import Event, EventKind
from rendr.core.flow import Flow
from rendr.core.types import Cause, PathStatus, Role, State
from rendr.core.wire import CloseCode
from rendr.testing.simnet import Side, Sim, SimError

D, L = Side.DIALER, Side.LISTENER
MIB = 1 << 20


def payload(n: int, seed: int = 0) -> bytes:
    """``n`` reproducible pseudo-random bytes (a shifted copy is never equal)."""
    return random.Random(seed).randbytes(n)


def kinds(sim: Sim, side: Side, kind: EventKind) -> list[Event]:
    return sim.events_of(side, kind)


def assert_exact(got: bytes | bytearray, want: bytes) -> None:
    assert len(got) == len(want), f"got {len(got)} bytes, want {len(want)}"
    assert hashlib.sha256(got).digest() == hashlib.sha256(want).digest(), "stream corrupted"


def both_closed(sim: Sim) -> bool:
    return sim.dialer.state is State.CLOSED and sim.listener.state is State.CLOSED


def assert_no_errors(sim: Sim) -> None:
    for side in Side:
        assert sim.flows[side].error is None, (side, sim.flows[side].error)
        assert sim.read_error[side] is None and sim.write_error[side] is None
        assert not kinds(sim, side, EventKind.CLOSED) or sim.flows[side].state is State.CLOSED


# ---------------------------------------------------------------- plain transfers


@pytest.mark.parametrize("sender", [D, L])
@pytest.mark.parametrize("size", [1, 6 * MIB + 123])
def test_transfer(sender: Side, size: int) -> None:
    sim = Sim(seed=size)
    sim.add_path(0.010, rate=200e6)
    data = payload(size, seed=size)
    sim.write(sender, data, eof=True)
    assert sim.run_until(lambda: sim.eof[sender.other], max_time=30)
    assert_exact(sim.received[sender.other], data)
    assert sim.received[sender] == b""
    for side in Side:
        assert sim.flows[side].recv_dups == 0
        assert not kinds(sim, side, EventKind.PATH_DOWN)
    if size > 1:  # it took virtual time: the rate limit is real (6 MiB at 200 MB/s)
        assert sim.now > size / 200e6
    assert_no_errors(sim)


def test_one_byte_each_way_then_close() -> None:
    sim = Sim()
    sim.add_path(0.020)
    sim.write(D, b"x")
    sim.write(L, b"y")
    assert sim.run_until(lambda: sim.received[D] == b"y" and sim.received[L] == b"x", 1)
    assert sim.now == pytest.approx(0.020)  # exactly one one-way delay
    sim.close(D)
    assert sim.run_until(lambda: both_closed(sim), 5)
    assert_no_errors(sim)
    assert sim.eof[L]


# ---------------------------------------------------------------- migration and faults


def test_explicit_migrate_mid_transfer() -> None:
    sim = Sim()
    p1 = sim.add_path(0.010, rate=50e6, sndbuf=64 * 1024)
    p2 = sim.add_path(0.025, rate=50e6, sndbuf=64 * 1024)
    data = payload(8 * MIB)
    sim.write(D, data, eof=True)
    in_flight: list[int] = []
    sim.at(0.05, lambda: in_flight.append(len(sim.paths[p1].pipes[D].items)))
    sim.at(0.05, lambda: sim.migrate(p2))
    assert sim.run_until(lambda: sim.eof[L], 10)
    assert_exact(sim.received[L], data)
    assert in_flight[0] > 0, "the migration must happen with bytes in flight on the old path"
    assert sim.dialer.paths[p1].bytes_sent > 0 and sim.dialer.paths[p2].bytes_sent > 0
    assert sim.dialer.recv_dups == 0 and sim.listener.recv_dups == 0
    assert sum(p.retransmits for p in sim.dialer.paths.values()) == 0
    (mig,) = kinds(sim, D, EventKind.MIGRATION)
    assert (mig.old_path, mig.new_path, mig.cause, mig.at) == (p1, p2, "explicit", 0.05)
    (lmig,) = kinds(sim, L, EventKind.MIGRATION)
    assert (lmig.old_path, lmig.new_path, lmig.cause) == (p1, p2, "peer")
    assert sim.dialer.active == sim.listener.active == p2
    for side in Side:
        assert not kinds(sim, side, EventKind.PATH_DOWN)
    assert_no_errors(sim)


def test_kill_active_path_with_data_in_flight() -> None:
    sim = Sim()
    p1 = sim.add_path(0.010, rate=20e6)
    p2 = sim.add_path(0.015, rate=20e6)
    data = payload(4 * MIB)
    sim.write(D, data, eof=True)
    lost: list[int] = []
    sim.at(0.08, lambda: lost.append(len(sim.paths[p1].pipes[D].items)))
    sim.at(0.08, lambda: sim.kill(p1))
    assert sim.run_until(lambda: sim.eof[L], 10)
    assert lost[0] > 0, "the kill must destroy bytes in flight"
    assert_exact(sim.received[L], data)
    assert sim.dialer.paths[p2].retransmits > 0
    for side in Side:
        (down,) = kinds(sim, side, EventKind.PATH_DOWN)
        assert (down.path_id, down.cause) == (p1, "reset")
        (mig,) = kinds(sim, side, EventKind.MIGRATION)
        assert (mig.old_path, mig.new_path, mig.cause) == (p1, p2, "death")
        assert sim.flows[side].state is State.ACTIVE
    assert kinds(sim, D, EventKind.PATH_DOWN)[0].at == 0.08
    assert kinds(sim, L, EventKind.PATH_DOWN)[0].at == pytest.approx(0.09)  # RST took 10 ms
    assert_no_errors(sim)


def test_blackhole_active_path_detected_by_liveness() -> None:
    cfg = FlowConfig()
    sim = Sim(cfg)
    p1 = sim.add_path(0.005, rate=50e6, sndbuf=64 * 1024)
    p2 = sim.add_path(0.005, rate=50e6, sndbuf=64 * 1024)
    data = payload(16 * MIB)
    sim.write(D, data, eof=True)
    t_bh = 0.2
    sim.at(t_bh, lambda: sim.blackhole(p1))
    assert sim.run_until(lambda: sim.eof[L], 20)
    assert_exact(sim.received[L], data)
    # the flow moved when p1 became suspect, well before p1's dead time
    assert sim.now < t_bh + cfg.suspect_timeout + 0.1 + 16 * MIB / 50e6 + 0.3
    assert sim.run_until(lambda: all(kinds(sim, s, EventKind.PATH_DOWN) for s in Side), 5)
    for side in Side:
        (suspect,) = kinds(sim, side, EventKind.PATH_SUSPECT)
        assert suspect.path_id == p1
        assert t_bh + cfg.suspect_timeout <= suspect.at <= t_bh + 0.35, suspect.at
        (mig,) = kinds(sim, side, EventKind.MIGRATION)
        # the listener may hear the dialer's ACTIVATE before suspecting p1 itself
        assert (mig.new_path, mig.cause) in ((p2, "suspect"), (p2, "peer") if side is L else ())
        (down,) = kinds(sim, side, EventKind.PATH_DOWN)
        assert (down.path_id, down.cause) == (p1, "timeout")
        assert t_bh + cfg.dead_timeout <= down.at <= t_bh + 1.0, down.at
    assert_no_errors(sim)


def test_reorder_across_paths_slow_to_fast() -> None:
    sim = Sim(FlowConfig(send_buffer_min=8 * MIB))  # room for both writes at once
    slow = sim.add_path(0.080)
    fast = sim.add_path(0.001)
    data = payload(3 * MIB)
    sim.write(D, data[: 2 * MIB])
    sim.at(0.010, lambda: sim.migrate(fast))
    sim.at(0.011, lambda: sim.write(D, data[2 * MIB :], eof=True))
    assert sim.run_until(lambda: sim.eof[L], 5)
    assert_exact(sim.received[L], data)
    assert sim.dialer.paths[slow].bytes_sent == 2 * MIB
    assert sim.dialer.paths[fast].bytes_sent == MIB
    assert sim.listener.recv_queue_hwm >= MIB, "the fast path's bytes must have overtaken"
    assert sim.listener.recv_dups == 0
    assert_no_errors(sim)


def test_all_paths_killed_then_new_path_after_5s() -> None:
    cfg = FlowConfig(migration_budget=10.0)
    sim = Sim(cfg)
    p1 = sim.add_path(0.010, rate=10e6)
    p2 = sim.add_path(0.020, rate=10e6)
    data = payload(3 * MIB)
    sim.write(D, data, eof=True)
    sim.at(0.05, lambda: sim.kill(p1))
    sim.at(0.05, lambda: sim.kill(p2))
    states: list[State] = []
    sim.at(4.0, lambda: states.extend(f.state for f in sim.flows))
    sim.at(5.05, lambda: sim.add_path(0.010, rate=10e6))
    assert sim.run_until(lambda: sim.eof[L], 20)
    assert states == [State.MIGRATING, State.MIGRATING]
    assert_exact(sim.received[L], data)
    assert sim.now > 5.05
    for side in Side:
        last = kinds(sim, side, EventKind.MIGRATION)[-1]
        assert (last.new_path, last.cause) == (3, "death")
        assert sim.flows[side].state is State.ACTIVE
    sim.close(D)
    assert sim.run_until(lambda: both_closed(sim), 30)
    assert_no_errors(sim)


def test_all_paths_killed_budget_fires() -> None:
    budget = 3.0
    sim = Sim(FlowConfig(migration_budget=budget))
    p1 = sim.add_path(0.010, rate=10e6)
    p2 = sim.add_path(0.030, rate=10e6)
    data = payload(4 * MIB)
    sim.reading[L] = False  # leave delivered bytes buffered in the engine
    sim.write(D, data, eof=True)
    t_kill = 0.1
    sim.at(t_kill, lambda: sim.kill(p1))
    sim.at(t_kill, lambda: sim.kill(p2))
    assert sim.run_until(lambda: both_closed(sim), 10)
    for side, death in ((D, t_kill), (L, t_kill + 0.030)):  # the far end hears the last RST late
        assert kinds(sim, side, EventKind.PATH_DOWN)[-1].at == pytest.approx(death)
        (closed,) = kinds(sim, side, EventKind.CLOSED)
        assert closed.at == pytest.approx(death + budget, abs=1e-6)
        assert isinstance(closed.error, rendr.MigrationBudgetExceeded)
        assert isinstance(sim.flows[side].error, rendr.MigrationBudgetExceeded)
    # the reader gets every byte that arrived, then the error
    got = bytearray()
    with pytest.raises(rendr.MigrationBudgetExceeded):
        while (chunk := sim.listener.read(100_000)) is not None:
            assert chunk, "no clean EOF on a failed flow"
            got += chunk
    assert 0 < len(got) < len(data)
    assert got == data[: len(got)]
    with pytest.raises(rendr.MigrationBudgetExceeded):
        sim.listener.read(1)
    with pytest.raises(rendr.MigrationBudgetExceeded):
        sim.dialer.send(b"more", sim.now)


def test_budget_not_exceeded_if_path_comes_back_in_time() -> None:
    sim = Sim(FlowConfig(migration_budget=3.0))
    p1 = sim.add_path(0.010)
    sim.at(1.0, lambda: sim.kill(p1))
    sim.at(3.9, lambda: sim.add_path(0.010))  # 0.1 s before the dialer's budget runs out
    sim.run(20)
    for side in Side:
        assert sim.flows[side].state is State.ACTIVE
        assert not kinds(sim, side, EventKind.CLOSED)


def test_slow_upload_is_not_declared_dead() -> None:
    rate = 50_000.0
    sim = Sim()
    p1 = sim.add_path(0.020, rate=rate, mss=1460, sndbuf=64 * 1024)
    data = payload(MIB)
    sim.write(D, data, eof=True)
    blocked: list[bool] = []
    backlog: list[float] = []
    sim.at(1.0, lambda: blocked.append(sim.paths[p1].blocked[D]))
    for i in range(80):
        sim.at(0.25 * i, lambda: backlog.append(sim.paths[p1].backlog(D, sim.now)))
    assert sim.run_until(lambda: sim.eof[L], 60)
    assert_exact(sim.received[L], data)
    assert sim.now >= MIB / rate  # ~21 virtual seconds of a saturated path
    assert blocked == [True]  # the carrier pushed back ...
    assert max(backlog) <= 64 * 1024 + sim.dialer.config.write_burst  # ... and it was obeyed
    for side in Side:
        assert not kinds(sim, side, EventKind.PATH_DOWN), kinds(sim, side, EventKind.PATH_DOWN)
        assert sim.flows[side].paths[p1].status is PathStatus.UP
    assert_no_errors(sim)


# ---------------------------------------------------------------- ends


def test_write_eof_half_close() -> None:
    sim = Sim()
    sim.add_path(0.010)
    up, down = payload(300_000, 1), payload(500_000, 2)
    sim.write(D, up, eof=True)
    assert sim.run_until(lambda: sim.eof[L], 5)
    assert_exact(sim.received[L], up)
    with pytest.raises(rendr.RendrError):
        sim.dialer.send(b"late", sim.now)
    assert not sim.eof[D]
    sim.write(L, down)  # the other direction still works
    assert sim.run_until(lambda: len(sim.received[D]) == len(down), 5)
    assert_exact(sim.received[D], down)
    sim.run(sim.now + 1)
    assert not sim.eof[D] and sim.dialer.state is State.ACTIVE
    sim.write(L, b"", eof=True)
    assert sim.run_until(lambda: sim.eof[D], 5)
    assert sim.dialer.read(10) == b"" and sim.listener.read(10) == b""
    sim.run(sim.now + 0.1)  # the dialer's ACK of the listener's FIN travels back
    assert sim.dialer.flushed and sim.listener.flushed
    assert_no_errors(sim)


def test_close_delivers_everything_then_both_closed() -> None:
    sim = Sim()
    sim.add_path(0.010, rate=20e6)
    data = payload(3 * MIB)
    sim.write(D, data, close=True)
    assert sim.run_until(lambda: both_closed(sim), 10)
    assert_exact(sim.received[L], data)
    assert sim.eof[L]
    for side in Side:
        assert sim.flows[side].error is None
        (closed,) = kinds(sim, side, EventKind.CLOSED)
        assert closed.error is None
    assert sim.listener.peer_closed
    assert sim.now > 3 * MIB / 20e6
    assert_no_errors(sim)


def test_abort_gives_peer_conn_aborted() -> None:
    sim = Sim()
    sim.add_path(0.010)
    sim.write(L, b"hello")
    sim.run(0.5)
    sim.abort(D, code=int(CloseCode.APPLICATION), reason="bye")
    assert sim.run_until(lambda: both_closed(sim), 1)
    err = sim.read_error[L]
    assert isinstance(err, rendr.ConnAborted)
    assert (err.code, err.reason) == (CloseCode.APPLICATION, "bye")
    assert isinstance(sim.listener.error, rendr.ConnAborted)
    assert sim.dialer.error is None
    assert sim.received[D] == b"hello"
    assert kinds(sim, L, EventKind.CLOSED)[0].at == pytest.approx(0.51)


# ---------------------------------------------------------------- path control


def test_remove_last_path_raises() -> None:
    sim = Sim()
    p1 = sim.add_path(0.010)
    sim.run(0.2)
    for side in Side:
        with pytest.raises(rendr.LastPathError):
            sim.remove_path(side, p1)
    p2 = sim.add_path(0.010)
    sim.kill(p2)  # a dead path is no alternative
    sim.run(0.5)
    for side in Side:
        with pytest.raises(rendr.LastPathError):
            sim.remove_path(side, p1)
        with pytest.raises(rendr.RendrError):
            sim.remove_path(side, p2)  # not up
        assert sim.flows[side].paths[p1].status is PathStatus.UP
    sim.write(D, b"still works", eof=True)
    assert sim.run_until(lambda: sim.eof[L], 2)
    assert sim.received[L] == b"still works"
    assert_no_errors(sim)


def test_remove_non_active_path_no_dups() -> None:
    sim = Sim()
    p1 = sim.add_path(0.030, rate=20e6)
    p2 = sim.add_path(0.005, rate=20e6)
    data = payload(4 * MIB)
    sim.write(D, data, eof=True)
    in_flight: list[int] = []
    sim.at(0.1, lambda: sim.migrate(p2))
    sim.at(0.1, lambda: in_flight.append(len(sim.paths[p1].pipes[D].items)))
    sim.at(0.1, lambda: sim.remove_path(D, p1))
    assert sim.run_until(lambda: sim.eof[L], 10)
    sim.run(sim.now + 1)
    assert in_flight[0] > 0
    assert_exact(sim.received[L], data)
    assert sim.dialer.recv_dups == 0 and sim.listener.recv_dups == 0
    assert sum(p.retransmits for p in sim.dialer.paths.values()) == 0
    for side in Side:
        (down,) = kinds(sim, side, EventKind.PATH_DOWN)
        assert (down.path_id, down.cause) == (p1, "removed")
        assert sim.flows[side].find_path(p1).status is PathStatus.REMOVED
        assert all(m.cause != "death" for m in kinds(sim, side, EventKind.MIGRATION))
    assert sim.paths[p1].closed == [True, True] and not sim.paths[p1].dead  # graceful
    assert_no_errors(sim)


# ---------------------------------------------------------------- zombie guard


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_zombie_guard_fires_when_no_data_moves(limit: int) -> None:
    cfg = FlowConfig(zombie_max_migrations=limit, migration_budget=30.0)
    sim = Sim(cfg)
    pids = [sim.add_path(0.010) for _ in range(limit + 2)]
    for i in range(limit):  # `limit` death-driven migrations with no data: tolerated
        sim.at(1.0 + i, lambda pid=pids[i]: sim.kill(pid))
    sim.run(limit + 1.0)
    for side in Side:
        assert len(kinds(sim, side, EventKind.MIGRATION)) == limit
        assert sim.flows[side].state is State.ACTIVE
    sim.kill(pids[limit])  # one more: the guard fires at once
    sim.run(sim.now + 1)
    assert sim.dialer.state is State.CLOSED
    assert isinstance(sim.dialer.error, rendr.ZombieFlow)
    assert kinds(sim, D, EventKind.CLOSED)[0].at == limit + 1.0
    # the listener ends too: by its own guard or by the dialer's CLOSE(ZOMBIE)
    assert sim.listener.state is State.CLOSED
    assert isinstance(sim.listener.error, (rendr.ZombieFlow, rendr.ConnAborted))


def test_zombie_guard_strikes_expire_after_window() -> None:
    cfg = FlowConfig(zombie_max_migrations=1, zombie_window=1.0)
    sim = Sim(cfg)
    pids = [sim.add_path(0.010) for _ in range(5)]
    for i in range(4):
        sim.at(1.0 + 1.5 * i, lambda pid=pids[i]: sim.kill(pid))
    sim.run(10)
    for side in Side:
        assert sim.flows[side].state is State.ACTIVE
        assert len(kinds(sim, side, EventKind.MIGRATION)) == 4


def test_zombie_guard_quiet_while_data_moves() -> None:
    cfg = FlowConfig(zombie_max_migrations=2)
    sim = Sim(cfg)
    pids = [sim.add_path(0.010, rate=2e6) for _ in range(6)]
    data = payload(10 * MIB)
    sim.write(D, data, eof=True)
    for i in range(5):
        sim.at(0.5 + 0.8 * i, lambda pid=pids[i]: sim.kill(pid))
    assert sim.run_until(lambda: sim.eof[L], 30)
    assert_exact(sim.received[L], data)
    for side in Side:
        deaths = [m for m in kinds(sim, side, EventKind.MIGRATION) if m.cause == "death"]
        assert len(deaths) == 5
        assert sim.flows[side].active == pids[5]
    assert_no_errors(sim)


# ---------------------------------------------------------------- the simulator itself


def test_blackhole_holds_bytes_and_unblackhole_delivers_in_order() -> None:
    sim = Sim(FlowConfig(dead_timeout=5.0))
    p1 = sim.add_path(0.010)
    data = payload(MIB)
    sim.at(0.1, lambda: sim.blackhole(p1))
    sim.at(0.2, lambda: sim.write(D, data, eof=True))
    sim.at(1.0, lambda: sim.unblackhole(p1))
    sim.run(0.9)
    assert sim.received[L] == b""
    assert sim.run_until(lambda: sim.eof[L], 3)
    assert sim.now == pytest.approx(1.01)
    assert_exact(sim.received[L], data)
    assert not kinds(sim, D, EventKind.PATH_DOWN)


def test_sim_is_deterministic() -> None:
    def run(seed: int) -> tuple[float, list[tuple[str, float]]]:
        sim = Sim(seed=seed)
        p1 = sim.add_path(0.010, rate=10e6, jitter=0.004)
        sim.add_path(0.020, jitter=0.01)
        sim.write(D, payload(2 * MIB), eof=True)
        sim.at(0.1, lambda: sim.kill(p1))
        sim.run_until(lambda: sim.eof[L], 10)
        return sim.now, [(str(e.kind), e.at) for e in sim.events[L]]

    assert run(1) == run(1)
    assert run(1) != run(2)


def _stick_timer(sim: Sim, side: Side, at: float) -> None:
    """From now on ``side``'s engine timer reads ``at`` (a stuck deadline), through the
    simulator's seam: a compiled Flow cannot have a method replaced on an instance."""
    engine_timer = sim._engine_timer

    def stuck(s: Side) -> float | None:
        return at if s is side else engine_timer(s)

    sim._engine_timer = stuck  # type: ignore[method-assign]


def test_sim_refuses_a_spinning_engine_timer() -> None:
    sim = Sim()
    sim.add_path(0.010)
    sim.run(1.0)
    _stick_timer(sim, D, 0.5)
    sim.write(D, b"x")  # any input re-reads get_timer()
    with pytest.raises(SimError, match="DIALER engine timer spins"):
        sim.run(2.0)
    polled = Sim(spin_poll=0.25)
    polled.add_path(0.010)
    polled.run(1.0)
    _stick_timer(polled, D, 0.5)
    polled.write(D, b"x")
    polled.run(2.0)  # tolerated: re-run (at the latest) every 0.25 s, and counted
    assert polled.timer_spins[D] > 0 and polled.timer_spins[L] == 0 and polled.now == 2.0
    assert polled.received[L] == b"x"


# ---------------------------------------------------------------- regressions
# Each of these failed on an earlier engine (fixed in 6a383d3, 94a5afc and d488d38).


def test_ack_deadline_does_not_spin_when_last_path_dies() -> None:
    """A pending ACK deadline must not stay in get_timer() once no path can carry it."""
    budget = 3.0
    sim = Sim(FlowConfig(migration_budget=budget), spin_poll=0.001)
    p1 = sim.add_path(0.010)
    sim.at(1.0, lambda: sim.write(D, b"ping me"))  # reaches the listener at 1.010
    sim.at(1.012, lambda: sim.kill(p1, near=L))  # before its ACK is due (ack_delay 5 ms)
    sim.run(10)
    assert sim.received[L] == b"ping me"
    assert sim.timer_spins == [0, 0]  # was: the listener spun from 1.015 to 4.012
    (closed,) = kinds(sim, L, EventKind.CLOSED)
    assert closed.at == pytest.approx(1.012 + budget, abs=1e-9)  # exact, not polled


def test_peer_retiring_last_live_path_starts_budget() -> None:
    budget = 3.0
    sim = Sim(FlowConfig(migration_budget=budget))
    p1 = sim.add_path(0.010)
    p2 = sim.add_path(0.050)
    sim.run(0.5)
    sim.remove_path(D, p2)  # the dialer retires the backup path ...
    sim.kill(p1, near=L)  # ... while the listener's carrier on the active path is reset
    sim.run(0.5 + budget + 1.0)
    assert isinstance(sim.dialer.error, rendr.MigrationBudgetExceeded)
    assert sim.listener.state is State.CLOSED  # was: ACTIVE with no live path, no timer
    assert isinstance(sim.listener.error, rendr.MigrationBudgetExceeded)


def test_retired_path_responder_does_not_resend_its_in_flight_data() -> None:
    sim = Sim()
    p1 = sim.add_path(0.050, rate=20e6)
    p2 = sim.add_path(0.001)
    sim.run(0.3)
    data = payload(2 * MIB)
    sim.write(L, data)  # listener -> dialer on path 1
    sim.at(0.32, lambda: sim.migrate(p2))
    sim.at(0.32, lambda: sim.remove_path(D, p1))  # non-active path, data in flight on it
    assert sim.run_until(lambda: len(sim.received[D]) == len(data), 10)
    sim.run(sim.now + 1)
    assert_exact(sim.received[D], data)
    assert sim.dialer.recv_dups == 0  # was: 10


def test_remove_path_does_not_resend_sacked_data() -> None:
    sim = Sim()
    slow = sim.add_path(0.080)
    fast = sim.add_path(0.001)
    sim.run(0.3)
    data = payload(2 * MIB)
    sim.write(D, data[:MIB])  # on the slow path: arrives at 0.38
    sim.at(0.301, lambda: sim.migrate(fast))
    sim.at(0.301, lambda: sim.write(D, data[MIB:]))  # overtakes: SACKed by 0.304
    sim.at(0.306, lambda: sim.remove_path(D, fast))
    assert sim.run_until(lambda: len(sim.received[L]) == len(data), 5)
    sim.run(sim.now + 1)
    assert_exact(sim.received[L], data)
    assert sim.dialer.paths[slow].retransmits == 0  # was: 1 MiB
    assert sim.listener.recv_dups == 0


def test_removing_blackholed_path_resends_its_in_flight_data() -> None:
    sim = Sim()
    p1 = sim.add_path(0.010, rate=10e6)
    sim.add_path(0.010, rate=10e6)
    data = payload(2 * MIB)
    sim.write(D, data, eof=True)
    sim.at(0.05, lambda: sim.blackhole(p1))  # e.g. the Wi-Fi went away ...
    sim.at(0.06, lambda: sim.remove_path(D, p1))  # ... so the application removes it
    # Was (before 94a5afc): stuck at 393204 bytes forever, path 1 RETIRING with
    # unacknowledged ranges attributed to it and no liveness check to re-send them.
    assert sim.run_until(lambda: sim.eof[L], 10)
    assert_exact(sim.received[L], data)
    down = [e for e in kinds(sim, D, EventKind.PATH_DOWN) if e.path_id == p1]
    assert len(down) == 1 and down[0].at < 0.06 + 3.0
    assert sim.dialer.find_path(p1).status is not PathStatus.UP


def test_close_without_live_path_waits_for_one() -> None:
    sim = Sim(FlowConfig(migration_budget=3.0))
    p1 = sim.add_path(0.010)
    sim.write(L, b"", eof=True)  # the listener's direction is finished and acknowledged
    sim.at(1.0, lambda: sim.write(D, b"data", eof=True))  # reaches the listener at 1.010
    sim.at(1.015, lambda: sim.kill(p1))  # the ACK of the dialer's FIN dies in flight
    sim.at(1.1, lambda: sim.close(L))
    sim.at(1.1, lambda: sim.close(D))
    sim.run(1.2)
    assert sim.received[L] == b"data" and sim.eof[L]
    assert not sim.dialer.flushed
    # No path can carry the listener's CLOSE(0) nor the ACK the dialer waits for, so the
    # listener must not be finished yet.  Was (before d488d38): CLOSED at 1.1, and the
    # dialer failed with MigrationBudgetExceeded at 4.015.
    assert sim.listener.state is not State.CLOSED
    sim.add_path(0.010)  # the dialer re-dials within the budget
    assert sim.run_until(lambda: both_closed(sim), 10)
    assert_no_errors(sim)


def test_retired_path_reset_after_close_resends_responders_data() -> None:
    """The responder's data sent before answering PATH_CLOSE may die in flight after it
    closed its carrier (which then reports nothing): it must be re-sent anyway."""
    sim = Sim()
    p1 = sim.add_path(0.050, rate=10e6)
    sim.add_path(0.005, rate=10e6)
    data = payload(8 * MIB)
    sim.write(D, data, eof=True)  # on path 1, the first path
    sim.at(0.3, lambda: sim.remove_path(L, p1))  # PATH_CLOSE reaches the dialer at 0.35:
    # it answers, retires path 1 and closes its carrier, with 50 ms of data in flight.
    sim.at(0.37, lambda: sim.kill(p1, near=L))  # that data dies with the carrier
    # Was (before d488d38): stuck at 3 MiB forever; the REMOVED path kept the lost ranges.
    assert sim.run_until(lambda: sim.eof[L], 10)
    assert_exact(sim.received[L], data)


def _count_pings(sim: Sim, side: Side) -> list[int]:
    """Wrap the simulator's transmit hook: the returned list counts PINGs ``side`` sends."""
    count = [0]
    transmit = sim._transmit

    def counting(s: Side, pid: int, buffers: list[bytes | memoryview]) -> None:
        if s is side:
            count[0] += sum(1 for b in buffers if len(b) == 12 and b[0] == 0x20)
        transmit(s, pid, buffers)

    sim._transmit = counting  # type: ignore[method-assign]
    return count


def test_chatty_traffic_does_not_ping_with_every_request() -> None:
    """Request/response every 20 ms: the send buffer empties between requests (each
    write is an idle->busy edge), yet a path heard from just now is not probed again:
    about one PING per busy interval, not one per request (was 150 in 3 s)."""
    sim = Sim()
    interval = sim.dialer.config.ping_interval
    sim.add_path(0.001)
    pings = _count_pings(sim, D)
    for i in range(150):
        t = 0.5 + i * 0.020
        sim.at(t, lambda: sim.write(D, b"q" * 64))
        sim.at(t + 0.005, lambda: sim.write(L, b"r" * 64))
    sim.run(3.6)
    assert len(sim.received[L]) == 150 * 64 and len(sim.received[D]) == 150 * 64
    assert pings[0] <= 3.6 / interval + 10 < 150, pings[0]


def test_write_after_idle_probes_a_quiet_path_at_once() -> None:
    """The other side of the rule above: after 2 s of silence a write probes at once,
    so a path that died while the flow was idle is found dead_timeout later."""
    sim = Sim()
    p1 = sim.add_path(0.001)
    sim.add_path(0.001)
    sim.run(1.0)
    sim.blackhole(p1)  # the active path dies silently while idle
    sim.at(2.9, lambda: sim.write(D, b"after idle"))
    sim.run(6.0)
    assert sim.received[L] == b"after idle"
    (down,) = [e for e in kinds(sim, D, EventKind.PATH_DOWN) if e.path_id == p1]
    # idle PINGs (1 s period) could find it by 2.6 s; the write must not wait for the
    # next one: dead by 2.9 + dead_timeout (0.6) at the latest
    assert down.at <= 2.9 + 0.6 + 0.01


@pytest.mark.parametrize("fault", ["kill", "blackhole"])
def test_failover_under_load_resends_nothing_the_peer_has(fault: str) -> None:
    """Both directions busy when the active path fails: each end re-sends only after
    the peer's fresh ACK (asked for with ACK_PROBE), so what the dead path delivered
    but whose ACK died with it is not sent twice (was: 256 KiB duplicated each way)."""
    sim = Sim(seed=1)
    p1 = sim.add_path(0.020, rate=5e6)
    sim.add_path(0.020, rate=5e6)
    up, down = payload(4 * MIB, seed=1), payload(4 * MIB, seed=2)
    sim.write(D, up, eof=True)
    sim.write(L, down, eof=True)
    if fault == "kill":
        sim.at(0.4, lambda: sim.kill(p1, near=D))
    else:
        sim.at(0.4, lambda: sim.blackhole(p1))
    assert sim.run_until(lambda: sim.eof[D] and sim.eof[L], max_time=60)
    assert_exact(sim.received[L], up)
    assert_exact(sim.received[D], down)
    assert sim.dialer.migration_count == 1
    assert (sim.listener.recv_dups, sim.dialer.recv_dups) == (0, 0)
    assert_no_errors(sim)


def test_replay_hold_expires_without_the_peers_ack() -> None:
    """A peer that never answers the probe (an older peer, a one-way path) delays the
    re-send by at most the hold (~2 RTT of the new path, 10-250 ms), never more."""
    cfg = FlowConfig()
    a = Flow(role=Role.DIALER, flow_id=b"F" * 16, config=cfg, now=0.0, peer_window=MIB)
    b = Flow(role=Role.LISTENER, flow_id=b"F" * 16, config=cfg, now=0.0, peer_window=MIB)
    for f in (a, b):
        f.add_path(1, now=0.0)
        f.add_path(2, now=0.0)
    a.send(b"x" * 1000, 0.0)
    sent = a.transmits(0.0)
    assert any(pid == 1 for pid, _ in sent)  # in flight on path 1, never delivered
    a.path_failed(1, Cause.RESET, 0.001)
    assert not a.wants_transmit()  # held: no busy flush loop meanwhile
    resent_at = None
    now = 0.001
    while resent_at is None and now < 1.0:
        out = b"".join(b"".join(bufs) for pid, bufs in a.transmits(now) if pid == 2)
        if out.count(b"x") >= 1000:
            resent_at = now  # re-sent on path 2 without any answer from the peer
        else:
            assert b"x" * 100 not in out
            at = a.get_timer()
            assert at is not None
            now = max(at, now + 1e-4)
            a.handle_timer(now)
    assert resent_at is not None and 0.011 <= resent_at <= 0.26, resent_at
