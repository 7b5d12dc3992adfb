"""The engine's promises to the application, end to end on the simulated network.

Each test here pins one promise of the README/``docs/wire.md`` and is known to fail
against an engine that breaks it (``tools/mutation_check.py`` applies those breaks):

- a carrier's EOF (FIN) only kills a path: it never ends the flow, never reaches the
  reader as ``b""`` (mutant: Cause.EOF treated as the application's EOF);
- what the peer SACKed is not sent again when the path that carried it dies
  (mutant: the sender re-queueing a dead path's in-flight ranges, SACKed or not);
- duplicate and overlapping pieces never reach the application (mutants: the
  receive buffer delivering a duplicate; trimming an overlapping piece off by one).
"""

from __future__ import annotations

import hashlib
import random

import pytest

from rendr.core.events import EventKind
from rendr.core.types import State
from rendr.core.wire import data_header
from rendr.testing.simnet import Side, Sim

D, L = Side.DIALER, Side.LISTENER
MIB = 1 << 20


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def assert_exact(got: bytes | bytearray, want: bytes) -> None:
    """``got`` is ``want``, byte for byte (else: where they first differ)."""
    if hashlib.sha256(got).digest() != hashlib.sha256(want).digest():
        at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                  min(len(got), len(want)))
        pytest.fail(f"the application read {len(got)} bytes, {len(want)} were sent; "
                    f"they differ from byte {at} on", pytrace=False)


def assert_alive(sim: Sim) -> None:
    for side in Side:
        flow = sim.flows[side]
        assert flow.error is None, (side, flow.error)
        assert sim.read_error[side] is None and sim.write_error[side] is None, side
        assert flow.state is State.ACTIVE, (side, flow.state)
        assert not sim.events_of(side, EventKind.CLOSED), side


def path_downs(sim: Sim, side: Side, pid: int) -> list[str]:
    return [str(e.cause) for e in sim.events_of(side, EventKind.PATH_DOWN) if e.path_id == pid]


# ---------------------------------------------------------------- carrier EOF


@pytest.mark.parametrize("near", [D, L], ids=["fin-from-dialer", "fin-from-listener"])
@pytest.mark.parametrize("sender", [D, L], ids=["dialer-sends", "listener-sends"])
def test_carrier_fin_mid_transfer_never_ends_the_flow(sender: Side, near: Side) -> None:
    """The active path's carrier ends with a clean FIN while 4 MiB flow: every byte
    arrives, ``b""`` only after the last one, and the flow stays usable both ways."""
    sim = Sim(seed=3)
    p1 = sim.add_path(0.010, rate=20e6)
    p2 = sim.add_path(0.015, rate=20e6)
    data = payload(4 * MIB, seed=int(sender) * 2 + int(near))
    sim.write(sender, data, eof=True)
    in_flight: list[int] = []
    t_fin = 0.08  # the transfer takes ~0.2 s at 20 MB/s
    sim.at(t_fin, lambda: in_flight.append(len(sim.paths[p1].pipes[sender].items)))
    sim.at(t_fin, lambda: sim.fin(p1, near=near))
    assert sim.run_until(lambda: sim.eof[sender.other], 10)
    assert in_flight[0] > 0, "the FIN must come with bytes in flight"
    assert_exact(sim.received[sender.other], data)  # and b"" came after the last byte
    assert path_downs(sim, near, p1) == ["eof"]  # the engine was told: carrier EOF
    assert_alive(sim)
    for side in Side:
        assert sim.flows[side].active == p2
    # the flow goes on: the other direction, then a clean close
    sim.write(sender.other, b"still here", eof=True)
    assert sim.run_until(lambda: sim.eof[sender], 5)
    assert sim.received[sender] == b"still here"
    sim.close(D)
    sim.close(L)
    assert sim.run_until(lambda: all(f.state is State.CLOSED for f in sim.flows), 10)
    assert all(f.error is None for f in sim.flows)


@pytest.mark.parametrize("near", [D, L], ids=["fin-from-dialer", "fin-from-listener"])
def test_fin_of_every_path_waits_for_a_new_one(near: Side) -> None:
    """Both carriers FIN, one after the other, mid-transfer: no path is left, the flow
    waits (MIGRATING, within the migration budget), never reports EOF, and resumes
    exactly where it was on the path the dialer re-dials."""
    sim = Sim(seed=4)
    p1 = sim.add_path(0.010, rate=10e6)
    p2 = sim.add_path(0.020, rate=10e6)
    data = payload(3 * MIB, seed=5)
    sim.write(D, data, eof=True)
    sim.at(0.05, lambda: sim.fin(p1, near=near))
    sim.at(0.12, lambda: sim.fin(p2, near=near))
    states: list[State] = []
    then: list[tuple[int, bool]] = []
    sim.at(1.0, lambda: states.extend(f.state for f in sim.flows))
    sim.at(1.0, lambda: then.append((len(sim.received[L]), sim.eof[L])))
    sim.at(1.5, lambda: sim.add_path(0.010, rate=10e6))
    assert sim.run_until(lambda: sim.eof[L], 20)
    assert states == [State.MIGRATING, State.MIGRATING]
    assert 0 < then[0][0] < len(data) and not then[0][1], then  # interrupted, no EOF
    assert_exact(sim.received[L], data)
    assert path_downs(sim, near, p1) == ["eof"] and path_downs(sim, near, p2) == ["eof"]
    assert_alive(sim)


