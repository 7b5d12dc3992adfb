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
    """The last ``size`` numbers behind the highest one marked (see the module)."""

    __slots__ = ("_mask", "_seen", "size", "top")

    def __init__(self, size: int) -> None:
        self.size = size
        self._mask = (1 << size) - 1
        self.top = -1  # the highest number marked
        self._seen = 0  # bit i: number top - i was marked

    def check(self, number: int) -> int:
        """:data:`NEW`, :data:`REPEAT` or :data:`TOO_OLD` (nothing changes)."""
        back = self.top - number
        if back < 0:
            return NEW
        if back >= self.size:
            return TOO_OLD
        return REPEAT if (self._seen >> back) & 1 else NEW

    def mark(self, number: int) -> None:
        """Remember ``number`` (checked :data:`NEW` just before)."""
        top = self.top
        if number > top:
            shift = number - top
            self._seen = ((self._seen << shift) | 1) & self._mask if shift < self.size else 1
            self.top = number
        else:
            self._seen |= 1 << (top - number)
