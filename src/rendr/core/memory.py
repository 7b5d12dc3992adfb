"""A listener-wide receive-memory budget shared by its flows.

Each flow's receiver *promises* memory when it advertises a window: up to
``advertised max offset - read offset`` bytes may arrive and wait for the
application.  :class:`MemoryBudget` keeps the sum of those promises below
``limit``: a flow whose window would grow past what is free gets only what is
free, but always enough to hold ``floor`` bytes beyond what its application has
read, so every flow keeps moving (at least ``floor`` per round trip) however many
flows there are.  Windows are never taken back (a peer may already have sent up
to an advertised offset): under pressure they just stop growing until the
applications read.  Worst case held: ``limit + flows * floor``.
"""

from __future__ import annotations

__all__ = ["MemoryBudget"]


class MemoryBudget:
    """Promised receive memory of every flow of one listener.

    Attributes:
        limit: the most bytes all windows together may promise (beyond floors).
        floor: the window every flow may always have beyond what it read.
        promised: bytes promised now.
        throttled: window grants cut short by the budget so far.
    """

    __slots__ = ("floor", "limit", "promised", "throttled")

    def __init__(self, limit: int, floor: int) -> None:
        self.limit = limit
        self.floor = floor
        self.promised = 0
        self.throttled = 0

    def grant(self, want: int, floor_room: int) -> int:
        """Grow a flow's window by up to ``want`` bytes; ``floor_room`` is how much it
        may grow whatever the pressure (to ``floor`` beyond what it read).  Returns
        the growth granted (now promised)."""
        free = self.limit - self.promised
        allowed = want if want <= free else max(free, floor_room, 0)
        if allowed > want:
            allowed = want
        if allowed < want:
            self.throttled += 1
        self.promised += allowed
        return allowed

    def release(self, n: int) -> None:
        """``n`` promised bytes were read (or their flow ended)."""
        self.promised -= n
