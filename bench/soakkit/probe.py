"""What a child measures about itself: fds, asyncio tasks, objects, loop lag, CPU."""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import sys
from typing import Any


def count_fds() -> int:
    """Open file descriptors of this process (the listing's own fd not counted)."""
    return len(os.listdir("/proc/self/fd")) - 1


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (a relay holds 3 fds per path)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


class LagMonitor:
    """How late the loop runs a 50 ms sleep: the worst lag per window, and how many
    times it exceeded a quarter of a second (rendr's ``stall_grace``)."""

    PERIOD = 0.05

    def __init__(self) -> None:
        self.max_lag = 0.0
        self.window_max = 0.0
        self.over_250ms = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lag-monitor")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(self.PERIOD)
            lag = loop.time() - t - self.PERIOD
            if lag > self.window_max:
                self.window_max = lag
            if lag > self.max_lag:
                self.max_lag = lag
            if lag > 0.25:
                self.over_250ms += 1

    def take_window(self) -> float:
        lag, self.window_max = self.window_max, 0.0
        return lag

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def snapshot(lag: LagMonitor, with_objects: bool = True, collect: bool = False
             ) -> dict[str, Any]:
    """The figures a child reports with every sample (``collect``: after a full garbage
    collection, for the start and end figures: objects and blocks then count what is
    really held, not cycles waiting for the collector)."""
    if collect:
        gc.collect()
    out: dict[str, Any] = {
        "fds": count_fds(),
        "tasks": len(asyncio.all_tasks()),
        "cpu_s": round(cpu_seconds(), 3),
        "lag_max_window": round(lag.take_window(), 4),
        "lag_over_250ms": lag.over_250ms,
    }
    if with_objects:
        out["objects"] = len(gc.get_objects())
        out["blocks"] = sys.getallocatedblocks()
    return out


def census(top: int = 400) -> dict[str, int]:
    """Live objects tracked by the garbage collector, by type (module.qualname)."""
    gc.collect()
    counts: dict[str, int] = {}
    for o in gc.get_objects():
        t = type(o)
        name = f"{t.__module__}.{t.__qualname__}"
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:top])
