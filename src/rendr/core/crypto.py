"""The flow's key schedule: an ephemeral X25519 exchange in HELLO/HELLO_ACK, mixed with
whatever authenticates the ends, expanded with HKDF-SHA256 into per-flow keys.

Inputs (see docs/security.md):

* ``ee`` = X25519(dialer ephemeral, listener ephemeral): always; keeps passive
  observers out.
* ``es`` = X25519(dialer ephemeral, listener static): when the dialer pins the
  listener's static public key (``server_key=``, SSH known-hosts style); an active
  attacker cannot complete the handshake without the listener's private key.
* ``psk``: a pre-shared key (``psk=`` on both ends) is the HKDF salt; the HELLO also
  carries a MAC under a key derived from it alone, so a listener refuses a dialer
  without it before creating anything.

``transcript`` is SHA-256 over the HELLO body and the HELLO_ACK body up to its
confirmation MAC, so every derived key is bound to both ephemerals, the flow id,
path id, mode and the caps both ends announced.  Pure functions over bytes: the
sans-I/O engine takes no randomness here except :func:`ephemeral`.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

__all__ = ["MAC_LEN", "FlowKeys", "derive", "dh", "ephemeral", "hello_key", "mac",
           "public_bytes", "record_key", "transcript_hash", "valid_share", "verify_mac"]

MAC_LEN: Final = 16
"""Bytes of every handshake MAC (HMAC-SHA256, truncated)."""

_LABEL: Final = b"rendr v1 "


def ephemeral() -> tuple[X25519PrivateKey, bytes]:
    """A fresh X25519 key pair: (private key, 32-byte public key)."""
    priv = X25519PrivateKey.generate()
    return priv, public_bytes(priv)


def public_bytes(priv: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key of ``priv``."""
    return priv.public_key().public_bytes_raw()


def dh(priv: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519(priv, peer_public); ValueError for a low-order (all-zero result) key."""
    return priv.exchange(X25519PublicKey.from_public_bytes(peer_public))


def valid_share(public: bytes) -> bool:
    """Whether an X25519 public key yields a shared secret (not a low-order point):
    tried against a throwaway key, since X25519 refuses such points only then."""
    try:
        _PROBE.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        return False
    return True


_PROBE: Final = X25519PrivateKey.generate()


def mac(key: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA256 over ``parts`` (each length-prefixed), truncated to MAC_LEN."""
    msg = b"".join(len(p).to_bytes(4, "big") + p for p in parts)
    return hmac.digest(key, msg, "sha256")[:MAC_LEN]


def verify_mac(key: bytes, tag: bytes, *parts: bytes) -> bool:
    """Whether ``tag`` is :func:`mac` of ``parts`` (constant time)."""
    return hmac.compare_digest(mac(key, *parts), bytes(tag))


def _expand(prk: bytes, label: bytes, transcript: bytes, length: int = 32) -> bytes:
    return HKDFExpand(hashes.SHA256(), length, _LABEL + label + b" " + transcript).derive(prk)


def hello_key(psk: bytes) -> bytes:
    """The MAC key of the HELLO's proof that the dialer holds the pre-shared key."""
    return HKDF(hashes.SHA256(), 32, salt=b"rendr v1 psk", info=b"hello").derive(psk)


@dataclass(frozen=True)
class FlowKeys:
    """Keys of one flow, the same on both ends.

    Attributes:
        d2l / l2d: secrets of the dialer->listener and listener->dialer directions,
            from which every path's record keys are derived (:func:`record_key`).
        join: MAC key of JOIN / JOIN_ACK.
        confirm: MAC key of the HELLO_ACK's confirmation.
    """

    d2l: bytes
    l2d: bytes
    join: bytes
    confirm: bytes


def derive(ee: bytes, es: bytes | None, psk: bytes | None, transcript: bytes) -> FlowKeys:
    """The flow's keys from the exchange's shared secrets and the transcript hash."""
    # HKDF-Extract (RFC 5869): PRK = HMAC-SHA256(salt, IKM); the PSK is the salt
    prk = hmac.digest(psk or bytes(32), _LABEL + ee + (es or b""), "sha256")
    return FlowKeys(
        d2l=_expand(prk, b"d2l", transcript),
        l2d=_expand(prk, b"l2d", transcript),
        join=_expand(prk, b"join", transcript),
        confirm=_expand(prk, b"confirm", transcript),
    )


def record_key(direction_key: bytes, path_id: int, epoch: int) -> bytes:
    """The AES-256-GCM key of one path's records in one direction and key epoch:
    HKDF-Expand(direction key, "rendr v1 record" | u32 path id | u32 epoch).  Every
    path has its own keys, and a long path moves to the next epoch's key every
    :data:`~rendr.core.records.EPOCH_RECORDS` records (key update without a message:
    both ends count records)."""
    info = _LABEL + b"record" + path_id.to_bytes(4, "big") + epoch.to_bytes(4, "big")
    return HKDFExpand(hashes.SHA256(), 32, info).derive(direction_key)


def transcript_hash(*bodies: bytes) -> bytes:
    """SHA-256 over the handshake bodies, each length-prefixed."""
    h = hashlib.sha256()
    for b in bodies:
        h.update(len(b).to_bytes(4, "big"))
        h.update(b)
    return h.digest()
