"""Fast failover without false deaths (issue 6): a path that stops answering is
*suspect* after ``suspect_timeout`` (or 2*srtt + 4*rttvar): the flow moves off it
at once but keeps it; it is dead only after its dead time.  Simulated network,
virtual clock."""

from __future__ import annotations

import hashlib
import random

import pytest

from rendr.config import FlowConfig
from rendr.core.events import Event, EventKind
from rendr.testing.simnet import Side, Sim

D, L = Side.DIALER, Side.LISTENER
MIB = 1024 * 1024


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def events(sim: Sim, side: Side, kind: EventKind, path: int | None = None) -> list[Event]:
    return [e for e in sim.events_of(side, kind) if path is None or e.path_id == path]


def assert_exact(got: bytes | bytearray, want: bytes) -> None:
    assert len(got) == len(want), f"got {len(got)} bytes, want {len(want)}"
    assert hashlib.sha256(got).digest() == hashlib.sha256(want).digest(), "stream corrupted"


def test_lan_failover_within_300_ms_at_defaults() -> None:
    """Echo-like traffic every 10 ms over two LAN paths; the active one goes silent:
    the first message after the blackhole is answered within 300 ms (it was about
    0.65 s with the dead time as the only trigger)."""
    sim = Sim(FlowConfig())
    p1 = sim.add_path(0.0002)
    sim.add_path(0.0002)
    sim.run(1.0)
    for i in range(100):
        sim.at(1.0 + i * 0.01, lambda: sim.write(D, b"q" * 64))
    t_bh = 1.2005
    sim.at(t_bh, lambda: sim.blackhole(p1))
    sim.run(2.5)
    assert len(sim.received[L]) == 100 * 64
    got_at = [e.at for e in events(sim, D, EventKind.MIGRATION)]
    assert got_at and got_at[0] - t_bh <= 0.3, got_at
    # the gap seen by the application: the last byte written before the blackhole
    # arrived, and everything after it arrived by t_bh + 0.3 s
    assert sim.flows[L].stats(sim.now).bytes_read == 100 * 64


def test_suspect_path_that_answers_again_is_kept_as_a_backup() -> None:
    """A 400 ms outage (longer than the suspect time, shorter than the dead time):
    the flow moves off at the suspect time, the path is never declared dead, it
    resumes as a backup and no byte is lost or duplicated to the application."""
    sim = Sim(FlowConfig(dead_timeout=1.0))
    p1 = sim.add_path(0.002, rate=20e6)
    p2 = sim.add_path(0.002, rate=20e6)
    sim.run(0.5)
    data = payload(8 * MIB, seed=3)
    sim.write(D, data, eof=True)
    sim.at(0.6, lambda: sim.blackhole(p1))
    sim.at(1.0, lambda: sim.unblackhole(p1))
    assert sim.run_until(lambda: sim.eof[L], 10)
    sim.run(sim.now + 1.0)
    assert_exact(sim.received[L], data)
    for side in Side:
        assert events(sim, side, EventKind.PATH_SUSPECT, p1), side
        assert events(sim, side, EventKind.PATH_RESUMED, p1), side
        assert not events(sim, side, EventKind.PATH_DOWN), side
        assert sim.flows[side].error is None
    assert sim.dialer.active == p2
    stats = {p.id: p for p in sim.dialer.stats(sim.now).paths}
    assert stats[p1].state == "up" and not stats[p1].suspect


def test_only_path_suspect_is_not_left_nor_killed_early() -> None:
    """With no other path there is nowhere to go: suspicion changes nothing and the
    path dies at its dead time, as before."""
    cfg = FlowConfig()
    sim = Sim(cfg)
    p1 = sim.add_path(0.001)
    sim.run(0.5)
    sim.write(D, b"x" * 1000)
    sim.at(0.6, lambda: sim.blackhole(p1))
    sim.at(0.61, lambda: sim.write(D, b"y" * 1000))
    sim.run(2.0)
    assert not events(sim, D, EventKind.MIGRATION)
    (down,) = events(sim, D, EventKind.PATH_DOWN, p1)
    assert 0.6 + cfg.dead_timeout <= down.at <= 0.6 + cfg.dead_timeout + 0.1


