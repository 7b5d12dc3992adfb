#!/usr/bin/env python3
"""A task cancelled while it awaits ``conn.add_path()`` can go on as if not cancelled.

Found by ``bench/soak.py`` (an admin task cancelled at the end of a flow went on
looping).  Cause: the dialer's handshake waits with ``asyncio.wait_for``
(``rendr.aio.handshake.exchange``); on Python < 3.12, when the awaited answer is
already there as the cancellation arrives, ``wait_for`` returns the result and drops
the ``CancelledError``.  ``add_path()`` then returns a path id to a task that was
cancelled (``dial()`` goes through the same code).

Method: one flow over loopback; 400 times, start ``add_path()`` in a task, cancel it
after 0-3 ms (sweeping the moment the JOIN_ACK arrives), and see whether awaiting the
task raised ``CancelledError`` (correct) or returned a path id (cancellation lost).
Each added path is removed again.  Exit status 1 if a cancellation was lost.

``--fix`` replaces ``asyncio.wait_for`` in this process with one built on
``asyncio.timeout`` (Python 3.11+), which keeps the cancellation: then none is lost.

Usage: ``python3 bench/repro/add_path_lost_cancel.py [--tries 400] [--fix]``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable
from typing import Any, TypeVar

import rendr

T = TypeVar("T")


async def _wait_for_keeping_cancel(aw: Awaitable[T], timeout: float | None) -> T:
    async with asyncio.timeout(timeout):  # type: ignore[attr-defined,unused-ignore]
        return await aw


async def main(tries: int) -> int:
    ln = await rendr.listen_tcp("127.0.0.1:0")
    spec = rendr.PathSpec("tcp", f"127.0.0.1:{ln.addrs[0][1]}")
    conn = await rendr.Dialer(paths=[spec]).dial()
    server = await ln.accept()
    lost = cancelled = failed = finished = 0
    for i in range(tries):
        task = asyncio.ensure_future(conn.add_path(spec))
        await asyncio.sleep((i % 31) * 0.0001)
        hit = task.cancel()  # False: add_path() had already returned (not a cancellation)
        try:
            path_id = await task
        except asyncio.CancelledError:
            cancelled += 1
            continue
        except (OSError, rendr.RendrError):
            failed += 1
            continue
        if hit:
            lost += 1
        else:
            finished += 1
        await conn.remove_path(path_id)
    print(f"{tries} add_path() calls, each cancelled 0-3 ms after it started: "
          f"{finished} had finished before the cancel, {cancelled} raised CancelledError, "
          f"{lost} returned a path id although cancel() had hit them (cancellation lost), "
          f"{failed} failed otherwise; Python {sys.version.split()[0]}")
    conn.abort()
    server.abort()
    await ln.close()
    return 1 if lost else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tries", type=int, default=400)
    ap.add_argument("--fix", action="store_true",
                    help="use an asyncio.timeout-based wait_for (Python 3.11+)")
    a = ap.parse_args()
    if a.fix:
        patched: Any = _wait_for_keeping_cancel
        asyncio.wait_for = patched
    sys.exit(rendr.run(main(a.tries)))
