"""Issue 6: different bytes at an offset already received are a protocol error
where the earlier copy is still buffered (RFC 9000, section 2.2); equal re-sends
(what a dead path carried) pass, and the check costs bounded work per frame."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rendr.config import FlowConfig
from rendr.core.flow import Flow
from rendr.core.recvbuf import MAX_COMPARE_PIECES, ReceiveBuffer
from rendr.core.types import Role, State
from rendr.core.wire import data_header
from rendr.errors import ProtocolError

MIB = 1 << 20


def _listener() -> Flow:
    flow = Flow(role=Role.LISTENER, flow_id=b"F" * 16, config=FlowConfig(), now=0.0,
                peer_window=8 * MIB)
    flow.add_path(1, now=0.0)
    return flow


def _data(offset: int, payload: bytes) -> bytes:
    return data_header(offset, len(payload)) + payload


@pytest.mark.parametrize("where", ["ready", "held-out-of-order"])
def test_different_bytes_at_a_buffered_offset_abort_the_flow(where: str) -> None:
    flow = _listener()
    base = 0 if where == "ready" else 1000  # 1000: above a gap, held out of order
    flow.receive(1, _data(base, b"A" * 500), 0.01)
    flow.receive(1, _data(base, b"A" * 500), 0.02)  # an equal re-send is fine
    assert flow.state is not State.CLOSED
    flow.receive(1, _data(base + 100, b"A" * 50 + b"B" + b"A" * 49), 0.03)
    assert flow.state is State.CLOSED and isinstance(flow.error, ProtocolError)
    assert "different bytes" in str(flow.error)


def test_bytes_already_read_are_not_compared() -> None:
    """What the application read is gone: a later re-send of it cannot be checked
    (and costs nothing)."""
    flow = _listener()
    flow.receive(1, _data(0, b"A" * 500), 0.01)
    assert flow.read(1000) == b"A" * 500
    flow.receive(1, _data(0, b"B" * 500), 0.02)
    assert flow.state is not State.CLOSED


def test_duplicate_check_cost_is_bounded_by_pieces_not_history() -> None:
    """100k one-byte pieces in the ready queue: a duplicate of the oldest byte is
    compared against at most MAX_COMPARE_PIECES pieces (newest first), so it is not
    even looked at; a byte among the newest pieces is."""
    buf = ReceiveBuffer()
    for i in range(100_000):
        buf.receive(i, memoryview(b"x"))
    buf.receive(0, memoryview(b"y"))  # differs, but beyond the compared pieces
    buf.receive(100_000 - MAX_COMPARE_PIECES - 1, memoryview(b"y"))  # just beyond
    with pytest.raises(ProtocolError):
        buf.receive(100_000 - MAX_COMPARE_PIECES, memoryview(b"y"))


@given(st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 600)), min_size=1,
                max_size=60), st.integers(0, 3))
@settings(max_examples=200, deadline=None)
def test_equal_overlapping_resends_never_raise(pieces: list[tuple[int, int]],
                                               reads: int) -> None:
    """Any slicing of the same stream, overlapping and out of order, with reads in
    between: never a protocol error, always the exact stream."""
    data = bytes(range(256)) * 20
    buf = ReceiveBuffer()
    out = bytearray()
    for i, (off, n) in enumerate([*pieces, (0, len(data))]):
        chunk = data[off : off + n]
        if chunk:
            buf.receive(off, memoryview(chunk))
        if reads and i % (reads + 1) == 0:
            out += buf.read(300)
    while chunk := buf.read(len(data)):
        out += chunk
    assert bytes(out) == data
