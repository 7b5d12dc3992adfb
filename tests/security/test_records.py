"""The record layer on its own: round trips, key epochs, and pooled memory that is
never written again while a sealed record or an opened plaintext is referenced."""

from __future__ import annotations

import os
import random

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from rendr.core import bufpool, records
from rendr.core.crypto import record_key
from rendr.core.records import MAX_RECORD, TAG_LEN, RecordError, RecordOpener, RecordSealer

KEY = bytes(range(32))


def _feed_split(opener: RecordOpener, data: bytes, rng: random.Random) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        n = rng.randint(1, 70_000)
        out.extend(bytes(p) for p in opener.feed(memoryview(bytearray(data[pos:pos + n]))))
        pos += n
    return out


@pytest.mark.parametrize("encrypt", [True, False])
@given(sizes=st.lists(st.integers(0, 300_000), min_size=1, max_size=12),
       seed=st.integers(0, 2**32), epoch_len=st.integers(1, 5))
@settings(max_examples=60, deadline=None, derandomize=True)
def test_round_trip_across_key_epochs(encrypt: bool, sizes: list[int], seed: int,
                                      epoch_len: int) -> None:
    rng = random.Random(seed)
    sealer = RecordSealer(KEY, 7, encrypt, epoch_len=epoch_len)
    opener = RecordOpener(KEY, 7, encrypt, epoch_len=epoch_len)
    frames = [rng.randbytes(n) for n in sizes]
    wire = b"".join(bytes(b) for b in sealer.seal(frames))
    assert b"".join(_feed_split(opener, wire, rng)) == b"".join(frames)
    assert opener.seq == sealer.seq
    assert opener.epoch == sealer.epoch == max(0, sealer.seq - 1) // epoch_len


def test_key_epochs_change_the_key() -> None:
    """Record n of a path is sealed under epoch n // epoch_len's key: a record sealed
    under the old key at the boundary fails, as does one from another path."""
    sealer = RecordSealer(KEY, 1, epoch_len=2)
    records = [b"".join(bytes(b) for b in sealer.seal([bytes([i]) * 10])) for i in range(3)]
    assert sealer.epoch == 1
    # seal record 2 again under epoch 0's key, by hand
    forged = bytearray(records[2])
    nonce = (1).to_bytes(4, "big") + (2).to_bytes(8, "big")
    forged[4:] = AESGCM(record_key(KEY, 1, 0)).encrypt(nonce, bytes([2]) * 10, bytes(forged[:4]))
    opener = RecordOpener(KEY, 1, epoch_len=2)
    assert [bytes(p) for r in records[:2] for p in opener.feed(r)] == [b"\0" * 10, b"\1" * 10]
    with pytest.raises(RecordError):
        opener.feed(bytes(forged))
    other = RecordOpener(KEY, 2, epoch_len=2)
    with pytest.raises(RecordError):
        other.feed(records[0])
    assert record_key(KEY, 1, 0) != record_key(KEY, 1, 1) != record_key(KEY, 2, 0)


def test_tampering_and_oversized_records_fail() -> None:
    sealer = RecordSealer(KEY, 3)
    wire = bytearray(b"".join(bytes(b) for b in sealer.seal([b"hello world"])))
    wire[6] ^= 1
    with pytest.raises(RecordError):
        RecordOpener(KEY, 3).feed(bytes(wire))
    too_long = (MAX_RECORD + TAG_LEN + 1).to_bytes(4, "big")
    with pytest.raises(RecordError):
        RecordOpener(KEY, 3).feed(too_long)


