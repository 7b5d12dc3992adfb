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


async def _hash_backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The TCP service behind ``serve``: answers the SHA-256 of all it read."""
    data = await reader.read()  # to the half-close passed through from stdin's EOF
    writer.write(hashlib.sha256(data).hexdigest().encode())
    await writer.drain()
    writer.close()


async def _listening(serve: asyncio.subprocess.Process) -> None:
    """Wait for ``serve``'s "listening on" line (after the warning that no psk is set)."""
    assert serve.stderr is not None
    seen = b""
    while b"listening on" not in seen:
        line = await asyncio.wait_for(serve.stderr.readline(), 20)
        assert line, seen
        seen += line


async def _stdio_hashes(payload: bytes, *paths: str) -> None:
    """``rendr connect --stdio`` over ``paths``: ``payload`` in, exit 0, and the
    backend's SHA-256 of it back out."""
    connect = await _rendr("connect", *paths, "--stdio", stdin=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(connect.communicate(payload), 30)
    assert connect.returncode == 0, err.decode(errors="replace")
    assert out.decode() == hashlib.sha256(payload).hexdigest()


async def test_serve_and_connect_stdio_forward_a_tcp_service() -> None:
    back = await asyncio.start_server(_hash_backend, "127.0.0.1", 0)
    back_port = back.sockets[0].getsockname()[1]
    p1, p2 = _free_port(), _free_port()
    serve = await _rendr("serve", "--listen", f"tcp://127.0.0.1:{p1}",
                         "--listen", f"tcp://127.0.0.1:{p2}",
                         "--forward", f"127.0.0.1:{back_port}")
    try:
        await _listening(serve)
        payload = os.urandom(1 << 20)
        await _stdio_hashes(payload, "--path", f"tcp://127.0.0.1:{p1}",
                            "--path", f"tcp://127.0.0.1:{p2}")
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


async def test_serve_and_connect_over_quic_with_options_in_the_url() -> None:
    """``quic://host:port?insecure=1``: the path options a QUIC path needs (here: accept
    the listener's self-signed development certificate) travel in the URL's query;
    without them the CLI could not reach a QUIC listener it started itself."""
    pytest.importorskip("qh3")

    back = await asyncio.start_server(_hash_backend, "127.0.0.1", 0)
    back_port = back.sockets[0].getsockname()[1]
    p1 = _free_port()
    serve = await _rendr("serve", "--listen", f"quic://127.0.0.1:{p1}",
                         "--forward", f"127.0.0.1:{back_port}")
    try:
        await _listening(serve)
        payload = os.urandom(256 << 10)
        refused = await _rendr("connect", "--path", f"quic://127.0.0.1:{p1}", "--stdio",
                               stdin=asyncio.subprocess.PIPE)  # the system CAs: no
        _, err = await asyncio.wait_for(refused.communicate(b"x"), 30)
        assert refused.returncode != 0 and b"Traceback" not in err
        await _stdio_hashes(payload, "--path", f"quic://127.0.0.1:{p1}?insecure=1")
    finally:
        serve.terminate()
        await serve.wait()
        back.close()


def test_url_options_are_parsed_and_bad_ones_refused() -> None:
    import click

    from rendr.cli import _split_url

    assert _split_url("quic://h:1?insecure=1&server_name=x") == (
        "quic", "h:1", {"insecure": 1, "server_name": "x"})
    assert _split_url("h:2") == ("tcp", "h:2", {})
    for bad in ("quic://h:1?=1", "quic://h:1?a b=1", "quic://?x=1"):
        with pytest.raises(click.BadParameter):
            _split_url(bad)
    # an option the transport does not take: one line, exit status 1, no traceback
    assert main(["serve", "--listen", "quic://127.0.0.1:0?bogus=1",
                 "--forward", "127.0.0.1:22"]) == 1
