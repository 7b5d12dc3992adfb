"""Issue 10: authentication-only records on a path whose carrier encrypts itself and
whose certificate the dialer verified (a QUIC path with a CA or a pin), sans-I/O.

The per-path decision travels in the keyed handshake (KEY_PATH_AUTH in HELLO and
HELLO_ACK, the PATH_AUTH_ONLY flags byte of JOIN and JOIN_ACK) and is covered by the
transcript / MACs together with the carrier's channel binding: whoever lacks the
flow's keys cannot turn a path's encryption off (or on), and a listener never agrees
on a carrier without a binding (TCP, udpflow)."""

from __future__ import annotations

import dataclasses

import pytest

from rendr.config import FlowConfig
from rendr.core import crypto
from rendr.core.dgram import DatagramOpener, DatagramSealer
from rendr.core.flow import Flow
from rendr.core.records import RecordError, RecordOpener, RecordSealer
from rendr.core.session import DialerHandshake, ListenerHandshake
from rendr.core.types import Mode, PathStatus
from rendr.core.wire import (
    CAP_PATH_AUTH,
    KEY_PATH_AUTH,
    PATH_AUTH_ONLY,
    FrameType,
    Hello,
    Join,
    JoinAck,
    Result,
    dgram_header,
)
from rendr.errors import HandshakeError

FLOW = bytes(range(16))
PSK = b"path-auth-test-psk-0123456789abc"
CERT = crypto.transcript_hash(b"the listener's QUIC certificate")  # a 32-byte binding
MARK = b"clear-text-marker-" * 8


def _body(opening: list[bytes]) -> bytes:
    return opening[1][4:]


def _open(verified: bool, *, binding: bytes = CERT, listener_binding: bytes | None = None,
          psk: bytes | None = PSK, lcfg: FlowConfig | None = None,
          dcfg: FlowConfig | None = None) -> tuple[ListenerHandshake, DialerHandshake,
                                                     Flow, Flow]:
    """HELLO / HELLO_ACK over a carrier with ``binding`` (the listener's own:
    ``listener_binding``, default the same): (listener, dialer, its flow, ours)."""
    lh = ListenerHandshake(lcfg or FlowConfig(), psk=psk)
    dh = DialerHandshake(FLOW, Mode.PRIME, dcfg or FlowConfig(), psk=psk)
    d = lh.decide(FrameType.HELLO, _body(dh.hello(dh.next_path_id(), binding, verified)),
                  0.0, binding=binding if listener_binding is None else listener_binding)
    assert d.ok and d.flow is not None
    flow = dh.on_hello_ack(FrameType.HELLO_ACK, d.reply[1][4:], 1, 0.0)
    return lh, dh, d.flow, flow


def _records(flow: Flow, pid: int, data: bytes) -> bytes:
    """What ``flow`` sends on path ``pid`` after writing ``data``."""
    flow.send(data, 0.0)
    return b"".join(bytes(b) for p, bufs in flow.transmits(0.0) if p == pid for b in bufs)


def _attached(listener: Flow, dialer: Flow, pid: int = 1) -> None:
    for f in (listener, dialer):
        f.add_path(pid, now=0.0, transport="quic")


def test_a_verified_bound_path_agrees_to_authentication_only_records() -> None:
    _, _, lflow, dflow = _open(verified=True)
    assert lflow.auth_only == dflow.auth_only == {1}
    _attached(lflow, dflow)
    wire = _records(dflow, 1, MARK)
    assert MARK in wire  # the frames travel in clear inside the record...
    assert lflow.receive(1, wire, 0.0)
    assert lflow.read(1 << 20) == MARK  # ...authenticated: the listener takes them
    back = _records(lflow, 1, MARK)
    assert MARK in back and dflow.receive(1, back, 0.0) and dflow.read(1 << 20) == MARK


@pytest.mark.parametrize(("verified", "binding"), [
    (False, CERT),  # an insecure QUIC path: bound, not verified
    (True, b""),  # TCP / udpflow: no binding at all
])
def test_every_other_path_keeps_encrypting(verified: bool, binding: bytes) -> None:
    _, _, lflow, dflow = _open(verified, binding=binding)
    assert lflow.auth_only == dflow.auth_only == set()
    _attached(lflow, dflow)
    wire = _records(dflow, 1, MARK)
    assert MARK not in wire
    assert lflow.receive(1, wire, 0.0) and lflow.read(1 << 20) == MARK


