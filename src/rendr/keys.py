"""Listener static keys (``listen(server_key=...)`` / ``Dialer(server_key=...)``)."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

__all__ = ["generate_server_key", "server_public_key"]


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
