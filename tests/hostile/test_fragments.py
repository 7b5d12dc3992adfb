"""Issue 6: an out-of-order fragment bomb must not take unbounded memory or CPU.

A peer sends 1-byte DATA frames at every other offset inside the receive window:
each is kept out of order and never delivered.  The reorder store must count each
fragment's overhead against a per-flow budget and end the flow (PROTOCOL_ERROR)
once that is exceeded, long before the window is covered.
"""

from __future__ import annotations

import time

from rendr.config import FlowConfig
from rendr.core.flow import Flow
from rendr.core.recvbuf import FRAGMENT_OVERHEAD, MAX_GAPS
from rendr.core.types import Role, State
from rendr.core.wire import data_header
from rendr.errors import ProtocolError

MIB = 1 << 20


def _listener(window: int) -> Flow:
    flow = Flow(role=Role.LISTENER, flow_id=b"F" * 16, config=FlowConfig(recv_window=window),
                now=0.0, peer_window=MIB)
    flow.add_path(1, now=0.0)
    flow.transmits(0.0)
    return flow


def test_one_byte_fragments_at_every_other_offset_end_the_flow() -> None:
    window = 1 * MIB
    flow = _listener(window)
    frames = [data_header(off, 1) + b"x" for off in range(window - 2, 0, -2)]  # descending
    stream = b"".join(frames)
    start = time.process_time()
    fed = 0
    for i in range(0, len(stream), 64 * 1024):
        flow.receive(1, stream[i : i + 64 * 1024], 0.001)
        fed += 1
        if flow.state is State.CLOSED:
            break
    cpu = time.process_time() - start
    assert flow.state is State.CLOSED, "the fragment bomb was accepted"
    assert isinstance(flow.error, ProtocolError)
    # it stopped within the budget (MAX_GAPS ranges or two windows' accounted cost),
    # one 64 KiB read past it at most, not after the whole bomb
    frames_fed = fed * 64 * 1024 // 13
    assert frames_fed <= min(MAX_GAPS, 2 * window // (1 + FRAGMENT_OVERHEAD)) + 2 * 64 * 1024 // 13
    assert cpu < 5.0  # generous: a bounded amount of work, whatever the machine


def test_honest_reordering_with_small_segments_is_accepted() -> None:
    """A failover on a slow link: a whole window of MSS-sized (1448 B) pieces arrives
    ahead of a gap; that must stay within the budget."""
    window = 1 * MIB
    flow = _listener(window)
    mss = 1448
    gap = 64 * 1024
    off = gap
    while off + mss <= window:
        flow.receive(1, data_header(off, mss) + b"y" * mss, 0.001)
        off += mss
    assert flow.state is not State.CLOSED
    flow.receive(1, data_header(0, gap) + b"z" * gap, 0.002)  # the gap fills
    got = bytearray()
    while (chunk := flow.read(MIB)):
        got += chunk
    assert len(got) == off and flow.state is not State.CLOSED
