"""Fuzzing a listener-side ``Flow`` (issue 7, target f), driven as the aio driver
drives it (transmits, closes, events, timer after every input) against the model
dialer of ``_flowpeer.py``, on random path ids, with random cut points.

* Well-formed peer (DATA new and re-sent on any path within the advertised window,
  FIN, PING, ACK with SACK ranges, ACTIVATE naming dead/suspect paths or stale,
  PATH_CLOSE both ways, new paths, carrier failures and late resets, blocked
  carriers, the application reading, writing and retiring paths, time passing):
  no exception escapes the Flow, the flow never fails, what the application reads is
  always a prefix of the peer's stream, and everything the listener sends is valid
  (framing, bytes, within our window, ACKs monotone and only of bytes sent, PONGs
  echo our PINGs, FIN at its written end); at the end both streams complete, the
  reader gets exactly the peer's bytes then EOF, and the flow closes cleanly with
  every path down and the memory budget returned.
* Hostile peer (the same plus malformed frames: unknown, reserved, handshake and
  extension types with random bodies, DATA beyond the window/FIN or with other
  bytes, empty DATA, oversized control frames, raw bytes, bogus ACKs, PATH_CLOSE for
  another path, inconsistent FIN, CLOSE, random ACTIVATE, a PING flood, frames on
  paths that do not exist): nothing escapes ``Flow.receive`` or any other call; the
  flow only ever ends with ProtocolError, ConnAborted, MigrationBudgetExceeded or
  ZombieFlow (or cleanly, on CLOSE(0)); and left alone it ends (timers).
* Both, plain (no keys: the engine alone) and keyed (wire v1 records, encrypted or
  authenticated only): on a keyed flow no record of the peer's fails authentication,
  and raw bytes end only the path they came on.
"""

from __future__ import annotations

import random

from hypothesis import event, given
from hypothesis import strategies as st

from rendr.core.flow import Flow
from rendr.core.types import Role, State
from rendr.core.wire import data_header
from rendr.errors import ProtocolError

from ._common import U8, U16, U32, fuzz_settings
from ._flowpeer import KIB, FlowHarness, RawStep, make_config


def _seeded_steps(seed: int) -> list[RawStep]:
    """Uniformly random steps (hypothesis' own draws favour small numbers, i.e. a few
    kinds of step; these reach every kind, with long runs)."""
    rnd = random.Random(seed)
    return [(rnd.randrange(256), rnd.randrange(256), rnd.randrange(1 << 16),
             rnd.getrandbits(32), rnd.randbytes(rnd.randrange(25)))
            for _ in range(rnd.randrange(10, 200))]


raw_steps = st.one_of(
    st.lists(st.tuples(st.integers(0, 255), U8, U16, U32, st.binary(max_size=24)),
             min_size=10, max_size=120),
    st.integers(0, (1 << 32) - 1).map(_seeded_steps),
)
PAYLOAD = bytes((i * 131 + (i >> 8)) & 0xFF for i in range(60 * KIB))
BACK = bytes((i * 7 + 3) & 0xFF for i in range(24 * KIB))
payloads = st.one_of(st.binary(max_size=64), st.integers(0, 60 * KIB).map(lambda n: PAYLOAD[:n]))
backs = st.integers(0, 24 * KIB).map(lambda n: BACK[:n])
memory_limits = st.sampled_from([None, None, 0, 8 * KIB, 1 << 20])


keyed = st.sampled_from([(False, True), (True, True), (True, False)])  # (keys, encrypt)


@fuzz_settings(150)
@given(payload=payloads, back=backs, steps=raw_steps,
       first_path=st.sampled_from([1, 7, 0xFFFF_FF00]),
       peer_window=st.sampled_from([4 * KIB, 64 * KIB]), memory_limit=memory_limits,
       keys=keyed)
def test_well_formed_peer(payload: bytes, back: bytes, steps: list[RawStep], first_path: int,
                          peer_window: int, memory_limit: int | None,
                          keys: tuple[bool, bool]) -> None:
    h = FlowHarness(payload, back, hostile=False, first_path=first_path,
                    peer_window=peer_window, memory_limit=memory_limit, keyed=keys[0],
                    encrypt=keys[1])
    for raw in steps:
        h.step(raw)
    event(f"paths used: {min(h.next_pid - first_path, 5)}")
    event(f"migrations: {min(h.flow.migration_count, 3)}")
    h.finish()


@fuzz_settings(200)
@given(payload=payloads, back=backs, steps=raw_steps,
       first_path=st.sampled_from([1, 7]), memory_limit=memory_limits,
       rate=st.sampled_from([2, 5, 10, 30]), keys=keyed)
def test_hostile_peer(payload: bytes, back: bytes, steps: list[RawStep], first_path: int,
                      memory_limit: int | None, rate: int, keys: tuple[bool, bool]) -> None:
    h = FlowHarness(payload, back, hostile=True, first_path=first_path,
                    memory_limit=memory_limit, hostile_rate=rate, keyed=keys[0],
                    encrypt=keys[1])
    ended_at = None
    for i, raw in enumerate(steps):
        h.step(raw)
        if ended_at is None and h.flow.state is State.CLOSED:
            ended_at = i
    error = h.flow.error
    event(f"ended by {type(error).__name__ if h.flow.state is State.CLOSED else 'nothing'}")
    if isinstance(error, ProtocolError):
        # the peer is told why (on a path that can still carry it, or later)
        assert 2 in h.listener_close or h.flow.undelivered_close is not None
    h.finish()


def test_small_in_window_frames_held_out_of_order_do_not_abort() -> None:
    """Regression (found by fuzz_flow): a well-behaved peer (docs/wire.md: data may be
    cut into frames at any boundary) sends 10 KiB of its 16 KiB window as 64 frames of
    160 B; the first one is late (on a slower path, or lost and re-sent): the other 63
    wait out of order.  They are within the window, so the flow must take them; the
    reorder budget (2 x 16 KiB, each held piece costing its payload + 400 B) ran out
    after ~57 of them.  Small pieces that continue a held one are now appended to it."""
    flow = Flow(role=Role.LISTENER, flow_id=bytes(16), now=0.0, peer_window=1 << 16,
                config=make_config(False))
    flow.add_path(1, now=0.0)
    for i in range(1, 64):
        flow.receive(1, data_header(160 * i, 160) + bytes(160), 0.001 * i)
    assert flow.error is None, flow.error
    flow.receive(1, data_header(0, 160) + bytes(160), 0.1)  # the late first frame
    assert flow.read(1 << 20) == bytes(64 * 160)
