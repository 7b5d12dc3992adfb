"""Flow events as an async iterator (``async for event in conn.events()``)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from ..core.events import Event, EventKind

__all__ = ["EventStream"]


class EventStream:
    """Events of one connection from the moment it was created; ends after CLOSED.

    At most ``maxlen`` events wait for the consumer: older ones are dropped
    (counted in :attr:`dropped`), so a consumer that stops reading during a
    long flapping outage costs bounded memory.
    """

    def __init__(self, subscribe: Callable[[Callable[[Event], None]], Callable[[], None]],
                 closed: bool, maxlen: int = 1024) -> None:
        self._queue: deque[Event] = deque()
        self._maxlen = maxlen
        self._wake = asyncio.Event()
        self._done = closed
        self.dropped = 0
        self._unsubscribe = subscribe(self._on_event) if not closed else (lambda: None)

    def _on_event(self, event: Event) -> None:
        if len(self._queue) >= self._maxlen:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(event)
        self._wake.set()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while not self._queue:
            if self._done:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        event = self._queue.popleft()
        if event.kind is EventKind.CLOSED:
            self._done = True
            self._queue.clear()
            self.aclose_now()
        return event

    def aclose_now(self) -> None:
        """Stop listening (the iterator ends once the queued events are taken)."""
        self._done = True
        self._unsubscribe()
        self._wake.set()

    async def aclose(self) -> None:
        """Stop listening (``async with contextlib.aclosing(...)`` friendly)."""
        self.aclose_now()
