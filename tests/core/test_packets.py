"""Packet mode in the engine, and the datagram layer under it (no sockets, no clock).

Two engines are wired directly: what one's ``transmits()`` gives for a datagram path
is handed, datagram by datagram, to the other's ``receive()`` (dropped, duplicated or
reordered by the test)."""

from __future__ import annotations

import random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from rendr.config import FlowConfig
from rendr.core.crypto import FlowKeys
from rendr.core.dgram import (
    OVERHEAD,
    REPLAY_WINDOW,
    DatagramOpener,
    DatagramSealer,
    pack,
)
from rendr.core.flow import Flow
from rendr.core.packets import DEDUP_WINDOW, MAX_PACKET, PacketReceiver
from rendr.core.types import Mode, Role
from rendr.core.wire import FrameType, Kind, data_header, encode_u64
from rendr.errors import PacketTooLarge, RendrError

KEYS = FlowKeys(d2l=bytes(range(32)), l2d=bytes(range(32, 64)), join=bytes(32),
                confirm=bytes(32))
FLOW = bytes(range(16))


# ----------------------------------------------------------------- datagram layer

def test_pack_groups_whole_frames_up_to_room() -> None:
    ping = encode_u64(FrameType.PING, 1)  # 12 bytes
    data = [data_header(0, 20), b"x" * 20]  # one 32-byte frame in two buffers
    groups = pack([ping, *data, ping, ping], 50)
    assert [sum(map(len, g)) for g in groups] == [44, 24]
    assert groups[0][1:3] == data  # a frame's buffers stay together
    with pytest.raises(ValueError, match="does not fit"):
        pack([data_header(0, 100), b"y" * 100], 50)
    with pytest.raises(ValueError, match="incomplete"):
        pack([data_header(0, 20), b"x" * 5], 50)


@pytest.mark.parametrize("encrypt", [True, False])
def test_sealed_datagrams_open_once_in_any_order(encrypt: bool) -> None:
    sealer = DatagramSealer(KEYS.d2l, 3, 1200, encrypt)
    opener = DatagramOpener(KEYS.d2l, 3, encrypt)
    frames = [encode_u64(FrameType.PING, i) for i in range(300)]
    dgrams = sealer.seal(frames)
    assert len(dgrams) > 1 and all(len(d) <= 1200 for d in dgrams)
    if encrypt:
        assert bytes(frames[0]) not in bytes(dgrams[0])
    order = list(range(len(dgrams)))
    random.Random(1).shuffle(order)
    got = {i: opener.feed(dgrams[i]) for i in order}
    assert b"".join(bytes(got[i][0]) for i in range(len(dgrams))) == b"".join(frames)
    for i in order:  # every repeat is dropped and counted, never an error
        assert opener.feed(dgrams[i]) == []
    assert opener.replays == len(dgrams) and opener.failures == 0


def test_forged_moved_or_stale_datagrams_are_dropped_not_fatal() -> None:
    sealer = DatagramSealer(KEYS.d2l, 1, 1200)
    opener = DatagramOpener(KEYS.d2l, 1)
    first = bytes(sealer.seal([encode_u64(FrameType.PING, 1)])[0])
    tampered = bytearray(first)
    tampered[-1] ^= 1
    assert opener.feed(bytes(tampered)) == [] and opener.failures == 1
    other_path = DatagramOpener(KEYS.d2l, 2)
    assert other_path.feed(first) == [] and other_path.failures == 1
    assert opener.feed(b"short") == [] and opener.failures == 2
    assert opener.feed(first)  # the forgery did not burn the packet number
    for _ in range(REPLAY_WINDOW + 1):
        last = sealer.seal([encode_u64(FrameType.PING, 2)])[0]
    assert opener.feed(last)
    old = DatagramSealer(KEYS.d2l, 1, 1200)
    old.next_number = 1  # older than the window behind the newest
    assert opener.feed(old.seal([encode_u64(FrameType.PING, 3)])[0]) == []
    assert opener.replays == 1


def test_a_forged_far_future_number_costs_no_key_and_moves_nothing() -> None:
    sealer = DatagramSealer(KEYS.d2l, 1, 1200)
    opener = DatagramOpener(KEYS.d2l, 1)
    assert opener.feed(sealer.seal([encode_u64(FrameType.PING, 1)])[0])
    forged = (1 << 40).to_bytes(8, "big") + bytes(40)
    assert opener.feed(forged) == [] and opener.failures == 1
    assert opener.feed(sealer.seal([encode_u64(FrameType.PING, 2)])[0])


@given(st.lists(st.integers(0, 3 * DEDUP_WINDOW), max_size=300))
def test_packet_receiver_delivers_each_number_at_most_once(numbers: list[int]) -> None:
    rx = PacketReceiver(1 << 30)
    delivered: list[int] = []
    top = -1
    for n in numbers:
        if rx.on_packet(n, memoryview(n.to_bytes(8, "big"))):
            delivered.append(n)
            assert n > top - DEDUP_WINDOW  # nothing older than the window
        top = max(top, n)
    assert len(delivered) == len(set(delivered))
    assert rx.received == len(delivered)
    assert rx.received + rx.dups + rx.too_old == len(numbers)
    assert [int.from_bytes(rx.pop() or b"", "big") for _ in delivered] == delivered


