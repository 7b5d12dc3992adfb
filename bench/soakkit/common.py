"""Pieces both roles share: the flow header, connection descriptions, event logs."""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import rendr

from .pattern import Sender, log_uniform

HEADER = struct.Struct("!8sQIII")
"""What a client writes first on every flow: magic, seed, process, slot, generation."""
MAGIC = b"RSOAK001"


def flow_key(proc: int, slot: int, gen: int) -> str:
    return f"{proc}.{slot}.{gen}"


def describe(conn: rendr.Conn | None) -> dict[str, Any]:
    """A connection's state for an error report."""
    if conn is None:
        return {}
    try:
        s = conn.stats()
    except Exception as exc:  # a diagnostic must not raise
        return {"stats_error": repr(exc)}
    return {
        "state": str(s.state), "active": s.active_path, "migrations": s.migration_count,
        "recv_dups": s.recv_dups, "written": s.bytes_written, "read": s.bytes_read,
        "unacked": s.unacked_bytes, "recv_queue_hwm": s.recv_queue_hwm,
        "paths": [
            {"id": p.id, "state": p.state, "remote": p.remote_addr, "local": p.local_addr,
             "suspect": p.suspect, "down_cause": p.down_cause, "srtt": p.srtt,
             "last_recv_age": round(p.last_recv_age, 3), "sent": p.bytes_sent,
             "received": p.bytes_received, "retransmits": p.retransmits}
            for p in s.paths[-8:]],
    }


class EventLog:
    """The latest events of one connection (for error reports) and counts by kind."""

    __slots__ = ("counts", "recent", "t0")

    def __init__(self, t0: float, maxlen: int = 60) -> None:
        self.t0 = t0
        self.recent: deque[str] = deque(maxlen=maxlen)
        self.counts: dict[str, int] = {}

    def __call__(self, ev: rendr.Event) -> None:
        kind = str(ev.kind)
        if ev.kind is rendr.EventKind.MIGRATION and ev.cause:
            kind = f"migration:{ev.cause}"
        self.counts[kind] = self.counts.get(kind, 0) + 1
        parts = [f"{time.monotonic() - self.t0:9.3f}", str(ev.kind)]
        if ev.path_id is not None:
            parts.append(f"path={ev.path_id}")
        if ev.kind is rendr.EventKind.MIGRATION:
            parts.append(f"{ev.old_path}->{ev.new_path}")
        if ev.cause:
            parts.append(f"cause={ev.cause}")
        if ev.detail:
            parts.append(ev.detail[:160])
        if ev.error is not None:
            parts.append(f"error={type(ev.error).__name__}: {ev.error}")
        self.recent.append(" ".join(parts))

    def note(self, text: str) -> None:
        self.recent.append(f"{time.monotonic() - self.t0:9.3f} {text}")


def add_counts(into: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def exc_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def first_failure(tasks: list[asyncio.Task[None]]) -> None:
    """Wait for every task; raise the first exception as soon as one task fails."""
    await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in tasks:
        exc = task.exception() if task.done() and not task.cancelled() else None
        if exc is not None:
            raise exc
    await asyncio.gather(*tasks)


async def run_until(main: list[asyncio.Task[None]], side: list[asyncio.Task[None]],
                    stop: asyncio.Event) -> list[str]:
    """Wait until every ``main`` task has finished, then set ``stop`` and cancel the
    ``side`` tasks; raise as soon as any task (main or side) fails.  Returns the names
    of side tasks that returned normally although cancelled (a cancellation lost
    inside an awaited call: they ended only because they also watch ``stop``)."""
    pending: set[asyncio.Task[None]] = set(main) | set(side)
    lost: list[str] = []
    try:
        while not all(t.done() for t in main):
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception() if not task.cancelled() else None
                if exc is not None:
                    raise exc
    finally:
        stop.set()
        running = [t for t in side if not t.done()]
        for task in running:
            task.cancel()
        if running:
            _, stuck = await asyncio.wait(running, timeout=30)
            if stuck:
                raise RuntimeError(f"{', '.join(t.get_name() for t in stuck)} still running "
                                   "30 s after cancel()")
        lost = [t.get_name() for t in running if not t.cancelled() and t.exception() is None]
    for task in side:
        exc = task.exception() if not task.cancelled() else None
        if exc is not None:
            raise exc
    return lost


async def sleep_until(when: float, going: Callable[[], bool]) -> None:
    """Sleep until loop time ``when``, or less as soon as ``going()`` is false (checked
    every quarter of a second)."""
    loop = asyncio.get_running_loop()
    while True:
        left = when - loop.time()
        if left <= 0 or not going():
            return
        await asyncio.sleep(min(left, 0.25))


async def send_bursts(conn: rendr.Conn, sender: Sender, rng: random.Random, burst: int,
                      idle: tuple[float, float], going: Callable[[], bool]) -> None:
    """Write ``sender``'s stream in bursts of random-sized writes, with random silences
    between bursts, while ``going()``; then ``write_eof()``."""
    loop = asyncio.get_running_loop()
    while going():
        left = log_uniform(rng, burst)
        while left > 0 and going():
            data = sender.next_piece(left)
            await conn.write(data)
            left -= len(data)
        await sleep_until(loop.time() + rng.uniform(*idle), going)
    await conn.write_eof()
