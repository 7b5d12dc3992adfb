"""Fuzzing the listener's handshake state machine, ``ListenerHandshake`` (issue 7,
target e), wire v1 (keyed HELLO/HELLO_ACK, MACed JOIN/JOIN_ACK).

* ``decide(ftype, body, now)`` on arbitrary frame types and bodies returns a Decision
  or raises ProtocolError/HandshakeError (what the aio listener catches), nothing
  else, exactly when the body is not a complete HELLO or JOIN.
* Sequences of HELLO and JOIN with flow ids and path ids from small pools (so they
  collide), random modes, kinds, capability bits, budgets and key flags, valid or
  forged proofs (PSK MAC, JOIN MAC), listeners with and without a PSK and a static
  key, under small caps, mixed with carriers attached as the aio listener does,
  paths dying, flows ending and being forgotten, the listener closing, raw frames and
  pending-handshake admissions.  Checked against a model: every answer is the one
  the spec's result order gives (AUTH_FAILED first); the reply is PREFACE + a
  HELLO_ACK/JOIN_ACK echoing the request with that result; an accepted HELLO_ACK
  carries a key share and a confirmation MAC from which the dialer derives the very
  keys the listener's flow holds; a JOIN_ACK of a known flow proves the keys (MAC);
  the table never holds more than ``max_flows`` flows nor a flow more than
  ``max_paths`` live paths; the pending caps hold; once every flow ended the memory
  budget is all returned.
* The crash found here (a low-order X25519 key share: ValueError, a leaked window)
  is fixed; its regression test is at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from hypothesis import event, given
from hypothesis import strategies as st

from rendr.config import FlowConfig
from rendr.core import crypto
from rendr.core.session import Decision, ListenerHandshake
from rendr.core.types import Cause, Mode, State
from rendr.core.wire import (
    AUTH_LEN,
    CAP_BUDGET,
    CAP_KEYS,
    CAP_PATH_AUTH,
    KEY_ENCRYPT,
    KEY_PSK,
    KEY_RECORDS,
    KEY_STATIC,
    PREFACE,
    FrameType,
    Hello,
    Join,
    JoinAck,
    Kind,
    Result,
)
from rendr.errors import HandshakeError, ProtocolError

from ._common import FLOW_IDS, FTYPES, KNOWN_TYPES, U8, U16, U32, fuzz_settings

KIB = 1024
MIB = 1024 * KIB
PSK = b"the pre-shared key"
STATIC = X25519PrivateKey.from_private_bytes(hashlib.sha256(b"listener static").digest())


def _config(max_flows: int, max_paths: int, memory: int, budget: float,
            encrypt: bool, records: bool) -> FlowConfig:
    return FlowConfig(max_flows=max_flows, max_paths=max_paths, listener_memory=memory,
                      recv_window=1 * MIB, max_frame=64 * KIB, recv_window_floor=64 * KIB,
                      migration_budget=budget, max_pending=4, max_pending_per_source=2,
                      encrypt=encrypt, records=records,
                      # the model is of the decisions without the HELLO flood defence
                      # (tests/core/test_cookie.py covers those): with caps this small
                      # the listener would always be under load
                      hello_load_rate=0, hello_load_pending=0, max_flows_per_source=0)


configs = st.builds(_config, st.integers(1, 4), st.integers(1, 3),
                    st.sampled_from([0, 100 * KIB, 2 * MIB, 512 * MIB]),
                    st.sampled_from([0.5, 30.0, 90.0]), st.booleans(), st.booleans())


def _private(n: int) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(hashlib.sha256(n.to_bytes(8, "big")).digest())


def low_order(share: bytes) -> bool:
    """Whether X25519 with this public key fails (a low-order point: all-zero result)."""
    try:
        _private(0).exchange(X25519PublicKey.from_public_bytes(share))
    except ValueError:
        return True
    return False


def _known_crash(ftype: int, body: bytes) -> bool:
    """The input of the crash pinned by test_hello_with_a_low_order_key_share."""
    if ftype != FrameType.HELLO:
        return False
    try:
        hello = Hello.decode(body)
    except ProtocolError:
        return False
    return bool(hello.caps & CAP_KEYS) and low_order(hello.key_share)


def _check_reply(decision: Decision, ftype: int) -> Hello | JoinAck:
    assert len(decision.reply) == 2 and decision.reply[0] == PREFACE
    frame = decision.reply[1]
    assert frame[0] == ftype and int.from_bytes(frame[1:4], "big") == len(frame) - 4
    if ftype == FrameType.HELLO_ACK:
        ack: Hello | JoinAck = Hello.decode(frame[4:], ack=True)
    else:
        ack = JoinAck.decode(frame[4:])
    assert ack.result == decision.result
    assert decision.ok == (decision.result == Result.OK) == (decision.flow is not None)
    return ack


first_frames = st.one_of(
    st.tuples(FTYPES, st.binary(max_size=100)),
    st.tuples(st.just(int(FrameType.HELLO)), st.builds(
        lambda h: h.encode()[4:],
        st.builds(Hello, FLOW_IDS, U32, st.sampled_from([1, 1, 2, 0]), st.sampled_from([0, 1]),
                  st.one_of(U16, st.sampled_from([CAP_KEYS, CAP_KEYS | CAP_BUDGET])), U32,
                  st.just(0), U32, st.integers(1, 50).map(lambda n: crypto.public_bytes(
                      _private(n))), st.sampled_from([0, KEY_ENCRYPT, KEY_PSK, KEY_STATIC]),
                  st.binary(min_size=16, max_size=16)))),
    st.tuples(st.just(int(FrameType.JOIN)), st.builds(
        lambda j: j.encode()[4:],
        st.builds(Join, FLOW_IDS, U32, st.binary(min_size=16, max_size=16),
                  st.binary(min_size=16, max_size=16)))),
)


def _parses(ftype: int, body: bytes) -> bool:
    """Whether the wire layout makes ``body`` a complete HELLO or JOIN."""
    if ftype == FrameType.JOIN:
        return len(body) >= 20
    if ftype == FrameType.HELLO and len(body) >= 28:
        caps = int.from_bytes(body[22:24], "big")
        return len(body) >= 28 + 4 * bool(caps & CAP_BUDGET) + 49 * bool(caps & CAP_KEYS)
    return False


@fuzz_settings(300)
@given(config=configs, frame=first_frames,
       cut=st.one_of(st.integers(0, 100), st.sampled_from([19, 20, 27, 28, 31, 32, 76, 77])),
       now=st.floats(0, 1e9), psk=st.sampled_from([None, PSK]),
       static=st.sampled_from([None, STATIC]))
def test_decide_on_arbitrary_frames(config: FlowConfig, frame: tuple[int, bytes], cut: int,
                                    now: float, psk: bytes | None,
                                    static: X25519PrivateKey | None) -> None:
    """Only ProtocolError/HandshakeError, exactly for what is not a complete HELLO or
    JOIN; an answer has the right form; never more than ``max_flows`` flows."""
    hs = ListenerHandshake(config, psk=psk, static_key=static)
    ftype, body = frame
    for b in (body, body[:cut]):
        if _known_crash(ftype, b):
            continue  # see test_hello_with_a_low_order_key_share
        try:
            decision = hs.decide(ftype, b, now)
        except (ProtocolError, HandshakeError):
            assert not _parses(ftype, b)
            continue
        assert _parses(ftype, b)
        _check_reply(decision, FrameType.HELLO_ACK if ftype == FrameType.HELLO
                     else FrameType.JOIN_ACK)
        assert len(hs.flows) <= config.max_flows


# ------------------------------------------------------------------- sequences

FIDS = [bytes([i]) * 16 for i in range(3)]


@dataclass
class FlowModel:
    used: set[int] = field(default_factory=set)
    live: set[int] = field(default_factory=set)


@dataclass
class Model:
    config: FlowConfig
    psk: bytes | None
    static: X25519PrivateKey | None
    flows: dict[bytes, FlowModel] = field(default_factory=dict)
    closed: bool = False
    pending: dict[str, int] = field(default_factory=dict)

    def authentic(self, hello: Hello, mac_ok: bool) -> bool:
        """ListenerHandshake._hello_authentic, from the spec: a key share; the static
        key only if there is one; the PSK's MAC exactly when there is a PSK."""
        if not hello.caps & CAP_KEYS or len(hello.key_share) != 32:
            return False
        if hello.key_flags & KEY_STATIC and self.static is None:
            return False
        if self.psk is None:
            return not hello.key_flags & KEY_PSK
        return bool(hello.key_flags & KEY_PSK) and mac_ok

    def hello(self, hello: Hello, mac_ok: bool, queue_full: bool) -> Result:
        if not self.authentic(hello, mac_ok):
            return Result.AUTH_FAILED
        if self.closed:
            return Result.BUSY
        if hello.mode not in (Mode.PRIME, Mode.RACE, Mode.BOND):
            return Result.BAD_MODE
        if hello.kind not in (Kind.STREAM, Kind.PACKET):
            return Result.BAD_KIND
        if hello.flow_id in self.flows:
            return Result.DUPLICATE_PATH
        if queue_full or len(self.flows) >= self.config.max_flows:
            return Result.BUSY
        return Result.OK

    def join(self, hs: ListenerHandshake, fid: bytes, path_id: int, proven: bool) -> Result:
        model = self.flows.get(fid)
        if model is None:
            return Result.UNKNOWN_FLOW
        if not proven:
            return Result.AUTH_FAILED
        if hs.flows[fid].state is State.CLOSED:
            return Result.FLOW_CLOSED
        if path_id in model.used:
            return Result.DUPLICATE_PATH
        if len(model.live) >= self.config.max_paths:
            return Result.TOO_MANY_PATHS
        return Result.OK


