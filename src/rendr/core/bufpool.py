"""Reused buffers: read (or decrypt, or seal) into memory that stays warm.

A stream carrier reads from its socket straight into a large ``bytearray`` and
hands the engine *views* of what arrived; the record layer (:mod:`.records`)
opens records into such buffers and seals them into others, whose views the
transport holds until they are written.  The engine keeps DATA payload views
without copying until the application reads them, so a buffer may only be
written again once nothing refers to it any more.  That is checked, not
assumed: every view handed out keeps the buffer's reference count raised (a
``memoryview`` holds its exporter), so a buffer whose count is back to the
owner's own references is free.

- A carrier fills its buffer front to back.  When it finds the buffer free at
  the next read it rewinds to the start, so an application that keeps up reads
  the same few hundred KiB again and again (cache-hot, no allocation).
- When the buffer's tail runs short while parts of it are still referenced, the
  buffer is retired to a shared list and the carrier takes another: a free
  retired one if there is one, else a new one.
- At the end of a loop iteration in which it received, a carrier gives a free
  buffer back to the shared pool, so an idle path holds no buffer at all; the
  pool keeps only a few spares.

This relies on CPython reference counts (``sys.getrefcount``), calibrated at
import (what "free" reads as, and that a live view is seen); where that fails,
buffers are never reused (each one is fresh), which is correct, only slower.
This module must stay interpreted (never compiled with mypyc: compiled code
holds borrowed references, which would change the counts).
"""

from __future__ import annotations

import sys
from collections import deque

__all__ = ["BUFFER_SIZE", "ReadBuffers", "shared", "trim"]

BUFFER_SIZE = 1024 * 1024
"""Size of one receive buffer (the most one socket read brings in).  1 MiB reads cost
a quarter of the per-read work of 256 KiB ones (docs/benchmarks.md)."""

MIN_READ = 32 * 1024
"""A read gets at least this much room: a shorter tail starts the next buffer."""

SPARES = 4
"""Free buffers kept for reuse, shared by all carriers of a process."""

RETIRED = 32
"""Referenced buffers remembered for reuse once freed (beyond this, left to the GC)."""


def _count_held(rb: ReadBuffers) -> int:
    """References to the buffer ``rb`` holds (the attribute, plus the call's argument)."""
    return sys.getrefcount(rb._buf)


def _count_oldest(queue: deque[bytearray]) -> int:
    """References to the oldest retired buffer (the deque's, plus the call's argument)."""
    return sys.getrefcount(queue[0])


_spares: list[bytearray] = []
_retired: deque[bytearray] = deque()
# never rebound (only mutated): the compiled driver imports it to test it before calling trim()


def _take() -> bytearray:
    """A free buffer: a spare, a retired one that was freed meanwhile, or a new one."""
    if _spares:
        return _spares.pop()
    retired = _retired
    for _ in range(min(len(retired), 4)):  # oldest first: the application reads in order
        if _count_oldest(retired) <= _FREE_OLDEST:
            return retired.popleft()
        retired.rotate(-1)
    return bytearray(BUFFER_SIZE)


def _retire(buf: bytearray) -> None:
    if not _REUSE:
        return
    retired = _retired
    # forget the oldest ones that are already free beyond the spares (memory goes back
    # to the allocator), and any beyond the cap (freed by the GC once unreferenced)
    while retired and (len(retired) >= RETIRED
                       or (len(_spares) >= SPARES and _count_oldest(retired) <= _FREE_OLDEST)):
        retired.popleft()
    retired.append(buf)


