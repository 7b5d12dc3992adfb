#!/usr/bin/env python3
"""Coverage-guided fuzzing of ``StreamDeframer`` against the reference parser of
``tests/fuzz/_common.py``, plain or behind the record layer of wire v1.

Input: ``n (1 B) | n cut points (2 B each) | kind (1 B) | stream``.

* ``kind`` bit 7 clear: the stream is fed cut at those points (as bytes, bytearray or
  memoryview by ``kind``): only ProtocolError may escape, exactly when the reference
  finds broken framing, and the frames and DATA bytes delivered must be the
  reference's.
* bit 7 set: the stream is sealed into records (bit 6: encrypted), bit 5: one bit of
  the sealed bytes flipped (at the first cut point), then opened cut at those points
  and deframed: only RecordError/ProtocolError; the opened plaintext is a prefix of
  the stream (all of it when nothing was flipped) and deframes like the reference.
"""

from __future__ import annotations

import sys

import atheris
from _setup import cuts_and_rest, paths

paths()
with atheris.instrument_imports(include=["rendr"]):
    from fuzz._common import feed_all, merge, reference_deframe, split
    from rendr.core.records import RecordError, RecordOpener, RecordSealer

KEY = bytes(range(32))


def _records(cuts: list[int], kind: int, stream: bytes) -> bytes:
    """``stream`` through the record layer; returns the plaintext opened."""
    encrypt = bool(kind & 0x40)
    sealed = bytearray(b"".join(bytes(b) for b in RecordSealer(KEY, 7, encrypt).seal([stream])))
    if kind & 0x20 and sealed:
        at = cuts[0] if cuts else 0
        sealed[at % len(sealed)] ^= 1 << (at % 8)
    opener = RecordOpener(KEY, 7, encrypt)
    plain = bytearray()
    try:
        for chunk in split(bytes(sealed), cuts):
            plain += b"".join(bytes(p) for p in opener.feed(chunk))
    except RecordError:
        assert kind & 0x20, "an untouched record failed authentication"
    assert stream.startswith(plain), "tampered bytes came out of the record layer"
    assert kind & 0x20 or plain == stream
    return bytes(plain)


def test_one_input(data: bytes) -> None:
    cuts, kind, stream = cuts_and_rest(data)
    if kind & 0x80:
        stream = _records(cuts, kind, stream)
    want = reference_deframe(stream)
    got = feed_all(split(stream, cuts), [kind, kind >> 2, kind >> 4])
    assert got.error == want.error, f"error: {got.error}, reference: {want.error}"
    assert merge(got.events) == merge(want.events), "frames differ from the reference"


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
