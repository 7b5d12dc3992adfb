"""A ``wait_for`` that never swallows a cancellation.

``asyncio.wait_for`` before Python 3.12 returns the awaited result when it is already
there as the waiting task is cancelled, and the ``CancelledError`` is lost: a task
cancelled in ``conn.add_path()`` would go on as if it had not been (see
``bench/repro/add_path_lost_cancel.py``).  rendr waits with :func:`wait_for` below
instead:

- Python 3.11+: ``asyncio.timeout``, which tells its own cancellation from anyone
  else's (``Task.uncancel``); the awaitable runs inside the waiting task.
- Python 3.10: the awaitable runs as its own task and the caller waits on it with
  ``asyncio.wait``, which always lets a cancellation of the caller through.  A result
  that arrives after the caller gave up (cancelled or timed out) is handed to
  ``discard`` so that nothing it holds (a connected socket) leaks.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["wait_for"]

T = TypeVar("T")


async def wait_for_fallback(aw: Awaitable[T], timeout: float | None, *,
                            discard: Callable[[T], object] | None = None) -> T:
    """:func:`wait_for` for Pythons without ``asyncio.timeout`` (3.10); correct on
    every version (the tests run it on the newer ones too)."""
    if timeout is None:
        return await aw
    fut = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait((fut,), timeout=timeout)
    except asyncio.CancelledError:
        _give_up(fut, discard)
        raise
    if not done:
        _give_up(fut, discard)
        raise asyncio.TimeoutError
    return fut.result()


def _give_up(fut: asyncio.Future[T], discard: Callable[[T], object] | None) -> None:
    """Cancel ``fut``; a result it has or still produces goes to ``discard``."""
    fut.cancel()

    def late(f: asyncio.Future[T]) -> None:
        if f.cancelled() or f.exception() is not None:
            return
        if discard is not None:
            discard(f.result())

    fut.add_done_callback(late)


if sys.version_info >= (3, 11):

    async def wait_for(aw: Awaitable[T], timeout: float | None, *,
                       discard: Callable[[T], object] | None = None) -> T:
        """Await ``aw`` for at most ``timeout`` seconds (None: no limit).

        Unlike ``asyncio.wait_for`` before Python 3.12, a cancellation of the waiting
        task always propagates, even when ``aw`` has just finished.

        Args:
            discard: called with a result that came too late to be returned (Python
                3.10 only; on 3.11+ ``aw`` runs inside the caller and cannot outlive it).

        Raises:
            asyncio.TimeoutError: ``timeout`` passed first (``aw`` is cancelled).
            asyncio.CancelledError: the waiting task was cancelled.
        """
        async with asyncio.timeout(timeout):
            return await aw

else:  # pragma: no cover - Python 3.10
    wait_for = wait_for_fallback
