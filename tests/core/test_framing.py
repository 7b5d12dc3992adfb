"""StreamDeframer and HandshakeParser: framing of byte-stream carriers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rendr.core import framing
from rendr.core.framing import StreamDeframer
from rendr.core.handshake import HandshakeParser
from rendr.core.wire import (
    MAX_CONTROL_BODY,
    PREFACE,
    FrameType,
    Hello,
    Join,
    data_header,
    encode_ack,
    encode_activate,
    encode_close,
    encode_frame,
    encode_path_close,
    encode_u64,
)
from rendr.errors import HandshakeError, ProtocolError

FAST = settings(max_examples=200, deadline=None, derandomize=True)

FLOW = bytes(range(16))

# An expected event is ("data", offset, payload) for one DATA frame or
# ("frame", type, body) for any other frame.
Expected = tuple[str, int, bytes]


def _build(frames: list[Expected]) -> bytes:
    out = bytearray()
    for kind, a, b in frames:
        if kind == "data":
            out += data_header(a, len(b)) + b
        else:
            out += encode_frame(a, b)
    return bytes(out)


def _payload(n: int, salt: int) -> bytes:
    return bytes((i * 7 + salt) & 0xFF for i in range(n))


# a mixed stream: DATA at arbitrary (also decreasing, overlapping) offsets, every
# control frame type, empty-bodied frames and extension frames
MIXED: list[Expected] = [
    ("frame", FrameType.PING, encode_u64(FrameType.PING, 123456789)[4:]),
    ("data", 0, _payload(5, 1)),
    ("data", 5, _payload(1, 2)),
    ("frame", FrameType.ACK, encode_ack(6, 1 << 23, 0, [(9, 12), (20, 21)])[4:]),
    ("data", 1 << 40, _payload(17, 3)),
    ("frame", 0x80, b""),
    ("data", 3, _payload(9, 4)),
    ("frame", FrameType.ACTIVATE, encode_activate(2, 7)[4:]),
    ("frame", 0xFE, b"ext"),
    ("frame", FrameType.PATH_CLOSE, encode_path_close(2)[4:]),
    ("data", 0xFFFFFFFFFFFFFF00, _payload(2, 5)),
    ("frame", FrameType.FIN, encode_u64(FrameType.FIN, 6)[4:]),
    ("frame", FrameType.CLOSE, encode_close(1, "bye")[4:]),
]
MIXED_STREAM = _build(MIXED)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int, bytes]] = []
        self.deframer = StreamDeframer(self.on_data, self.on_frame)

    def on_data(self, offset: int, piece: bytes | memoryview, now: float) -> int:
        # a small whole payload of bytes input comes as a bytes copy, anything else as a view
        assert isinstance(piece, memoryview) or len(piece) <= framing._COPY_PIECE
        assert len(piece) > 0, "empty DATA piece handed out"
        self.events.append(("data", offset, bytes(piece)))
        return 1

    def on_frame(self, ftype: int, body: memoryview, now: float) -> int:
        self.events.append(("frame", ftype, bytes(body)))
        return 2

    def feed_chunks(self, chunks: list[bytes]) -> None:
        for c in chunks:
            self.deframer.feed(c)


def check_events(events: list[tuple[str, int, bytes]], expected: list[Expected]) -> None:
    """Pieces of each DATA frame must come in order, at the right offsets, never
    straddle two frames, and control frames must appear exactly, in stream order."""
    it = iter(events)
    for kind, a, b in expected:
        if kind == "frame":
            assert next(it) == ("frame", a, b)
            continue
        got = 0
        while got < len(b):
            ev = next(it)
            assert ev[0] == "data", f"expected DATA at {a + got}, got {ev}"
            assert ev[1] == a + got, "piece at the wrong offset"
            piece = ev[2]
            assert piece == b[got : got + len(piece)], "piece carries the wrong bytes"
            got += len(piece)
        assert got == len(b)
    assert next(it, None) is None, "extra events"


def split_at(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(c, 0), len(stream)) for c in cuts})
    out, prev = [], 0
    for p in points:
        out.append(stream[prev:p])
        prev = p
    out.append(stream[prev:])
    return out


# ---------------------------------------------------------------- whole stream


def test_mixed_stream_in_one_feed() -> None:
    r = Recorder()
    r.deframer.feed(MIXED_STREAM)
    check_events(r.events, MIXED)
    # fed whole, each DATA frame is handed out as exactly one piece
    assert sum(1 for e in r.events if e[0] == "data") == 5


def test_mixed_stream_split_at_every_boundary() -> None:
    for i in range(len(MIXED_STREAM) + 1):
        r = Recorder()
        r.feed_chunks([MIXED_STREAM[:i], MIXED_STREAM[i:]])
        check_events(r.events, MIXED)


def test_mixed_stream_split_at_every_pair_of_boundaries() -> None:
    n = len(MIXED_STREAM)
    for i in range(0, n + 1, 3):
        for j in range(i, n + 1):
            r = Recorder()
            r.feed_chunks([MIXED_STREAM[:i], MIXED_STREAM[i:j], MIXED_STREAM[j:]])
            check_events(r.events, MIXED)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_mixed_stream_byte_by_byte(kind: type) -> None:
    r = Recorder()
    for i in range(len(MIXED_STREAM)):
        r.deframer.feed(kind(MIXED_STREAM[i : i + 1]))
    check_events(r.events, MIXED)


@FAST
@given(st.lists(st.integers(0, len(MIXED_STREAM)), max_size=40))
def test_mixed_stream_random_splits(cuts: list[int]) -> None:
    r = Recorder()
    r.feed_chunks(split_at(MIXED_STREAM, cuts))
    check_events(r.events, MIXED)


frames_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("data"), st.integers(0, (1 << 64) - 1 - 300),
                  st.binary(min_size=1, max_size=300)),
        st.tuples(st.just("frame"),
                  st.integers(0, 0xFF).filter(lambda t: t != FrameType.DATA),
                  st.binary(max_size=64)),
    ),
    max_size=12,
)


@FAST
@given(frames_strategy, st.data())
def test_random_frames_random_splits(frames: list[Expected], data: st.DataObject) -> None:
    stream = _build(frames)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30))
    r = Recorder()
    r.feed_chunks(split_at(stream, cuts))
    check_events(r.events, frames)


def test_large_data_frame_is_handed_out_as_it_arrives() -> None:
    payload = _payload(256 * 1024, 9)
    stream = data_header(1000, len(payload)) + payload
    r = Recorder()
    pos = 0
    for size in (5, 7, 3, 60000, 1, 100000, len(stream)):
        before = len(r.events)
        r.deframer.feed(stream[pos : pos + size])
        if pos + size > 12:
            # every read that brought payload bytes produced a piece right away
            assert len(r.events) == before + 1
        pos += size
    check_events(r.events, [("data", 1000, payload)])


def test_payload_of_bytes_input_is_not_copied() -> None:
    size = framing._COPY_PIECE + 1
    stream = data_header(0, size) + _payload(size, 1) + encode_frame(0x81, b"ext")
    seen: list[bytes | memoryview] = []
    d = StreamDeframer(lambda o, p, t: seen.append(p) or 0, lambda t, b, n: 0)
    d.feed(stream)
    assert len(seen) == 1
    piece = seen[0]
    assert isinstance(piece, memoryview) and piece.obj is stream  # a view, no copy


def test_small_payload_of_bytes_input_is_a_copy() -> None:
    """Up to _COPY_PIECE bytes of payload, whole in bytes input, come as bytes (they
    pin nothing; a view and its later copy cost more); other input stays a view."""
    payload = _payload(framing._COPY_PIECE, 2)
    stream = data_header(7, len(payload)) + payload + encode_frame(0x81, b"ext")
    seen: list[bytes | memoryview] = []
    d = StreamDeframer(lambda o, p, t: seen.append(p) or 0, lambda t, b, n: 0)
    d.feed(stream)
    d.feed(bytearray(stream))
    assert type(seen[0]) is bytes and seen[0] == payload
    assert isinstance(seen[1], memoryview) and seen[1] == payload


def test_zero_length_control_frame() -> None:
    r = Recorder()
    r.deframer.feed(encode_frame(0x90) + encode_frame(0x91))
    assert r.events == [("frame", 0x90, b""), ("frame", 0x91, b"")]


def test_deframer_does_not_judge_frame_types() -> None:
    """Policy for unknown types belongs to the flow; the deframer hands every frame on."""
    r = Recorder()
    r.deframer.feed(encode_frame(0x05, b"a") + encode_frame(0x7F, b"b") + encode_frame(0xFF))
    assert r.events == [("frame", 0x05, b"a"), ("frame", 0x7F, b"b"), ("frame", 0xFF, b"")]


def test_control_frame_at_size_limit() -> None:
    body = _payload(MAX_CONTROL_BODY, 3)
    r = Recorder()
    r.deframer.feed(encode_frame(0x82, body))
    assert r.events == [("frame", 0x82, body)]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("ftype", [FrameType.ACK, FrameType.CLOSE, 0x80, 0xFF])
def test_oversized_control_frame(ftype: int) -> None:
    header = bytes([ftype]) + (MAX_CONTROL_BODY + 1).to_bytes(3, "big")
    d = StreamDeframer(lambda o, p, t: 0, lambda t, b, n: 0)
    with pytest.raises(ProtocolError, match="too large"):
        d.feed(header)  # refused at the header, before any body byte


def test_oversized_control_frame_with_split_header() -> None:
    header = bytes([FrameType.PING]) + ((1 << 24) - 1).to_bytes(3, "big")
    d = StreamDeframer(lambda o, p, t: 0, lambda t, b, n: 0)
    d.feed(header[:2])
    with pytest.raises(ProtocolError):
        d.feed(header[2:])


@pytest.mark.parametrize("length", [0, 1, 7, 8])
def test_data_frame_without_payload(length: int) -> None:
    frame = bytes([FrameType.DATA]) + length.to_bytes(3, "big") + bytes(length)
    d = StreamDeframer(lambda o, p, t: pytest.fail("no piece expected"), lambda t, b, n: 0)
    with pytest.raises(ProtocolError, match="without payload"):
        d.feed(frame)


def test_empty_data_via_encoder() -> None:
    d = StreamDeframer(lambda o, p, t: 0, lambda t, b, n: 0)
    with pytest.raises(ProtocolError):
        d.feed(data_header(42, 0))


def test_error_after_valid_frames() -> None:
    r = Recorder()
    with pytest.raises(ProtocolError):
        r.deframer.feed(encode_u64(FrameType.PING, 1) + data_header(0, 0))
    assert r.events == [("frame", FrameType.PING, (1).to_bytes(8, "big"))]


# ---------------------------------------------------------------- handshake parser


HELLO = Hello(FLOW, 1, 1, 0, 0, 1 << 20)
OPENING = PREFACE + HELLO.encode()
AFTER = encode_u64(FrameType.PING, 5) + data_header(0, 3) + b"abc"


def test_handshake_parser_whole() -> None:
    p = HandshakeParser()
    frame = p.feed(OPENING)
    assert frame == (FrameType.HELLO, HELLO.encode()[4:])
    assert p.frame == frame
    assert p.leftover == b""
    assert Hello.decode(frame[1]) == HELLO


def test_handshake_parser_keeps_leftover_at_every_split() -> None:
    stream = OPENING + AFTER
    for i in range(len(stream) + 1):
        p = HandshakeParser()
        results = [p.feed(stream[:i]), p.feed(stream[i:])]
        frames = [r for r in results if r is not None]
        assert frames == [(FrameType.HELLO, HELLO.encode()[4:])], i
        assert p.leftover == AFTER, i


def test_handshake_parser_byte_by_byte() -> None:
    stream = PREFACE + Join(FLOW, 3).encode() + AFTER
    p = HandshakeParser()
    results = [p.feed(stream[i : i + 1]) for i in range(len(stream))]
    done_at = len(PREFACE) + 4 + 20 - 1
    assert all(r is None for k, r in enumerate(results) if k != done_at)
    assert results[done_at] == (FrameType.JOIN, Join(FLOW, 3).encode()[4:])
    assert p.leftover == AFTER


def test_handshake_parser_leftover_feeds_a_deframer() -> None:
    p = HandshakeParser()
    p.feed(OPENING + AFTER[:6])
    p.feed(AFTER[6:])
    r = Recorder()
    r.deframer.feed(p.leftover)
    check_events(r.events, [("frame", FrameType.PING, (5).to_bytes(8, "big")),
                            ("data", 0, b"abc")])


def test_handshake_parser_zero_length_first_frame() -> None:
    p = HandshakeParser()
    assert p.feed(PREFACE + encode_frame(0x12) + b"xy") == (0x12, b"")
    assert p.leftover == b"xy"


def test_handshake_parser_wrong_magic() -> None:
    p = HandshakeParser()
    assert p.feed(b"GET / ") is None  # 6 bytes: not judged yet
    with pytest.raises(HandshakeError, match="not a rendr endpoint"):
        p.feed(b"HTTP/1.1\r\n")


def test_handshake_parser_wrong_version() -> None:
    p = HandshakeParser()
    with pytest.raises(HandshakeError, match="version 0, we speak 1"):
        p.feed(b"RNDR\x00\x00\x00\x00" + HELLO.encode())


def test_handshake_parser_waits_for_a_full_preface() -> None:
    p = HandshakeParser()
    assert p.feed(b"RNDR\x01\x00\x00") is None  # 7 bytes: not judged yet
    assert p.frame is None


def test_handshake_parser_oversized_first_frame() -> None:
    p = HandshakeParser()
    head = bytes([FrameType.HELLO]) + (MAX_CONTROL_BODY + 1).to_bytes(3, "big")
    with pytest.raises(HandshakeError, match="too large"):
        p.feed(PREFACE + head)


def test_small_payloads_copied_out_are_read_together() -> None:
    """Several small DATA frames in one read come out of one flow.read() together (the
    deframer's bytes copies are joined like the views they replace)."""
    from rendr.core.flow import Flow
    from rendr.core.types import Role

    flow = Flow(role=Role.DIALER, flow_id=b"F" * 16, now=0.0, peer_window=1 << 20)
    flow.add_path(1, now=0.0)
    stream = b"".join(data_header(i * 3, 3) + bytes([i]) * 3 for i in range(4))
    flow.receive(1, stream, 0.1)
    assert flow.read(1 << 20) == b"".join(bytes([i]) * 3 for i in range(4))
