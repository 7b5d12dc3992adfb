"""The sans-I/O handshake decisions (core/session.py): every result code, both sides."""

from __future__ import annotations

import dataclasses

import pytest

from rendr.config import FlowConfig
from rendr.core.flow import Flow
from rendr.core.session import DialerHandshake, ListenerHandshake
from rendr.core.types import Cause, Mode, State
from rendr.core.wire import PREFACE, FrameType, Hello, Join, JoinAck, Kind, Result
from rendr.errors import HandshakeError, ProtocolError, ZombieFlow

FLOW = bytes(range(16))


def _hello(flow_id: bytes = FLOW, mode: int = Mode.PRIME, kind: int = Kind.STREAM) -> Hello:
    """A v1 HELLO (with a key share) carrying these fields."""
    hello = Hello.decode(DialerHandshake(flow_id, Mode.PRIME, FlowConfig()).hello(1)[1][4:])
    return dataclasses.replace(hello, mode=mode, kind=kind)


def _connected(max_paths: int = 16) -> tuple[ListenerHandshake, DialerHandshake, Flow]:
    """Both ends after HELLO/HELLO_ACK: the listener, the dialer, the listener's flow."""
    hs = ListenerHandshake(FlowConfig(max_paths=max_paths))
    dh = DialerHandshake(FLOW, Mode.PRIME, FlowConfig())
    d = hs.decide(FrameType.HELLO, dh.hello(dh.next_path_id())[1][4:], 0.0)
    assert d.flow is not None
    dh.on_hello_ack(FrameType.HELLO_ACK, d.reply[1][4:], 1, 0.0)
    return hs, dh, d.flow


def _join(dh: DialerHandshake, path_id: int) -> Join:
    return Join.decode(dh.join(path_id)[1][4:])


def _answer(reply: list[bytes]) -> bytes:
    assert reply[0] == PREFACE
    return reply[1][4:]  # the frame body after its 4-byte header


def test_hello_creates_a_flow_and_answers_ok() -> None:
    hs = ListenerHandshake(FlowConfig())
    d = hs.on_hello(_hello(), 0.0)
    assert d.ok and d.new and d.flow is not None and d.path_id == 1
    assert hs.knows(FLOW)
    assert Hello.decode(_answer(d.reply), ack=True).result == Result.OK


@pytest.mark.parametrize(("hello", "closed", "full", "result"), [
    (_hello(mode=7), False, False, Result.BAD_MODE),  # no such mode
    (_hello(kind=Kind.PACKET + 1), False, False, Result.BAD_KIND),
    (_hello(), True, False, Result.BUSY),
    (_hello(), False, True, Result.BUSY),
])
def test_hello_refusals(hello: Hello, closed: bool, full: bool, result: Result) -> None:
    hs = ListenerHandshake(FlowConfig())
    hs.closed = closed
    d = hs.on_hello(hello, 0.0, queue_full=full)
    assert d.result == result and d.flow is None and not hs.knows(FLOW)
    assert Hello.decode(_answer(d.reply), ack=True).result == result


def test_second_hello_for_a_known_flow_is_refused() -> None:
    hs = ListenerHandshake(FlowConfig())
    hs.on_hello(_hello(), 0.0)
    assert hs.on_hello(_hello(), 0.0).result == Result.DUPLICATE_PATH


def test_join_results() -> None:
    assert ListenerHandshake(FlowConfig()).on_join(Join(FLOW, 2)).result == Result.UNKNOWN_FLOW
    hs, dh, flow = _connected(max_paths=2)
    flow.add_path(1, now=0.0)
    assert hs.on_join(_join(dh, 1)).result == Result.DUPLICATE_PATH
    ok = hs.on_join(_join(dh, 2))
    assert ok.ok and ok.flow is flow and not ok.new
    assert JoinAck.decode(_answer(ok.reply)).result == Result.OK
    flow.add_path(2, now=0.0)
    assert hs.on_join(_join(dh, 3)).result == Result.TOO_MANY_PATHS
    flow.abort(0.0)
    assert hs.on_join(_join(dh, 3)).result == Result.FLOW_CLOSED
    hs.forget(FLOW)
    assert hs.on_join(_join(dh, 3)).result == Result.UNKNOWN_FLOW


