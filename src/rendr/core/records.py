"""Authenticated records on a stream carrier: every byte after the handshake.

A carrier's frames are cut into records of at most :data:`MAX_RECORD` bytes::

    u32 length (of what follows) | body | 16-byte AES-256-GCM tag

With encryption (the default) the body is the ciphertext and the length is the
associated data; without it (``encrypt=False``, for carriers that bring their own
confidentiality) the body is the plaintext and the tag authenticates length and
body.  Each path and direction has its own key (:func:`~rendr.core.crypto.record_key`
of the flow's direction secret), replaced by the next epoch's key every
:data:`EPOCH_RECORDS` records: both ends count records, so the key update needs no
message, and no key seals more than 2^18 records (64 GiB), far inside AES-GCM's
usage limits.  The nonce is the path id (4 bytes) and the record's number on this
path and direction (8 bytes, from 0): no nonce repeats, and a record replayed,
reordered, dropped or moved to another path fails authentication.  A stream cannot
skip a bad record: the path that carried one ends (the flow goes on over its other
paths).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ProtocolError
from . import aead
from .bufpool import shared
from .crypto import record_key

__all__ = ["EPOCH_RECORDS", "MAX_RECORD", "TAG_LEN", "RecordError", "RecordOpener",
           "RecordSealer"]

MAX_RECORD: Final = 256 * 1024
"""Most plaintext bytes per record."""
TAG_LEN: Final = 16
EPOCH_RECORDS: Final = 1 << 18
"""Records sealed under one key before both ends move to the next epoch's key."""
_HDR: Final = struct.Struct("!I")
_NONCE: Final = struct.Struct("!IQ")
_MAX_BODY: Final = MAX_RECORD + TAG_LEN
_SMALL: Final = 4096
"""Records of at most this many plaintext bytes are sealed and opened into new ``bytes``
(an allocation costs less than the reused buffers' bookkeeping at this size)."""

Buffer = bytes | bytearray | memoryview
Out = bytes | memoryview

_SEALED = shared()
"""Where records are sealed (process-wide: one thread seals at a time)."""
_OPENED = shared()
"""Where records are opened (process-wide)."""


class RecordError(ProtocolError):
    """A record failed authentication (or was malformed): the carrier is not the
    peer's any more, or it was tampered with."""


class _Keyed:
    """A path's key in one direction, moved to the next epoch's every ``epoch_len``
    records."""

    __slots__ = ("_aead", "_base", "_encrypt", "_epoch_len", "_kept", "_path_id",
                 "_rekey_at", "epoch", "seq")

    def __init__(self, key: bytes, path_id: int, encrypt: bool, epoch_len: int) -> None:
        self._base = key
        self._path_id = path_id
        self._encrypt = encrypt
        self._epoch_len = epoch_len
        self.epoch = 0
        self.seq = 0
        self._rekey_at = epoch_len
        self._aead: AESGCM
        self._kept: Any = None
        self._use_key(record_key(key, path_id, 0))

    def _use_key(self, key: bytes) -> None:
        """``key`` seals (opens) from now on: ``AESGCM`` for every record, and the kept
        cipher of :mod:`~rendr.core.aead` for small encrypted ones where it exists."""
        self._aead = AESGCM(key)
        self._kept = aead.kept_cipher(key, self._path_id) if self._encrypt else None

    def _next_key(self) -> None:
        self.epoch += 1
        self._rekey_at += self._epoch_len
        self._use_key(record_key(self._base, self._path_id, self.epoch))


class RecordSealer(_Keyed):
    """Seals what one path sends, in order.

    Args:
        key: the flow's secret for this direction (:attr:`FlowKeys.d2l` / ``l2d``).
        path_id: the path's id (in every nonce and key).
        encrypt: encrypt the records (else authenticate only).
        epoch_len: records per key (tests shorten it).
    """

    __slots__ = ()

    def __init__(self, key: bytes, path_id: int, encrypt: bool = True,
                 epoch_len: int = EPOCH_RECORDS) -> None:
        super().__init__(key, path_id, encrypt, epoch_len)

    def seal(self, buffers: Sequence[Buffer]) -> list[Out]:
        """``buffers`` (frames, in order) as records, ready to write.  A record's
        plaintext is copied only when it spans several buffers (a large DATA payload
        is sealed from its own memory, 64 KiB at a time)."""
        if self._encrypt:  # the common small flush (a message, an ACK): one record, inline
            n = 0
            for buf in buffers:
                n += len(buf)
            if 0 < n <= _SMALL:
                chunk = buffers[0] if len(buffers) == 1 else b"".join(buffers)
                hdr = _HDR.pack(n + TAG_LEN)
                if self.seq == self._rekey_at:
                    self._next_key()
                seq = self.seq
                self.seq = seq + 1
                kept = self._kept
                if kept is not None:
                    return [hdr + kept.encrypt(seq, chunk if isinstance(chunk, bytes)
                                               else bytes(chunk), hdr)]
                return [hdr + self._aead.encrypt(_NONCE.pack(self._path_id, seq), chunk, hdr)]
        out: list[Out] = []
        pieces: list[memoryview] = []
        room = MAX_RECORD
        for buf in buffers:
            view = memoryview(buf)
            while view:
                piece = view[:room]
                view = view[len(piece):]
                pieces.append(piece)
                room -= len(piece)
                if not room:
                    self._one(pieces, out)
                    pieces = []
                    room = MAX_RECORD
        if pieces:
            self._one(pieces, out)
        return out

    def _one(self, pieces: list[memoryview], out: list[Out]) -> None:
        chunk: Buffer = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        n = len(chunk)
        hdr = _HDR.pack(n + TAG_LEN)
        if self.seq == self._rekey_at:
            self._next_key()
        nonce = _NONCE.pack(self._path_id, self.seq)
        self.seq += 1
        if self._encrypt and n <= _SMALL:
            kept = self._kept
            if kept is not None:
                out.append(hdr + kept.encrypt(self.seq - 1, bytes(chunk), hdr))
            else:
                out.append(hdr + self._aead.encrypt(nonce, chunk, hdr))
        elif self._encrypt:
            size = 4 + n + TAG_LEN
            room = _SEALED.get(size)
            room[:4] = hdr
            self._aead.encrypt_into(nonce, chunk, hdr, room[4:size])
            del room
            out.append(_SEALED.filled(size))
        else:
            # GCM authenticates the length of what it covers: the header needs no MAC
            out.append(hdr)
            out.append(chunk if isinstance(chunk, bytes) else memoryview(chunk))
            out.append(self._aead.encrypt(nonce, b"", chunk))


