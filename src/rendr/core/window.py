"""A sliding window of the numbers seen: which packet numbers already arrived.

Both the datagram layer (:mod:`.dgram`: a replayed datagram is dropped) and packet
mode (:mod:`.packets`: a packet's copy from another path is dropped) remember the
last ``size`` numbers behind the highest one seen, as a bitmap; anything older is
treated as seen (it cannot be told from a repeat).  Checking and marking are
separate, so a caller can check, then authenticate, then mark.
"""

from __future__ import annotations

from typing import Final

__all__ = ["NEW", "REPEAT", "TOO_OLD", "SeenWindow"]

NEW: Final = 0
""":meth:`SeenWindow.check`: not seen yet."""
REPEAT: Final = 1
""":meth:`SeenWindow.check`: seen within the window."""
TOO_OLD: Final = 2
""":meth:`SeenWindow.check`: older than the window (dropped as a possible repeat)."""


class SeenWindow:
    """The last ``size`` numbers behind the highest one marked (see the module).

    A ring of ``size`` bits (``size``: a power of two, at least 8): number ``n`` is bit
    ``n % size``.  Marking a number above the top clears the bits of the numbers it
    skips (they belonged to numbers ``size`` behind), so checking and marking cost the
    same at any window size and memory is ``size / 8`` bytes.
    """

    __slots__ = ("_bits", "_mask", "size", "top")

    def __init__(self, size: int) -> None:
        if size < 8 or size & (size - 1):
            raise ValueError(f"window size {size} is not a power of two >= 8")
        self.size = size
        self._mask = size - 1
        self._bits = bytearray(size >> 3)
        self.top = -1  # the highest number marked

    def check(self, number: int) -> int:
        """:data:`NEW`, :data:`REPEAT` or :data:`TOO_OLD` (nothing changes)."""
        back = self.top - number
        if back < 0:
            return NEW
        if back >= self.size:
            return TOO_OLD
        i = number & self._mask
        return REPEAT if (self._bits[i >> 3] >> (i & 7)) & 1 else NEW

    def mark(self, number: int) -> None:
        """Remember ``number`` (checked :data:`NEW` just before)."""
        top = self.top
        if number > top:
            if number - top > 1:
                self._forget(top + 1, number)
            self.top = number
        i = number & self._mask
        self._bits[i >> 3] |= 1 << (i & 7)

    def _forget(self, lo: int, hi: int) -> None:
        """Clear the bits of numbers ``lo`` .. ``hi - 1`` (skipped by a jump)."""
        size = self.size
        if hi - lo >= size:
            self._bits[:] = bytes(size >> 3)
            return
        a = lo & self._mask
        b = a + (hi - lo)
        if b <= size:
            self._clear(a, b)
        else:
            self._clear(a, size)
            self._clear(0, b - size)

    def _clear(self, a: int, b: int) -> None:
        bits = self._bits
        while a < b and a & 7:
            bits[a >> 3] &= ~(1 << (a & 7)) & 0xFF
            a += 1
        while b > a and b & 7:
            b -= 1
            bits[b >> 3] &= ~(1 << (b & 7)) & 0xFF
        if a < b:
            bits[a >> 3 : b >> 3] = bytes((b - a) >> 3)
