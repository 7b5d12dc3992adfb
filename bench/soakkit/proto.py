"""JSON lines between the parent and its children (one listener, several clients).

The parent starts ``bench/soak.py --role NAME --index I`` (under ``ip netns exec``
in netns mode), writes commands to the child's stdin and reads the child's stdout
without blocking (:class:`Child`, polled with a selector).  A child's stderr (its
log) goes to a file of the run directory.  In the child, :class:`Channel` reads
commands from stdin on the event loop (no thread: no fd or task appears that the
leak check would count) and writes messages to stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import IO, Any

Msg = dict[str, Any]

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "soak.py")


# ---------------------------------------------------------------------------- parent side


class Child:
    """One child process and the lines it has written so far."""

    def __init__(self, name: str, role: str, index: int, log_path: str,
                 prefix: Sequence[str] = (), extra: Sequence[str] = ()) -> None:
        self.name = name
        self.role = role
        self.log_path = log_path
        cmd = [*prefix, sys.executable, SCRIPT, "--role", role, "--index", str(index), *extra]
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, bufsize=0)
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self._buf = b""
        self.eof = False
        self.pid: int | None = None
        """The child's own pid (reported in its hello; the Python process)."""
        self.ready: Msg | None = None
        self.stats: Msg | None = None
        self.progress: Msg | None = None
        self.finished: Msg | None = None
        self.census: dict[str, int] | None = None

    def send(self, **msg: Any) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        except (BrokenPipeError, OSError):
            pass  # it exited: its missing answers fail the run

    def read_lines(self) -> list[Msg]:
        """Whatever complete lines are there now (never blocks)."""
        out: list[Msg] = []
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
                break
            self._buf += chunk
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            if line.strip():
                msg: Msg = json.loads(line)
                if msg.get("t") == "hello":
                    self.pid = int(msg["pid"])
                out.append(msg)
        return out

    def close(self, timeout: float = 15.0) -> int | None:
        """Ask it to exit, then make sure it has (kill only this child, by its pid)."""
        if self.proc.poll() is None:
            self.send(cmd="exit")
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()
        self._log.close()
        return self.proc.returncode


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS/VmHWM (bytes) and Threads of a process, from /proc/<pid>/status."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) * 1024
                elif key == "Threads":
                    out[key] = int(value)
    except (OSError, ValueError):
        pass
    return out


# ---------------------------------------------------------------------------- child side


class Channel:
    """The child's end: commands from stdin (on the loop), messages to stdout."""

    def __init__(self) -> None:
        self._reader: asyncio.StreamReader | None = None
        self._out = sys.stdout.buffer

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 24)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self._reader = reader

    async def recv(self) -> Msg | None:
        """The next command, or None at EOF (the parent went away)."""
        assert self._reader is not None
        line = await self._reader.readline()
        if not line:
            return None
        msg: Msg = json.loads(line)
        return msg

    def say(self, t: str, **fields: Any) -> None:
        self._out.write(json.dumps({"t": t, **fields}, default=str).encode() + b"\n")
        self._out.flush()


def accept_queue(pid: int, port: int) -> int | None:
    """Connections waiting in the kernel's accept queue of the listening socket on
    ``port`` (in the namespace of process ``pid``): rx_queue of its LISTEN row."""
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}", encoding="ascii") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        return int(parts[4].split(":")[1], 16)
        except (OSError, ValueError, IndexError, StopIteration):
            continue
    return None