class RecordOpener(_Keyed):
    """Opens what one path receives: bytes in, plaintext pieces out (arguments as
    :class:`RecordSealer`'s, with the peer's direction secret)."""

    __slots__ = ("_partial", "failures")

    def __init__(self, key: bytes, path_id: int, encrypt: bool = True,
                 epoch_len: int = EPOCH_RECORDS) -> None:
        super().__init__(key, path_id, encrypt, epoch_len)
        self._partial = bytearray()
        self.failures = 0

    def feed(self, data: Buffer) -> list[Out]:
        """Take carrier bytes; return the plaintext of every record completed.

        Bytes are copied only to complete a record split across reads; whole records
        are opened from ``data`` in place.

        Raises:
            RecordError: a record failed authentication or is too long.
        """
        if not self._partial and self._encrypt:
            n = len(data)  # one whole small record, the common case: opened inline
            if 4 + TAG_LEN <= n <= 4 + _SMALL + TAG_LEN:
                head = data[:4]
                hdr = head if isinstance(head, bytes) else bytes(head)
                if int.from_bytes(hdr, "big") != n - 4:
                    return self._feed_all(data)
                if self.seq == self._rekey_at:
                    self._next_key()
                kept = self._kept
                try:
                    if kept is not None:
                        body = data[4:]  # bytes from a message read: no copy beyond the slice
                        plain = kept.decrypt(self.seq, body if isinstance(body, bytes)
                                             else bytes(body), hdr)
                    else:
                        plain = self._aead.decrypt(_NONCE.pack(self._path_id, self.seq),
                                                   data[4:], hdr)
                except (InvalidTag, aead.KeptError):
                    self.failures += 1
                    raise RecordError(f"record {self.seq} on path {self._path_id} failed "
                                      "authentication") from None
                self.seq += 1
                return [plain]
        return self._feed_all(data)

    def _feed_all(self, data: Buffer) -> list[Out]:
        """:meth:`feed` for any bytes: partial records, several records, large ones."""
        view = memoryview(data)
        out: list[Out] = []
        pos = 0
        if self._partial:
            pos = self._complete(view, out)
            if self._partial:
                return out  # still incomplete: all of data went into it
        end = len(view)
        while end - pos >= 4:
            (length,) = _HDR.unpack_from(view, pos)
            if length < TAG_LEN or length > _MAX_BODY:
                self.failures += 1
                raise RecordError(f"record of {length} B on path {self._path_id}")
            if end - pos - 4 < length:
                break
            out.append(self._open(view[pos : pos + 4], view[pos + 4 : pos + 4 + length]))
            pos += 4 + length
        if pos < end:
            self._partial = bytearray(view[pos:])
        return out

    def _complete(self, view: memoryview, out: list[Out]) -> int:
        """Add to the partial record what it lacks from ``view``; open it when whole.
        Returns how many bytes of ``view`` were used."""
        partial = self._partial
        pos: int = 0
        if len(partial) < 4:
            pos = min(4 - len(partial), len(view))
            partial += view[:pos]
            if len(partial) < 4:
                return pos
        length: int = _HDR.unpack_from(partial, 0)[0]
        if length < TAG_LEN or length > _MAX_BODY:
            self.failures += 1
            raise RecordError(f"record of {length} B on path {self._path_id}")
        take = min(4 + length - len(partial), len(view) - pos)
        partial += view[pos : pos + take]
        pos += take
        if len(partial) == 4 + length:
            self._partial = bytearray()  # a new one: views of the old may be kept
            whole = memoryview(partial)
            out.append(self._open(whole[:4], whole[4:]))
        return pos

    def _open(self, hdr: memoryview, body: memoryview) -> Out:
        if self.seq == self._rekey_at:
            self._next_key()
        nonce = _NONCE.pack(self._path_id, self.seq)
        try:
            n = len(body) - TAG_LEN
            if self._encrypt and n <= _SMALL:
                kept = self._kept
                if kept is not None:
                    plain: Out = kept.decrypt(self.seq, bytes(body), bytes(hdr))
                else:
                    plain = self._aead.decrypt(nonce, body, hdr)
            elif self._encrypt:
                room = _OPENED.get(n)
                self._aead.decrypt_into(nonce, body, hdr, room[:n])
                del room
                plain = _OPENED.filled(n)
            else:
                plain = body[:-TAG_LEN]
                self._aead.decrypt(nonce, body[-TAG_LEN:], plain)
        except (InvalidTag, aead.KeptError):
            self.failures += 1
            raise RecordError(f"record {self.seq} on path {self._path_id} failed "
                              "authentication") from None
        self.seq += 1
        return plain