def test_the_listener_refuses_authentication_only_on_a_carrier_without_binding() -> None:
    """A HELLO asking for it over TCP (the listener's carrier has no binding: the
    dialer's claim cannot be true, or someone set the bit): the listener does not
    agree, and the dialer encrypts too."""
    lh = ListenerHandshake(FlowConfig(), psk=PSK)
    dh = DialerHandshake(FLOW, Mode.PRIME, FlowConfig(), psk=PSK)
    opening = dh.hello(dh.next_path_id(), CERT, True)  # the dialer thinks it is bound
    hello = Hello.decode(_body(opening))
    assert hello.key_flags & KEY_PATH_AUTH and hello.caps & CAP_PATH_AUTH
    d = lh.decide(FrameType.HELLO, _body(opening), 0.0, binding=b"")  # a TCP carrier
    assert d.flow is not None and d.flow.auth_only == set()
    assert not Hello.decode(d.reply[1][4:], ack=True).key_flags & KEY_PATH_AUTH
    # (and the bindings differ: the dialer's confirmation check fails as well)
    with pytest.raises(HandshakeError, match="could not prove"):
        dh.on_hello_ack(FrameType.HELLO_ACK, d.reply[1][4:], 1, 0.0)


@pytest.mark.parametrize("psk", [PSK, None])
def test_a_flag_set_in_transit_in_hello_fails_the_handshake(psk: bytes | None) -> None:
    """Someone without the keys sets KEY_PATH_AUTH in an unverified path's HELLO: with
    a psk the HELLO's MAC fails at once (AUTH_FAILED); without one the listener agrees,
    but the dialer's transcript differs and the listener cannot prove the keys."""
    lh = ListenerHandshake(FlowConfig(), psk=psk)
    dh = DialerHandshake(FLOW, Mode.PRIME, FlowConfig(), psk=psk)
    hello = Hello.decode(_body(dh.hello(dh.next_path_id(), CERT, False)))
    assert not hello.key_flags & KEY_PATH_AUTH
    forged = dataclasses.replace(hello, key_flags=hello.key_flags | KEY_PATH_AUTH)
    d = lh.decide(FrameType.HELLO, forged.encode_body(), 0.0, binding=CERT)
    if psk is not None:
        assert d.result == Result.AUTH_FAILED and d.flow is None
        return
    assert d.ok and d.flow is not None and d.flow.auth_only == {1}
    with pytest.raises(HandshakeError, match="could not prove"):
        dh.on_hello_ack(FrameType.HELLO_ACK, d.reply[1][4:], 1, 0.0)
    assert dh.flow is None  # nothing is sent under those keys


@pytest.mark.parametrize("change", ["strip", "add"])
def test_a_flag_changed_in_transit_in_hello_ack_fails_the_handshake(change: str) -> None:
    """The HELLO_ACK's KEY_PATH_AUTH is covered by its confirmation MAC: cleared on a
    verified path (or set on an unverified one) in transit, the dialer refuses it."""
    lh = ListenerHandshake(FlowConfig(), psk=PSK)
    dh = DialerHandshake(FLOW, Mode.PRIME, FlowConfig(), psk=PSK)
    d = lh.decide(FrameType.HELLO, _body(dh.hello(dh.next_path_id(), CERT, change == "strip")),
                  0.0, binding=CERT)
    ack = Hello.decode(d.reply[1][4:], ack=True)
    assert bool(ack.key_flags & KEY_PATH_AUTH) == (change == "strip")
    forged = dataclasses.replace(ack, key_flags=ack.key_flags ^ KEY_PATH_AUTH)
    with pytest.raises(HandshakeError):
        dh.on_hello_ack(FrameType.HELLO_ACK, forged.encode_body(ack=True), 1, 0.0)


