"""Fuzzing ``rendr.core.framing.StreamDeframer`` (issue 7, target c).

A deframer is fed byte streams cut at arbitrary points (each piece as ``bytes``,
``bytearray`` or a memoryview).  Checked against an independent reference parser
written from docs/wire.md (``_common.reference_deframe``):

* only ProtocolError escapes ``feed``, and it is raised exactly when the reference
  finds broken framing (an empty DATA frame, an oversized control frame);
* the frames and DATA bytes delivered before that are the reference's, whatever the
  cut points: a valid frame sequence split anywhere parses identically, and DATA
  payload is handed out as it arrives (a frame cut short delivers what it has);
* ``feed`` returns the OR of the flags its callbacks returned; no empty DATA piece.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rendr.core.wire import MAX_CONTROL_BODY, FrameType, data_header, encode_frame

from ._common import (
    Event,
    build,
    feed_all,
    frame_sequences,
    fuzz_settings,
    merge,
    reference_deframe,
    split,
)

cuts = st.lists(st.integers(0, 1 << 16), max_size=12)
kinds = st.lists(st.integers(0, 2), min_size=1, max_size=4)


def _check(stream: bytes, cut_at: list[int], how: list[int]) -> None:
    ref = reference_deframe(stream)
    got = feed_all(split(stream, cut_at), how)
    assert got.error == ref.error, (stream.hex(), cut_at)
    assert merge(got.events) == merge(ref.events), (stream.hex(), cut_at)


@fuzz_settings(350)
@given(stream=st.one_of(st.binary(max_size=64), st.binary(max_size=2000)), cut_at=cuts,
       how=kinds)
def test_arbitrary_bytes_any_split(stream: bytes, cut_at: list[int], how: list[int]) -> None:
    _check(stream, cut_at, how)


@fuzz_settings(350)
@given(frames=frame_sequences(), cut_at=cuts, how=kinds,
       every=st.integers(1, 13))
def test_valid_sequence_any_split(frames: list[Event], cut_at: list[int], how: list[int],
                                  every: int) -> None:
    """A valid sequence gives exactly its frames, fed whole, cut anywhere, or byte by
    byte (every ``every`` bytes); each DATA frame's payload in order, at its offset."""
    stream = build(frames)
    for chunks in (split(stream, cut_at), [stream[i : i + every]
                                           for i in range(0, len(stream), every)]):
        got = feed_all(chunks, how)
        assert not got.error
        assert merge(got.events) == merge(frames)


def _mutate(stream: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    raw = bytearray(stream)
    for op, at, val in ops:
        if not raw and op != 2:
            continue
        i = at % (len(raw) + 1)
        if op == 0 and i < len(raw):
            raw[i] = val
        elif op == 1:
            del raw[i : i + 1 + val % 16]
        elif op == 2:
            raw[i:i] = bytes([val]) * (1 + val % 5)
        elif op == 3 and i < len(raw):
            raw[i] ^= 1 << (val % 8)
    return bytes(raw)


@fuzz_settings(350)
@given(frames=frame_sequences(8),
       ops=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 16), st.integers(0, 255)),
                    min_size=1, max_size=4),
       cut_at=cuts, how=kinds)
def test_mutated_valid_sequence(frames: list[Event], ops: list[tuple[int, int, int]],
                                cut_at: list[int], how: list[int]) -> None:
    """Valid streams with bytes changed, cut out or inserted: headers land on payload,
    lengths go wild; the deframer still agrees with the reference."""
    _check(_mutate(build(frames), ops), cut_at, how)


@fuzz_settings(200)
@given(ftype=st.one_of(st.just(int(FrameType.DATA)), st.integers(0, 255)),
       length=st.one_of(st.integers(0, 16),
                        st.integers(MAX_CONTROL_BODY - 2, MAX_CONTROL_BODY + 2),
                        st.integers(0, (1 << 24) - 1)),
       whole=st.booleans(), prefix=frame_sequences(3), cut_at=cuts, how=kinds)
def test_boundary_lengths(ftype: int, length: int, whole: bool, prefix: list[Event],
                          cut_at: list[int], how: list[int]) -> None:
    """A header with a length around the limits (0, 8, 9, 64 KiB, 16 MiB - 1), after
    valid frames, with part or (up to 64 KiB + 2) all of its body: errors are raised
    as soon as the header is complete, whether or not the body is there."""
    head = bytes([ftype]) + length.to_bytes(3, "big")
    body = bytes(length if whole and length <= MAX_CONTROL_BODY + 2 else min(length, 300))
    _check(build(prefix) + head + body + encode_frame(FrameType.PING, bytes(8)), cut_at, how)


@fuzz_settings(100)
@given(offset=st.integers(0, (1 << 64) - 1), payload=st.binary(min_size=1, max_size=5000),
       ctrl=st.one_of(st.binary(max_size=300),
                      st.integers(MAX_CONTROL_BODY - 300, MAX_CONTROL_BODY).map(
                          lambda n: (b"\x00rendr\xff" * (n // 7 + 1))[:n])),
       cut_at=cuts)
def test_large_frames(offset: int, payload: bytes, ctrl: bytes, cut_at: list[int]) -> None:
    """A DATA frame with its payload in many pieces, and a control frame up to the
    MAX_CONTROL_BODY limit (inclusive)."""
    stream = (data_header(offset, len(payload)) + payload
              + encode_frame(0x90, ctrl) + encode_frame(FrameType.PING, bytes(8)))
    got = feed_all(split(stream, cut_at))
    assert not got.error
    assert merge(got.events) == [("data", offset, payload), ("frame", 0x90, ctrl),
                                 ("frame", FrameType.PING, bytes(8))]
