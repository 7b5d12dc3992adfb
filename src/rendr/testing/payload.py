"""Reproducible bulk payloads for tests and gates: a block repeated, and its digest."""

from __future__ import annotations

import hashlib

__all__ = ["repeated_digest"]


def repeated_digest(block: bytes, size: int) -> bytes:
    """SHA-256 of ``block`` repeated (and cut) to exactly ``size`` bytes."""
    h = hashlib.sha256()
    mv = memoryview(block)
    pos = 0
    while pos < size:
        n = min(size - pos, len(block))
        h.update(mv[:n])
        pos += n
    return h.digest()