def test_a_listener_agreeing_to_what_was_not_asked_is_refused() -> None:
    """A HELLO_ACK with KEY_PATH_AUTH (and a valid confirmation: a broken or hostile
    listener holding the keys) for a HELLO that did not ask: the dialer refuses."""
    lh = ListenerHandshake(FlowConfig(), psk=PSK)
    dh = DialerHandshake(FLOW, Mode.PRIME, FlowConfig(), psk=PSK)
    opening = dh.hello(dh.next_path_id(), CERT, False)
    asked = Hello.decode(_body(opening))
    # the listener sees a HELLO that asked (as if the dialer had), MAC'd with the psk
    lying = dataclasses.replace(asked, key_flags=asked.key_flags | KEY_PATH_AUTH,
                                auth=bytes(16))
    lying = dataclasses.replace(lying, auth=crypto.mac(crypto.hello_key(PSK),
                                                       lying.encode_body()[:-16]))
    d = lh.decide(FrameType.HELLO, lying.encode_body(), 0.0, binding=CERT)
    assert d.ok
    with pytest.raises(HandshakeError):
        dh.on_hello_ack(FrameType.HELLO_ACK, d.reply[1][4:], 1, 0.0)


def _joined(verified: bool, *, binding: bytes = CERT, listener_binding: bytes | None = None,
            first: bytes = b"") -> tuple[ListenerHandshake, DialerHandshake, Flow, Flow,
                                         list[bytes]]:
    """A flow opened over a TCP-like path (no binding), then a JOIN for path 2."""
    lh, dh, lflow, dflow = _open(False, binding=first)
    return lh, dh, lflow, dflow, dh.join(dh.next_path_id(), binding, verified)


def test_a_verified_quic_join_is_authenticated_only_and_the_first_path_encrypts() -> None:
    lh, dh, lflow, dflow, opening = _joined(True)
    join = Join.decode(_body(opening))
    assert join.flags == PATH_AUTH_ONLY
    d = lh.decide(FrameType.JOIN, _body(opening), 0.0, binding=CERT)
    assert d.ok and JoinAck.decode(d.reply[1][4:]).flags == PATH_AUTH_ONLY
    dh.on_join_ack(FrameType.JOIN_ACK, d.reply[1][4:], 2, 0.0)
    assert lflow.auth_only == dflow.auth_only == {2}
    _attached(lflow, dflow, 1)
    _attached(lflow, dflow, 2)
    dflow.migrate(1, 0.0)
    assert MARK not in _records(dflow, 1, MARK)  # the TCP path: encrypted
    dflow.migrate(2, 0.0)
    assert MARK in _records(dflow, 2, MARK)  # the verified QUIC path: in clear


@pytest.mark.parametrize("change", ["add", "strip"])
def test_a_join_flag_changed_in_transit_is_refused(change: str) -> None:
    """Adding the flags byte to an unverified path's JOIN, or stripping it from a
    verified one's: the JOIN's MAC fails (AUTH_FAILED), nothing is attached."""
    lh, _, lflow, _, opening = _joined(change == "strip")
    join = Join.decode(_body(opening))
    forged = dataclasses.replace(join, flags=join.flags ^ PATH_AUTH_ONLY)
    d = lh.decide(FrameType.JOIN, forged.encode()[4:], 0.0, binding=CERT)
    assert d.result == Result.AUTH_FAILED and d.flow is None
    assert lflow.auth_only == set() and lh.auth_failures == 1


@pytest.mark.parametrize("change", ["strip", "add"])
def test_a_join_ack_flag_changed_in_transit_is_refused(change: str) -> None:
    lh, dh, _, dflow, opening = _joined(change == "strip")
    d = lh.decide(FrameType.JOIN, _body(opening), 0.0, binding=CERT)
    ack = JoinAck.decode(d.reply[1][4:])
    forged = dataclasses.replace(ack, flags=ack.flags ^ PATH_AUTH_ONLY)
    with pytest.raises(HandshakeError):
        dh.on_join_ack(FrameType.JOIN_ACK, forged.encode()[4:], 2, 0.0)
    assert dflow.auth_only == set()


