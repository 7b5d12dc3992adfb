"""Several HELLOs for one flow (``dial()`` staggers them over its paths): the first
HELLO_ACK opens the flow, whichever HELLO it answers; the listener makes one flow."""

from __future__ import annotations

import pytest

from rendr.config import FlowConfig
from rendr.core.session import DialerHandshake, ListenerHandshake
from rendr.core.wire import FrameType, Result
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
    assert lost.reply == won.reply  # the flow is unconfirmed: path 1's answer, repeated
    flow = dialer.on_hello_ack(FrameType.HELLO_ACK, _body(won.reply), 1, 0.0)
    assert dialer.opened_by == 1
    assert flow.keys is not None and won.flow.keys is not None
    assert flow.keys.join == won.flow.keys.join  # both ends derived the same keys
    # the flow is open: a JOIN proves it to the listener
    join = dialer.join(dialer.next_path_id())
    assert listener.decide(FrameType.JOIN, _body(join), 0.0).ok


def test_a_lost_hello_ack_is_repeated_on_the_next_carrier_until_confirmed() -> None:
    """The soak's failure: HELLO 1 reached the listener but its HELLO_ACK was lost;
    HELLO 2 (another carrier) used to get a bare DUPLICATE_PATH and dial() failed.
    Now the listener repeats HELLO_ACK 1 there (no state, no crypto): the dialer
    opens the flow with path 1's keys and JOINs.  Once the dialer confirmed the
    flow, a HELLO with its id gets a bare refusal again."""
    listener = ListenerHandshake(FlowConfig())
    dialer = DialerHandshake(FLOW, 1, FlowConfig())
    first = dialer.hello(dialer.next_path_id())
    second = dialer.hello(dialer.next_path_id())
    won = listener.decide(FrameType.HELLO, _body(first), 0.0)  # its answer is lost
    again = listener.decide(FrameType.HELLO, _body(second), 0.0)
    assert again.flow is None and again.reply == won.reply
    flow = dialer.on_hello_ack(FrameType.HELLO_ACK, _body(again.reply), 2, 0.0)
    assert dialer.opened_by == 1 and won.flow is not None
    assert flow.keys == won.flow.keys
    assert listener.decide(FrameType.JOIN, _body(dialer.join(dialer.next_path_id())),
                           0.0).ok
    # confirmed (the dialer's first record): no answer is repeated any more
    won.flow.add_path(1, now=0.0)
    won.flow.receive(1, b"".join(_sealed(flow)), 0.1)
    assert won.flow.confirmed
    listener.confirmed(FLOW)
    other = DialerHandshake(FLOW, 1, FlowConfig())
    late = listener.decide(FrameType.HELLO, _body(other.hello(1)), 0.2)
    assert late.result == Result.DUPLICATE_PATH and late.reply != won.reply


def _sealed(flow: object) -> list[bytes]:
    """A PING from the dialer's side of ``flow`` on path 1, sealed as the listener's
    path 1 expects it (the dialer's first record)."""
    from rendr.core.flow import Flow
    from rendr.core.records import RecordSealer
    from rendr.core.wire import encode_u64

    assert isinstance(flow, Flow) and flow.keys is not None
    return [bytes(b) for b in RecordSealer(flow.keys.d2l, 1).seal(
        [encode_u64(FrameType.PING, 7)])]


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
    with pytest.raises(HandshakeError, match="another flow or path"):
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
        # no new key material: at most the answer already sent (the flow is not
        # confirmed yet), public bytes bound to the first HELLO's key share
        assert d.reply == won.reply
    assert list(listener.flows) == [FLOW]
    assert won.flow.keys is keys and dict(won.flow.paths) == paths
    assert listener.memory.promised == won.flow.advertised_window
