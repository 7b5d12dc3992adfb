#!/usr/bin/env python3
"""Coverage-guided fuzzing of the handshake: ``HandshakeParser`` (against the
reference of ``tests/fuzz/_common.py``), the listener's ``ListenerHandshake`` and the
dialer's ``DialerHandshake``.

Input: ``target (1 B) | ...``:

* 0, 1: ``HandshakeParser``: ``cap (1 B) | n | cuts | kind | stream`` (see
  ``_setup.cuts_and_rest``); only HandshakeError, same outcome as the reference.
* 2, 3: ``ListenerHandshake`` (3: with a pre-shared key and a static key): a
  sequence of first frames ``type (1 B) | len (1 B) | body``, each from a new carrier,
  under small caps; only ProtocolError or HandshakeError; every answer is PREFACE +
  HELLO_ACK/JOIN_ACK echoing the request; accepted carriers are attached; at most
  ``max_flows`` flows.  A JOIN body starting 0xaa is made authentic (the MAC of an
  accepted flow, chosen by the next byte; path id and nonce from the bytes after).
* 4: ``DialerHandshake.on_hello_ack`` then ``on_join_ack``: ``type | len | body``
  frames.  A HELLO_ACK body starting 0xaa is replaced by an authentic one (a listener
  holding the keys) with fields taken from the next bytes; a JOIN_ACK body starting
  0xaa by an authentic one with the result byte that follows.  Only HandshakeError or
  ProtocolError.
* Known crashes are skipped unless RENDR_FUZZ_STRICT=1 (see tests/fuzz/): a HELLO
  with a low-order X25519 key share (listener), an authentic HELLO_ACK granting a
  mode other than PRIME or a budget over 90 s (dialer).
"""

from __future__ import annotations

import sys

import atheris
from _setup import STRICT, cuts_and_rest, paths

paths()
with atheris.instrument_imports(include=["rendr"]):
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )

    from fuzz._common import authentic_hello_ack, reference_handshake, split
    from rendr.config import FlowConfig
    from rendr.core import crypto
    from rendr.core.handshake import HandshakeParser
    from rendr.core.session import DialerHandshake, ListenerHandshake
    from rendr.core.types import Mode
    from rendr.core.wire import (
        CAP_BUDGET,
        CAP_KEYS,
        PREFACE,
        FrameType,
        Hello,
        Join,
        JoinAck,
        Result,
    )
    from rendr.errors import HandshakeError, ProtocolError

CONFIG = FlowConfig(max_flows=3, max_paths=2, listener_memory=256 * 1024,
                    recv_window_floor=64 * 1024, migration_budget=30.0)
FID = bytes(range(16))
PSK = b"the pre-shared key"
STATIC = X25519PrivateKey.from_private_bytes(hashlib.sha256(b"listener static").digest())
PROBE = X25519PrivateKey.from_private_bytes(bytes(range(32)))


def _low_order(body: bytes) -> bool:
    """A HELLO whose key share is a low-order point (known listener crash)."""
    try:
        hello = Hello.decode(body)
    except ProtocolError:
        return False
    if not hello.caps & CAP_KEYS:
        return False
    try:
        PROBE.exchange(X25519PublicKey.from_public_bytes(hello.key_share))
    except ValueError:
        return True
    return False


def _parser(data: bytes) -> None:
    cap = (0, 1, 16, 64 * 1024)[data[0] % 4] if data else 0
    cuts, kind, stream = cuts_and_rest(data[1:])
    want = reference_handshake(stream, cap)
    parser = HandshakeParser(max_leftover=cap)
    error = False
    returned = 0
    for i, chunk in enumerate(split(stream, cuts)):
        k = (kind + i) % 3
        try:
            got = parser.feed(chunk if k == 0 else bytearray(chunk) if k == 1
                              else memoryview(chunk))
        except HandshakeError as exc:
            assert exc.peer_version == want.peer_version
            error = True
            break
        returned += got is not None
    assert error == want.error, f"error {error}, reference {want.error}"
    if not error:
        assert parser.frame == want.frame and parser.leftover == want.leftover
        assert returned == (want.frame is not None)


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos + 2 <= len(data):
        ftype, n = data[pos], data[pos + 1]
        out.append((ftype, data[pos + 2 : pos + 2 + n]))
        pos += 2 + n
    return out


