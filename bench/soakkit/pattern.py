"""Pseudo-random byte streams that both ends can regenerate, and their checkers.

Each direction of each flow is an endless stream named by ``(seed, direction)``:
64 KiB blocks, block ``b`` drawn from ``random.Random`` seeded with the name and
``b``.  The sender takes random-sized pieces of it; the receiver regenerates the
same stream and compares every byte it reads (exact comparison: a lost, repeated,
reordered or corrupted byte shows at its stream offset), and both ends keep a
running SHA-256 and a byte count that the parent compares at the end of the flow.
"""

from __future__ import annotations

import hashlib
import math
import random

BLOCK = 64 * 1024
UP = 1
"""Client to server."""
DOWN = 2
"""Server to client."""


def _block(seed: int, direction: int, index: int) -> bytes:
    return random.Random((seed << 34) ^ (direction << 32) ^ index).randbytes(BLOCK)


class Pattern:
    """The stream ``(seed, direction)``, taken piece by piece from its start."""

    __slots__ = ("_buf", "_index", "_pos", "direction", "offset", "seed")

    def __init__(self, seed: int, direction: int) -> None:
        self.seed = seed
        self.direction = direction
        self.offset = 0
        self._index = 0
        self._buf = _block(seed, direction, 0)
        self._pos = 0

    def take(self, n: int) -> bytes:
        """The next ``n`` bytes of the stream."""
        parts: list[bytes] = []
        left = n
        while left:
            if self._pos == BLOCK:
                self._index += 1
                self._buf = _block(self.seed, self.direction, self._index)
                self._pos = 0
            k = min(left, BLOCK - self._pos)
            parts.append(self._buf[self._pos:self._pos + k])
            self._pos += k
            left -= k
        self.offset += n
        return parts[0] if len(parts) == 1 else b"".join(parts)


def locate(seed: int, direction: int, needle: bytes, limit: int) -> int | None:
    """Where ``needle`` (>= 16 bytes) occurs in the first ``limit`` bytes of the stream
    (a diagnostic for a mismatch: a duplicate, a skip or a reorder), or None."""
    needle = needle[:64]
    if len(needle) < 16:
        return None
    prev = b""
    for index in range(math.ceil(limit / BLOCK)):
        cur = _block(seed, direction, index)
        hay = prev[-len(needle):] + cur
        at = hay.find(needle)
        if at >= 0:
            return index * BLOCK - len(prev[-len(needle):]) + at
        prev = cur
    return None


class Checker:
    """The receiving end of one direction: compares and hashes what it reads."""

    __slots__ = ("_pat", "count", "sha")

    def __init__(self, seed: int, direction: int) -> None:
        self._pat = Pattern(seed, direction)
        self.sha = hashlib.sha256()
        self.count = 0

    def feed(self, data: bytes) -> str | None:
        """Check the next piece read; None if it is exactly the expected bytes, else a
        description of the first difference (the checker is then out of step)."""
        expect = self._pat.take(len(data))
        if data != expect:
            i = next(k for k in range(len(data)) if data[k] != expect[k])
            at = self.count + i
            seen = locate(self._pat.seed, self._pat.direction, data[i:i + 64],
                          at + 16 * 1024 * 1024)
            where = (f"; the bytes read there are the stream's bytes at offset {seen}"
                     f" ({seen - at:+d})" if seen is not None else "")
            return (f"byte mismatch at stream offset {at} (piece of {len(data)} bytes read at "
                    f"{self.count}): got {data[i:i + 16].hex()} expected "
                    f"{expect[i:i + 16].hex()}{where}")
        self.sha.update(data)
        self.count += len(data)
        return None


class Sender:
    """The sending end of one direction: random-sized pieces, hashed and counted."""

    __slots__ = ("_pat", "_rng", "big", "max_write", "sha")

    def __init__(self, seed: int, direction: int, rng: random.Random, max_write: int) -> None:
        self._pat = Pattern(seed, direction)
        self._rng = rng
        self.max_write = max_write
        self.big = 0
        self.sha = hashlib.sha256()

    @property
    def count(self) -> int:
        return self._pat.offset

    def next_piece(self, limit: int) -> bytes:
        """The next piece to write: random size, at most ``limit`` bytes."""
        top = self.max_write * 8 if self._rng.random() < 0.02 else self.max_write
        n = min(log_uniform(self._rng, top), limit)
        data = self._pat.take(n)
        self.sha.update(data)
        return data


def log_uniform(rng: random.Random, top: int) -> int:
    """An integer in 1..top, log-uniformly distributed (many small, some large)."""
    return max(1, min(top, int(math.exp(rng.uniform(0.0, math.log(top + 1))))))
