"""The receive side of a stream: reorder, de-duplicate, deliver in order.

Pieces arrive addressed by byte offset, possibly out of order (data drains from
an old path while new data already arrives on the new one) and possibly twice
(what was in flight on a dead path is re-sent).  In-order bytes go to a ready
queue that the application reads; bytes above the next expected offset wait in
a reorder store.  In-order pieces are kept without copying: they must not be
mutated while referenced (``bytes``, or read-only views of a carrier's receive
buffer, which the carrier reuses only once unreferenced).  Small out-of-order
pieces from such buffers are copied, so many tiny pieces held across a gap never
pin many carrier buffers; large ones (a planned migration's new-path data) are
kept as views.

Reading copies each byte once, into a fresh ``bytes`` (:meth:`ReceiveBuffer.read`)
or into the caller's buffer (:meth:`ReceiveBuffer.readinto`), except that a
piece which is a whole ``bytes`` object is handed out as it is.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from ..errors import ProtocolError
from .rangeset import RangeSet

__all__ = ["FRAGMENT_OVERHEAD", "MAX_GAPS", "MIN_GAP_BYTES", "ReceiveBuffer", "gap_limit"]

FRAGMENT_OVERHEAD: Final = 400
"""Bytes an out-of-order fragment costs besides its payload (dict entry, view, range):
counted against the reorder budget, so a peer sending tiny fragments runs out of
budget long before it runs the listener out of memory.  A small piece that continues
a held one is appended to it instead (:data:`MERGE_MAX`) and costs only its payload."""

MAX_GAPS: Final = 1024
"""The most disjoint out-of-order ranges a stream holds when what it holds out of
order is thin (:data:`MIN_GAP_BYTES`), and the fewest :func:`gap_limit` allows.
Honest reordering on byte-stream paths (data from a new path ahead of what a dead
path lost) leaves a few gaps, one per failover; every piece beside a held range
merges with it.  Past this, tiny pieces are a peer fragmenting on purpose: each
insert would shift ever more ranges, for a byte or two of data each."""

MIN_GAP_BYTES: Final = 512
"""Beyond :data:`MAX_GAPS` gaps, the bytes held out of order must average at least
this many per gap (a lossy datagram path's gaps come one per lost datagram, with
~1.1 KiB or more between them; datagram packing makes some pieces tiny, so this is
not asked of each piece): the work a peer can make the receiver do stays
proportional to the bytes it sends."""

GAP_BYTES: Final = 2048
"""Reorder budget per allowed gap (:func:`gap_limit`): with the budget at two windows,
one gap per KiB of window."""


def gap_limit(reorder_budget: int) -> int:
    """The most disjoint out-of-order ranges a stream with this reorder budget holds:
    :data:`MAX_GAPS`, or one per KiB of window if that is more (beyond :data:`MAX_GAPS`,
    while the bytes held average :data:`MIN_GAP_BYTES` per gap).  On a datagram path every lost
    datagram is a gap until it is re-sent, so an honest peer may leave one gap per
    datagram it has in flight: up to a window's worth of ~1.1 KiB datagrams (a
    startup overshooting a shallow queue left 1025 gaps, and a 1024 cap ended that
    healthy flow).  Past the limit the peer is fragmenting on purpose."""
    return max(MAX_GAPS, reorder_budget // GAP_BYTES)

MAX_COMPARE_PIECES: Final = 64
"""Most buffered pieces one duplicate is compared against (from the newest back):
the check costs bounded work per frame however the peer slices its data."""

_PIN_MIN = 64 * 1024
"""Out-of-order pieces smaller than this are copied rather than kept as views."""

MERGE_MAX: Final = 4096
"""An out-of-order piece smaller than :data:`FRAGMENT_OVERHEAD` that starts where a
held one ends is appended to it (a copy) while the two make at most this many bytes:
many small frames behind one gap (small writes, honest) then cost the reorder budget
about their payload, not 400 B each, and each merge copies at most this much.
Larger pieces are held as they are (their overhead is at most their size, so an
honest peer's in-window data stays within twice the window)."""


class ReceiveBuffer:
    """Reorder buffer and ready queue of one stream direction.

    Attributes:
        offset: every byte below this offset has been received (the cumulative ACK).
        read_offset: every byte below this offset has been read by the application.
        dups: pieces that carried at least one byte received before.
        dup_bytes: bytes received more than once.
        reorder_hwm: the most bytes ever held out of order.
        highest: one past the highest byte offset ever received.
    """

    __slots__ = ("_budget", "_max_gaps", "_ooo", "_ooo_bytes", "_ooo_cost", "_ooo_ranges",
                 "_ooo_tail",
                 "_ready",
                 "dup_bytes", "dups", "highest", "offset", "read_offset", "ready_bytes",
                 "reorder_hwm")

    def __init__(self, reorder_budget: int = 0) -> None:
        self._budget = reorder_budget  # 0: unbounded
        self._max_gaps = gap_limit(reorder_budget)
        self._ooo_cost = 0
        self.offset = 0
        self.highest = 0
        self.read_offset = 0
        self.ready_bytes = 0
        self._ready: deque[bytes | memoryview] = deque()
        self._ooo: dict[int, bytes | memoryview] = {}
        self._ooo_tail: dict[int, int] = {}  # end -> start of held pieces below MERGE_MAX
        self._ooo_ranges = RangeSet()
        self._ooo_bytes = 0
        self.dups = 0
        self.dup_bytes = 0
        self.reorder_hwm = 0

    @property
    def buffered(self) -> int:
        """Bytes held: ready for the application plus out of order."""
        return self.ready_bytes + self._ooo_bytes

    def sack_ranges(self, most: int) -> list[tuple[int, int]]:
        """Out-of-order ranges received, for selective ACK: all of them if there are
        at most ``most``, else the lowest half and the highest half (ascending).  The
        lowest say what holds the cumulative offset back; the highest what arrived
        last (TCP's first SACK block, QUIC's largest acknowledged): with only the
        lowest, a path striped next to a slower one (BOND) had its newest data
        acknowledged late, in bursts, which skewed its delivery rate and RTT."""
        ranges = self._ooo_ranges
        if len(ranges) <= most:
            return ranges.as_list()
        low = most // 2
        return ranges.as_list(low) + ranges.highest(most - low)

    def receive(self, offset: int, piece: bytes | memoryview) -> int:
        """Take a piece; return how many bytes became ready for the application."""
        n = len(piece)
        end = offset + n
        cur = self.offset
        if end <= cur:
            self.dups += 1
            self.dup_bytes += n
            self._check_ready(offset, piece)
            return 0
        dup = False
        if offset < cur:
            dup = True
            self.dup_bytes += cur - offset
            self._check_ready(offset, piece[: cur - offset])
            piece = piece[cur - offset :]
            offset = cur
        if end > self.highest:
            self.highest = end
        if offset == cur and not self._ooo:
            self.dups += dup
            self._ready.append(piece)
            self.offset = end
            self.ready_bytes += end - cur
            return end - cur
        return self._receive_slow(offset, end, piece, dup)

    def _receive_slow(self, offset: int, end: int, piece: bytes | memoryview,
                      dup: bool) -> int:
        novel = self._ooo_ranges.missing(offset, end)
        got = sum(e - s for s, e in novel)
        if got < end - offset:
            dup = True
            self.dup_bytes += end - offset - got
            self._check_held(offset, end, piece, novel)
        self.dups += dup
        keep = piece
        if isinstance(piece, memoryview) and len(piece) < _PIN_MIN and not isinstance(
                piece.obj, bytes):
            keep = memoryview(piece.tobytes())  # a small piece must not pin a whole buffer
        ooo = self._ooo
        tail = self._ooo_tail
        for s, e in novel:
            part = keep[s - offset : e - offset]
            at = tail.pop(s, -1)
            if at >= 0 and e - s < FRAGMENT_OVERHEAD and e - at <= MERGE_MAX:
                # a small piece continuing a held one: appended to it
                ooo[at] = bytes(ooo[at]) + bytes(part)
                tail[e] = at
                self._ooo_cost += e - s
            else:  # (a held piece ending at s can grow no more: s is taken now)
                ooo[s] = part
                if e - s < MERGE_MAX:
                    tail[e] = s
                self._ooo_cost += e - s + FRAGMENT_OVERHEAD
            self._ooo_ranges.add(s, e)
            self._ooo_bytes += e - s
        if self._budget and (self._ooo_cost > self._budget or self._too_many_gaps()):
            raise ProtocolError(
                f"out-of-order data beyond the reorder budget ({len(self._ooo)} fragments, "
                f"{len(self._ooo_ranges)} gaps, {self._ooo_cost} B accounted)")
        start = self.offset
        while self.offset in ooo:
            p = ooo.pop(self.offset)
            self._ready.append(p)
            self.offset += len(p)
            if tail.get(self.offset) == self.offset - len(p):
                del tail[self.offset]
            self._ooo_cost -= len(p) + FRAGMENT_OVERHEAD
        moved = self.offset - start
        if moved:
            self._ooo_ranges.remove_below(self.offset)
            self._ooo_bytes -= moved
            self.ready_bytes += moved
        # sampled after delivery: a piece that fills a gap was never held out of order
        if self._ooo_bytes > self.reorder_hwm:
            self.reorder_hwm = self._ooo_bytes
        return moved

    def _too_many_gaps(self) -> bool:
        """Whether more disjoint ranges are held out of order than the limits allow."""
        gaps = len(self._ooo_ranges)
        return gaps > MAX_GAPS and (gaps > self._max_gaps
                                    or gaps * MIN_GAP_BYTES > self._ooo_bytes)

    # ------------------------------------------------ duplicates (RFC 9000, 2.2)

    def _check_ready(self, offset: int, dup: bytes | memoryview) -> None:
        """``dup`` (at ``offset``, below :attr:`offset`) must equal what the ready queue
        still holds of those bytes (bytes already read are gone: not compared).

        Raises:
            ProtocolError: different bytes at an offset already received.
        """
        pos = self.offset  # end of the newest ready piece
        for seen, p in enumerate(reversed(self._ready)):
            start = pos - len(p)
            if pos <= offset or seen == MAX_COMPARE_PIECES:
                return
            lo = max(start, offset)
            hi = min(pos, offset + len(dup))
            if lo < hi:
                mv = p if isinstance(p, memoryview) else memoryview(p)
                if mv[lo - start : hi - start] != dup[lo - offset : hi - offset]:
                    raise ProtocolError(f"different bytes re-sent at offset {lo}")
            pos = start

    def _check_held(self, offset: int, end: int, piece: bytes | memoryview,
                    novel: list[tuple[int, int]]) -> None:
        """The parts of ``piece`` already held out of order must equal the held copy
        (the held pieces of a range are chained by their start offsets; at most
        MAX_COMPARE_PIECES of them are visited)."""
        pos = offset
        checked = 0
        ooo = self._ooo
        for s, e in [*novel, (end, end)]:
            if pos < s:  # [pos, s) is held already, in one held range
                at = self._ooo_ranges.start_of(pos)
                while at is not None and at < s and checked < MAX_COMPARE_PIECES:
                    held = ooo.get(at)
                    if held is None:
                        break
                    checked += 1
                    lo, hi = max(at, pos), min(at + len(held), s)
                    if lo < hi and (held[lo - at : hi - at]
                                    != piece[lo - offset : hi - offset]):
                        raise ProtocolError(f"different bytes re-sent at offset {lo}")
                    at += len(held)
            pos = e

    def read(self, max_bytes: int) -> bytes:
        """Take up to ``max_bytes`` in-order bytes (``b""`` when none are ready)."""
        ready = self._ready
        if not ready:
            return b""
        first = ready[0]
        n = len(first)
        if n >= max_bytes:
            if n == max_bytes:
                ready.popleft()
                out = _as_bytes(first)
            else:
                mv = first if isinstance(first, memoryview) else memoryview(first)
                ready[0] = mv[max_bytes:]
                out = bytes(mv[:max_bytes])
        elif len(ready) == 1 or _is_whole(first):
            ready.popleft()  # a whole bytes object goes out as it is, without a copy
            out = _as_bytes(first)
        else:
            parts = []
            total = 0
            while ready and total + len(ready[0]) <= max_bytes:
                p = ready.popleft()
                parts.append(p)
                total += len(p)
            if ready and total < max_bytes:
                p = ready[0]
                mv = p if isinstance(p, memoryview) else memoryview(p)
                take = max_bytes - total
                parts.append(mv[:take])
                ready[0] = mv[take:]
            out = b"".join(parts)
        self.ready_bytes -= len(out)
        self.read_offset += len(out)
        return out

    def read_view(self, max_bytes: int) -> memoryview:
        """Take up to ``max_bytes`` in-order bytes without copying: a read-only view of
        the first ready piece (or of its first ``max_bytes``); empty when none are ready.
        The view keeps its memory alive (receive buffers are reused only once nothing
        refers to them, :mod:`.bufpool`)."""
        ready = self._ready
        if not ready:
            return memoryview(b"")
        first = ready[0]
        mv = first if isinstance(first, memoryview) else memoryview(first)
        n = len(mv)
        if n > max_bytes:
            ready[0] = mv[max_bytes:]
            mv = mv[:max_bytes]
            n = max_bytes
        else:
            ready.popleft()
        self.ready_bytes -= n
        self.read_offset += n
        return mv if mv.readonly else mv.toreadonly()

    def readinto(self, dest: memoryview) -> int:
        """Copy up to ``len(dest)`` in-order bytes into ``dest``; return how many."""
        ready = self._ready
        room = len(dest)
        got = 0
        while ready and got < room:
            p = ready[0]
            n = len(p)
            if got + n <= room:
                ready.popleft()
                dest[got : got + n] = p
                got += n
            else:
                take = room - got
                mv = p if isinstance(p, memoryview) else memoryview(p)
                dest[got:room] = mv[:take]
                ready[0] = mv[take:]
                got = room
        self.ready_bytes -= got
        self.read_offset += got
        return got


def _is_whole(piece: bytes | memoryview) -> bool:
    """A piece worth handing out alone, uncopied: a large whole bytes object (a small
    one, such as the deframer's copy of a small payload, is joined with what follows)."""
    if isinstance(piece, bytes):
        return len(piece) >= _PIN_MIN
    obj = piece.obj
    return isinstance(obj, bytes) and len(obj) == len(piece)


def _as_bytes(piece: bytes | memoryview) -> bytes:
    if isinstance(piece, bytes):
        return piece
    obj = piece.obj
    if isinstance(obj, bytes) and len(obj) == len(piece):
        return obj
    return piece.tobytes()
