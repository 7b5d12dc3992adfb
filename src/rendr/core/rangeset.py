"""Sorted, disjoint half-open integer ranges ``[start, end)``."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator

__all__ = ["RangeSet"]


class RangeSet:
    """A set of integers stored as sorted, disjoint, non-adjacent ranges."""

    __slots__ = ("_ranges",)

    def __init__(self, ranges: list[tuple[int, int]] | None = None) -> None:
        self._ranges: list[tuple[int, int]] = []
        for s, e in ranges or []:
            self.add(s, e)

    @staticmethod
    def from_sorted(ranges: list[tuple[int, int]]) -> RangeSet:
        """A set of ``ranges`` that are already sorted, disjoint and non-adjacent
        (not checked: linear, for validated input)."""
        out = RangeSet()
        out._ranges = list(ranges)
        return out

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def __len__(self) -> int:
        return len(self._ranges)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(list(self._ranges))

    def __repr__(self) -> str:
        return f"RangeSet({self._ranges!r})"

    def total(self) -> int:
        """Number of integers in the set."""
        return sum(e - s for s, e in self._ranges)

    def first(self) -> tuple[int, int]:
        """The lowest range. Raises IndexError when empty."""
        return self._ranges[0]

    def add(self, start: int, end: int) -> None:
        """Add ``[start, end)``, merging with overlapping or adjacent ranges."""
        if start >= end:
            return
        r = self._ranges
        # first range whose end >= start (could merge)
        i = bisect_left(r, (start,)) - 1
        if i < 0 or r[i][1] < start:
            i += 1
        j = i
        while j < len(r) and r[j][0] <= end:
            start = min(start, r[j][0])
            end = max(end, r[j][1])
            j += 1
        r[i:j] = [(start, end)]

    def subtract(self, start: int, end: int) -> None:
        """Remove ``[start, end)`` from the set."""
        if start >= end or not self._ranges:
            return
        r = self._ranges
        i = bisect_right(r, (start,)) - 1
        if i < 0:
            i = 0
        out: list[tuple[int, int]] = []
        j = i
        while j < len(r) and r[j][0] < end:
            s, e = r[j]
            if e > start:
                if s < start:
                    out.append((s, start))
                if e > end:
                    out.append((end, e))
            else:
                out.append((s, e))
            j += 1
        r[i:j] = out

    def remove_below(self, offset: int) -> None:
        """Remove every integer lower than ``offset``."""
        r = self._ranges
        k = 0
        while k < len(r) and r[k][1] <= offset:
            k += 1
        if k:
            del r[:k]
        if r and r[0][0] < offset:
            r[0] = (offset, r[0][1])

    def contains(self, value: int) -> bool:
        """Whether ``value`` is in the set."""
        r = self._ranges
        i = bisect_right(r, (value, float("inf"))) - 1
        return i >= 0 and r[i][0] <= value < r[i][1]

    def start_of(self, value: int) -> int | None:
        """The start of the range holding ``value`` (None if no range holds it)."""
        r = self._ranges
        i = bisect_right(r, (value, 1 << 62)) - 1
        if i >= 0 and r[i][0] <= value < r[i][1]:
            return r[i][0]
        return None

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` that are *not* in the set, in order."""
        out: list[tuple[int, int]] = []
        pos = start
        r = self._ranges
        i = max(bisect_right(r, (start,)) - 1, 0)
        while i < len(r) and pos < end:
            s, e = r[i]
            if e <= pos:
                i += 1
                continue
            if s >= end:
                break
            if s > pos:
                out.append((pos, s))
            pos = max(pos, e)
            i += 1
        if pos < end:
            out.append((pos, end))
        return out

    def pop_first(self, limit: int) -> tuple[int, int]:
        """Remove and return up to ``limit`` integers from the start of the lowest range."""
        s, e = self._ranges[0]
        if e - s > limit:
            self._ranges[0] = (s + limit, e)
            return s, s + limit
        del self._ranges[0]
        return s, e

    def as_list(self, most: int | None = None) -> list[tuple[int, int]]:
        """The ranges as a list (the lowest ``most`` of them)."""
        return list(self._ranges if most is None else self._ranges[:most])

    def highest(self, most: int) -> list[tuple[int, int]]:
        """The highest ``most`` ranges, ascending."""
        return self._ranges[-most:] if most > 0 else []