PATH_IDS = [1, 1, 2, 2, 3, 4, 0, 0xFFFF_FFFF]
MODES = [1, 1, 1, 1, 1, 2, 3, 0, 255]
KINDS = [0, 0, 0, 0, 1, 7]
CAPS = [CAP_KEYS, CAP_KEYS | CAP_BUDGET, CAP_KEYS | CAP_BUDGET, 0xFFFF, 0xFFFE, 0, CAP_BUDGET]
KEY_FLAGS = [KEY_ENCRYPT, 0, KEY_PSK, KEY_PSK | KEY_ENCRYPT, KEY_RECORDS | KEY_PSK, KEY_STATIC,
             KEY_STATIC | KEY_PSK, 0xFF]
BUDGETS = [0, 1, 500, 30_000, 90_000, 0xFFFF_FFFF]
SOURCES = ["a", "b", "c"]

# a step is drawn as plain numbers up front (one draw per example, much faster than
# drawing step by step) and interpreted against the model: mostly flows that exist
# and fresh path ids, sometimes colliding or unknown ones
RawStep = tuple[int, int, int, int, int, int, bytes]
raw_steps = st.lists(st.tuples(st.integers(0, 99), U8, U8, U8, U8, U32, st.binary(max_size=60)),
                     min_size=5, max_size=40)