def test_packet_receiver_drops_beyond_its_byte_cap() -> None:
    rx = PacketReceiver(250)
    assert all(rx.on_packet(i, memoryview(b"z" * 100)) for i in range(2))
    assert not rx.on_packet(2, memoryview(b"z" * 100)) and rx.overflow == 1
    assert rx.pop() and rx.on_packet(3, memoryview(b"z" * 100))


# ------------------------------------------------------------------- the engine

def _pair(*, mtu: int | None = 1200, keys: FlowKeys | None = KEYS,
          config: FlowConfig | None = None) -> tuple[Flow, Flow]:
    cfg = config or FlowConfig()
    d = Flow(role=Role.DIALER, flow_id=FLOW, now=0.0, peer_window=1 << 23, keys=keys,
             kind=Kind.PACKET, config=cfg)
    ln = Flow(role=Role.LISTENER, flow_id=FLOW, now=0.0, peer_window=1 << 23, keys=keys,
              kind=Kind.PACKET, config=cfg)
    for f in (d, ln):
        f.add_path(1, now=0.0, mtu=mtu)
    return d, ln


def _move(src: Flow, dst: Flow, now: float, *, drop: float = 0.0, dup: float = 0.0,
          shuffle: bool = False, rng: random.Random | None = None) -> int:
    rng = rng or random.Random(0)
    batch = [(pid, d) for pid, bufs in src.transmits(now) for d in bufs]
    if shuffle:
        rng.shuffle(batch)
    for pid, dgram in batch:
        if rng.random() < drop:
            continue
        for _ in range(2 if rng.random() < dup else 1):
            dst.receive(pid, dgram, now)
    return len(batch)


def _drain(f: Flow) -> list[bytes]:
    out = []
    while (p := f.recv_packet()) is not None:
        out.append(p)
    return out


@pytest.mark.parametrize("mtu", [1200, None])
def test_boundaries_are_kept_one_to_one(mtu: int | None) -> None:
    d, ln = _pair(mtu=mtu)
    most = d.max_payload
    assert most == (1200 - OVERHEAD - 12 if mtu else MAX_PACKET)
    sizes = [0, 1, 2, most - 1, most, 0, 7]
    sent = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    for p in sent:
        assert d.send_packet(p, 0.0)
    with pytest.raises(PacketTooLarge):
        d.send_packet(b"x" * (most + 1), 0.0)
    _move(d, ln, 0.0)
    assert _drain(ln) == sent
    assert ln.packet_stats()[1] == len(sent)


def test_a_stream_flow_refuses_packets_and_a_packet_flow_a_frame_it_cannot_use() -> None:
    s = Flow(role=Role.DIALER, flow_id=FLOW, now=0.0, peer_window=1 << 20)
    with pytest.raises(RendrError):
        s.send_packet(b"x", 0.0)
    with pytest.raises(RendrError):
        s.recv_packet()


def test_duplicated_and_reordered_datagrams_deliver_each_packet_once() -> None:
    d, ln = _pair(keys=None)  # no replay window below: the packet layer de-duplicates
    rng = random.Random(7)
    sent = [i.to_bytes(4, "big") * (1 + i % 50) for i in range(2000)]
    got: list[bytes] = []
    t = 0.0
    for chunk in range(0, len(sent), 100):
        for p in sent[chunk : chunk + 100]:
            assert d.send_packet(p, t)
        _move(d, ln, t, dup=0.3, shuffle=True, rng=rng)
        got += _drain(ln)
        t += 0.001
    assert sorted(got) == sorted(sent) and len(got) == len(sent)
    assert got != sent  # reordered: delivered in arrival order, not held back
    assert ln.packet_stats()[2] > 0  # dups counted


def test_lost_datagrams_lose_only_their_packets() -> None:
    d, ln = _pair()
    sent = [i.to_bytes(4, "big") * 100 for i in range(1000)]
    for p in sent:
        assert d.send_packet(p, 0.0)
    while _move(d, ln, 0.0, drop=0.1, rng=random.Random(3)):
        pass
    got = _drain(ln)
    assert 800 < len(got) < 1000 and set(got) <= set(sent)
    assert got == sorted(got)  # nothing re-sent, nothing reordered


def test_close_delivers_every_packet_then_eof() -> None:
    d, ln = _pair()
    for i in range(50):
        assert d.send_packet(bytes([i]) * 500, 0.0)
    d.close(0.0)
    t = 0.0
    for _ in range(20):
        _move(d, ln, t)
        _move(ln, d, t)
        t += 0.01
        for f in (d, ln):
            f.handle_timer(t)
    got = []
    with pytest.raises(EOFError):
        while True:
            p = ln.recv_packet()
            assert p is not None
            got.append(p)
    assert got == [bytes([i]) * 500 for i in range(50)]
    with pytest.raises(EOFError):
        ln.recv_packet()