def test_join_without_the_flow_keys_is_refused() -> None:
    """Knowing the flow id (it travels in clear) opens nothing: a JOIN must carry a
    MAC under the flow's JOIN key, bound to its path id (a captured JOIN replayed with
    path id + 1 fails too)."""
    hs, dh, _ = _connected()
    assert hs.on_join(Join(FLOW, 2)).result == Result.AUTH_FAILED  # v0-style, no MAC
    good = _join(dh, 2)
    assert hs.on_join(dataclasses.replace(good, path_id=3)).result == Result.AUTH_FAILED
    assert hs.on_join(dataclasses.replace(good, mac=bytes(16))).result == Result.AUTH_FAILED
    assert hs.auth_failures == 3
    assert hs.on_join(good).ok


def test_decide_dispatches_and_refuses_other_first_frames() -> None:
    hs, dh, _ = _connected()
    assert hs.decide(FrameType.JOIN, dh.join(2)[1][4:], 0.0).ok
    with pytest.raises(ProtocolError):
        hs.decide(FrameType.PING, b"\0" * 8, 0.0)


def _dialer_with_flow() -> DialerHandshake:
    _, dh, _ = _connected()
    assert dh.flow is not None
    dh.flow.add_path(1, now=0.0)
    return dh


def test_dialer_reads_hello_ack() -> None:
    dh = DialerHandshake(FLOW, Mode.PRIME, FlowConfig())
    assert dh.next_path_id() == 1 and dh.next_path_id() == 2  # never reused
    refused = Hello(FLOW, 3, Mode.PRIME, Kind.STREAM, 0, 1, Result.BUSY).encode(ack=True)[4:]
    with pytest.raises(HandshakeError, match="BUSY"):
        dh.on_hello_ack(FrameType.HELLO_ACK, refused, 3, 0.0)
    other = Hello(FLOW, 9, Mode.PRIME, Kind.STREAM, 0, 1, Result.OK).encode(ack=True)[4:]
    with pytest.raises(HandshakeError, match="another"):
        dh.on_hello_ack(FrameType.HELLO_ACK, other, 3, 0.0)
    with pytest.raises(HandshakeError):
        dh.on_hello_ack(FrameType.JOIN_ACK, other, 3, 0.0)
    assert dh.flow is None


def test_dialer_join_ack_ok_and_refused() -> None:
    hs, dh, flow = _connected(max_paths=2)
    flow.add_path(1, now=0.0)
    ok = hs.on_join(_join(dh, 2))
    dh.on_join_ack(FrameType.JOIN_ACK, _answer(ok.reply), 2, 0.0)
    flow.add_path(2, now=0.0)
    full = hs.on_join(_join(dh, 3))
    with pytest.raises(HandshakeError, match="TOO_MANY_PATHS"):
        dh.on_join_ack(FrameType.JOIN_ACK, _answer(full.reply), 3, 0.0)
    with pytest.raises(HandshakeError, match="another"):
        dh.on_join_ack(FrameType.JOIN_ACK, JoinAck(FLOW, 9, Result.OK).encode()[4:], 3, 0.0)
    dh.join(4)  # a forged OK (no MAC, or a MAC for another nonce) is not the listener's
    with pytest.raises(HandshakeError, match="prove"):
        dh.on_join_ack(FrameType.JOIN_ACK, JoinAck(FLOW, 4, Result.OK).encode()[4:], 4, 0.0)
    with pytest.raises(HandshakeError, match="prove"):
        dh.on_join_ack(FrameType.JOIN_ACK, _answer(ok.reply).replace(
            (2).to_bytes(4, "big"), (4).to_bytes(4, "big"), 1), 4, 0.0)


def test_unknown_flow_with_no_live_path_is_a_zombie() -> None:
    dh = _dialer_with_flow()
    flow = dh.flow
    assert flow is not None
    unknown = JoinAck(FLOW, 2, Result.UNKNOWN_FLOW).encode()[4:]
    with pytest.raises(HandshakeError):  # a live path left: the flow goes on
        dh.on_join_ack(FrameType.JOIN_ACK, unknown, 2, 0.0)
    assert flow.state is not State.CLOSED
    flow.path_failed(1, Cause.RESET, 0.1)
    with pytest.raises(HandshakeError):
        dh.on_join_ack(FrameType.JOIN_ACK, unknown, 2, 0.2, fatal_if_unknown=False)
    assert flow.state is not State.CLOSED
    with pytest.raises(HandshakeError):
        dh.on_join_ack(FrameType.JOIN_ACK, unknown, 2, 0.3)
    assert flow.state is State.CLOSED and isinstance(flow.error, ZombieFlow)


