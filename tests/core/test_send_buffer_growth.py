"""The send buffer grows when only ACKs can make room (the ACK clock limits the rate),
and not when the path or the peer's window is what limits it."""

from __future__ import annotations

from rendr.config import FlowConfig
from rendr.core.flow import Flow
from rendr.core.types import Role

MIB = 1 << 20


def _flow(peer_window: int = 64 * MIB) -> Flow:
    flow = Flow(role=Role.DIALER, flow_id=b"f" * 16, config=FlowConfig(), now=0.0,
                peer_window=peer_window)
    flow.add_path(1, now=0.0)
    return flow


def _send_all_queued(flow: Flow) -> None:
    for _ in range(64):
        if not flow.wants_transmit():
            break
        flow.transmits(0.0)


def test_grows_when_everything_is_in_flight() -> None:
    flow = _flow()
    data = memoryview(bytes(32 * MIB))
    start = flow.config.send_buffer_min
    assert flow.send(data, 0.0) == start  # full
    _send_all_queued(flow)
    assert flow.unacked == start
    taken = flow.send(data[start:], 0.0)  # all in flight: only ACKs make room -> grow
    assert taken == start and flow.send_space == 0
    _send_all_queued(flow)
    assert flow.send(data[2 * start :], 0.0) == 2 * start
    _send_all_queued(flow)
    assert flow.send(data[4 * start :], 0.0) == 0  # at the configured maximum
    assert flow.unacked == flow.config.send_buffer


def test_no_growth_while_the_path_holds_data_back() -> None:
    flow = _flow()
    data = memoryview(bytes(8 * MIB))
    start = flow.config.send_buffer_min
    assert flow.send(data, 0.0) == start
    flow.set_path_blocked(1, True)  # the carrier pushes back: the path is the limit
    flow.transmits(0.0)
    assert flow.send(data[start:], 0.0) == 0
    assert flow.send_space == 0 and flow.unacked == start


def test_no_growth_when_the_peer_window_is_the_limit() -> None:
    flow = _flow(peer_window=MIB)
    data = memoryview(bytes(8 * MIB))
    start = flow.config.send_buffer_min
    assert flow.send(data, 0.0) == start
    _send_all_queued(flow)  # only 1 MiB may go: the rest waits for the peer's window
    assert flow.send(data[start:], 0.0) == 0
