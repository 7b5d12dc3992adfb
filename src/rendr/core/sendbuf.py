"""The send buffer: every byte the application wrote, kept until the peer acknowledges it.

Bytes are addressed by their absolute stream offset.  Large writes are kept as
the caller's own immutable ``bytes`` object (no copy); small writes are gathered
and joined into one chunk the first time they are needed for a frame, so a
stream of 1-byte writes does not become millions of chunks.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Final

__all__ = ["SendBuffer"]

_COALESCE_BELOW: Final = 16 * 1024


class SendBuffer:
    """Bounded-by-caller store of unacknowledged stream bytes.

    Attributes:
        base: offset of the first byte still held (everything below is acknowledged).
        end: offset one past the last byte written.
    """

    __slots__ = ("_datas", "_head", "_starts", "_tail", "_tail_start", "base", "end")

    def __init__(self) -> None:
        self.base = 0
        self.end = 0
        self._starts: list[int] = []
        self._datas: list[bytes | memoryview] = []
        self._head = 0
        self._tail: list[bytes | memoryview] = []
        self._tail_start = 0

    def __len__(self) -> int:
        return self.end - self.base

    def append(self, data: bytes | memoryview) -> None:
        """Store ``data`` (which the caller must never mutate afterwards) at :attr:`end`."""
        n = len(data)
        if not n:
            return
        if n < _COALESCE_BELOW:
            if not self._tail:
                self._tail_start = self.end
            self._tail.append(data)  # joined (once) when first needed for a frame
        else:
            self._seal()
            self._starts.append(self.end)
            self._datas.append(data)
        self.end += n

    def _seal(self) -> None:
        if self._tail:
            joined = self._tail[0] if len(self._tail) == 1 else b"".join(self._tail)
            self._tail = []
            self._starts.append(self._tail_start)
            self._datas.append(joined)

    def ack(self, offset: int) -> None:
        """Forget every byte below ``offset``."""
        if offset <= self.base:
            return
        offset = min(offset, self.end)
        self.base = offset
        starts = self._starts
        datas = self._datas
        h = self._head
        n = len(starts)
        while h < n and starts[h] + len(datas[h]) <= offset:
            datas[h] = b""
            h += 1
        if h >= n and self._tail and self._tail_start + sum(map(len, self._tail)) <= offset:
            self._tail = []
        self._head = h
        if h > 64 and h * 2 > n:
            del starts[:h]
            del datas[:h]
            self._head = 0

    def view(self, start: int, end: int) -> list[bytes | memoryview]:
        """Buffers covering ``[start, end)``; ``base <= start < end <= self.end``."""
        self._seal()
        starts = self._starts
        datas = self._datas
        i = len(starts) - 1
        if starts[i] > start:  # not in the newest chunk (where new data is): search
            i = bisect_right(starts, start, self._head) - 1
        out: list[bytes | memoryview] = []
        pos = start
        while pos < end:
            cs = starts[i]
            d = datas[i]
            lo = pos - cs
            hi = min(len(d), end - cs)
            if lo == 0 and hi == len(d):
                out.append(d)
            else:
                out.append(memoryview(d)[lo:hi])
            pos = cs + hi
            i += 1
        return out