def test_unmeasured_path_is_not_suspected_before_its_dead_time() -> None:
    """A 700 ms RTT path has not answered its first PING at 0.2 s: without an RTT
    sample the suspect time is the dead time, so it is not left for another path."""
    sim = Sim(FlowConfig(dead_timeout=1.0))
    slow = sim.add_path(0.350)
    sim.add_path(0.350)
    sim.run(3.0)
    for side in Side:
        assert not events(sim, side, EventKind.PATH_SUSPECT), side
        assert not events(sim, side, EventKind.PATH_DOWN), side
    assert sim.dialer.active == slow


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_saturated_slow_path_is_never_suspect(seed: int) -> None:
    """Bulk both ways over a 10 Mbit/s, 200 ms RTT path with a deep send buffer
    (PINGs queue behind seconds of data): what arrives (data, ACKs) keeps the path
    alive, so it is never suspect and never dead."""
    sim = Sim(FlowConfig(), seed=seed)
    slow = sim.add_path(0.100, rate=1.25e6, sndbuf=4 * MIB, jitter=0.01)
    sim.run(1.0)
    up, down = payload(12 * MIB, seed), payload(12 * MIB, seed + 10)
    sim.write(D, up, eof=True)
    sim.write(L, down, eof=True)
    assert sim.run_until(lambda: sim.eof[L] and sim.eof[D], 60)
    assert_exact(sim.received[L], up)
    assert_exact(sim.received[D], down)
    for side in Side:
        assert not events(sim, side, EventKind.PATH_SUSPECT), side
        assert not events(sim, side, EventKind.PATH_DOWN), side
    assert sim.dialer.active == slow


def test_failover_onto_a_slow_path_does_not_kill_it() -> None:
    """The fast active path goes silent under bulk load; the flow moves to a
    10 Mbit/s 200 ms path and pours its backlog into it: the slow path is never
    suspect or dead, and every byte arrives once."""
    sim = Sim(FlowConfig())
    fast = sim.add_path(0.001, rate=50e6)
    slow = sim.add_path(0.100, rate=1.25e6, sndbuf=4 * MIB)
    sim.run(1.0)
    data = payload(16 * MIB, seed=9)
    sim.write(D, data, eof=True)
    sim.at(1.1, lambda: sim.blackhole(fast))
    assert sim.run_until(lambda: sim.eof[L], 60)
    assert_exact(sim.received[L], data)
    assert sim.dialer.active == slow
    for side in Side:
        assert not events(sim, side, EventKind.PATH_SUSPECT, slow), side
        assert not events(sim, side, EventKind.PATH_DOWN, slow), side
        assert [e.cause for e in events(sim, side, EventKind.PATH_DOWN, fast)] == ["timeout"]


def test_listener_following_a_suspect_move_resends_what_it_had_in_flight() -> None:
    """The dialer suspects the path first (the listener's own suspicion is slower
    here); its ACTIVATE names the suspect path, so the listener re-sends its answers
    that were in flight there now, not at its dead time (G4 saw 640 ms instead of
    250 ms when the server only followed the move)."""
    lcfg = FlowConfig(suspect_timeout=0.6, dead_timeout=1.5)
    sim = Sim(FlowConfig(), listener_config=lcfg)
    p1 = sim.add_path(0.0002)
    sim.add_path(0.0002)
    sim.run(1.0)
    for i in range(50):  # request/answer every 10 ms: both ends busy
        sim.at(1.0 + i * 0.01, lambda: sim.write(D, b"q"))
        sim.at(1.0 + i * 0.01 + 0.001, lambda: sim.write(L, b"answer" * 100))
    t_bh = 1.2012  # the answer written at 1.201 is in flight on p1
    sim.at(t_bh, lambda: sim.blackhole(p1))
    assert sim.run_until(lambda: bool(events(sim, L, EventKind.MIGRATION)), 2.0)
    (mig,) = events(sim, L, EventKind.MIGRATION)
    assert mig.cause == "peer" and mig.at < t_bh + 0.3
    sim.run(mig.at + 0.05)
    # every answer written on p1 before the listener moved has arrived
    written = sum(1 for i in range(50) if 1.0 + i * 0.01 + 0.001 < mig.at)
    assert written > 21 and len(sim.received[D]) >= 600 * written, len(sim.received[D])
    assert not events(sim, L, EventKind.PATH_SUSPECT)
