"""A rendr listener in a process of its own, for tests/hostile/test_suite_baseline.py.

    python3 _listener_proc.py LOOP KNOBS_JSON

``LOOP`` is ``asyncio`` or ``uvloop``; ``KNOBS_JSON`` is a JSON object of
:class:`rendr.FlowConfig` fields for ``rendr.listen_tcp``.  The process listens on
``127.0.0.1:0``, accepts every flow and echoes it, and speaks JSON lines: first
``{"port": N, "loop": NAME}`` on stdout, then one answer per command read on stdin:

- ``{"cmd": "stats", "trim": BOOL}``: ``{"rss_kib", "fds", "tasks", "conns"}`` after a
  ``gc.collect()``: VmRSS from /proc/self/status, entries of /proc/self/fd,
  ``len(asyncio.all_tasks())`` and accepted connections whose echo has not ended yet;
  ``trimmed_rss_kib``: with ``trim``, VmRSS again after glibc's ``malloc_trim(0)``
  gave the C heap's free pages back (None without it, or without glibc);
  plus ``peak_fds``, ``peak_tasks``, ``peak_conns`` (sampled every 10 ms since the
  previous ``stats``) and ``errors``: how the echoes that ended since then ended
  (``[type name, len(str(exc)), str(exc) is printable]``, at most 200 kept).
- ``{"cmd": "exit"}``: close the listener and exit.

Its own fixed cost, always counted in the figures: the listening socket, the loop's
selector and self-pipe (more of them on uvloop), stdin/stdout/stderr (fds); the
main task, the accept loop and the sampler (tasks).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import json
import os
import sys
from typing import Any

import rendr
from rendr.aio import runner

_conns: set[asyncio.Task[None]] = set()
_errors: list[list[Any]] = []
_peak = {"fds": 0, "tasks": 0, "conns": 0}


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def _malloc_trim() -> bool:
    """Give the C heap's free pages back to the kernel (glibc only): False elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def _fds() -> int:
    return len(os.listdir("/proc/self/fd")) - 1  # listdir's own descriptor


def _say(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


async def _echo(conn: rendr.Conn) -> None:
    buf = bytearray(64 * 1024)
    try:
        while n := await conn.readinto(buf):
            await conn.write(bytes(buf[:n]))
        await conn.close()
    except Exception as exc:  # a hostile peer's flow ends with an error: note how
        if len(_errors) < 200:
            _errors.append([type(exc).__name__, len(str(exc)), str(exc).isprintable()])
        conn.abort()


async def _accept(ln: rendr.Listener) -> None:
    async for conn in ln:
        task = asyncio.get_running_loop().create_task(_echo(conn))
        _conns.add(task)
        task.add_done_callback(_conns.discard)


async def _sample() -> None:
    while True:
        _peak["fds"] = max(_peak["fds"], _fds())
        _peak["tasks"] = max(_peak["tasks"], len(asyncio.all_tasks()))
        _peak["conns"] = max(_peak["conns"], len(_conns))
        await asyncio.sleep(0.01)


def _stats(trim: bool) -> dict[str, Any]:
    gc.collect()
    msg = {"rss_kib": _rss_kib(), "fds": _fds(), "tasks": len(asyncio.all_tasks()),
           "conns": len(_conns), "errors": list(_errors)}
    msg["trimmed_rss_kib"] = _rss_kib() if trim and _malloc_trim() else None
    msg.update({f"peak_{k}": v for k, v in _peak.items()})
    _errors.clear()
    _peak.update(fds=0, tasks=0, conns=0)
    return msg


async def main(knobs: dict[str, Any], loop_name: str) -> None:
    loop = asyncio.get_running_loop()
    ln = await rendr.listen_tcp("127.0.0.1:0", **knobs)
    reader = asyncio.StreamReader()
    pipe, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks = [loop.create_task(_accept(ln)), loop.create_task(_sample())]
    _say({"port": ln.addrs[0][1], "loop": loop_name})
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["cmd"] == "stats":
                _say(_stats(cmd.get("trim", False)))
            elif cmd["cmd"] == "exit":
                break
    finally:
        for task in tasks:
            task.cancel()
        await ln.close()
        pipe.close()


if __name__ == "__main__":
    import logging

    # what the listener did to the attackers goes to the test's captured stderr
    logging.basicConfig(level=logging.INFO if os.environ.get("RENDR_HOSTILE_LOG")
                        else logging.WARNING, stream=sys.stderr,
                        format="listener %(levelname)s %(name)s: %(message)s")
    use_uvloop = sys.argv[1] == "uvloop"
    _, name = runner.loop_factory(use_uvloop)
    if use_uvloop and not name.startswith("uvloop"):
        sys.exit(f"uvloop asked for, but: {name}")
    runner.run(main(json.loads(sys.argv[2]), name), use_uvloop=use_uvloop)