def _step(raw: RawStep, model: Model) -> tuple:  # type: ignore[type-arg]
    r, a, c, d, e, word, blob = raw
    known = sorted(model.flows)
    fid = known[a // 10 % len(known)] if known and a % 10 < 7 else FIDS[a % len(FIDS)]
    used = sorted(model.flows[fid].used) if fid in model.flows else []
    how = c % 4 if used else 2
    path_id = (min(used[-1] + 1, 0xFFFF_FFFF) if how == 0 else used[c // 4 % len(used)]
               if how == 1 else PATH_IDS[c // 4 % len(PATH_IDS)] if how == 2 else word)
    if r < 25:
        caps = CAPS[c % len(CAPS)]
        # key flags: mostly what this listener expects, sometimes anything
        flags = (KEY_FLAGS[e // 4 % len(KEY_FLAGS)] if e % 4 == 3 else
                 (KEY_ENCRYPT if e & 4 else 0) | (KEY_RECORDS if e & 16 else 0)
                 | (KEY_PSK if model.psk else 0)
                 | (KEY_STATIC if model.static is not None and e & 8 else 0))
        hello = Hello(fid, path_id, MODES[d % len(MODES)], KINDS[d // 16 % len(KINDS)], caps,
                      word, 0, BUDGETS[a % len(BUDGETS)] if caps & CAP_BUDGET else 0,
                      crypto.public_bytes(_private(e)) if caps & CAP_KEYS else b"",
                      flags if caps & CAP_KEYS else 0)
        return ("hello", hello, e, e % 8 != 7, d % 4 == 3)  # (..., the PSK MAC is right)
    if r < 60:
        return ("join", fid, path_id, e % 8 != 7, blob)  # (..., the JOIN MAC is right)
    if r < 68:
        return ("kill", fid, path_id)
    if r < 75:
        return ("end", fid, d % 4 == 0)
    if r < 79:
        return ("forget", fid)
    if r < 85:
        return ("raw", [*KNOWN_TYPES, d][c % (len(KNOWN_TYPES) + 1)], blob)
    if r < 92:
        return ("admit", SOURCES[d % 3])
    if r < 99:
        return ("done", SOURCES[d % 3])
    return ("close_listener",)


def _check_hello_ack(hs: ListenerHandshake, model: Model, hello: Hello, body: bytes,
                     priv: X25519PrivateKey, decision: Decision, ack: Hello) -> None:
    """The HELLO_ACK of an accepted HELLO: our share's peer derives the flow's keys."""
    flow = decision.flow
    assert flow is not None and flow.keys is not None
    path_auth = CAP_PATH_AUTH if hello.caps & CAP_PATH_AUTH and model.config.trust_carrier else 0
    assert ack.caps == (hello.caps & CAP_BUDGET) | CAP_KEYS | path_auth
    assert len(ack.key_share) == 32
    # encryption and records: on if either end asks; PSK and static key: echoed;
    # KEY_PATH_AUTH never (these carriers have no channel binding)
    encrypt = bool(hello.key_flags & KEY_ENCRYPT) or model.config.encrypt
    records = bool(hello.key_flags & KEY_RECORDS) or model.config.records
    assert ack.key_flags == ((KEY_ENCRYPT if encrypt else 0) | (KEY_RECORDS if records else 0)
                             | (hello.key_flags & (KEY_PSK | KEY_STATIC)))
    assert flow.encrypt == encrypt and flow.records == records
    ack_body = decision.reply[1][4:]
    transcript = crypto.transcript_hash(body, ack_body[:-AUTH_LEN])
    es = (crypto.dh(priv, crypto.public_bytes(STATIC)) if hello.key_flags & KEY_STATIC
          else None)
    keys = crypto.derive(crypto.dh(priv, ack.key_share), es, model.psk, transcript)
    assert keys == flow.keys, "the dialer would derive other keys than the listener's"
    assert crypto.verify_mac(keys.confirm, ack.auth, b"hello-ack", transcript)


@fuzz_settings(300)
@given(config=configs, steps=raw_steps, psk=st.sampled_from([None, PSK]),
       static=st.sampled_from([None, STATIC]))
def test_hello_join_sequences(config: FlowConfig, steps: list[RawStep], psk: bytes | None,
                              static: X25519PrivateKey | None) -> None:
    hs = ListenerHandshake(config, psk=psk, static_key=static)
    model = Model(config, psk, static)
    now = 0.0
    cfg_budget_ms = int(config.migration_budget * 1000)
    answers: dict[bytes, list[bytes]] = {}  # each flow's HELLO_ACK
    for raw in steps:
        step = _step(raw, model)
        now += 0.01
        kind = step[0]
        if kind == "hello":
            _, hello, key_n, mac_ok, queue_full = step
            if psk is not None and hello.key_flags & KEY_PSK:
                auth = crypto.mac(crypto.hello_key(psk), hello.encode_body()[:-AUTH_LEN])
                hello = dataclasses.replace(hello, auth=auth if mac_ok else bytes(16))
            body = hello.encode_body()
            want = model.hello(hello, mac_ok, queue_full)
            decision = hs.decide(FrameType.HELLO, body, now, queue_full=queue_full)
            assert decision.result == want, (step, decision.result)
            event(f"HELLO {want.name}")
            if want == Result.DUPLICATE_PATH and not hs.flows[hello.flow_id].confirmed:
                # the flow's first answer, repeated (its dialer may have lost it)
                assert decision.reply == answers[hello.flow_id]
                assert decision.flow is None and not decision.new
                continue
            ack = _check_reply(decision, FrameType.HELLO_ACK)
            assert isinstance(ack, Hello)
            fid, path_id = hello.flow_id, hello.path_id
            assert (ack.flow_id, ack.path_id, ack.mode, ack.kind) == (
                fid, path_id, hello.mode, hello.kind)
            agreed = (min(cfg_budget_ms, hello.budget_ms)
                      if hello.caps & CAP_BUDGET and hello.budget_ms else cfg_budget_ms)
            assert ack.budget_ms == (agreed if hello.caps & CAP_BUDGET else 0)
            assert decision.path_id == path_id and decision.new == decision.ok
            if decision.ok:
                _check_hello_ack(hs, model, hello, body, _private(key_n), decision, ack)
                flow = decision.flow
                assert flow is not None and hs.flows[fid] is flow
                assert flow.flow_id == fid and flow.mode is Mode(hello.mode)
                assert ack.recv_window == flow.advertised_window > 0
                assert abs(flow.config.migration_budget * 1000 - agreed) < 1e-6
                flow.add_path(path_id, now=now)  # the aio listener attaches the carrier
                model.flows[fid] = FlowModel({path_id}, {path_id})
                answers[fid] = decision.reply
            else:
                assert ack.caps == hello.caps & CAP_BUDGET and not ack.key_share
                assert ack.recv_window == config.recv_window
        elif kind == "join":
            _, fid, path_id, proven, blob = step
            flow = hs.flows.get(fid)
            nonce = hashlib.sha256(blob).digest()[:16]
            mac = (crypto.mac(flow.keys.join, b"join", fid, path_id.to_bytes(4, "big"), nonce)
                   if flow is not None and flow.keys is not None and proven else blob[:16])
            join = Join(fid, path_id, nonce, mac.ljust(16, b"\x00"))
            want = model.join(hs, fid, path_id, proven)
            decision = hs.decide(FrameType.JOIN, join.encode()[4:], now)
            assert decision.result == want, (step, decision.result)
            event(f"JOIN {want.name}")
            ack = _check_reply(decision, FrameType.JOIN_ACK)
            assert isinstance(ack, JoinAck)
            assert (ack.flow_id, ack.path_id) == (fid, path_id) and not decision.new
            if flow is not None and want != Result.AUTH_FAILED:
                assert flow.keys is not None and crypto.verify_mac(
                    flow.keys.join, ack.mac, b"join-ack", fid, path_id.to_bytes(4, "big"),
                    bytes([want]), nonce, ack.nonce), "JOIN_ACK does not prove the keys"
            else:
                assert not ack.nonce and not ack.mac
            if decision.ok:
                assert decision.flow is hs.flows[fid]
                decision.flow.add_path(path_id, now=now)
                model.flows[fid].used.add(path_id)
                model.flows[fid].live.add(path_id)
        elif kind == "kill":
            _, fid, path_id = step
            if fid in hs.flows:
                hs.flows[fid].path_failed(path_id, Cause.RESET, now)
                model.flows[fid].live.discard(path_id)
        elif kind == "end":
            _, fid, forget = step
            flow = hs.flows.get(fid)
            if flow is not None:
                flow.abort(now)
                assert flow.state is State.CLOSED
                if forget:  # as the aio listener does once the flow ended
                    hs.forget(fid)
                    del model.flows[fid]
        elif kind == "forget":  # the aio listener forgets ended flows only
            fid = step[1]
            flow = hs.flows.get(fid)
            if flow is not None and flow.state is State.CLOSED:
                hs.forget(fid)
                del model.flows[fid]
                assert not hs.knows(fid)
        elif kind == "raw":
            _, ftype, body = step
            if _known_crash(ftype, body):
                continue
            before = dict(hs.flows)
            try:
                decision = hs.decide(ftype, body, now)
            except (ProtocolError, HandshakeError):
                assert hs.flows == before
            else:
                assert not decision.ok or psk is None  # forging a PSK MAC by chance: no
                if decision.ok and decision.new:  # a valid HELLO by chance: keep in step
                    assert decision.flow is not None
                    fid = decision.flow.flow_id
                    decision.flow.add_path(decision.path_id, now=now)
                    model.flows[fid] = FlowModel({decision.path_id}, {decision.path_id})
                assert not decision.ok or decision.new, "a JOIN without the keys accepted"
        elif kind == "admit":
            src = step[1]
            total = sum(model.pending.values())
            want_ok = total < config.max_pending and model.pending.get(src, 0) < (
                config.max_pending_per_source)
            assert hs.admit(src) == want_ok
            if want_ok:
                model.pending[src] = model.pending.get(src, 0) + 1
        elif kind == "done":
            src = step[1]
            if model.pending.get(src):
                hs.handshake_done(src)
                model.pending[src] -= 1
        else:
            hs.closed = model.closed = True
        # invariants
        assert len(hs.flows) <= config.max_flows
        assert set(hs.flows) == set(model.flows)
        for fid, flow in hs.flows.items():
            alive = {p.id for p in flow.paths.values() if p.alive}
            if flow.state is not State.CLOSED:
                assert alive == model.flows[fid].live
                assert len(alive) <= config.max_paths
        assert hs.pending == sum(model.pending.values()) <= config.max_pending
        assert hs.memory.promised >= 0
    for flow in hs.flows.values():
        flow.abort(now)
    assert hs.memory.promised == 0, "every ended flow gives its window back"


# -------------------------------------------------------------- crash found here

LOW_ORDER = [bytes(32), (1).to_bytes(32, "little"),
             bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")]


@pytest.mark.parametrize("share", LOW_ORDER, ids=["zero", "one", "order8"])
def test_hello_with_a_low_order_key_share(share: bytes) -> None:
    hs = ListenerHandshake(FlowConfig())
    hello = Hello(FIDS[0], 1, Mode.PRIME, Kind.STREAM, CAP_KEYS, 1 << 20, 0, 0, share, 0)
    try:
        decision = hs.decide(FrameType.HELLO, hello.encode_body(), 0.0)
    except (ProtocolError, HandshakeError):
        decision = None
    assert decision is None or not decision.ok
    assert not hs.flows and hs.memory.promised == 0