@pytest.mark.skipif(not bufpool._REUSE, reason="no reference counts here: no reuse")
def test_pooled_plaintext_and_records_are_not_overwritten_while_referenced() -> None:
    """Opened plaintext is a view into a shared buffer; holding it (as the receive
    buffer does until the application reads) must keep that memory from being reused,
    and so must a sealed record the transport has not written yet."""
    rng = random.Random(5)
    sealer = RecordSealer(KEY, 9)
    opener = RecordOpener(KEY, 9)
    payloads = [rng.randbytes(rng.randint(1, MAX_RECORD)) for _ in range(40)]
    held_sealed = []
    held_plain = []
    expected_sealed = []
    for i, payload in enumerate(payloads):
        sealed = sealer.seal([payload])
        expected_sealed.append(b"".join(bytes(b) for b in sealed))
        held_sealed.append(sealed)  # the transport still holds these
        plain = opener.feed(expected_sealed[-1])
        assert [bytes(p) for p in plain] == [payload]
        if i % 3 == 0:
            held_plain.append((payload, plain))  # not read yet
    for payload, plain in held_plain:
        assert bytes(plain[0]) == payload
    for sealed, expected in zip(held_sealed, expected_sealed, strict=True):
        assert b"".join(bytes(b) for b in sealed) == expected
    # once nothing refers to them, the buffers are reused (no new memory per record)
    del held_sealed, held_plain, sealed, plain
    size = records._SMALL + 1000  # small records are sealed and opened into new bytes
    wire = b"".join(bytes(b) for b in sealer.seal([os.urandom(size)]))
    assert records._SEALED._pos == 4 + size + TAG_LEN  # rewound: sealed at the start
    assert bytes(opener.feed(wire)[0]) != b""
    assert records._OPENED._pos == size  # rewound: opened at the start


def test_small_records_are_new_bytes_and_leave_the_shared_buffers_alone() -> None:
    sealer = RecordSealer(KEY, 3)
    opener = RecordOpener(KEY, 3)
    sealed_pos, opened_pos = records._SEALED._pos, records._OPENED._pos
    for size in (1, 64, records._SMALL):
        payload = os.urandom(size)
        sealed = sealer.seal([payload[: size // 2], payload[size // 2 :]])
        assert [type(b) for b in sealed] == [bytes]
        assert len(sealed[0]) == 4 + size + TAG_LEN
        plain = opener.feed(sealed[0][:3])  # split inside the header, then the rest
        plain += opener.feed(sealed[0][3:])
        assert plain == [payload] and type(plain[0]) is bytes
    assert (records._SEALED._pos, records._OPENED._pos) == (sealed_pos, opened_pos)
    tampered = bytearray(sealer.seal([b"x" * 64])[0])
    tampered[10] ^= 1
    with pytest.raises(records.RecordError):
        opener.feed(bytes(tampered))


def test_record_key_vector() -> None:
    """``record_key`` is HKDF-Expand-SHA256 with one output block, spelled out with the
    standard library (T(1) = HMAC(secret, info || 0x01)), and a pinned value
    (docs/wire.md)."""
    import hmac

    info = b"rendr v1 record" + (7).to_bytes(4, "big") + (1).to_bytes(4, "big")
    assert record_key(KEY, 7, 1) == hmac.digest(KEY, info + b"\x01", "sha256")
    assert record_key(KEY, 7, 1).hex() == (
        "66ed0f7d12f94a656930c190ff448191a21e430a65e5054c07732ade5d3dd08f")


def test_small_records_inline_match_the_format() -> None:
    """A flush of at most 4 KiB is sealed (and a whole small record opened) on a short
    path of its own: its bytes are exactly ``u32 length | AES-GCM(record key, nonce)``
    of the joined frames, whether the frames come as bytes or views, and a tampered
    one fails like any other record."""
    sealer = RecordSealer(KEY, 3, epoch_len=3)
    opener = RecordOpener(KEY, 3, epoch_len=3)
    flushes: list[list[bytes | memoryview]] = [
        [b"h" * 12, memoryview(b"payload" * 9)], [b"a" * 20], [b"x" * 4096],
        [b"y" * 4000, b"z" * 96], [b"q"], [memoryview(bytearray(b"m" * 64))]]
    for seq, frames in enumerate(flushes):
        plain = b"".join(bytes(f) for f in frames)
        out = sealer.seal(frames)
        assert len(out) == 1
        hdr = (len(plain) + TAG_LEN).to_bytes(4, "big")
        nonce = (3).to_bytes(4, "big") + seq.to_bytes(8, "big")
        key = record_key(KEY, 3, seq // 3)
        assert bytes(out[0]) == hdr + AESGCM(key).encrypt(nonce, plain, hdr)
        assert [bytes(p) for p in opener.feed(bytes(out[0]))] == [plain]
    tampered = bytearray(b"".join(bytes(b) for b in sealer.seal([b"t" * 64])))
    tampered[-1] ^= 1
    with pytest.raises(RecordError):
        opener.feed(bytes(tampered))
    assert opener.failures == 1
