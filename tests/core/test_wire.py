"""Wire format v0: golden byte vectors, decode round trips, preface validation.

The hex strings below are written from ``docs/wire.md`` and pin the layout: any
change to a field's size, order or endianness must fail here (and bump the wire
version, see "Versioning" in the spec).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rendr.config import FlowConfig
from rendr.core.flow import Flow
from rendr.core.framing import StreamDeframer
from rendr.core.types import Mode, Role, State
from rendr.core.wire import (
    ACK_FIN,
    ACK_PROBE,
    CAP_PATH_AUTH,
    EXTENSION_MIN,
    KEY_PATH_AUTH,
    MAGIC,
    MAX_ACK_RANGES,
    MAX_BODY,
    MAX_CONTROL_BODY,
    MAX_REPORT_PATHS,
    PATH_AUTH_ONLY,
    PATH_REPORT,
    PREFACE,
    VERSION,
    CloseCode,
    FrameType,
    Hello,
    Join,
    JoinAck,
    Kind,
    Result,
    data_header,
    decode_ack,
    decode_activate,
    decode_close,
    decode_path_close,
    decode_path_report,
    decode_u64,
    encode_ack,
    encode_activate,
    encode_close,
    encode_frame,
    encode_path_close,
    encode_path_report,
    encode_u64,
    parse_preface,
)
from rendr.errors import HandshakeError, ProtocolError

FAST = settings(max_examples=150, deadline=None, derandomize=True)

FLOW = bytes(range(16))
FLOW_HEX = "000102030405060708090a0b0c0d0e0f"


def h(s: str) -> bytes:
    """Hex with optional spaces/newlines -> bytes."""
    return bytes.fromhex("".join(s.split()))


# ---------------------------------------------------------------- constants


def test_code_points_are_pinned() -> None:
    assert MAGIC == b"RNDR"
    assert VERSION == 1
    assert {t.name: t.value for t in FrameType} == {
        "HELLO": 0x01, "HELLO_ACK": 0x02, "JOIN": 0x03, "JOIN_ACK": 0x04,
        "DATA": 0x10, "ACK": 0x11, "FIN": 0x12, "DGRAM": 0x13,
        "PING": 0x20, "PONG": 0x21,
        "ACTIVATE": 0x30, "PATH_CLOSE": 0x31, "MODE": 0x32,
        "CLOSE": 0x40,
    }
    assert all(t < EXTENSION_MIN for t in FrameType)
    assert EXTENSION_MIN == 0x80
    assert {r.name: r.value for r in Result} == {
        "OK": 0, "UNKNOWN_FLOW": 1, "FLOW_CLOSED": 2, "BAD_MODE": 3, "BAD_KIND": 4,
        "TOO_MANY_PATHS": 5, "DUPLICATE_PATH": 6, "BUSY": 7, "AUTH_FAILED": 8,
        "RETRY": 9,
    }
    assert {c.name: c.value for c in CloseCode} == {
        "NO_ERROR": 0, "APPLICATION": 1, "PROTOCOL_ERROR": 2, "BUDGET_EXCEEDED": 3,
        "ZOMBIE": 4, "LINGER_TIMEOUT": 5, "INTERNAL": 6,
    }
    assert {k.name: k.value for k in Kind} == {"STREAM": 0, "PACKET": 1}
    assert {m.name: m.value for m in Mode} == {"PRIME": 1, "BOND": 2, "RACE": 3}
    assert ACK_FIN == 0x01
    assert ACK_PROBE == 0x02
    assert MAX_ACK_RANGES == 16
    assert MAX_CONTROL_BODY == 65536
    assert MAX_BODY == 0xFFFFFF


# ---------------------------------------------------------------- golden vectors


def test_golden_preface() -> None:
    assert h("52 4e 44 52  01  00  00 00") == PREFACE
    assert len(PREFACE) == 8


def test_golden_hello() -> None:
    hello = Hello(FLOW, path_id=0x01020304, mode=2, kind=1, caps=0xA558,
                  recv_window=0x11223344)
    assert hello.encode() == h(
        "01 00001c" + FLOW_HEX + "01020304 02 01 a558 11223344")


def test_golden_keyed_hello() -> None:
    """v1: CAP_BUDGET | CAP_KEYS, then the budget, then the key block."""
    hello = Hello(FLOW, 1, Mode.PRIME, Kind.STREAM, 0x0003, 8 << 20, budget_ms=90_000,
                  key_share=bytes(range(32)), key_flags=0x01, auth=bytes(range(16)))
    assert hello.encode() == h(
        "01 000051" + FLOW_HEX + "00000001 01 00 0003 00800000  00015f90"
        + bytes(range(32)).hex() + "01" + bytes(range(16)).hex())
    assert Hello.decode(hello.encode()[4:]) == hello


def test_golden_retry_and_cookie_hello() -> None:
    """RETRY: a HELLO_ACK with result 9 and CAP_COOKIE (u8 length + cookie after the
    result byte); the HELLO sent back carries it between the budget and the key block."""
    cookie = bytes(range(0xC0, 0xC0 + 20))
    retry = Hello(FLOW, 1, Mode.PRIME, Kind.STREAM, 0x0004, 0, Result.RETRY, cookie=cookie)
    assert retry.encode(ack=True) == h(
        "02 000032" + FLOW_HEX + "00000001 01 00 0004 00000000 09  14" + cookie.hex())
    assert Hello.decode(retry.encode(ack=True)[4:], ack=True) == retry
    hello = Hello(FLOW, 1, Mode.PRIME, Kind.STREAM, 0x0007, 8 << 20, budget_ms=90_000,
                  key_share=bytes(range(32)), key_flags=0x01, auth=bytes(range(16)),
                  cookie=cookie)
    assert hello.encode() == h(
        "01 000066" + FLOW_HEX + "00000001 01 00 0007 00800000  00015f90  14" + cookie.hex()
        + bytes(range(32)).hex() + "01" + bytes(range(16)).hex())
    assert Hello.decode(hello.encode()[4:]) == hello
    with pytest.raises(ProtocolError, match="cookie"):
        Hello.decode(hello.encode()[4:4 + 33])  # the cookie is cut short


def test_golden_hello_ack() -> None:
    ack = Hello(FLOW, path_id=0x01020304, mode=2, kind=1, caps=0xA558,
                recv_window=0x11223344, result=Result.BUSY)
    assert ack.encode(ack=True) == h(
        "02 00001d" + FLOW_HEX + "01020304 02 01 a558 11223344 07")


def test_golden_join() -> None:
    assert Join(FLOW, 0xDEADBEEF).encode() == h("03 000014" + FLOW_HEX + "deadbeef")
    keyed = Join(FLOW, 2, bytes(range(16)), bytes(range(16, 32)))
    assert keyed.encode() == h("03 000034" + FLOW_HEX + "00000002" + bytes(range(32)).hex())
    assert Join.decode(keyed.encode()[4:]) == keyed


def test_golden_path_auth() -> None:
    """Authentication-only paths: CAP_PATH_AUTH 0x0008 and KEY_PATH_AUTH 0x10 in a
    keyed HELLO; JOIN / JOIN_ACK: a u8 flags byte (PATH_AUTH_ONLY 0x01) after the MAC,
    absent when 0 (then the v1 bytes)."""
    assert (CAP_PATH_AUTH, KEY_PATH_AUTH, PATH_AUTH_ONLY) == (0x0008, 0x10, 0x01)
    hello = Hello(FLOW, 1, Mode.PRIME, Kind.STREAM, 0x000B, 8 << 20, budget_ms=90_000,
                  key_share=bytes(range(32)), key_flags=0x19, auth=bytes(range(16)))
    assert hello.encode() == h(
        "01 000051" + FLOW_HEX + "00000001 01 00 000b 00800000  00015f90"
        + bytes(range(32)).hex() + "19" + bytes(range(16)).hex())
    assert Hello.decode(hello.encode()[4:]) == hello
    join = Join(FLOW, 2, bytes(range(16)), bytes(range(16, 32)), PATH_AUTH_ONLY)
    assert join.encode() == h("03 000035" + FLOW_HEX + "00000002" + bytes(range(32)).hex()
                              + "01")
    assert Join.decode(join.encode()[4:]) == join
    ack = JoinAck(FLOW, 5, Result.OK, bytes(range(16)), bytes(range(16, 32)), PATH_AUTH_ONLY)
    assert ack.encode() == h("04 000036" + FLOW_HEX + "00000005 00" + bytes(range(32)).hex()
                             + "01")
    assert JoinAck.decode(ack.encode()[4:]) == ack
    assert Join.decode(Join(FLOW, 2, bytes(16), bytes(16)).encode()[4:]).flags == 0


def test_golden_join_ack() -> None:
    ack = JoinAck(FLOW, 5, Result.DUPLICATE_PATH)
    assert ack.encode() == h("04 000015" + FLOW_HEX + "00000005 06")
    keyed = JoinAck(FLOW, 5, Result.OK, bytes(range(16)), bytes(range(16, 32)))
    assert keyed.encode() == h("04 000035" + FLOW_HEX + "00000005 00" + bytes(range(32)).hex())
    assert JoinAck.decode(keyed.encode()[4:]) == keyed


def test_golden_data() -> None:
    header = data_header(0x0102030405060708, 5)
    assert header == h("10 00000d 0102030405060708")
    assert len(header) == 12
    # the length field counts the 8-byte offset plus the payload
    assert data_header(0, 1 << 20) == h("10 100008 0000000000000000")


def test_golden_ack() -> None:
    frame = encode_ack(0x1000, 0x800000, ACK_FIN, [(0x2000, 0x3000), (0x4000, 0x4001)])
    assert frame == h(
        "11 000032"
        "0000000000001000"      # cumulative offset
        "0000000000800000"      # max_offset (flow-control limit)
        "01"                    # flags: ACK_FIN
        "02"                    # range count
        "0000000000002000 0000000000003000"
        "0000000000004000 0000000000004001")
    assert encode_ack(5, 0x800005, 0, []) == h(
        "11 000012 0000000000000005 0000000000800005 00 00")
    assert encode_ack(5, 0x800005, ACK_PROBE, []) == h(
        "11 000012 0000000000000005 0000000000800005 02 00")


def test_golden_fin_ping_pong() -> None:
    assert encode_u64(FrameType.FIN, 0x1234) == h("12 000008 0000000000001234")
    assert encode_u64(FrameType.PING, 0x0001020304050607) == h("20 000008 0001020304050607")
    assert encode_u64(FrameType.PONG, 0xFFFFFFFFFFFFFFFF) == h("21 000008 ffffffffffffffff")


def test_golden_activate() -> None:
    assert encode_activate(3, 0x0102) == h("30 00000c 00000003 00000102 00000000")
    assert encode_activate(3, 0x0102, 7) == h("30 00000c 00000003 00000102 00000007")
    assert encode_activate(3, 0x0102, 0, 2) == h("30 000010 00000003 00000102 00000000 00000002")


def test_golden_path_close() -> None:
    assert encode_path_close(7) == h("31 000004 00000007")


def test_golden_close() -> None:
    assert encode_close(CloseCode.PROTOCOL_ERROR, "bad") == h("40 000005 0002 626164")
    assert encode_close(CloseCode.NO_ERROR) == h("40 000002 0000")
    assert encode_close(0xABCD, "é") == h("40 000004 abcd c3a9")


def test_golden_generic_frame_header() -> None:
    assert encode_frame(0x85, b"\x01\x02\x03") == h("85 000003 010203")
    assert encode_frame(0xFF) == h("ff 000000")
    assert encode_frame(0x81, bytes(0x010203))[:4] == h("81 010203")


def test_golden_worked_example_from_spec() -> None:
    """The worked example in docs/wire.md, byte for byte."""
    dialer = PREFACE + Hello(FLOW, 1, Mode.PRIME, Kind.STREAM, 0, 8 << 20).encode()
    assert dialer == h("""
        52 4e 44 52 01 00 00 00
        01 00 00 1c
        00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f
        00 00 00 01  01  00  00 00  00 80 00 00
    """)
    listener = PREFACE + Hello(FLOW, 1, Mode.PRIME, Kind.STREAM, 0, 8 << 20,
                               Result.OK).encode(ack=True)
    assert listener == h("""
        52 4e 44 52 01 00 00 00
        02 00 00 1d
        00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f
        00 00 00 01  01  00  00 00  00 80 00 00  00
    """)
    data = data_header(0, 5) + b"hello"
    assert data == h("10 00 00 0d  00 00 00 00 00 00 00 00  68 65 6c 6c 6f")
    ack = encode_ack(5, 8 << 20, 0, [])
    assert ack == h("11 00 00 12  00 00 00 00 00 00 00 05  00 00 00 00 00 80 00 00  00  00")
    join = PREFACE + Join(FLOW, 2).encode()
    assert join == h("52 4e 44 52 01 00 00 00  03 00 00 14" + FLOW_HEX + "00 00 00 02")
    join_ack = PREFACE + JoinAck(FLOW, 2, Result.OK).encode()
    assert join_ack == h("52 4e 44 52 01 00 00 00  04 00 00 15" + FLOW_HEX + "00 00 00 02  00")
    refusal = PREFACE + Hello(FLOW, 1, Mode.RACE, Kind.STREAM, 0, 8 << 20,
                              Result.BAD_MODE).encode(ack=True)
    assert refusal == h("52 4e 44 52 01 00 00 00  02 00 00 1d" + FLOW_HEX
                        + "00 00 00 01  03  00  00 00  00 80 00 00  03")


def test_encode_frame_rejects_oversized_body() -> None:
    with pytest.raises(ValueError):
        encode_frame(0x81, bytes(MAX_BODY + 1))


def test_ack_encoder_keeps_at_most_16_lowest_ranges() -> None:
    ranges = [(10 * i, 10 * i + 5) for i in range(1, 21)]
    frame = encode_ack(0, 1000, 0, ranges)
    assert frame[:4] == bytes([FrameType.ACK]) + (18 + 16 * 16).to_bytes(3, "big")
    assert frame[4 + 17] == 16
    assert decode_ack(frame[4:])[3] == ranges[:16]


# ---------------------------------------------------------------- decoding


def _deframe_one(frame: bytes) -> tuple[int, bytes]:
    """Run an encoded control frame through the real stream parser."""
    got: list[tuple[int, bytes]] = []
    d = StreamDeframer(lambda o, p, n: pytest.fail("unexpected DATA"),
                       lambda t, b, n: got.append((t, bytes(b))) or 0)
    d.feed(frame)
    assert len(got) == 1
    return got[0]


u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 0xFFFFFFFFFFFFFFFF)
flow_ids = st.binary(min_size=16, max_size=16)


@FAST
@given(flow_ids, u32, u8, u8, u16, u32, u8, u32)
def test_hello_round_trip(flow_id: bytes, path_id: int, mode: int, kind: int, caps: int,
                          window: int, result: int, budget: int) -> None:
    extra = 4 if caps & 1 else 0  # CAP_BUDGET: a u32 budget follows
    budget = budget if extra else 0
    keys: dict[str, object] = {}
    if caps & 4:  # CAP_COOKIE: u8 length + the cookie
        extra += 21
        keys["cookie"] = bytes(range(20))
    if caps & 2:  # CAP_KEYS: the 49-byte key block follows
        extra += 49
        keys.update(key_share=bytes(range(32)), key_flags=7, auth=bytes(16))
    hello = Hello(flow_id, path_id, mode, kind, caps, window, budget_ms=budget, **keys)
    ftype, body = _deframe_one(hello.encode())
    assert ftype == FrameType.HELLO and len(body) == 28 + extra
    assert Hello.decode(body) == hello
    ack = Hello(flow_id, path_id, mode, kind, caps, window, result, budget, **keys)
    ftype, body = _deframe_one(ack.encode(ack=True))
    assert ftype == FrameType.HELLO_ACK and len(body) == 29 + extra
    decoded = Hello.decode(body, ack=True)
    assert decoded == ack
    assert decoded.result == result


@FAST
@given(flow_ids, u32, u8)
def test_join_and_join_ack_round_trip(flow_id: bytes, path_id: int, result: int) -> None:
    ftype, body = _deframe_one(Join(flow_id, path_id).encode())
    assert ftype == FrameType.JOIN and len(body) == 20
    assert Join.decode(body) == Join(flow_id, path_id)
    ftype, body = _deframe_one(JoinAck(flow_id, path_id, result).encode())
    assert ftype == FrameType.JOIN_ACK and len(body) == 21
    assert JoinAck.decode(body) == JoinAck(flow_id, path_id, result)


def _valid_ranges(cum: int, edges: list[int]) -> list[tuple[int, int]]:
    """Ascending, disjoint, non-adjacent ranges above ``cum`` from sorted distinct gaps."""
    out = []
    pos = cum
    for i in range(0, len(edges) - 1, 2):
        start, end = pos + 1 + edges[i], pos + 2 + edges[i] + edges[i + 1]
        out.append((start, end))
        pos = end
    return out


ack_ranges = st.lists(st.integers(0, 1 << 40), max_size=2 * MAX_ACK_RANGES)


@FAST
@given(st.integers(0, 1 << 60), u64, u8, ack_ranges)
def test_ack_round_trip(cum: int, max_offset: int, flags: int, edges: list[int]) -> None:
    ranges = _valid_ranges(cum, edges)
    ftype, body = _deframe_one(encode_ack(cum, max_offset, flags, ranges))
    assert ftype == FrameType.ACK
    assert len(body) == 18 + 16 * len(ranges)
    assert decode_ack(body) == (cum, max_offset, flags, ranges)


@FAST
@given(st.lists(st.integers(0, 1 << 40), min_size=2 * MAX_ACK_RANGES + 2, max_size=80))
def test_ack_round_trip_truncates_ranges(edges: list[int]) -> None:
    ranges = _valid_ranges(1, edges)
    _, body = _deframe_one(encode_ack(1, 2, 0, ranges))
    assert decode_ack(body) == (1, 2, 0, ranges[:MAX_ACK_RANGES])


def test_ack_decoder_accepts_up_to_255_ranges() -> None:
    """The count is a u8; the receiver takes what the count says (the 16 cap is the sender's)."""
    ranges = [(i + 1, i + 2) for i in range(0, 510, 2)]
    body = struct.pack("!QQBB", 0, 9, 0, 255) + b"".join(struct.pack("!QQ", s, e)
                                                         for s, e in ranges)
    assert decode_ack(body) == (0, 9, 0, ranges)


@FAST
@given(st.sampled_from([FrameType.FIN, FrameType.PING, FrameType.PONG]), u64)
def test_u64_frames_round_trip(ftype: int, value: int) -> None:
    got_type, body = _deframe_one(encode_u64(ftype, value))
    assert got_type == ftype and len(body) == 8
    assert decode_u64(body) == value


@FAST
@given(u32, u32, u32)
def test_activate_round_trip(path_id: int, epoch: int, dead: int) -> None:
    ftype, body = _deframe_one(encode_activate(path_id, epoch, dead))
    assert ftype == FrameType.ACTIVATE and len(body) == 12
    assert decode_activate(body) == (path_id, epoch, dead, 0)
    assert decode_activate(body[:8]) == (path_id, epoch, 0, 0)  # early 8-byte form
    _, body = _deframe_one(encode_activate(path_id, epoch, dead, 5))
    assert decode_activate(body) == (path_id, epoch, dead, 5)


@FAST
@given(u32)
def test_path_close_round_trip(path_id: int) -> None:
    ftype, body = _deframe_one(encode_path_close(path_id))
    assert ftype == FrameType.PATH_CLOSE and len(body) == 4
    assert decode_path_close(body) == path_id


@FAST
@given(u16, st.text(max_size=300))
def test_close_round_trip(code: int, reason: str) -> None:
    ftype, body = _deframe_one(encode_close(code, reason))
    assert ftype == FrameType.CLOSE
    raw = reason.encode("utf-8")
    if len(raw) <= 1024:
        assert len(body) == 2 + len(raw)
        shown = "".join(ch if ch.isprintable() else "\ufffd" for ch in reason)
        assert decode_close(body) == (code, shown)  # controls never reach the user
    else:
        assert len(body) == 2 + 1024


def test_close_reason_is_capped_at_1024_bytes() -> None:
    body = encode_close(1, "x" * 5000)[4:]
    assert len(body) == 2 + 1024
    assert decode_close(body) == (1, "x" * 1024)


def test_close_reason_truncation_keeps_valid_utf8() -> None:
    body = encode_close(1, "€" * 400)[4:]  # 1200 bytes of UTF-8; 1024 is not a multiple of 3
    assert len(body) <= 2 + 1024
    assert decode_close(body)[1] == "€" * 341  # now: 341 x "€" + U+FFFD


def test_decoders_ignore_trailing_bytes() -> None:
    """Implemented behaviour: known frames with extra trailing body bytes still decode."""
    hello = Hello(FLOW, 1, 1, 0, 0, 100)
    assert Hello.decode(hello.encode()[4:] + b"\x00\x00") == hello
    assert decode_u64(bytes(8) + b"zz") == 0
    assert decode_activate(bytes(12) + b"z") == (0, 0, 0, 0)
    assert decode_ack(encode_ack(1, 2, 0, [(3, 4)])[4:] + b"zz") == (1, 2, 0, [(3, 4)])


@pytest.mark.parametrize(("decode", "body", "what"), [
    (Hello.decode, bytes(27), "short HELLO"),
    (lambda b: Hello.decode(b, ack=True), bytes(28), "short HELLO"),
    (Join.decode, bytes(19), "short JOIN"),
    (JoinAck.decode, bytes(20), "short JOIN_ACK"),
    (decode_ack, bytes(17), "short ACK"),
    (decode_ack, struct.pack("!QQBB", 0, 0, 0, 2) + bytes(31), "truncated ACK ranges"),
    (decode_u64, bytes(7), "short frame"),
    (decode_u64, b"", "short frame"),
    (decode_activate, bytes(7), "short ACTIVATE"),
    (decode_path_close, bytes(3), "short PATH_CLOSE"),
    (decode_close, bytes(1), "short CLOSE"),
])
def test_short_bodies_are_protocol_errors(decode, body: bytes, what: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError, match=what):
        decode(memoryview(body))


def test_close_decoder_replaces_invalid_utf8() -> None:
    assert decode_close(b"\x00\x01\xff") == (1, "\ufffd")


# ---------------------------------------------------------------- preface


def test_preface_accepts_own_preface() -> None:
    parse_preface(PREFACE)
    parse_preface(bytearray(PREFACE) + b"trailing bytes are not looked at")
    parse_preface(memoryview(PREFACE))


def test_preface_ignores_flags_and_reserved() -> None:
    parse_preface(b"RNDR\x01\xff\xab\xcd")


@pytest.mark.parametrize("bad", [b"HTTP/1.1", b"rndr\x00\x00\x00\x00", b"RND\x00\x00\x00\x00\x00",
                                 b"\x00" * 8, b"SSH-2.0-"])
def test_preface_wrong_magic(bad: bytes) -> None:
    with pytest.raises(HandshakeError, match="not a rendr endpoint"):
        parse_preface(bad)


@pytest.mark.parametrize("version", [0, 2, 0x7F, 0xFF])
def test_preface_wrong_version(version: int) -> None:
    with pytest.raises(HandshakeError) as info:
        parse_preface(b"RNDR" + bytes([version, 0, 0, 0]))
    msg = str(info.value)
    assert f"version {version}" in msg
    assert "we speak 1" in msg


def test_preface_error_is_a_handshake_error_not_a_protocol_error() -> None:
    with pytest.raises(HandshakeError) as info:
        parse_preface(b"RNDR\x00\x00\x00\x00")
    assert not isinstance(info.value, ProtocolError)


# ---------------------------------------------------------------- unknown-frame policy


def _listener_flow() -> Flow:
    flow = Flow(role=Role.LISTENER, flow_id=FLOW, config=FlowConfig(), now=0.0,
                peer_window=1 << 20)
    flow.add_path(1, now=0.0)
    flow.transmits(0.0)  # drain the initial ACK
    return flow


def _control_frames(buffers: list[bytes | memoryview]) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    d = StreamDeframer(lambda o, p, n: 0, lambda t, b, n: got.append((t, bytes(b))) or 0)
    d.feed(b"".join(bytes(b) for b in buffers))
    return got


@pytest.mark.parametrize("ftype", [0x80, 0x81, 0xC3, 0xFF])
def test_unknown_extension_frames_are_skipped(ftype: int) -> None:
    flow = _listener_flow()
    stream = (encode_frame(ftype, b"whatever") + encode_frame(ftype)
              + data_header(0, 3) + b"abc")
    flow.receive(1, stream, 0.001)
    assert flow.state is not State.CLOSED
    assert flow.read(10) == b"abc"


@pytest.mark.parametrize("ftype", [0x00, 0x05, 0x13, 0x22, 0x41, 0x7F])
def test_unknown_critical_frames_abort_with_protocol_error(ftype: int) -> None:
    flow = _listener_flow()
    flow.receive(1, encode_frame(ftype, b"x"), 0.001)
    assert flow.state is State.CLOSED
    assert isinstance(flow.error, ProtocolError)
    frames = [f for pid, bufs in flow.transmits(0.001) for f in _control_frames(bufs)]
    closes = [decode_close(b) for t, b in frames if t == FrameType.CLOSE]
    assert len(closes) == 1
    assert closes[0][0] == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("frame", [
    Hello(FLOW, 2, 1, 0, 0, 10).encode(),
    Join(FLOW, 2).encode(),
    encode_frame(FrameType.PING, b""),  # PING whose body is too short
    encode_frame(FrameType.PATH_CLOSE, bytes.fromhex("00000009")),  # for another path
    encode_ack(100, 1 << 20, 0, []),  # acknowledges bytes never sent
])
def test_handshake_frames_and_malformed_frames_on_a_flow_abort(frame: bytes) -> None:
    flow = _listener_flow()
    flow.receive(1, frame, 0.001)
    assert flow.state is State.CLOSED
    assert isinstance(flow.error, ProtocolError)


def test_activate_sent_to_the_dialer_aborts() -> None:
    flow = Flow(role=Role.DIALER, flow_id=FLOW, config=FlowConfig(), now=0.0,
                peer_window=1 << 20)
    flow.add_path(1, now=0.0)
    flow.receive(1, encode_activate(1, 5), 0.001)
    assert flow.state is State.CLOSED
    assert isinstance(flow.error, ProtocolError)


def test_dgram_frame_layout_is_pinned() -> None:
    """DGRAM (0x13): u32 type<<24|length, u64 packet number, payload (docs/wire.md)."""
    from rendr.core.wire import dgram_header

    assert dgram_header(5, 3) + b"abc" == bytes.fromhex("1300000b0000000000000005") + b"abc"
    assert dgram_header(0, 0) == bytes.fromhex("130000080000000000000000")


def test_golden_path_report() -> None:
    """PATH_REPORT (extension 0x80): u64 time_us, u8 n, n x (u32 path, u64 packets,
    u64 payload bytes) (docs/wire.md)."""
    frame = encode_path_report(1_000_000, [(1, 5, 5500), (2, 3, 3300)])
    assert frame == h("""
        80 000031
        00000000000f4240 02
        00000001 0000000000000005 000000000000157c
        00000002 0000000000000003 0000000000000ce4
    """)
    assert decode_path_report(frame[4:]) == (1_000_000, [(1, 5, 5500), (2, 3, 3300)])
    assert encode_path_report(0, []) == h("80 000009 0000000000000000 00")
    assert PATH_REPORT >= EXTENSION_MIN  # skipped by receivers that do not know it


def test_path_report_decoder_bounds() -> None:
    with pytest.raises(ProtocolError, match="short"):
        decode_path_report(h("00000000000f4240"))
    with pytest.raises(ProtocolError, match="truncated"):
        decode_path_report(h("00000000000f4240 02") + bytes(20))
    many = [(i, i, i) for i in range(1, 41)]
    assert len(decode_path_report(encode_path_report(7, many)[4:])[1]) == MAX_REPORT_PATHS
    body = h("0000000000000007 28") + b"".join(struct.pack("!IQQ", *e) for e in many)
    assert len(decode_path_report(body)[1]) == MAX_REPORT_PATHS  # the rest is not read