def _listener(data: bytes, keyed: bool) -> None:
    hs = ListenerHandshake(CONFIG, psk=PSK if keyed else None,
                           static_key=STATIC if keyed else None)
    accepted: list[bytes] = []
    answers: dict[bytes, bytes] = {}  # each flow's HELLO_ACK (repeated while unconfirmed)
    for i, (ftype, body) in enumerate(_frames(data)):
        if ftype == FrameType.JOIN and body[:1] == b"\xaa" and accepted:
            fid = accepted[body[1] % len(accepted)] if len(body) > 1 else accepted[0]
            keys = hs.flows[fid].keys if fid in hs.flows else None
            pid = int.from_bytes(body[2:6].ljust(4, b"\x00"), "big")
            nonce = body[6:22].ljust(16, b"\x00")
            mac = (crypto.mac(keys.join, b"join", fid, pid.to_bytes(4, "big"), nonce)
                   if keys is not None else bytes(16))
            body = Join(fid, pid, nonce, mac).encode()[4:]
        if not STRICT and ftype == FrameType.HELLO and _low_order(body):
            continue
        try:
            decision = hs.decide(ftype, body, float(i), queue_full=ftype & 0x80 != 0)
        except (ProtocolError, HandshakeError):
            continue
        assert decision.reply[0] == PREFACE and len(decision.reply) == 2
        frame = decision.reply[1]
        if ftype == FrameType.HELLO:
            hello = Hello.decode(body)
            ack = Hello.decode(frame[4:], ack=True)
            if (decision.result == Result.DUPLICATE_PATH and hello.flow_id in hs.flows
                    and not hs.flows[hello.flow_id].confirmed):
                assert frame == answers[hello.flow_id]  # the first answer, repeated
                assert decision.flow is None
                continue
            assert (ack.flow_id, ack.path_id, ack.result) == (
                hello.flow_id, hello.path_id, decision.result)
            assert decision.ok == bool(ack.caps & CAP_KEYS)
            if decision.ok:
                accepted.append(hello.flow_id)
                answers[hello.flow_id] = frame
        else:
            join = Join.decode(body)
            jack = JoinAck.decode(frame[4:])
            assert (jack.flow_id, jack.path_id, jack.result) == (
                join.flow_id, join.path_id, decision.result)
        assert decision.ok == (decision.flow is not None)
        if decision.flow is not None:
            assert decision.flow.keys is not None
            decision.flow.add_path(decision.path_id, now=float(i))
        assert len(hs.flows) <= CONFIG.max_flows
        for flow in hs.flows.values():
            assert sum(p.alive for p in flow.paths.values()) <= CONFIG.max_paths


def _dialer(data: bytes) -> None:
    frames = _frames(data)
    if not frames:
        return
    hs = DialerHandshake(FID, Mode.PRIME, CONFIG)
    ftype, body = frames[0]
    if body[:1] == b"\xaa":  # an authentic answer with fields from the next bytes
        f = body[1:].ljust(16, b"\x00")
        mode, kind, caps, result, flags = f[0], f[1], f[2], f[3], f[4]
        window = int.from_bytes(f[5:9], "big")
        budget = int.from_bytes(f[9:13], "big")
        if not STRICT and result == Result.OK and (mode != Mode.PRIME or (
                caps & CAP_BUDGET and budget > 90_000)):
            return  # the known crashes
        body, _ = authentic_hello_ack(hs, mode=mode, kind=kind, caps=caps, window=window,
                                      result=result, budget_ms=budget, key_flags=flags)
    try:
        flow = hs.on_hello_ack(ftype, body, 1, 0.0)
    except (ProtocolError, HandshakeError):
        return
    keys = flow.keys
    assert keys is not None
    flow.add_path(1, now=0.0)
    for i, (jtype, jbody) in enumerate(frames[1:]):
        pid = 2 + i
        join = Join.decode(hs.join(pid)[1][4:])
        if jbody[:1] == b"\xaa":
            result = jbody[1] if len(jbody) > 1 else 0
            nonce = jbody[2:18].ljust(16, b"\x00")
            jbody = JoinAck(FID, pid, result, nonce, crypto.mac(
                keys.join, b"join-ack", FID, pid.to_bytes(4, "big"), bytes([result]),
                join.nonce, nonce)).encode()[4:]
        try:
            hs.on_join_ack(jtype, jbody, pid, 1.0 + i, fatal_if_unknown=bool(jtype & 1))
        except (ProtocolError, HandshakeError):
            pass


def test_one_input(data: bytes) -> None:
    if not data:
        return
    target = data[0] % 5
    rest = data[1:]
    if target < 2:
        _parser(rest)
    elif target < 4:
        _listener(rest, target == 3)
    else:
        _dialer(rest)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
