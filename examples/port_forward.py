"""Port forwarding with the CLI: ``rendr serve`` in front of a TCP service, ``rendr
connect --local`` giving plain TCP clients a local port whose traffic rides a
migrating two-path flow.

The script starts a small TCP service (it answers each line with its SHA-256), runs
both CLI commands as subprocesses (the two paths through small fault relays), talks to
the service through the forwarded port with an ordinary ``asyncio.open_connection``,
cuts one path halfway, and checks every answer.  By hand it is::

    rendr serve   --listen tcp://0.0.0.0:5555 --listen tcp://0.0.0.0:5556 \\
                  --forward 127.0.0.1:22 --psk-file key
    rendr connect --path tcp://server-wifi:5555 --path tcp://server-lte:5556 \\
                  --local 127.0.0.1:2222 --psk-file key
    ssh -p 2222 localhost

    python examples/port_forward.py
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import sys
import tempfile

from rendr.testing.relay import TcpRelay


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The TCP service being forwarded to: one SHA-256 (hex) line per input line."""
    while line := await reader.readline():
        writer.write(hashlib.sha256(line.rstrip(b"\n")).hexdigest().encode() + b"\n")
        await writer.drain()
    writer.close()


async def rendr_cli(*args: str) -> asyncio.subprocess.Process:
    """Start ``rendr ARGS...`` and wait until it says it is ready."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rendr", *args, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), 20)
        if not line:
            raise SystemExit(f"rendr {args[0]} exited early")
        print(f"[rendr {args[0]}] {line.decode().rstrip()}")
        if b"listening on" in line or b"forwarding" in line:
            return proc


async def main() -> None:
    backend = await asyncio.start_server(service, "127.0.0.1", 0)
    backend_port = backend.sockets[0].getsockname()[1]
    p1, p2, local = free_port(), free_port(), free_port()
    with tempfile.NamedTemporaryFile("wb", suffix=".psk", delete=False) as f:
        f.write(os.urandom(16).hex().encode())  # a shared key for both ends
    procs = []
    relays: list[TcpRelay] = []
    try:
        procs.append(await rendr_cli(
            "serve", "--listen", f"tcp://127.0.0.1:{p1}", "--listen", f"tcp://127.0.0.1:{p2}",
            "--forward", f"127.0.0.1:{backend_port}", "--psk-file", f.name))
        relays += [TcpRelay(("127.0.0.1", p)) for p in (p1, p2)]  # two "networks"
        for relay in relays:
            await relay.start()
        procs.append(await rendr_cli(
            "connect", "--path", f"tcp://127.0.0.1:{relays[0].addr[1]}",
            "--path", f"tcp://127.0.0.1:{relays[1].addr[1]}",
            "--local", f"127.0.0.1:{local}", "--psk-file", f.name))

        # an ordinary TCP client of the forwarded port
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        lines = [os.urandom(1000).hex().encode() for _ in range(100)]
        answers = []
        for i, line in enumerate(lines):
            if i == len(lines) // 2:
                print("cutting the first path (its TCP connections are reset)")
                relays[0].kill()
            writer.write(line + b"\n")
            await writer.drain()
            answers.append(await asyncio.wait_for(reader.readline(), 10))
        writer.close()
        ok = all(a.rstrip() == hashlib.sha256(line).hexdigest().encode()
                 for a, line in zip(answers, lines, strict=True))
        print(f"{len(answers)} answers through the forwarded port, all correct={ok}")
        if not ok:
            raise SystemExit("FAILED")
        print("OK")
    finally:
        for proc in procs:
            proc.terminate()
            await proc.wait()
        os.unlink(f.name)
        backend.close()
        for relay in relays:
            await relay.close()


if __name__ == "__main__":
    asyncio.run(main())
