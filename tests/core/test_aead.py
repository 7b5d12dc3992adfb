"""The record layer's two AES-256-GCM backends (:mod:`rendr.core.aead`): qh3's kept-key
cipher for small records and ``cryptography``'s ``AESGCM`` must produce the same
records, open each other's, reject the same forgeries, and the choice must fall back
to ``cryptography`` whenever qh3's binding is missing or forced off."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import pytest

from rendr.core import aead
from rendr.core.dgram import DatagramOpener, DatagramSealer
from rendr.core.records import EPOCH_RECORDS, MAX_RECORD, RecordError, RecordOpener, RecordSealer
from rendr.core.wire import data_header

KEY = bytes(range(32))
FRAMES = [b"x", b"hello" * 20, bytes(4096), bytes(4097), bytes(range(256)) * 300,
          b"tail" * 3]


@pytest.fixture
def backend_choice(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Lets a test reload the backend choice; the process's choice is restored after."""
    monkeypatch.setattr(aead, "_loaded", False)
    monkeypatch.setattr(aead, "_kept", None)
    yield monkeypatch


def _use(mp: pytest.MonkeyPatch, name: str) -> None:
    mp.setattr(aead, "_loaded", False)
    mp.setattr(aead, "_kept", None)
    if name == "cryptography":
        mp.setenv("RENDR_AEAD", "cryptography")
    else:
        mp.delenv("RENDR_AEAD", raising=False)
    assert aead.backend() == name


def _sealed_by_both(mp: pytest.MonkeyPatch, seal: Callable[[], list[bytes]]
                    ) -> tuple[list[bytes], list[bytes]]:
    """What ``seal()`` returns with qh3's kept key, then with ``cryptography``."""
    pytest.importorskip("qh3._hazmat")
    _use(mp, "qh3")
    kept = seal()
    _use(mp, "cryptography")
    return kept, seal()


def _seal_all(epoch_len: int) -> list[bytes]:
    sealer = RecordSealer(KEY, 3, epoch_len=epoch_len)
    out = []
    for frame in FRAMES * 3:
        out.append(b"".join(bytes(p) for p in sealer.seal([frame])))
        out.append(b"".join(bytes(p) for p in sealer.seal([frame[:1], frame[1:]])))
    return out


def _open_all(records: list[bytes], epoch_len: int, whole: bool) -> bytes:
    opener = RecordOpener(KEY, 3, epoch_len=epoch_len)
    if whole:  # one read per flush: the inline path for a small record
        return b"".join(bytes(p) for rec in records for p in opener.feed(rec))
    stream = memoryview(b"".join(records))  # cut in odd places: the partial-record path
    out = bytearray()
    for i in range(0, len(stream), 1009):
        out += b"".join(bytes(p) for p in opener.feed(stream[i : i + 1009]))
    return bytes(out)


@pytest.mark.parametrize("epoch_len", [3, 1 << 18])
def test_both_backends_write_the_same_records_and_open_each_others(
        backend_choice: pytest.MonkeyPatch, epoch_len: int) -> None:
    kept, plain = _sealed_by_both(backend_choice, lambda: _seal_all(epoch_len))
    assert kept == plain  # byte-identical records, key epochs included
    expect = b"".join(f + f for f in FRAMES * 3)
    for whole in (True, False):
        assert _open_all(kept, epoch_len, whole) == expect  # cryptography opens qh3's
    _use(backend_choice, "qh3")
    for whole in (True, False):
        assert _open_all(plain, epoch_len, whole) == expect  # and the other way round


@pytest.mark.parametrize("name", ["qh3", "cryptography"])
def test_a_forged_small_record_fails_on_either_backend(
        backend_choice: pytest.MonkeyPatch, name: str) -> None:
    if name == "qh3":
        pytest.importorskip("qh3._hazmat")
    _use(backend_choice, name)
    sealer = RecordSealer(KEY, 9)
    first = b"".join(bytes(p) for p in sealer.seal([b"first message"]))
    second = b"".join(bytes(p) for p in sealer.seal([b"second message"]))
    forged = bytearray(second)
    forged[-1] ^= 1
    for bad, why in ((bytes(forged), "bit flipped"), (first, "replayed"),
                     (second[:4] + bytes(len(second) - 4), "zeroed")):
        opener = RecordOpener(KEY, 9)
        assert [bytes(p) for p in opener.feed(first)] == [b"first message"]
        with pytest.raises(RecordError):
            opener.feed(bad)
        assert opener.failures == 1, why
    other_path = RecordOpener(KEY, 10)
    with pytest.raises(RecordError):
        other_path.feed(first)


def test_without_qh3_records_use_cryptography(backend_choice: pytest.MonkeyPatch) -> None:
    backend_choice.delenv("RENDR_AEAD", raising=False)
    backend_choice.setitem(sys.modules, "qh3._hazmat", None)  # import fails
    assert aead.backend() == "cryptography"
    assert aead.kept_cipher(KEY, 1) is None
    sealer, opener = RecordSealer(KEY, 1), RecordOpener(KEY, 1)
    big = bytes(MAX_RECORD + 5)
    out = b"".join(bytes(p) for p in opener.feed(
        b"".join(bytes(p) for p in sealer.seal([b"small", big]))))
    assert out == b"small" + big


def test_forcing_cryptography_by_environment(backend_choice: pytest.MonkeyPatch) -> None:
    backend_choice.setenv("RENDR_AEAD", "Cryptography")
    assert aead.backend() == "cryptography"
    assert aead.kept_cipher(KEY, 1) is None


def _datagrams(start: int) -> list[bytes]:
    sealer = DatagramSealer(KEY, 4, mtu=1400)
    sealer.next_number = start  # across an epoch boundary when start is just below it
    return [bytes(d) for f in _frames() for d in sealer.seal([memoryview(f)])]


def _frames() -> list[bytes]:
    return [data_header(i, 100 + 200 * i) + bytes([i]) * (100 + 200 * i) for i in range(5)]


@pytest.mark.parametrize("start", [0, EPOCH_RECORDS - 2])
def test_both_backends_seal_the_same_datagrams_and_open_each_others(
        backend_choice: pytest.MonkeyPatch, start: int) -> None:
    kept, plain = _sealed_by_both(backend_choice, lambda: _datagrams(start))
    assert kept == plain
    expect = _frames()
    for opened_by in ("cryptography", "qh3"):
        _use(backend_choice, opened_by)
        for sealed in (kept, plain):
            opener = DatagramOpener(KEY, 4)
            if start:  # as after the datagrams before these
                opener._window.mark(start - 1)
            got = [b"".join(bytes(p) for p in opener.feed(d)) for d in sealed]
            assert got == expect, opened_by
            forged = bytearray(sealed[0])
            forged[12] ^= 0x40
            fresh = DatagramOpener(KEY, 4)
            assert fresh.feed(bytes(forged)) == [] and fresh.failures == 1