def test_check_room() -> None:
    dh = _dialer_with_flow()
    dh.check_room()
    dh.config = FlowConfig(max_paths=1)
    with pytest.raises(Exception, match="max_paths"):
        dh.check_room()


def test_pending_handshake_caps() -> None:
    hs = ListenerHandshake(FlowConfig(max_pending=3, max_pending_per_source=2))
    assert hs.admit("10.0.0.1") and hs.admit("10.0.0.1")
    assert not hs.admit("10.0.0.1")  # per source
    assert hs.admit("10.0.0.2")
    assert not hs.admit("10.0.0.3")  # in total
    hs.handshake_done("10.0.0.1")
    assert hs.admit("10.0.0.1") and hs.pending == 3
    for src in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):
        hs.handshake_done(src)
    assert hs.pending == 0 and hs.admit("10.0.0.3")


def test_flows_cap() -> None:
    hs = ListenerHandshake(FlowConfig(max_flows=1))
    assert hs.on_hello(_hello(), 0.0).ok
    assert hs.on_hello(_hello(bytes(16)), 0.0).result == Result.BUSY
    hs.forget(FLOW)
    assert hs.on_hello(_hello(bytes(16)), 0.0).ok


def test_the_migration_budget_is_negotiated_to_the_smaller() -> None:
    """Both ends use the same budget: the dialer's 5 s against the listener's 90 s
    (before: the dialer gave up after 5 s, the listener's flow lived on for 90)."""
    from rendr.core.wire import CAP_BUDGET

    dh = DialerHandshake(FLOW, Mode.PRIME, FlowConfig(migration_budget=5.0))
    opening = dh.hello(1)
    hello = Hello.decode(opening[1][4:])
    assert hello.caps & CAP_BUDGET and hello.budget_ms == 5000
    lh = ListenerHandshake(FlowConfig(migration_budget=90.0))
    d = lh.on_hello(hello, 0.0)
    assert d.flow is not None and d.flow.config.migration_budget == 5.0
    flow = dh.on_hello_ack(FrameType.HELLO_ACK, d.reply[1][4:], 1, 0.0)
    assert flow.config.migration_budget == 5.0
    # the other way round: the listener's smaller budget wins on both ends
    dh2 = DialerHandshake(FLOW, Mode.PRIME, FlowConfig(migration_budget=90.0))
    lh2 = ListenerHandshake(FlowConfig(migration_budget=2.5))
    d2 = lh2.on_hello(Hello.decode(dh2.hello(1)[1][4:]), 0.0)
    assert d2.flow is not None and d2.flow.config.migration_budget == 2.5
    assert dh2.on_hello_ack(FrameType.HELLO_ACK, d2.reply[1][4:], 1, 0.0
                            ).config.migration_budget == 2.5


def test_a_hello_without_a_budget_keeps_each_ends_own() -> None:
    from rendr.core.wire import CAP_KEYS

    lh = ListenerHandshake(FlowConfig(migration_budget=7.0))
    d = lh.on_hello(dataclasses.replace(_hello(), caps=CAP_KEYS), 0.0)  # no CAP_BUDGET
    assert d.flow is not None and d.flow.config.migration_budget == 7.0


def _open(lh: ListenerHandshake, dh: DialerHandshake) -> tuple[Result, Flow | None]:
    """HELLO -> HELLO_ACK: the listener's result, and the dialer's flow if it accepted
    the answer (None when the listener refused)."""
    d = lh.decide(FrameType.HELLO, dh.hello(1)[1][4:], 0.0)
    if not d.ok:
        return d.result, None
    return d.result, dh.on_hello_ack(FrameType.HELLO_ACK, d.reply[1][4:], 1, 0.0)


