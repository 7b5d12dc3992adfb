"""Fuzzing the frame codecs of ``rendr.core.wire`` (issue 7, targets a and b).

(a) Every decoder, on arbitrary bytes (as ``bytes`` and as a memoryview that does not
    start at offset 0): it returns or raises ProtocolError (``parse_preface``:
    HandshakeError), nothing else; it succeeds exactly when docs/wire.md says the
    body is long enough (and, for ACK, when its ranges are valid); what it returns is
    in range; bytes after the known fields are ignored.
(b) encode -> decode round trips for valid values of every frame, including copy and
    pickle of the handshake records (a compiled build restores them via __reduce__).
"""

from __future__ import annotations

import copy
import pickle
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rendr.core.wire import (
    _ACK_HEAD,
    _RANGE,
    CAP_BUDGET,
    CAP_COOKIE,
    CAP_KEYS,
    HEADER,
    MAGIC,
    MAX_ACK_RANGES,
    MAX_REASON,
    MAX_REPORT_PATHS,
    PREFACE,
    VERSION,
    FrameType,
    Hello,
    Join,
    JoinAck,
    data_header,
    decode_ack,
    decode_activate,
    decode_close,
    decode_mode,
    decode_path_close,
    decode_path_report,
    decode_u64,
    encode_ack,
    encode_activate,
    encode_close,
    encode_frame,
    encode_mode,
    encode_path_close,
    encode_u64,
    parse_preface,
)
from rendr.errors import HandshakeError, ProtocolError

from ._common import U8, U16, U32, U64, ack_ranges, as_view, fuzz_settings, hellos, join_acks, joins

bodies = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=16, max_size=40),  # around the fixed sizes
    st.binary(max_size=700),
)


def _decoders() -> dict[str, Callable[[Any], object]]:
    return {
        "hello": Hello.decode,
        "hello_ack": lambda b: Hello.decode(b, ack=True),
        "join": Join.decode,
        "join_ack": JoinAck.decode,
        "ack": decode_ack,
        "u64": decode_u64,
        "activate": decode_activate,
        "path_close": decode_path_close,
        "close": decode_close,
        "path_report": decode_path_report,
        "mode": decode_mode,
    }


DECODERS = _decoders()

# (a) ----------------------------------------------------------------- arbitrary bytes


def _outcome(fn: Callable[[Any], object], body: bytes | memoryview) -> object:
    try:
        return fn(body)
    except ProtocolError as exc:
        return ProtocolError, str(exc)


def _expected_ok(name: str, body: bytes) -> bool:
    """Whether docs/wire.md says ``body`` decodes (for ACK: its ranges are valid)."""
    n = len(body)
    if name in ("hello", "hello_ack"):
        need = 28 + (name == "hello_ack")
        if n < need:
            return False
        caps = int.from_bytes(body[22:24], "big")
        # the budget (u32), the cookie (u8 length + bytes), the key block (share 32,
        # flags 1, auth 16)
        need += 4 if caps & CAP_BUDGET else 0
        if caps & CAP_COOKIE:
            if n < need + 1:
                return False
            need += 1 + body[need]
        return n >= need + (49 if caps & CAP_KEYS else 0)
    if name == "ack":
        if n < 18 or n < 18 + 16 * body[17]:
            return False
        prev = int.from_bytes(body[:8], "big")
        for i in range(body[17]):
            start, end = _RANGE.unpack_from(body, 18 + 16 * i)
            if start <= prev or end <= start:
                return False
            prev = end
        return True
    if name == "path_report":
        return n >= 9 and n >= 9 + 20 * body[8]
    need = {"join": 20, "join_ack": 21, "u64": 8, "activate": 8, "path_close": 4,
            "close": 2, "mode": 6}[name]
    return n >= need