class ReadBuffers:
    """The receive buffer of one carrier: where the next socket read goes.

    Protocol: ``get()`` returns a writable view to read into; ``filled(n)``
    returns a read-only view of the ``n`` bytes that arrived there (valid for as
    long as the caller keeps it: the memory is not reused while it is referenced);
    ``release()`` (at the end of a loop iteration) gives a free buffer back.
    """

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf: bytearray | None = None
        self._pos = 0

    def get(self, need: int = MIN_READ) -> memoryview:
        """A view to write into: at least ``need`` bytes (``MIN_READ`` by default; at
        most ``BUFFER_SIZE``), at most ``BUFFER_SIZE``."""
        if self._buf is None:
            self._buf = _take() if _REUSE else bytearray(BUFFER_SIZE)
            self._pos = 0
        elif _REUSE and _count_held(self) <= _FREE_HELD:
            self._pos = 0  # nothing refers to what was read before: rewind
        elif len(self._buf) - self._pos < need:
            _retire(self._buf)
            self._buf = _take() if _REUSE else bytearray(BUFFER_SIZE)
            self._pos = 0
        pos = self._pos
        return memoryview(self._buf)[pos:] if pos else memoryview(self._buf)

    def get_buffer(self, sizehint: int) -> memoryview:
        """``asyncio.BufferedProtocol.get_buffer``: :meth:`get` (the hint is ignored: a
        read gets the room there is).  A carrier binds this as its own ``get_buffer``,
        so the loop calls it with no interpreted call in between; a carrier that holds
        no buffer (after a small read, the common case) takes a spare here at once."""
        if self._buf is None and _spares:  # spares exist only where buffers are reused
            buf = self._buf = _spares.pop()
            self._pos = 0
            return memoryview(buf)
        return self.get()

    def filled(self, nbytes: int) -> memoryview:
        """The ``nbytes`` just read into the view from :meth:`get`, read-only."""
        buf = self._buf
        assert buf is not None
        pos = self._pos
        self._pos = pos + nbytes
        return memoryview(buf)[pos : pos + nbytes].toreadonly()

    def copy_out(self, nbytes: int) -> bytes:
        """The ``nbytes`` just read into the view from :meth:`get`, as a copy (the room
        they took is reused by the next read).  If nothing else in the buffer was in
        use, the buffer goes straight back to the pool: this carrier then holds none."""
        buf = self._buf
        assert buf is not None
        pos = self._pos
        if pos:
            return memoryview(buf)[pos : pos + nbytes].tobytes()
        data = bytes(buf[:nbytes])  # cheaper than two views for a small read
        if _REUSE:
            # get() found it free (or fresh) and only the loop's own view of the room
            # it lent refers to it, which is dead before anyone's next get()
            if len(_spares) < SPARES:
                _spares.append(buf)
            self._buf = None
        return data

    def release(self) -> None:
        """Give the buffer back to the shared pool if nothing refers to it; also let
        the process-wide arenas (:func:`shared`) and retired buffers that became free
        go (idle paths then hold nothing, and the process keeps only the spares)."""
        self._give_back()
        if _REUSE:
            for arena in _arenas:
                arena._give_back()
            _trim_retired()

    def _give_back(self) -> None:
        if self._buf is not None and _REUSE and _count_held(self) <= _FREE_HELD:
            if len(_spares) < SPARES:
                _spares.append(self._buf)
            self._buf = None

    @property
    def held(self) -> int:
        """Bytes of buffer memory this carrier holds (0 when idle)."""
        return 0 if self._buf is None else len(self._buf)


_arenas: list[ReadBuffers] = []


def shared() -> ReadBuffers:
    """A process-wide arena (the record layer's: one thread seals and opens at a
    time), given back to the pool whenever a carrier releases its own buffer."""
    arena = ReadBuffers()
    _arenas.append(arena)
    return arena


def _trim_retired() -> None:
    """Retired buffers nothing refers to any more: become spares (up to SPARES) or go."""
    retired = _retired
    while retired and _count_oldest(retired) <= _FREE_OLDEST:
        buf = retired.popleft()
        if len(_spares) < SPARES:
            _spares.append(buf)


def trim() -> None:
    """Let retired buffers that were freed go (a front-end calls this after the
    application read: the read that drops the last view of a retired buffer may come
    after the carriers' last receive, and an idle path must not keep it listed)."""
    if _retired and _REUSE:
        _trim_retired()


def pool_stats() -> tuple[int, int]:
    """``(spare buffers, retired buffers)`` held by the shared pool (for tests and stats)."""
    return len(_spares), len(_retired)


def _calibrate() -> tuple[bool, int, int]:
    """Measure what "free" looks like on this interpreter, and check that a live view
    is seen; reuse is switched off if either check fails (correct, only slower)."""
    if not hasattr(sys, "getrefcount"):
        return False, 0, 0
    rb = ReadBuffers()
    rb._buf = bytearray(16)
    free_held = _count_held(rb)
    view = memoryview(rb._buf)[4:8]
    seen_held = _count_held(rb) > free_held
    queue: deque[bytearray] = deque([bytearray(16)])
    free_oldest = _count_oldest(queue)
    view2 = memoryview(queue[0])[2:]
    seen_oldest = _count_oldest(queue) > free_oldest
    del view, view2
    ok = seen_held and seen_oldest and _count_held(rb) == free_held
    return ok, free_held, free_oldest


_REUSE, _FREE_HELD, _FREE_OLDEST = _calibrate()