def test_psk_both_ends_or_refused() -> None:
    psk = b"k" * 32
    lh = ListenerHandshake(FlowConfig(), psk=psk)
    assert _open(lh, DialerHandshake(FLOW, Mode.PRIME, FlowConfig()))[0] == Result.AUTH_FAILED
    wrong = DialerHandshake(bytes(16), Mode.PRIME, FlowConfig(), psk=b"x" * 32)
    assert _open(lh, wrong)[0] == Result.AUTH_FAILED
    assert not lh.flows  # refused before anything was created
    result, flow = _open(lh, DialerHandshake(FLOW, Mode.PRIME, FlowConfig(), psk=psk))
    assert result == Result.OK and flow is not None and flow.keys is not None
    assert flow.keys == lh.flows[FLOW].keys  # both ends derived the same keys
    # a dialer with a psk against a listener without one: refused too
    plain = ListenerHandshake(FlowConfig())
    assert _open(plain, DialerHandshake(FLOW, Mode.PRIME, FlowConfig(), psk=psk)
                 )[0] == Result.AUTH_FAILED


def test_pinned_server_key() -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from rendr.keys import generate_server_key, server_public_key

    priv, pub = generate_server_key()
    assert server_public_key(priv) == pub
    real = ListenerHandshake(FlowConfig(), static_key=X25519PrivateKey.from_private_bytes(priv))
    result, flow = _open(real, DialerHandshake(FLOW, Mode.PRIME, FlowConfig(), server_key=pub))
    assert result == Result.OK and flow is not None
    # someone else's listener (another static key) cannot prove the keys
    impostor = ListenerHandshake(FlowConfig(), static_key=X25519PrivateKey.generate())
    with pytest.raises(HandshakeError, match="could not prove"):
        _open(impostor, DialerHandshake(FLOW, Mode.PRIME, FlowConfig(), server_key=pub))
    # a listener without a static key refuses a dialer that pins one
    assert _open(ListenerHandshake(FlowConfig()), DialerHandshake(
        FLOW, Mode.PRIME, FlowConfig(), server_key=pub))[0] == Result.AUTH_FAILED


def test_records_and_encryption_are_on_if_either_end_asks() -> None:
    for d_on, l_on in ((True, True), (True, False), (False, True), (False, False)):
        lh = ListenerHandshake(FlowConfig(encrypt=l_on, records=l_on))
        _, flow = _open(lh, DialerHandshake(FLOW, Mode.PRIME,
                                            FlowConfig(encrypt=d_on, records=d_on)))
        assert flow is not None
        assert flow.encrypt == lh.flows[FLOW].encrypt == (d_on or l_on)
        assert flow.records == lh.flows[FLOW].records == (d_on or l_on)


def test_an_authenticated_join_confirms_a_new_flow() -> None:
    """A JOIN's MAC is under a key derived from this flow's handshake, so it proves the
    dialer holds the flow's keys as much as its first record does.  Seen in the soak
    on an overloaded box: the first path's records were late, the dialer's JOINed
    paths were accepted, and the listener still ended the flow as "handshake never
    confirmed" (the dialer got ConnAborted, or ZombieFlow on its next JOIN)."""
    from rendr.core.events import EventKind

    hs = ListenerHandshake(FlowConfig(confirm_timeout=2.0))
    dh = DialerHandshake(FLOW, Mode.PRIME, FlowConfig())
    d = hs.decide(FrameType.HELLO, dh.hello(dh.next_path_id())[1][4:], 0.0)
    assert d.flow is not None
    flow = d.flow
    flow.add_path(1, now=0.0)
    dh.on_hello_ack(FrameType.HELLO_ACK, d.reply[1][4:], 1, 0.0)
    assert not flow.confirmed
    forged = hs.decide(FrameType.JOIN, Join(FLOW, 2, bytes(16), bytes(16)).encode()[4:], 1.0)
    assert forged.result == Result.AUTH_FAILED and not flow.confirmed
    ok = hs.decide(FrameType.JOIN, _join(dh, 2).encode()[4:], 1.5)
    assert ok.ok and flow.confirmed
    assert any(e.kind is EventKind.CONFIRMED for e in flow.events())
    flow.add_path(2, now=1.5)
    flow.handle_timer(2.5)
    assert flow.state is not State.CLOSED
