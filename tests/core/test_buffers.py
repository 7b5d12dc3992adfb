"""SendBuffer and ReceiveBuffer against simple models."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rendr.core.recvbuf import MAX_GAPS, MIN_GAP_BYTES, ReceiveBuffer, gap_limit
from rendr.core.sendbuf import SendBuffer
from rendr.errors import ProtocolError

FAST = settings(max_examples=200, deadline=None, derandomize=True)

COALESCE = 16 * 1024  # writes below this size are gathered (sendbuf._COALESCE_BELOW)


def pattern(n: int, salt: int) -> bytes:
    return bytes((i * 31 + salt * 7 + (i >> 8)) & 0xFF for i in range(n))


# ====================================================================== SendBuffer


def check_view(sb: SendBuffer, model: bytes, start: int, end: int) -> list:
    bufs = sb.view(start, end)
    for b in bufs:
        assert isinstance(b, (bytes, memoryview))
        assert len(b) > 0, "empty buffer in a view"
    assert b"".join(bytes(b) for b in bufs) == model[start:end]
    return bufs


send_ops = st.lists(
    st.one_of(
        st.tuples(st.just("small"), st.integers(1, 300)),
        st.tuples(st.just("large"), st.integers(COALESCE, COALESCE + 20000)),
        st.tuples(st.just("large_mv"), st.integers(COALESCE, COALESCE + 5000)),
        st.tuples(st.just("ack"), st.floats(0, 1.2)),
        st.tuples(st.just("view"), st.tuples(st.floats(0, 1), st.floats(0, 1))),
    ),
    max_size=40,
)


@FAST
@given(send_ops)
def test_sendbuffer_matches_bytes_model(ops: list) -> None:
    sb = SendBuffer()
    model = bytearray()
    base = 0
    for k, (op, arg) in enumerate(ops):
        if op in ("small", "large", "large_mv"):
            data = pattern(arg, k)
            sb.append(memoryview(data) if op == "large_mv" else data)
            model += data
        elif op == "ack":
            offset = int(arg * len(model))
            sb.ack(offset)
            base = max(base, min(offset, len(model)))
        else:
            if base < len(model):
                a, b = sorted(arg)
                start = base + int(a * (len(model) - base))
                end = base + int(b * (len(model) - base))
                start = min(start, len(model) - 1)
                end = max(end, start + 1)
                check_view(sb, bytes(model), start, end)
        assert sb.base == base
        assert sb.end == len(model)
        assert len(sb) == len(model) - base
    if base < len(model):
        check_view(sb, bytes(model), base, len(model))


def test_many_small_writes_coalesce_into_one_buffer() -> None:
    sb = SendBuffer()
    model = bytearray()
    for i in range(20000):
        b = bytes([i & 0xFF])
        sb.append(b)
        model += b
    bufs = check_view(sb, bytes(model), 0, len(model))
    assert len(bufs) == 1  # 20000 one-byte writes became one chunk
    # more small writes after the first view form a new chunk, not 1-byte pieces
    for _ in range(1000):
        sb.append(b"x")
        model += b"x"
    bufs = check_view(sb, bytes(model), 0, len(model))
    assert len(bufs) <= 2
    bufs = check_view(sb, bytes(model), 19990, 20010)
    assert len(bufs) == 2  # spans the two chunks


def test_large_writes_are_kept_without_copy() -> None:
    a = pattern(COALESCE, 1)
    b = pattern(COALESCE + 1, 2)
    sb = SendBuffer()
    sb.append(a)
    sb.append(b)
    bufs = sb.view(0, len(a) + len(b))
    assert len(bufs) == 2
    assert bufs[0] is a and bufs[1] is b
    # a view inside a chunk is a memoryview of the caller's object
    inner = sb.view(10, 20)
    assert len(inner) == 1 and isinstance(inner[0], memoryview) and inner[0].obj is a


def test_view_spanning_small_and_large_chunks() -> None:
    sb = SendBuffer()
    model = bytearray()
    for k, n in enumerate([10, 20, COALESCE, 5, 5, COALESCE * 2, 1, 3]):
        d = pattern(n, k)
        sb.append(d)
        model += d
    model_b = bytes(model)
    for start, end in [(0, len(model_b)), (25, 31), (29, COALESCE + 40), (5, len(model_b) - 2),
                       (COALESCE + 30, COALESCE + 41)]:
        check_view(sb, model_b, start, end)


def test_ack_semantics() -> None:
    sb = SendBuffer()
    sb.append(b"abcdef")
    sb.ack(0)
    assert sb.base == 0
    sb.ack(4)
    assert sb.base == 4 and len(sb) == 2
    sb.ack(2)  # going backwards is ignored
    assert sb.base == 4
    sb.ack(100)  # clamped to end
    assert sb.base == sb.end == 6 and len(sb) == 0
    sb.append(b"gh")
    assert b"".join(bytes(b) for b in sb.view(6, 8)) == b"gh"


def test_empty_append_is_ignored() -> None:
    sb = SendBuffer()
    sb.append(b"")
    assert sb.end == 0


def test_long_run_with_compaction() -> None:
    """Hundreds of chunks acknowledged over time (the chunk index gets compacted)."""
    rng = random.Random(7)
    sb = SendBuffer()
    model = bytearray()
    base = 0
    for k in range(400):
        n = rng.choice([1, 7, 100, COALESCE, COALESCE + 3])
        d = pattern(n, k)
        sb.append(d)
        model += d
        if k % 3 == 0:
            lo = base
            hi = len(model)
            s = rng.randint(lo, hi - 1)
            check_view(sb, bytes(model), s, rng.randint(s + 1, hi))
        if k % 5 == 4:
            base = rng.randint(base, len(model))
            sb.ack(base)
            assert sb.base == base
    if base < len(model):
        check_view(sb, bytes(model), base, len(model))


# =================================================================== ReceiveBuffer


STREAM = pattern(240, 3)


class RecvModel:
    """What a receive buffer must do, written as plainly as possible."""

    def __init__(self) -> None:
        self.have: set[int] = set()
        self.offset = 0
        self.read_offset = 0
        self.dups = 0
        self.dup_bytes = 0
        self.hwm = 0

    def receive(self, offset: int, n: int) -> int:
        new = set(range(offset, offset + n))
        old = new & self.have
        if old:
            self.dups += 1
            self.dup_bytes += len(old)
        self.have |= new
        before = self.offset
        while self.offset in self.have:
            self.offset += 1
        self.hwm = max(self.hwm, self.held_out_of_order())
        return self.offset - before

    def held_out_of_order(self) -> int:
        return sum(1 for v in self.have if v > self.offset)

    def sack(self) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for v in sorted(v for v in self.have if v > self.offset):
            if out and out[-1][1] == v:
                out[-1] = (out[-1][0], v + 1)
            else:
                out.append((v, v + 1))
        return out


recv_ops = st.lists(
    st.one_of(
        st.tuples(st.just("recv"), st.integers(0, len(STREAM) - 1), st.integers(1, 60)),
        st.tuples(st.just("read"), st.integers(0, 80), st.just(0)),
    ),
    max_size=50,
)


def run_recv(ops: list) -> tuple[ReceiveBuffer, RecvModel]:
    rb = ReceiveBuffer()
    m = RecvModel()
    out = bytearray()
    for op, a, b in ops:
        if op == "recv":
            n = min(b, len(STREAM) - a)
            piece = memoryview(STREAM)[a : a + n]
            assert rb.receive(a, piece) == m.receive(a, n)
        else:
            ready = rb.ready_bytes
            data = rb.read(a)
            assert isinstance(data, bytes)
            assert len(data) <= min(a, ready), "read(n) returns at most n ready bytes"
            if a > 0 and ready > 0:
                assert data, "read(n) returned b'' although bytes were ready"
            out += data
            m.read_offset += len(data)
        assert rb.offset == m.offset
        assert rb.read_offset == m.read_offset
        assert rb.ready_bytes == m.offset - m.read_offset
        assert rb.buffered == rb.ready_bytes + m.held_out_of_order()
        assert rb.sack_ranges(100) == m.sack()
        full = m.sack()
        assert rb.sack_ranges(2) == (full if len(full) <= 2 else [full[0], full[-1]])
        assert rb.sack_ranges(5) == (full if len(full) <= 5 else full[:2] + full[-3:])
        assert rb.dup_bytes == m.dup_bytes
        assert bytes(out) == STREAM[: m.read_offset]
    # drain: in-order output is exactly the stream prefix that was received
    while chunk := rb.read(10_000):
        out += chunk
    assert bytes(out) == STREAM[: m.offset]
    assert rb.ready_bytes == 0 and rb.read_offset == m.offset
    assert rb.read(10) == b""
    return rb, m


@FAST
@given(recv_ops)
def test_receivebuffer_matches_model(ops: list) -> None:
    rb, m = run_recv(ops)
    assert rb.dups == m.dups
    assert rb.reorder_hwm == m.hwm


@FAST
@given(st.permutations(list(range(12))), st.lists(st.integers(0, 11), max_size=6))
def test_receivebuffer_any_order_with_duplicates(order: list[int], again: list[int]) -> None:
    """The stream cut in 12 pieces, delivered in any order, some pieces twice."""
    cut = [i * 20 for i in range(13)]
    rb = ReceiveBuffer()
    seen: set[int] = set()
    dups = 0
    for k in order + again:
        if k in seen:
            dups += 1
        seen.add(k)
        rb.receive(cut[k], memoryview(STREAM)[cut[k] : cut[k + 1]])
    assert rb.offset == 240
    assert drain(rb) == STREAM
    # whole-piece duplicates never straddle the in-order point: counted exactly
    assert rb.dups == dups
    assert rb.dup_bytes == 20 * dups


def drain(rb: ReceiveBuffer, n: int = 1000) -> bytes:
    out = bytearray()
    while chunk := rb.read(n):
        out += chunk
    return bytes(out)


def test_receivebuffer_counters_exact() -> None:
    """Seeded random schedules (deterministic), counters compared after every piece."""
    for seed in range(40):
        rng = random.Random(seed)
        rb = ReceiveBuffer()
        m = RecvModel()
        for _ in range(60):
            a = rng.randrange(len(STREAM))
            n = min(rng.randint(1, 40), len(STREAM) - a)
            rb.receive(a, memoryview(STREAM)[a : a + n])
            m.receive(a, n)
            assert (rb.dups, rb.reorder_hwm) == (m.dups, m.hwm), f"seed {seed}"


def test_dups_simple_cases() -> None:
    rb = ReceiveBuffer()
    rb.receive(0, memoryview(STREAM)[0:10])
    rb.receive(0, memoryview(STREAM)[0:10])          # entirely old
    assert (rb.dups, rb.dup_bytes) == (1, 10)
    rb.receive(5, memoryview(STREAM)[5:15])          # half old, below the in-order point
    assert (rb.dups, rb.dup_bytes) == (2, 15)
    rb.receive(30, memoryview(STREAM)[30:40])
    rb.receive(35, memoryview(STREAM)[35:45])        # overlaps out-of-order bytes
    assert (rb.dups, rb.dup_bytes) == (3, 20)
    rb.receive(20, memoryview(STREAM)[20:25])        # new bytes only
    assert rb.dups == 3
    rb.receive(15, memoryview(STREAM)[15:20])
    assert rb.offset == 25 and drain(rb) == STREAM[:25]


def test_dups_counts_a_piece_once() -> None:
    rb = ReceiveBuffer()
    rb.receive(0, memoryview(STREAM)[0:10])
    rb.receive(20, memoryview(STREAM)[20:30])
    rb.receive(5, memoryview(STREAM)[5:25])  # old bytes 5..10 and 20..25
    assert rb.dup_bytes == 10
    assert rb.dups == 1


def test_reorder_hwm_tracks_out_of_order_bytes() -> None:
    rb = ReceiveBuffer()
    rb.receive(100, memoryview(STREAM)[100:130])
    assert rb.reorder_hwm == 30
    rb.receive(200, memoryview(STREAM)[200:210])
    assert rb.reorder_hwm == 40
    rb.receive(105, memoryview(STREAM)[105:115])  # duplicate: holds nothing more
    assert rb.reorder_hwm == 40
    assert rb.buffered == 40 and rb.ready_bytes == 0


def test_reorder_hwm_does_not_count_in_order_pieces() -> None:
    rb = ReceiveBuffer()
    rb.receive(10, memoryview(STREAM)[10:11])   # 1 byte out of order
    rb.receive(0, memoryview(STREAM)[0:10])     # fills the gap: in order, never held
    assert rb.offset == 11
    assert rb.reorder_hwm == 1


def test_read_semantics() -> None:
    rb = ReceiveBuffer()
    assert rb.read(10) == b""
    a, b, c = STREAM[0:10], STREAM[10:15], STREAM[15:40]
    rb.receive(0, memoryview(a))
    rb.receive(10, memoryview(b))
    rb.receive(15, memoryview(c))
    assert rb.read(0) == b""
    assert rb.ready_bytes == 40
    assert rb.read(3) == a[:3]          # part of the first piece, never more than asked
    got = bytearray(a[:3])
    for n in (7, 8, 1, 100):
        chunk = rb.read(n)
        assert 0 < len(chunk) <= n       # "up to n", never b"" while bytes are ready
        got += chunk
        assert rb.read_offset == len(got)
        assert rb.ready_bytes == 40 - len(got)
    got += drain(rb)
    assert bytes(got) == STREAM[:40]
    assert rb.read(1) == b""
    assert rb.read_offset == 40 and rb.ready_bytes == 0


def test_read_splits_and_joins_views() -> None:
    """Pieces that are views into one bigger buffer (what the deframer hands out)."""
    big = bytes(STREAM)
    rb = ReceiveBuffer()
    for s, e in [(0, 7), (7, 9), (9, 30), (30, 31), (31, 240)]:
        rb.receive(s, memoryview(big)[s:e])
    out = bytearray()
    for n in (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 1000):
        chunk = rb.read(n)
        assert 0 < len(chunk) <= n
        out += chunk
    out += drain(rb)
    assert bytes(out) == big


def test_read_returns_whole_bytes_piece_without_copy() -> None:
    payload = bytes(STREAM[:50])
    rb = ReceiveBuffer()
    rb.receive(0, memoryview(payload))
    assert rb.read(50) is payload


def test_received_pieces_are_kept_without_copy() -> None:
    """Pieces are stored as views of the caller's bytes (the docstring's contract)."""
    payload = bytearray(STREAM[:20])
    rb = ReceiveBuffer()
    rb.receive(0, memoryview(payload))
    payload[0] = payload[0] ^ 0xFF  # the caller broke the contract: the buffer shows it
    assert drain(rb)[0] == payload[0]


def test_out_of_order_then_in_order() -> None:
    rb = ReceiveBuffer()
    assert rb.receive(20, memoryview(STREAM)[20:30]) == 0
    assert rb.receive(10, memoryview(STREAM)[10:20]) == 0
    assert rb.sack_ranges(16) == [(10, 30)]
    assert rb.offset == 0
    assert rb.receive(0, memoryview(STREAM)[0:10]) == 30
    assert rb.sack_ranges(16) == []
    assert drain(rb) == STREAM[:30]


def test_small_out_of_order_pieces_from_reused_buffers_are_copied() -> None:
    """A carrier's receive buffer is reused once unreferenced: a small piece held across
    a gap must not pin it (copied); a large one is kept as a view (no copy)."""
    buf = bytearray(b"s" * 100 + b"L" * (128 * 1024))
    view = memoryview(buf).toreadonly()
    rb = ReceiveBuffer()
    rb.receive(1000, view[:100])  # out of order: offset 0 not yet received
    rb.receive(5000, view[100:])
    held = sorted(rb._ooo.items())
    assert held[0][1].obj is not buf and bytes(held[0][1]) == b"s" * 100  # copied
    assert held[1][1].obj is buf  # kept as a view
    buf[0:100] = b"x" * 100  # the carrier may reuse what nothing refers to
    rb.receive(0, memoryview(b"0" * 1000))
    got = rb.read(1100)
    got += rb.read(1100 - len(got))
    assert got == b"0" * 1000 + b"s" * 100


def test_readinto_copies_across_pieces_and_splits_the_last() -> None:
    rb = ReceiveBuffer()
    rb.receive(0, memoryview(b"abc"))
    rb.receive(3, memoryview(b"defgh"))
    dest = bytearray(5)
    assert rb.readinto(memoryview(dest)) == 5 and dest == b"abcde"
    assert rb.read_offset == 5 and rb.ready_bytes == 3
    assert rb.readinto(memoryview(dest)) == 3 and dest[:3] == b"fgh"
    assert rb.readinto(memoryview(dest)) == 0


def test_read_view_hands_out_pieces_uncopied_and_splits_at_max_bytes() -> None:
    rb = ReceiveBuffer()
    big = bytearray(b"k" * 70_000)  # a carrier's receive buffer
    rb.receive(0, memoryview(big).toreadonly())
    rb.receive(70_000, memoryview(b"tail"))
    first = rb.read_view(50_000)
    assert first.readonly and len(first) == 50_000 and first.obj is big  # no copy
    assert rb.read_offset == 50_000 and rb.ready_bytes == 20_004
    rest = rb.read_view(1 << 20)  # one piece per call, never joined with the next
    assert rest.obj is big and len(rest) == 20_000
    assert bytes(rb.read_view(100)) == b"tail" and rb.read_view(100).readonly
    assert len(rb.read_view(100)) == 0 and rb.ready_bytes == 0 and rb.read_offset == 70_004


def test_a_datagram_window_with_every_other_datagram_lost_is_accepted() -> None:
    """An honest peer on a lossy datagram path leaves one gap per lost datagram: with
    the default window (8 MiB: budget 16 MiB) that may be thousands.  A 1024-gap cap
    ended a healthy flow whose startup overshot a shallow queue (1025 gaps)."""
    budget = 16 << 20
    assert gap_limit(budget) == 8192 and gap_limit(2 << 20) == MAX_GAPS == 1024
    buf = ReceiveBuffer(reorder_budget=budget)
    size = 1150  # udpflow's payload per datagram
    count = (8 << 20) // size
    for k in range(1, count, 2):  # every other one lost: ~3650 gaps
        buf.receive(k * size, b"d" * size)
    assert buf.offset == 0 and buf.ready_bytes == 0
    for k in range(0, count, 2):  # the re-sends
        buf.receive(k * size, b"d" * size)
    assert buf.offset == count * size


def test_small_fragments_beyond_max_gaps_end_the_stream() -> None:
    """Tiny pieces are cut at MAX_GAPS whatever the budget: a peer fragmenting on
    purpose makes the receiver work per gap for a byte of data each."""
    buf = ReceiveBuffer(reorder_budget=16 << 20)
    for k in range(MAX_GAPS):
        buf.receive(3 * k + 1, b"x")
    buf.receive(2, b"x")  # a small piece beside a held one: no new gap
    with pytest.raises(ProtocolError, match="reorder budget"):
        buf.receive(3 * MAX_GAPS + 1, b"x")


def test_datagram_sized_pieces_beyond_the_gap_limit_end_the_stream() -> None:
    budget = 16 << 20
    buf = ReceiveBuffer(reorder_budget=budget)
    limit = gap_limit(budget)
    size = MIN_GAP_BYTES
    for k in range(limit):
        buf.receive((2 * k + 1) * size, b"x" * size)
    with pytest.raises(ProtocolError, match="reorder budget"):
        buf.receive((2 * limit + 1) * size, b"x" * size)
