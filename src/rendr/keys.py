"""Listener static keys (``listen(server_key=...)`` / ``Dialer(server_key=...)``)."""

from __future__ import annotations

import logging

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

__all__ = ["check_authentication", "generate_server_key", "server_public_key"]


def check_authentication(who: str, psk: bytes | None, server_key: object | None,
                         records: bool = True) -> None:
    """What ``Dialer``/``listen`` check of ``psk=`` and ``server_key=``: a PSK has at
    least 16 bytes; with neither, a warning that only passive observers are kept out;
    with ``records=False``, a warning that frames after the handshake are not
    authenticated.

    Raises:
        ValueError: the PSK is too short.
    """
    if psk is not None and len(psk) < 16:
        raise ValueError("psk must be at least 16 bytes")
    if psk is None and server_key is None:
        logging.getLogger(f"rendr.{who.lower()}").warning(
            "rendr %s without psk or server_key: flows are kept from passive observers "
            "only, not from an active attacker in the middle (see docs/security.md)", who)
    if not records:
        logging.getLogger(f"rendr.{who.lower()}").warning(
            "rendr %s with records=False: frames after the handshake are neither "
            "authenticated nor encrypted unless the peer asks for records; only for "
            "carriers that authenticate every byte themselves (see docs/security.md)", who)


def generate_server_key() -> tuple[bytes, bytes]:
    """A new static X25519 key pair for a listener: ``(private, public)``, 32 raw bytes
    each.  Keep the private half secret (``listen(server_key=private)``); give the
    public half to dialers (``Dialer(server_key=public)``), like an SSH host key."""
    priv = X25519PrivateKey.generate()
    raw = priv.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    return raw, priv.public_key().public_bytes_raw()


def server_public_key(private: bytes) -> bytes:
    """The public half of a listener's 32-byte private key."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
