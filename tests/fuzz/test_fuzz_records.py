"""Fuzzing the record layer of wire v1, ``rendr.core.records`` (every byte after the
handshake travels in AES-256-GCM records), and a keyed listener ``Flow`` fed garbage.

* ``RecordOpener`` on arbitrary bytes cut anywhere: only RecordError (a ProtocolError)
  escapes, and no plaintext ever comes out of bytes that were not sealed with the key.
* seal -> open round trips: any frames, sealed (encrypted or authenticated only) and
  cut anywhere, open to exactly the same bytes.
* Tampering: one bit flipped anywhere, records swapped (reordered, replayed), a
  record dropped, another key or another path id: RecordError, and what was opened
  before it is a prefix of what was sealed (never altered bytes).
* A keyed listener Flow with two paths: arbitrary bytes on one path end that path
  (Cause auth), never the flow; the other path still carries the stream.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rendr.config import FlowConfig
from rendr.core.crypto import FlowKeys
from rendr.core.flow import Flow
from rendr.core.records import MAX_RECORD, TAG_LEN, RecordError, RecordOpener, RecordSealer
from rendr.core.types import PathStatus, Role, State
from rendr.core.wire import data_header, encode_u64
from rendr.errors import ProtocolError

from ._common import as_view, fuzz_settings, split

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
cuts = st.lists(st.integers(0, 1 << 17), max_size=10)
BIG = bytes(i * 7 & 0xFF for i in range(MAX_RECORD + 3))
frame_lists = st.lists(st.one_of(st.binary(min_size=1, max_size=300),
                                 st.integers(MAX_RECORD - 2, MAX_RECORD + 2).map(
                                     lambda n: BIG[:n])),
                       min_size=1, max_size=6)


def _open(opener: RecordOpener, chunks: list[bytes], how: int = 0) -> tuple[bytes, bool]:
    """Feed ``chunks``; (plaintext opened, whether a RecordError ended it)."""
    out = bytearray()
    for i, chunk in enumerate(chunks):
        data = chunk if (how + i) % 3 == 0 else bytearray(chunk) if (how + i) % 3 == 1 else (
            as_view(chunk, 2))
        try:
            out += b"".join(bytes(p) for p in opener.feed(data))
        except RecordError:
            return bytes(out), True
    return bytes(out), False


def _records(sealed: bytes) -> list[bytes]:
    out = []
    pos = 0
    while pos < len(sealed):
        n = int.from_bytes(sealed[pos : pos + 4], "big")
        out.append(sealed[pos : pos + 4 + n])
        pos += 4 + n
    return out


@fuzz_settings(250)
@given(data=st.one_of(st.binary(max_size=100), st.binary(max_size=3000),
                      st.builds(lambda n, r: n.to_bytes(4, "big") + r,
                                st.sampled_from([0, 15, 16, 17, MAX_RECORD + TAG_LEN,
                                                 MAX_RECORD + TAG_LEN + 1, 1 << 31]),
                                st.binary(max_size=200))),
       cut_at=cuts, encrypt=st.booleans(), path_id=st.sampled_from([0, 1, 0xFFFF_FFFF]),
       how=st.integers(0, 2))
def test_opener_on_arbitrary_bytes(data: bytes, cut_at: list[int], encrypt: bool,
                                   path_id: int, how: int) -> None:
    opener = RecordOpener(KEY, path_id, encrypt)
    plain, error = _open(opener, split(data, cut_at), how)
    assert plain == b"", "plaintext out of bytes never sealed"
    assert issubclass(RecordError, ProtocolError)
    if error:  # the length field is checked as soon as it is complete
        assert opener.failures >= 1


@fuzz_settings(200)
@given(frames=frame_lists, cut_at=cuts, encrypt=st.booleans(),
       path_id=st.sampled_from([1, 2, 0xFFFF_FFFF]), batches=st.integers(1, 3),
       how=st.integers(0, 2))
def test_seal_open_round_trip(frames: list[bytes], cut_at: list[int], encrypt: bool,
                              path_id: int, batches: int, how: int) -> None:
    sealer = RecordSealer(KEY, path_id, encrypt)
    sealed = b"".join(bytes(b) for i in range(batches)
                      for b in sealer.seal(frames[i::batches]))
    opener = RecordOpener(KEY, path_id, encrypt)
    plain, error = _open(opener, split(sealed, cut_at), how)
    assert not error
    assert plain == b"".join(b"".join(frames[i::batches]) for i in range(batches))
    assert opener.seq == sealer.seq
    if not encrypt:  # authenticated only: length | plaintext | tag
        assert b"".join(r[4:-TAG_LEN] for r in _records(sealed)) == plain


@fuzz_settings(200)
@given(frames=frame_lists, cut_at=cuts, encrypt=st.booleans(), where=st.integers(0, 1 << 20),
       bit=st.integers(0, 7), attack=st.integers(0, 5))
def test_tampering_is_detected(frames: list[bytes], cut_at: list[int], encrypt: bool,
                               where: int, bit: int, attack: int) -> None:
    sealer = RecordSealer(KEY, 5, encrypt)
    records = [b"".join(bytes(b) for b in sealer.seal([f])) for f in frames]
    records = [r for rec in records for r in _records(rec)]
    original = b"".join(frames)
    opener = RecordOpener(KEY, 5, encrypt)
    if attack == 0:  # one bit flipped anywhere
        raw = bytearray(b"".join(records))
        raw[where % len(raw)] ^= 1 << bit
        stream = bytes(raw)
    elif attack == 1 and len(records) >= 2:  # two records swapped
        i = where % (len(records) - 1)
        records[i], records[i + 1] = records[i + 1], records[i]
        stream = b"".join(records)
    elif attack == 2:  # a record replayed
        i = where % len(records)
        stream = b"".join([*records[: i + 1], records[i], *records[i + 1 :]])
    elif attack == 3 and len(records) >= 2:  # a record dropped
        i = where % (len(records) - 1)
        stream = b"".join(records[:i] + records[i + 1 :])
    elif attack == 4:  # opened with another key
        stream, opener = b"".join(records), RecordOpener(OTHER_KEY, 5, encrypt)
    else:  # on another path
        stream, opener = b"".join(records), RecordOpener(KEY, 6, encrypt)
    plain, error = _open(opener, split(stream, cut_at))
    assert original.startswith(plain), "tampered bytes came out as plaintext"
    # detected; only a length field flipped upwards may just leave the opener waiting
    assert error or (attack == 0 and len(plain) < len(original))


KEYS = FlowKeys(d2l=bytes(range(32)), l2d=bytes(range(32, 64)), join=bytes(32),
                confirm=bytes(32))


@fuzz_settings(150)
@given(junk=st.one_of(st.binary(min_size=1, max_size=100),
                      st.builds(lambda n, r: n.to_bytes(4, "big") + r,
                                st.integers(16, 200), st.binary(min_size=200, max_size=220))),
       payload=st.binary(min_size=1, max_size=2000), encrypt=st.booleans(),
       cut_at=cuts, first=st.booleans())
def test_keyed_flow_survives_garbage_on_one_path(junk: bytes, payload: bytes, encrypt: bool,
                                                 cut_at: list[int], first: bool) -> None:
    flow = Flow(role=Role.LISTENER, flow_id=b"K" * 16, config=FlowConfig(), now=0.0,
                peer_window=1 << 20, keys=KEYS, encrypt=encrypt)
    flow.add_path(1, now=0.0)
    flow.add_path(2, now=0.0)
    good = RecordSealer(KEYS.d2l, 2, encrypt)
    half = len(payload) // 2
    if first:
        for chunk in split(b"".join(bytes(b) for b in good.seal(
                [data_header(0, half + 1) + payload[: half + 1]])), cut_at):
            flow.receive(2, chunk, 0.1)
    for chunk in split(junk, cut_at):
        flow.receive(1, chunk, 0.2)
    rest = payload[half + 1 :] if first else payload
    start = half + 1 if first else 0
    frames = [encode_u64(0x20, 1)] + ([data_header(start, len(rest)) + rest] if rest else [])
    for chunk in split(b"".join(bytes(b) for b in good.seal(frames)), cut_at):
        flow.receive(2, chunk, 0.3)
    flow.transmits(0.3)
    flow.closes()
    assert flow.state is not State.CLOSED and flow.error is None
    assert flow.paths[2].status is PathStatus.UP
    path1 = flow.find_path(1)
    assert path1 is not None
    assert flow.auth_failures <= 1
    if flow.auth_failures:
        assert path1.status is PathStatus.DOWN and path1.down_cause == "auth"
    assert flow.read(1 << 20) == payload