def test_a_join_asking_on_a_carrier_without_binding_gets_encryption() -> None:
    """A JOIN with the flag whose carrier has no binding on the listener's side (TCP):
    its MAC covers a binding the listener does not hold: refused.  A JOIN without
    binding cannot carry the flag (the dialer never asks without one)."""
    lh, dh, lflow, _, opening = _joined(True)
    d = lh.decide(FrameType.JOIN, _body(opening), 0.0, binding=b"")
    assert d.result == Result.AUTH_FAILED and lflow.auth_only == set()
    assert Join.decode(_body(dh.join(dh.next_path_id(), b"", True))).flags == 0


def test_listener_trust_carrier_off_keeps_encryption_on_joins() -> None:
    lh, dh, lflow, dflow = _open(False, binding=b"",
                                 lcfg=FlowConfig(trust_carrier=False))
    assert not dh.path_auth  # the listener did not echo CAP_PATH_AUTH
    opening = dh.join(dh.next_path_id(), CERT, True)
    assert Join.decode(_body(opening)).flags == 0  # so the dialer does not ask
    d = lh.decide(FrameType.JOIN, _body(opening), 0.0, binding=CERT)
    assert d.ok
    dh.on_join_ack(FrameType.JOIN_ACK, d.reply[1][4:], 2, 0.0)
    assert lflow.auth_only == dflow.auth_only == set()


def test_a_tampered_authentication_only_record_is_rejected() -> None:
    """An authentication-only record is in clear but not malleable: a flipped byte of
    its body (or tag), a replayed record, or a record moved to another path fails,
    and on a flow the path that carried it ends (cause auth)."""
    key = bytes(range(32))
    sealer = RecordSealer(key, 3, encrypt=False)
    records = [b"".join(bytes(b) for b in sealer.seal([MARK])) for _ in range(2)]
    assert MARK in records[0]
    for i in (4, 4 + len(MARK) - 1, len(records[0]) - 1):  # body start, end, tag
        bad = bytearray(records[0])
        bad[i] ^= 1
        with pytest.raises(RecordError):
            RecordOpener(key, 3, encrypt=False).feed(bytes(bad))
    with pytest.raises(RecordError):  # replayed (record 0 again, as number 1)
        opener = RecordOpener(key, 3, encrypt=False)
        opener.feed(records[0])
        opener.feed(records[0])
    with pytest.raises(RecordError):  # moved to path 4
        RecordOpener(key, 4, encrypt=False).feed(records[0])
    with pytest.raises(RecordError):  # an encrypting opener does not take it
        RecordOpener(key, 3, encrypt=True).feed(records[0])
    ok = RecordOpener(key, 3, encrypt=False)
    assert b"".join(bytes(p) for r in records for p in ok.feed(r)) == MARK * 2
    # on a flow: the path ends, the flow does not
    _, _, lflow, dflow = _open(verified=True)
    _attached(lflow, dflow)
    wire = bytearray(_records(dflow, 1, MARK))
    wire[wire.index(MARK)] ^= 0x20
    lflow.receive(1, bytes(wire), 0.0)
    path = lflow.find_path(1)
    assert path is not None and path.status is not PathStatus.UP
    assert path.down_cause == "auth" and lflow.read(1 << 20) is None


def test_a_tampered_authentication_only_datagram_is_dropped() -> None:
    """On QUIC DATAGRAM frames (a packet flow): an authentication-only datagram with a
    flipped byte, or one replayed, is dropped and counted, never delivered.  (A flipped
    top byte of the packet number, before any authentic datagram, named an epoch past
    u32 and raised OverflowError from the key schedule: now dropped like any other.)"""
    key = bytes(range(32))
    frame = dgram_header(0, len(MARK)) + MARK  # a DGRAM frame carrying MARK
    (dgram,) = DatagramSealer(key, 3, 1200, encrypt=False).seal([frame])
    wire = bytes(dgram)
    assert MARK in wire
    opener = DatagramOpener(key, 3, encrypt=False)
    for i in (0, 8, len(wire) - 1):  # packet number, frames, tag
        bad = bytearray(wire)
        bad[i] ^= 1
        assert opener.feed(bytes(bad)) == []
    assert opener.failures == 3
    assert b"".join(bytes(f) for f in opener.feed(wire)) == frame
    assert opener.feed(wire) == [] and opener.replays == 1