def test_send_waits_when_the_queue_is_full() -> None:
    d, _ = _pair(config=FlowConfig(packet_queue=10_000))
    taken = 0
    while d.send_packet(b"q" * 1000, 0.0):
        taken += 1
    assert taken == 10 and d.send_space == 0
    d.transmits(0.0)
    assert d.send_space > 1000


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_race_delivers_each_packet_exactly_once_over_lossy_paths(seed: int) -> None:
    # RACE: every packet on both paths; each path loses 30 % (independently) and
    # reorders; every packet that got through on either path is delivered once
    cfg = FlowConfig()
    d = Flow(role=Role.DIALER, flow_id=FLOW, now=0.0, peer_window=1 << 23, keys=KEYS,
             kind=Kind.PACKET, config=cfg, mode=Mode.RACE)
    ln = Flow(role=Role.LISTENER, flow_id=FLOW, now=0.0, peer_window=1 << 23, keys=KEYS,
              kind=Kind.PACKET, config=cfg, mode=Mode.RACE)
    for f in (d, ln):
        f.add_path(1, now=0.0, mtu=1200)
        f.add_path(2, now=0.0, mtu=1200)
    rng = random.Random(seed)
    sent = [i.to_bytes(4, "big") * 10 for i in range(2000)]
    got: list[bytes] = []
    t = 0.0
    for chunk in range(0, len(sent), 50):
        for p in sent[chunk : chunk + 50]:
            assert d.send_packet(p, t)
        batch = [(pid, dg) for pid, bufs in d.transmits(t) for dg in bufs]
        assert {pid for pid, _ in batch} == {1, 2}  # both paths carry copies
        rng.shuffle(batch)
        for pid, dgram in batch:
            if rng.random() >= 0.3:
                ln.receive(pid, dgram, t)
        got += _drain(ln)
        t += 0.001
    assert len(got) == len(set(got))  # never twice
    # ~91 % (1 - 0.3^2) got through on average; datagrams carry ~25 packets each, so
    # a run varies more than independent packets would
    assert 0.8 * len(sent) < len(got) < len(sent)
    assert ln.packet_stats()[2] > 0  # the second copies, counted as dups


def test_a_migrations_old_path_backlog_is_delivered_not_dropped_as_too_old() -> None:
    """G3u at 100k pps: a receiver 200 ms behind holds ~20000 datagrams in the old
    path's socket when the sender migrates; the new path's datagrams are read first
    (or interleaved).  The old path's backlog must still be delivered: a 4096-number
    de-duplication window dropped it as "too old" (68865 in one G3u paced run)."""
    d, ln = _pair()
    for f in (d, ln):
        f.add_path(2, now=0.0, mtu=1200)
    backlog = 20_000
    for i in range(backlog):
        assert d.send_packet(i.to_bytes(4, "big"), 0.0)
    held = [(pid, dg) for pid, bufs in d.transmits(0.0) for dg in bufs]
    assert {pid for pid, _ in held} == {1}
    d.migrate(2, 0.001)
    for i in range(backlog, backlog + 500):
        assert d.send_packet(i.to_bytes(4, "big"), 0.001)
    fresh = [(pid, dg) for pid, bufs in d.transmits(0.001) for dg in bufs]
    for pid, dg in fresh + held:  # the new path first, then the old path's backlog
        ln.receive(pid, dg, 0.002)
    got = _drain(ln)
    assert len(got) == backlog + 500 and len(set(got)) == len(got)
    assert ln.packet_stats()[3] == 0  # nothing "too old"


@given(st.sampled_from([8, 16, 64]),
       st.lists(st.one_of(st.integers(-3, 3), st.integers(-80, 80)), max_size=300))
@example(8, [1] * 8 + [2])  # a jump of two over a slot still holding a bit
@example(8, [1] * 8 + [13])  # a jump that wraps the ring
def test_seen_window_matches_a_model(size: int, steps: list[int]) -> None:
    """The bit ring answers as the definition says: NEW if never marked, TOO_OLD if
    ``size`` or more below the highest marked, else REPEAT; every number around the
    window is probed after each step (small jumps, big jumps, wraps of the ring)."""
    from rendr.core.window import NEW, REPEAT, TOO_OLD, SeenWindow

    w = SeenWindow(size)
    marked: set[int] = set()
    n = 0
    for step in steps:
        n = max(0, n + step)
        top = max(marked, default=-1)
        want = NEW if n > top else TOO_OLD if top - n >= size else (
            REPEAT if n in marked else NEW)
        assert w.check(n) == want
        if want == NEW:
            w.mark(n)
            marked.add(n)
        top = max(marked)
        for probe in range(max(0, top - size - 2), top + 3):
            expect = NEW if probe > top else TOO_OLD if top - probe >= size else (
                REPEAT if probe in marked else NEW)
            assert w.check(probe) == expect, (probe, top)
