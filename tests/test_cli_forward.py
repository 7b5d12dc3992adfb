"""``rendr serve`` and ``rendr connect`` as a user runs them: real processes, a TCP
backend, bytes in through ``connect --stdio`` (as ssh's ProxyCommand would) and back."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import sys

import pytest

from rendr.cli import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _rendr(*args: str, stdin: int | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rendr", *args, stdin=stdin,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_serve_and_connect_stdio_forward_a_tcp_service() -> None:
    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # to the half-close passed through from stdin's EOF
        writer.write(hashlib.sha256(data).hexdigest().encode())
        await writer.drain()
        writer.close()

    back = await asyncio.start_server(backend, "127.0.0.1", 0)
    back_port = back.sockets[0].getsockname()[1]
    p1, p2 = _free_port(), _free_port()
    serve = await _rendr("serve", "--listen", f"tcp://127.0.0.1:{p1}",
                         "--listen", f"tcp://127.0.0.1:{p2}",
                         "--forward", f"127.0.0.1:{back_port}")
    try:
        assert serve.stderr is not None
        seen = b""
        while b"listening on" not in seen:  # (after the warning that no psk is set)
            line = await asyncio.wait_for(serve.stderr.readline(), 20)
            assert line, seen
            seen += line
        payload = os.urandom(1 << 20)
        connect = await _rendr("connect", "--path", f"tcp://127.0.0.1:{p1}",
                               "--path", f"tcp://127.0.0.1:{p2}", "--stdio",
                               stdin=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(connect.communicate(payload), 30)
        assert connect.returncode == 0, err.decode(errors="replace")
        assert out.decode() == hashlib.sha256(payload).hexdigest()
    finally:
        serve.terminate()
        await serve.wait()
        back.close()


def test_bad_input_is_one_line_and_a_nonzero_exit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--listen", "tcp://nowhere", "--forward", "127.0.0.1:22"]) != 0
    assert main(["connect", "--path", "tcp://127.0.0.1:1"]) != 0  # neither --local nor --stdio
    err = capsys.readouterr().err
    assert "expected TRANSPORT://HOST:PORT" in err and "exactly one of" in err
    assert "Traceback" not in err
