"""Several HELLOs for one flow (``dial()`` staggers them over its paths): the first
HELLO_ACK opens the flow, whichever HELLO it answers; the listener makes one flow."""

from __future__ import annotations

import pytest

from rendr.config import FlowConfig
from rendr.core.session import DialerHandshake, ListenerHandshake
from rendr.core.wire import FrameType, Hello, Result
from rendr.errors import HandshakeError

FLOW = bytes(range(16))


def _body(frames: list[bytes]) -> bytes:
    return frames[1][4:]  # after the preface, the frame body after its 4-byte header


def test_the_first_of_two_hellos_opens_the_flow() -> None:
    """HELLO on paths 1 and 2; the listener gets path 1's first: its HELLO_ACK must
    open the flow with path 1's key share (not the one sent last)."""
    listener = ListenerHandshake(FlowConfig())
    dialer = DialerHandshake(FLOW, 1, FlowConfig())
    first = dialer.hello(dialer.next_path_id())
    second = dialer.hello(dialer.next_path_id())
    won = listener.decide(FrameType.HELLO, _body(first), 0.0)
    lost = listener.decide(FrameType.HELLO, _body(second), 0.0)
    assert won.ok and won.flow is not None
    assert lost.result == Result.DUPLICATE_PATH and lost.flow is None
    assert list(listener.flows) == [FLOW]
    with pytest.raises(HandshakeError, match="DUPLICATE_PATH"):
        dialer.on_hello_ack(FrameType.HELLO_ACK, _body(lost.reply), 2, 0.0)
    flow = dialer.on_hello_ack(FrameType.HELLO_ACK, _body(won.reply), 1, 0.0)
    assert flow.keys is not None and won.flow.keys is not None
    assert flow.keys.join == won.flow.keys.join  # both ends derived the same keys
    # the flow is open: a JOIN proves it to the listener
    join = dialer.join(dialer.next_path_id())
    assert listener.decide(FrameType.JOIN, _body(join), 0.0).ok


def test_the_second_hello_can_win_too() -> None:
    listener = ListenerHandshake(FlowConfig())
    dialer = DialerHandshake(FLOW, 1, FlowConfig())
    dialer.hello(dialer.next_path_id())  # its carrier is silent: never arrives
    second = dialer.hello(dialer.next_path_id())
    won = listener.decide(FrameType.HELLO, _body(second), 0.0)
    flow = dialer.on_hello_ack(FrameType.HELLO_ACK, _body(won.reply), 2, 0.0)
    assert flow.keys is not None and won.flow is not None and won.flow.keys is not None
    assert flow.keys.join == won.flow.keys.join


def test_only_one_hello_ack_opens_the_flow() -> None:
    listener = ListenerHandshake(FlowConfig())
    dialer = DialerHandshake(FLOW, 1, FlowConfig())
    first = dialer.hello(dialer.next_path_id())
    won = listener.decide(FrameType.HELLO, _body(first), 0.0)
    dialer.on_hello_ack(FrameType.HELLO_ACK, _body(won.reply), 1, 0.0)
    with pytest.raises(HandshakeError, match="already open"):
        dialer.on_hello_ack(FrameType.HELLO_ACK, _body(won.reply), 1, 0.0)


def test_a_hello_ack_for_a_path_that_sent_no_hello_is_refused() -> None:
    listener = ListenerHandshake(FlowConfig())
    dialer = DialerHandshake(FLOW, 1, FlowConfig())
    other = DialerHandshake(FLOW, 1, FlowConfig())
    dialer.hello(dialer.next_path_id())
    reply = listener.decide(FrameType.HELLO, _body(other.hello(2)), 0.0).reply
    with pytest.raises(HandshakeError, match="sent no HELLO"):
        dialer.on_hello_ack(FrameType.HELLO_ACK, _body(reply), 2, 0.0)


def test_a_second_hello_changes_nothing_at_the_listener() -> None:
    """A HELLO for a flow id in use (ours, or anyone's) is refused before any state is
    made: the flow keeps its keys and paths, no second flow exists."""
    listener = ListenerHandshake(FlowConfig())
    dialer = DialerHandshake(FLOW, 1, FlowConfig())
    won = listener.decide(FrameType.HELLO, _body(dialer.hello(dialer.next_path_id())), 0.0)
    assert won.flow is not None
    keys, paths = won.flow.keys, dict(won.flow.paths)
    for attacker in (DialerHandshake(FLOW, 1, FlowConfig()), dialer):
        d = listener.decide(FrameType.HELLO, _body(attacker.hello(7)), 0.0)
        assert d.result == Result.DUPLICATE_PATH and d.flow is None and not d.new
        ack = Hello.decode(_body(d.reply), ack=True)
        assert not ack.key_share.strip(b"\0")  # no key material for a refused HELLO
    assert list(listener.flows) == [FLOW]
    assert won.flow.keys is keys and dict(won.flow.paths) == paths
    assert listener.memory.promised == won.flow.advertised_window
