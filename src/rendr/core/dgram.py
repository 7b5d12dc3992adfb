"""What a path sends and receives on a datagram carrier (UDP): packed, sealed datagrams.

A stream carrier carries records that span reads (:mod:`.records`); a datagram
carrier loses, duplicates and reorders whole datagrams, so each one must stand
alone:

- **Packing.**  The frames a path has to send (its outbox: each frame one or more
  buffers) are grouped into datagrams of whole frames, at most ``mtu`` bytes each
  (:func:`pack`).  A frame never straddles two datagrams, so a lost datagram loses
  only the frames in it; the builder cuts DATA and the application's packets so
  that every frame fits.
- **Sealing** (keyed flows).  Each datagram is ``u64 packet number | body | 16-byte
  tag`` (AES-256-GCM, the packet number as associated data; the body encrypted
  unless ``encrypt`` is off).  The nonce is the path id and the packet number, the
  key the path's key of the number's epoch (``number >> 18``; see
  :func:`~rendr.core.crypto.record_key`), so no nonce repeats and a datagram moved
  to another path fails authentication.
- **Opening.**  A datagram that fails authentication, is too short, or repeats a
  packet number seen within the last :data:`REPLAY_WINDOW` numbers (or is older
  than that) is dropped and counted, never an error: on an unreliable carrier an
  off-path attacker can send anything, and must not be able to end the path.

Without keys (the engine alone, in simulations) a datagram is just its frames.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import aead
from .crypto import record_key
from .records import EPOCH_RECORDS, TAG_LEN
from .window import NEW, SeenWindow
from .wire import HEADER

__all__ = ["OVERHEAD", "REPLAY_WINDOW", "DatagramOpener", "DatagramSealer", "PlainPacker",
           "pack"]

OVERHEAD: Final = 8 + TAG_LEN
"""Bytes a sealed datagram adds to its frames (packet number and tag)."""
REPLAY_WINDOW: Final = 4096
"""Packet numbers remembered behind the highest one received (older ones are dropped)."""
_PN: Final = struct.Struct("!Q")
_NONCE: Final = struct.Struct("!IQ")
_EPOCH_SHIFT: Final = EPOCH_RECORDS.bit_length() - 1

Buffer = bytes | bytearray | memoryview
Out = bytes | memoryview


def pack(buffers: Sequence[Buffer], room: int) -> list[list[Buffer]]:
    """Group ``buffers`` (whole frames, each one or more consecutive buffers, every
    frame's first buffer holding at least its 4-byte header) into datagrams of whole
    frames of at most ``room`` bytes each, in order.

    Raises:
        ValueError: a frame larger than ``room`` (the builder must cut it), or
            buffers that do not hold whole frames.
    """
    out: list[list[Buffer]] = []
    current: list[Buffer] = []
    size = 0
    left = 0  # bytes of the current frame still to come
    frame_size = 0
    for buf in buffers:
        n = len(buf)
        if n == 0:
            continue
        if left == 0:  # a frame starts here
            if n < 4:
                raise ValueError("a frame's first buffer lacks its header")
            (word,) = HEADER.unpack_from(buf, 0)
            frame_size = 4 + (word & 0xFFFFFF)
            if frame_size > room:
                raise ValueError(f"a {frame_size}-byte frame does not fit a {room}-byte "
                                 "datagram")
            if size + frame_size > room:
                out.append(current)
                current = []
                size = 0
            left = frame_size
            size += frame_size
        if n > left:
            raise ValueError("a buffer spans two frames")
        current.append(buf)
        left -= n
    if left:
        raise ValueError("the last frame is incomplete")
    if current:
        out.append(current)
    return out


class PlainPacker:
    """A datagram path of an unkeyed flow: datagrams are their frames, unsealed."""

    __slots__ = ("mtu",)

    def __init__(self, mtu: int) -> None:
        self.mtu = mtu

    def seal(self, buffers: Sequence[Buffer]) -> list[Out]:
        """The outbox as datagrams (one buffer each)."""
        out: list[Out] = []
        for group in pack(buffers, self.mtu):
            out.append(b"".join(group))
        return out


class _Keys:
    """A path's datagram keys in one direction, by epoch (a few kept).

    With ``kept`` (encrypted bodies, and qh3's binding loaded: :mod:`~rendr.core.aead`)
    the ciphers are kept-key ones taking the packet number, else ``AESGCM``."""

    __slots__ = ("_base", "_by_epoch", "_path_id", "kept")

    def __init__(self, key: bytes, path_id: int, encrypt: bool) -> None:
        self._base = key
        self._path_id = path_id
        self._by_epoch: dict[int, Any] = {}
        self.kept = encrypt and aead.backend() == "qh3"

    def get(self, epoch: int) -> Any:
        cipher = self._by_epoch.get(epoch)
        if cipher is None:
            if len(self._by_epoch) >= 3:  # the previous, current and next epochs
                del self._by_epoch[min(self._by_epoch)]
            key = record_key(self._base, self._path_id, epoch)
            cipher = aead.kept_cipher(key, self._path_id) if self.kept else None
            if cipher is None:
                if self.kept:  # (only if the backend changed under us: keep one kind)
                    self._by_epoch.clear()
                self.kept = False
                cipher = AESGCM(key)
            self._by_epoch[epoch] = cipher
        return cipher


class DatagramSealer:
    """Packs and seals what one datagram path sends.

    Args:
        key: the flow's secret for this direction.
        path_id: the path's id (in every nonce and key).
        mtu: the most bytes of one datagram (as the carrier takes it).
        encrypt: encrypt the bodies (else authenticate only).
    """

    __slots__ = ("_encrypt", "_keys", "_path_id", "mtu", "next_number")

    def __init__(self, key: bytes, path_id: int, mtu: int, encrypt: bool = True) -> None:
        self._keys = _Keys(key, path_id, encrypt)
        self._path_id = path_id
        self._encrypt = encrypt
        self.mtu = mtu
        self.next_number = 0

    def seal(self, buffers: Sequence[Buffer]) -> list[Out]:
        """The outbox as sealed datagrams (one ``bytes`` each)."""
        out: list[Out] = []
        for group in pack(buffers, self.mtu - OVERHEAD):
            body = group[0] if len(group) == 1 else b"".join(group)
            number = self.next_number
            self.next_number = number + 1
            pn = _PN.pack(number)
            keys = self._keys
            cipher = keys.get(number >> _EPOCH_SHIFT)
            if keys.kept:
                out.append(pn + cipher.encrypt(number, body if isinstance(body, bytes)
                                               else bytes(body), pn))
                continue
            nonce = _NONCE.pack(self._path_id, number)
            if self._encrypt:
                out.append(pn + cipher.encrypt(nonce, body, pn))
            else:
                out.append(b"".join((pn, body, cipher.encrypt(nonce, b"", pn + bytes(body)))))
        return out


class DatagramOpener:
    """Opens what one datagram path receives (arguments as :class:`DatagramSealer`'s,
    with the peer's direction secret).

    Attributes:
        failures: datagrams dropped for failing authentication (or too short).
        replays: datagrams dropped as repeats, or as older than the replay window.
    """

    __slots__ = ("_encrypt", "_keys", "_path_id", "_window", "failures", "replays")

    def __init__(self, key: bytes, path_id: int, encrypt: bool = True) -> None:
        self._keys = _Keys(key, path_id, encrypt)
        self._path_id = path_id
        self._encrypt = encrypt
        self._window = SeenWindow(REPLAY_WINDOW)  # the packet numbers accepted
        self.failures = 0
        self.replays = 0

    def feed(self, datagram: Buffer) -> list[Out]:
        """One datagram in; its frames out (``[]``: dropped and counted)."""
        n = len(datagram)
        if n < OVERHEAD:
            self.failures += 1
            return []
        view = memoryview(datagram)
        (number,) = _PN.unpack_from(view, 0)
        window = self._window
        if window.check(number) != NEW:
            self.replays += 1
            return []
        top = window.top
        epoch = number >> _EPOCH_SHIFT
        if abs(epoch - (top >> _EPOCH_SHIFT if top >= 0 else 0)) > 1:
            # no honest sender jumps a whole epoch (and its first datagrams are in epoch
            # 0): not worth a key; an epoch past u32 would not even have one
            self.failures += 1
            return []
        keys = self._keys
        cipher = keys.get(epoch)
        pn = view[:8]
        try:
            if keys.kept:
                plain: Out = cipher.decrypt(number, bytes(view[8:]), bytes(pn))
            elif self._encrypt:
                plain = cipher.decrypt(_NONCE.pack(self._path_id, number), view[8:], pn)
            else:
                plain = view[8 : n - TAG_LEN]
                cipher.decrypt(_NONCE.pack(self._path_id, number), view[n - TAG_LEN :],
                               bytes(view[: n - TAG_LEN]))
        except (InvalidTag, aead.KeptError):
            self.failures += 1
            return []
        window.mark(number)
        return [plain]