def _check_value(name: str, value: object) -> None:
    """What a decoder returns is in range, and of plain types."""
    if isinstance(value, Hello):
        assert type(value.flow_id) is bytes and len(value.flow_id) == 16
        assert 0 <= value.path_id < 1 << 32 and 0 <= value.recv_window < 1 << 32
        assert 0 <= value.mode < 256 and 0 <= value.kind < 256 and 0 <= value.caps < 1 << 16
        assert 0 <= value.result < 256 and 0 <= value.budget_ms < 1 << 32
        assert value.caps & CAP_BUDGET or value.budget_ms == 0
        assert type(value.key_share) is bytes and type(value.auth) is bytes
        assert len(value.key_share) == (32 if value.caps & CAP_KEYS else 0)
        assert len(value.auth) == 16 and 0 <= value.key_flags < 256
        assert value.caps & CAP_KEYS or value.key_flags == 0
        assert type(value.cookie) is bytes and len(value.cookie) < 256
        assert value.caps & CAP_COOKIE or value.cookie == b""
    elif isinstance(value, (Join, JoinAck)):
        assert type(value.flow_id) is bytes and len(value.flow_id) == 16
        assert 0 <= value.path_id < 1 << 32
        assert type(value.nonce) is bytes and type(value.mac) is bytes
        assert len(value.nonce) == len(value.mac) in (0, 16)
    elif name == "ack":
        cum, max_offset, flags, ranges = value  # type: ignore[misc]
        assert 0 <= flags < 256 and 0 <= max_offset < 1 << 64
        prev = cum
        for s, e in ranges:
            assert prev < s < e < 1 << 64
            prev = e
    elif name == "close":
        code, reason = value  # type: ignore[misc]
        assert 0 <= code < 1 << 16
        assert isinstance(reason, str) and len(reason) <= MAX_REASON
        assert reason.isprintable(), "control characters must never reach the user"
    elif name == "activate":
        assert len(value) == 4 and all(0 <= v < 1 << 32 for v in value)  # type: ignore[arg-type]
    elif name == "mode":
        seq, mode, flags = value  # type: ignore[misc]
        assert 0 <= seq < 1 << 32 and 0 <= mode < 256 and 0 <= flags < 256
    elif name == "path_report":
        time_us, entries = value  # type: ignore[misc]
        assert 0 <= time_us < 1 << 64 and len(entries) <= MAX_REPORT_PATHS
        for pid, packets, nbytes in entries:
            assert 0 <= pid < 1 << 32 and 0 <= packets < 1 << 64 and 0 <= nbytes < 1 << 64
    else:
        assert isinstance(value, int) and value >= 0


@pytest.mark.parametrize("name", sorted(DECODERS))
@fuzz_settings(150)
@given(body=bodies, pad=st.integers(0, 5), extra=st.binary(max_size=24))
def test_decoder_on_arbitrary_bytes(name: str, body: bytes, pad: int, extra: bytes) -> None:
    """Only ProtocolError; success exactly as the spec says; bytes and views agree;
    trailing bytes are ignored (except CLOSE's reason and ACTIVATE's optional words)."""
    fn = DECODERS[name]
    got = _outcome(fn, body)
    assert _outcome(fn, as_view(body, pad)) == got
    assert _outcome(fn, memoryview(body)) == got
    ok = not (isinstance(got, tuple) and got[0] is ProtocolError)
    assert ok == _expected_ok(name, body), (name, body.hex(), got)
    if ok:
        _check_value(name, got)
        # trailing bytes are ignored, except: CLOSE's reason is the rest, ACTIVATE has
        # optional words, and JOIN/JOIN_ACK an optional 32-byte nonce + MAC
        auth_room = {"join": 20 + 32, "join_ack": 21 + 32}.get(name, 0)
        if name not in ("close", "activate") and len(body) >= auth_room:
            assert _outcome(fn, body + extra) == got, "trailing bytes must be ignored"


@fuzz_settings(200)
@given(data=st.data(), cum=st.one_of(st.integers(0, 100), U64), n_extra=st.integers(-1, 1),
       nudge=st.tuples(st.integers(0, 20), st.integers(0, 1), st.integers(-1, 1)),
       cut=st.integers(0, 40))
