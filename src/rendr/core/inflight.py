"""An index of a path's in-flight ranges for selective-ACK accounting.

``PathState.inflight`` lists the ``(start, end)`` ranges a path carried and the
cumulative ACK has not covered, in start order (re-sends included: a range may be
there more than once).  Each ACK asks how many of those bytes its SACK ranges cover
(``PathState.sacked``).  Walking every in-flight range for that costs O(in flight)
per ACK: with a hole at the front of a few thousand datagrams in flight (a loss on a
fast UDP path) that was 7 ms of CPU per ACK, and the sender fell to a few hundred
kB/s.

:class:`InflightIndex` mirrors the ranges in lists (starts, ends, prefix sums of the
lengths) and remembers the longest range, ``L``.  A range that starts at or above a
SACK range's start and at or below its end minus ``L`` lies wholly inside it, so its
bytes come from the prefix sums; only the ranges starting within ``L`` below either
end of a SACK range are looked at one by one.  On a datagram path every range is at
most one datagram, so an ACK costs O(SACK ranges x log n).  Appending and dropping
from the front keep the prefix sums; a re-send inserted below newer ranges makes
them stale, so re-sends go to a second, smaller list of their own (rebuilt, in C
with ``itertools.accumulate``, at the next query after one was inserted): a recovery
episode costs O(re-sends) per ACK there, not O(in flight).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import accumulate
from operator import sub
from typing import Final

__all__ = ["InflightIndex"]

_COMPACT: Final = 1024  # dropped entries before the lists are compacted


class _Run:
    """Ranges sorted by start, with prefix sums of their lengths (see the module
    docstring)."""

    __slots__ = ("cum", "ends", "fresh", "head", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.cum: list[int] = [0]  # cum[k]: bytes of entries [0, k) (when fresh)
        self.fresh = True
        self.head = 0  # entries below it were dropped

    def __len__(self) -> int:
        return len(self.starts) - self.head

    def append(self, start: int, end: int) -> None:
        self.starts.append(start)
        self.ends.append(end)
        if self.fresh:
            self.cum.append(self.cum[-1] + end - start)

    def insert(self, start: int, end: int) -> None:
        starts = self.starts
        k = bisect_right(starts, start, self.head)
        starts.insert(k, start)
        self.ends.insert(k, end)
        self.fresh = False

    def pop(self, start: int, end: int) -> bool:
        """Drop ``(start, end)`` if it is at the front (False: it is not)."""
        starts = self.starts
        ends = self.ends
        head = self.head
        n = len(starts)
        if head == n or starts[head] != start:
            return False
        if ends[head] != end:  # another range with the same start is at the front
            k = head + 1
            while k < n and starts[k] == start and ends[k] != end:
                k += 1
            if k == n or starts[k] != start:
                return False
            ends[head], ends[k] = end, ends[head]  # same starts: order and sums hold
            self.fresh = False
        head += 1
        if head == n:
            self.clear()
            return True
        self.head = head
        if head > _COMPACT and 2 * head > n:
            del starts[:head]
            del ends[:head]
            if self.fresh:
                del self.cum[:head]
            self.head = 0
        return True

    def clear(self) -> None:
        self.starts.clear()
        self.ends.clear()
        self.cum = [0]
        self.fresh = True
        self.head = 0

    def covered(self, ranges: Sequence[tuple[int, int]], longest: int) -> tuple[int, int]:
        """``(bytes within ranges, ranges examined one by one)``; no range is longer
        than ``longest``."""
        starts = self.starts
        ends = self.ends
        head = self.head
        if head == len(starts):
            return 0, 0
        if not self.fresh:
            if head:
                del starts[:head]
                del ends[:head]
                self.head = head = 0
            self.cum = list(accumulate(map(sub, ends, starts), initial=0))
            self.fresh = True
        cum = self.cum
        total = 0
        examined = 0
        for rs, re in ranges:
            lo = bisect_right(starts, rs - longest, head)  # below: end <= rs
            hi = bisect_left(starts, re, lo)  # from there on: start >= re
            if lo == hi:
                continue
            a = bisect_left(starts, rs, lo, hi)  # [a, b): wholly inside
            b = bisect_right(starts, re - longest, a, hi) if re - longest >= rs else a
            total += cum[b] - cum[a]
            for k in range(lo, a):
                e = ends[k]
                if e > rs:
                    total += (e if e < re else re) - rs
            for k in range(b, hi):
                e = ends[k]
                total += (e if e < re else re) - starts[k]
            examined += (a - lo) + (hi - b)
        return total, examined


class InflightIndex:
    """The ranges of ``PathState.inflight`` (kept in step by :class:`~.recovery.Recovery`):
    those sent in offset order, and the re-sends inserted below them.

    Attributes:
        examined: ranges looked at one by one by :meth:`covered` (a cost counter).
    """

    __slots__ = ("_longest", "_main", "_side", "examined")

    def __init__(self) -> None:
        self._main = _Run()
        self._side = _Run()  # re-sends below the top of _main
        self._longest = 0
        self.examined = 0

    def __len__(self) -> int:
        return len(self._main) + len(self._side)

    def append(self, start: int, end: int) -> None:
        """A range whose start is at or above every other one's."""
        self._main.append(start, end)
        if end - start > self._longest:
            self._longest = end - start

    def insert(self, start: int, end: int) -> None:
        """A range below the top (a re-send)."""
        main = self._main
        if not main or start >= main.starts[-1]:
            main.append(start, end)
        else:
            self._side.insert(start, end)
        if end - start > self._longest:
            self._longest = end - start

    def popleft(self, start: int, end: int) -> None:
        """Drop ``(start, end)``, the range with the lowest start."""
        if not self._main.pop(start, end) and not self._side.pop(start, end):
            raise ValueError(f"({start}, {end}) is not at the front")
        if not self._main and not self._side:
            self._longest = 0

    def clear(self) -> None:
        self._main.clear()
        self._side.clear()
        self._longest = 0

    def covered(self, ranges: Sequence[tuple[int, int]]) -> int:
        """Bytes of the ranges that lie within ``ranges`` (sorted, disjoint), a range
        present twice counted twice."""
        total, examined = self._main.covered(ranges, self._longest)
        if self._side:
            more, seen = self._side.covered(ranges, self._longest)
            total += more
            examined += seen
        self.examined += examined
        return total
