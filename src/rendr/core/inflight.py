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
them stale, rebuilt (in C, ``itertools.accumulate``) at the next query.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import accumulate
from operator import sub
from typing import Final

__all__ = ["InflightIndex"]

_COMPACT: Final = 1024  # dropped entries before the lists are compacted


class InflightIndex:
    """The ranges of ``PathState.inflight`` (kept in step by :class:`~.recovery.Recovery`).

    Attributes:
        examined: ranges looked at one by one by :meth:`covered` (a cost counter).
    """

    __slots__ = ("_cum", "_ends", "_fresh", "_head", "_longest", "_starts", "examined")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._cum: list[int] = [0]  # _cum[k]: bytes of entries [0, k) (when _fresh)
        self._fresh = True
        self._head = 0  # entries below it were dropped
        self._longest = 0
        self.examined = 0

    def __len__(self) -> int:
        return len(self._starts) - self._head

    def append(self, start: int, end: int) -> None:
        """A range at the top (its start at or above every other one's)."""
        self._starts.append(start)
        self._ends.append(end)
        if self._fresh:
            self._cum.append(self._cum[-1] + end - start)
        if end - start > self._longest:
            self._longest = end - start

    def insert(self, pos: int, start: int, end: int) -> None:
        """A range at position ``pos`` (0: the front) of the remaining ones."""
        k = self._head + pos
        self._starts.insert(k, start)
        self._ends.insert(k, end)
        self._fresh = False
        if end - start > self._longest:
            self._longest = end - start

    def popleft(self) -> None:
        """Drop the front range."""
        head = self._head + 1
        starts = self._starts
        if head == len(starts):
            self.clear()
            return
        self._head = head
        if head > _COMPACT and 2 * head > len(starts):
            del starts[:head]
            del self._ends[:head]
            if self._fresh:
                del self._cum[:head]
            self._head = 0

    def clear(self) -> None:
        self._starts.clear()
        self._ends.clear()
        self._cum = [0]
        self._fresh = True
        self._head = 0
        self._longest = 0

    def covered(self, ranges: Sequence[tuple[int, int]]) -> int:
        """Bytes of the ranges that lie within ``ranges`` (sorted, disjoint), a range
        present twice counted twice."""
        starts = self._starts
        ends = self._ends
        head = self._head
        if head == len(starts):
            return 0
        if not self._fresh:
            if head:
                del starts[:head]
                del ends[:head]
                self._head = head = 0
            self._cum = list(accumulate(map(sub, ends, starts), initial=0))
            self._fresh = True
        cum = self._cum
        longest = self._longest
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
        self.examined += examined
        return total