def test_decode_ack_near_valid(data: st.DataObject, cum: int, n_extra: int,
                               nudge: tuple[int, int, int], cut: int) -> None:
    """ACK bodies that are valid but for one range end moved by one (empty, adjacent,
    overlapping or not above cum), a range count one off, or a byte cut off the end:
    decoded exactly when valid."""
    ranges = data.draw(ack_ranges(cum % (1 << 60), max_n=6, limit=1 << 62))
    bounds = [v for r in ranges for v in r]
    if bounds:
        i, _, delta = nudge
        bounds[i % len(bounds)] = max(0, bounds[i % len(bounds)] + delta)
    n = max(0, min(255, len(ranges) + n_extra))
    raw = _ACK_HEAD.pack(cum % (1 << 60), 0, 0, n) + b"".join(
        _RANGE.pack(bounds[j], bounds[j + 1]) for j in range(0, len(bounds), 2))
    for body in (raw, raw[: len(raw) - cut % 3]):
        got = _outcome(decode_ack, body)
        ok = not (isinstance(got, tuple) and got[0] is ProtocolError)
        assert ok == _expected_ok("ack", body), (body.hex(), got)


@fuzz_settings(250)
@given(raw=st.one_of(st.binary(max_size=12),
                     st.builds(lambda v, r: MAGIC + bytes([v]) + r, U8, st.binary(max_size=6))))
def test_parse_preface_on_arbitrary_bytes(raw: bytes) -> None:
    """Only HandshakeError; accepted exactly when magic and version match; a version
    mismatch names the peer's version."""
    try:
        parse_preface(raw)
    except HandshakeError as exc:
        if len(raw) >= 8 and raw[:4] == MAGIC and raw[4] != VERSION:
            assert exc.peer_version == raw[4]
        else:
            assert exc.peer_version is None
        assert not (len(raw) >= 8 and raw[:5] == PREFACE[:5])
        return
    assert len(raw) >= 8 and raw[:4] == MAGIC and raw[4] == VERSION


# (b) --------------------------------------------------------------------- round trips


def _frame(frame: bytes, ftype: int) -> bytes:
    (word,) = HEADER.unpack_from(frame, 0)
    assert word >> 24 == ftype and word & 0xFFFFFF == len(frame) - 4
    return frame[4:]


@fuzz_settings(200)
@given(hello=hellos(), hello_ack=hellos(ack=True))
def test_hello_round_trip(hello: Hello, hello_ack: Hello) -> None:
    assert Hello.decode(_frame(hello.encode(), FrameType.HELLO)) == hello
    body = _frame(hello_ack.encode(ack=True), FrameType.HELLO_ACK)
    assert Hello.decode(body, ack=True) == hello_ack
    assert Hello.decode(memoryview(body), ack=True) == hello_ack
    for h in (hello, hello_ack):
        assert copy.copy(h) == h and copy.deepcopy(h) == h
        assert pickle.loads(pickle.dumps(h)) == h


@fuzz_settings(200)
@given(join=joins, ack=join_acks)
def test_join_and_join_ack_round_trip(join: Join, ack: JoinAck) -> None:
    """Unkeyed (20 / 21 bytes) and keyed (+ 16-byte nonce and 16-byte MAC) forms."""
    body = _frame(join.encode(), FrameType.JOIN)
    assert len(body) == 20 + 32 * bool(join.nonce) and Join.decode(body) == join
    body = _frame(ack.encode(), FrameType.JOIN_ACK)
    assert len(body) == 21 + 32 * bool(ack.nonce) and JoinAck.decode(body) == ack
    for rec in (join, ack):
        assert pickle.loads(pickle.dumps(rec)) == rec and copy.copy(rec) == rec


@fuzz_settings(200)
@given(data=st.data(), cum=st.one_of(st.integers(0, 1 << 30), U64.map(lambda v: v >> 1)),
       max_offset=U64, flags=U8)