# ---------------------------------------------------------------- SACK


@pytest.mark.parametrize("near", [D, L], ids=["kill-from-dialer", "kill-from-listener"])
def test_failover_resends_nothing_the_peer_sacked(near: Side) -> None:
    """1 MiB goes on a slow path (300 ms one way), then the dialer migrates to a fast
    path and sends 1 MiB more, which overtakes it and is SACKed; the fast path is then
    reset while the slow path still holds the gap.  Nothing SACKed may be sent again.

    The slow path is slower than the replay hold (at most 250 ms) so the re-send goes
    out before any fresh ACK could remove the SACKed ranges: only the sender's memory
    of the peer's SACK keeps them from being sent twice."""
    sim = Sim()
    sim.add_path(0.300)  # slow
    fast = sim.add_path(0.001)
    sim.run(1.0)  # both paths measured (srtt known)
    data = payload(2 * MIB, seed=6)
    sim.write(D, data[:MIB])  # on the slow path: arrives at 1.3
    sim.at(1.001, lambda: sim.migrate(fast))
    sim.at(1.001, lambda: sim.write(D, data[MIB:], eof=True))  # arrives and is SACKed
    before_kill: list[int] = []

    def kill() -> None:
        stats = sim.listener.stats(sim.now)
        before_kill.append(len(sim.received[L]))
        before_kill.append(next(p.bytes_received for p in stats.paths if p.id == fast))
        sim.kill(fast, near=near)

    sim.at(1.01, kill)
    assert sim.run_until(lambda: sim.eof[L], 5)
    sim.run(sim.now + 1.0)  # anything re-sent would arrive by now
    received_in_order, fast_bytes = before_kill
    assert received_in_order == 0 and fast_bytes > MIB, "the gap and the SACKed data"
    assert_exact(sim.received[L], data)
    resent = sum(p.retransmits for p in sim.dialer.stats(sim.now).paths)
    assert resent < 64 * 1024, f"{resent} bytes re-sent, the peer had SACKed 1 MiB"
    assert sim.listener.stats(sim.now).recv_dups == 0
    assert_alive(sim)


# ---------------------------------------------------------------- duplicates, overlaps


def test_duplicate_and_overlapping_pieces_never_reach_the_application() -> None:
    """While 1 MiB flows on path 1, the listener is handed extra DATA frames on path 2
    carrying pieces of the same stream: pieces wholly below what it has, pieces that
    straddle its in-order edge, pieces ahead of it overlapping each other and the
    stream still to come, pieces that end or start exactly at the edge, single bytes.
    The application must read the stream exactly once, in order."""
    sim = Sim(seed=7)
    sim.add_path(0.010, rate=8e6)  # path 1 carries the stream
    p2 = sim.add_path(0.010)  # carries only the injected frames (and PINGs)
    data = payload(MIB, seed=8)
    rng = random.Random(9)
    sim.write(D, data, eof=True)
    kinds: dict[str, int] = {}

    def piece(start: int, end: int, kind: str) -> bytes:
        kinds[kind] = kinds.get(kind, 0) + 1
        return data_header(start, end - start) + data[start:end]

    def inject() -> None:
        cur = len(sim.received[L])  # the reader drains at once: the in-order edge
        sent = sum(p.bytes_sent for p in sim.dialer.stats(sim.now).paths)
        frames: list[bytes] = []
        a, b = rng.randint(1, 3000), rng.randint(1, 3000)
        if cur > 0:
            lo = max(0, cur - a)
            frames.append(piece(lo, cur, "ends-at-edge"))
            if lo > 0:
                frames.append(piece(max(0, lo - b), lo, "below"))
                frames.append(piece(lo - 1, lo, "one-byte-below"))
            if cur + b <= sent:
                frames.append(piece(lo, cur + b, "straddles-edge"))
                frames.append(piece(cur - 1, cur + 1, "two-bytes-across-edge"))
        gap = rng.randint(1, 40_000)
        s = cur + gap
        if s + 2 * a + 2 <= sent:  # never beyond what the dialer sent (it would object)
            frames.append(piece(s, s + a, "ahead"))
            frames.append(piece(s + 1, s + a - 1 if a > 2 else s + a, "inside-ahead"))
            frames.append(piece(s - 1, s + a + 1, "covers-ahead"))
            frames.append(piece(s + a // 2, s + 2 * a + 2, "overlaps-ahead-end"))
            frames.append(piece(s + a, s + a + 1, "one-byte-after-ahead"))
        if cur + 1 <= sent:
            frames.append(piece(cur, cur + 1, "one-byte-at-edge"))
        rng.shuffle(frames)
        if frames:
            blob = b"".join(frames)
            cut = rng.randint(0, len(blob))  # frames need not arrive whole
            sim.call(L, lambda f, now: f.receive(p2, blob[:cut], now))
            sim.call(L, lambda f, now: f.receive(p2, blob[cut:], now))

    for i in range(60):
        sim.at(0.012 + i * 0.002, inject)
    done = sim.run_until(lambda: sim.eof[L], 10)
    assert_exact(sim.received[L], data)
    assert done, "no EOF"
    for kind in ("below", "straddles-edge", "two-bytes-across-edge", "ahead",
                 "covers-ahead", "overlaps-ahead-end", "one-byte-at-edge"):
        assert kinds.get(kind, 0) >= 10, (kind, kinds)
    assert sim.listener.stats(sim.now).recv_dups > 100
    assert_alive(sim)
