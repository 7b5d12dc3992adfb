"""AES-256-GCM with a kept key: the cipher of small records and of datagrams.

``cryptography``'s ``AESGCM`` copies a keyed OpenSSL context and cleanses it on every
call: about 14k instructions for an 80-byte seal plus open, a fifth of what an echo
round trip cost in the compiled engine.  qh3 (rendr's QUIC library, already a
dependency) binds an AEAD that expands the key once and keeps it; its nonce is a fixed
IV XOR a 64-bit number, which is exactly the record and datagram nonce (u32 path id,
u64 number) with the IV ``path id | 0``.  A seal plus open costs about 7k.

:func:`kept_cipher` returns that cipher when qh3's binding loads and passes a
known-answer check against ``cryptography`` at first use, else ``None`` (the record
layer then uses ``AESGCM`` everywhere; the records are the same bytes either way).
``RENDR_AEAD=cryptography`` forces ``None``.  Large records always use ``AESGCM``,
which seals and opens in place (qh3's binding takes and returns ``bytes`` only).

qh3 is imported on the first call, not with rendr: importing it costs tens of
milliseconds.
"""

from __future__ import annotations

import logging
import os
import struct
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KeptError", "backend", "kept_cipher"]

logger = logging.getLogger("rendr.core.aead")

_IV = struct.Struct("!IQ")


class _NeverRaised(Exception):
    """:data:`KeptError` until qh3's binding is loaded."""


KeptError: type[Exception] = _NeverRaised
"""What a kept cipher raises when a record fails authentication (qh3's
``CryptoError`` once loaded)."""

_kept: Any = None
_loaded = False


def _load() -> Any:
    """qh3's AES-256-GCM class if it loads and agrees with ``cryptography``, else None."""
    global KeptError
    if os.environ.get("RENDR_AEAD", "").lower() == "cryptography":
        return None
    try:
        from qh3._hazmat import AeadAes256Gcm, CryptoError

        key = bytes(range(32))
        plain = b"rendr kept-key check"
        aad = b"\x00\x00\x00\x24"
        expect = AESGCM(key).encrypt(_IV.pack(7, 5), plain, aad)
        cipher = AeadAes256Gcm(key, _IV.pack(7, 0))
        if cipher.encrypt(5, plain, aad) != expect or cipher.decrypt(5, expect, aad) != plain:
            logger.warning("qh3's AES-GCM disagrees with cryptography's: not used")
            return None
        try:
            cipher.decrypt(6, expect, aad)
        except CryptoError:
            pass
        else:  # pragma: no cover - a binding that does not authenticate
            logger.warning("qh3's AES-GCM accepted a forged record: not used")
            return None
    except Exception as exc:  # ImportError, or an API that changed
        logger.debug("qh3's AES-GCM unavailable (%r): records use cryptography only", exc)
        return None
    KeptError = CryptoError
    return AeadAes256Gcm


def kept_cipher(key: bytes, path_id: int) -> Any:
    """A cipher keeping ``key`` whose ``encrypt(n, data, aad)`` / ``decrypt(n, data,
    aad)`` use the record nonce ``path_id | n`` (``bytes`` in and out; a bad tag raises
    :data:`KeptError`), or ``None`` where only ``cryptography`` is available."""
    cls = _kept if _loaded else _first_load()
    return None if cls is None else cls(key, _IV.pack(path_id, 0))


def _first_load() -> Any:
    global _kept, _loaded
    _kept = _load()
    _loaded = True
    return _kept


def backend() -> str:
    """Which cipher seals small records in this process: ``"qh3"`` or
    ``"cryptography"`` (loads qh3's binding if that was not done yet)."""
    cls = _kept if _loaded else _first_load()
    return "qh3" if cls is not None else "cryptography"