def test_ack_round_trip(data: st.DataObject, cum: int, max_offset: int, flags: int) -> None:
    """Valid ranges round-trip; more than MAX_ACK_RANGES are cut to the lowest ones."""
    ranges = data.draw(ack_ranges(cum))
    body = _frame(encode_ack(cum, max_offset, flags, ranges), FrameType.ACK)
    assert decode_ack(body) == (cum, max_offset, flags, ranges[:MAX_ACK_RANGES])
    assert len(body) == _ACK_HEAD.size + _RANGE.size * min(len(ranges), MAX_ACK_RANGES)


@fuzz_settings(150)
@given(ftype=st.sampled_from([FrameType.FIN, FrameType.PING, FrameType.PONG]), value=U64,
       path_id=U32)
def test_u64_and_path_close_round_trip(ftype: int, value: int, path_id: int) -> None:
    assert decode_u64(_frame(encode_u64(ftype, value), ftype)) == value
    assert decode_path_close(_frame(encode_path_close(path_id), FrameType.PATH_CLOSE)) == path_id


@fuzz_settings(150)
@given(path_id=U32, epoch=U32, dead=U32, suspect=U32)
def test_activate_round_trip(path_id: int, epoch: int, dead: int, suspect: int) -> None:
    body = _frame(encode_activate(path_id, epoch, dead, suspect), FrameType.ACTIVATE)
    assert len(body) == (16 if suspect else 12)
    assert decode_activate(body) == (path_id, epoch, dead, suspect)
    # the 8-byte form of early drafts: no dead path, no suspect path
    assert decode_activate(body[:8]) == (path_id, epoch, 0, 0)


@fuzz_settings(150)
@given(seq=U32, mode=U8, flags=U8)
def test_mode_round_trip(seq: int, mode: int, flags: int) -> None:
    """MODE (0x32): u32 seq, u8 mode, u8 flags; 6 bytes."""
    body = _frame(encode_mode(seq, mode, flags), FrameType.MODE)
    assert len(body) == 6 and decode_mode(body) == (seq, mode, flags)
    assert decode_mode(as_view(body, 3)) == (seq, mode, flags)


def _sanitised(reason: str) -> str:
    return "".join(ch if ch.isprintable() else "\ufffd" for ch in reason)


@fuzz_settings(250)
@given(code=U16, reason=st.one_of(st.text(max_size=60), st.text(min_size=300, max_size=1100),
                                  st.text(alphabet="\u00e9\u20ac\U0001f600a", min_size=330,
                                          max_size=600)))
def test_close_round_trip(code: int, reason: str) -> None:
    """CLOSE: the code exactly; the reason cut to at most 1024 bytes without splitting
    a character, then sanitised (non-printable characters become U+FFFD)."""
    frame = encode_close(code, reason)
    body = _frame(frame, FrameType.CLOSE)
    assert len(body) <= 2 + MAX_REASON
    raw = body[2:]
    raw.decode("utf-8")  # never a split character
    assert reason.encode("utf-8").startswith(raw)
    got_code, got_reason = decode_close(body)
    assert got_code == code
    assert got_reason == _sanitised(raw.decode("utf-8"))
    if len(reason.encode("utf-8")) <= MAX_REASON:
        assert got_reason == _sanitised(reason)


def test_close_reason_with_a_lone_surrogate() -> None:
    """Regression (found by test_close_round_trip widened to every code point)."""
    body = _frame(encode_close(1, "bad file \udc80"), FrameType.CLOSE)
    code, reason = decode_close(body)
    assert code == 1 and reason.startswith("bad file ")


@fuzz_settings(150)
@given(ftype=st.one_of(st.integers(0, 0xFF).filter(lambda t: t != FrameType.DATA)),
       body=st.binary(max_size=2000), offset=U64, length=st.integers(1, (1 << 24) - 9))
def test_headers(ftype: int, body: bytes, offset: int, length: int) -> None:
    """The frame header is ``type << 24 | length``; DATA's length counts its offset."""
    frame = encode_frame(ftype, body)
    assert frame[0] == ftype and int.from_bytes(frame[1:4], "big") == len(body)
    assert frame[4:] == body
    head = data_header(offset, length)
    assert head == struct.pack("!BBHQ", FrameType.DATA, (length + 8) >> 16,
                               (length + 8) & 0xFFFF, offset)
