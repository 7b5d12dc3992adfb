"""One registry for dial and listen, with the carrier kind."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

import rendr
from rendr.carriers.base import (
    Carrier,
    CarrierKind,
    CarrierServer,
    get_listen_factory,
    get_transport,
    register_transport,
    registered_transports,
    transport_kind,
)
from rendr.carriers.tcp import connect_tcp, listen_tcp


def test_tcp_dials_and_listens_as_a_stream() -> None:
    assert "tcp" in registered_transports()
    assert get_transport("tcp") is connect_tcp
    assert get_listen_factory("tcp") is listen_tcp
    assert transport_kind("tcp") is CarrierKind.STREAM


def test_unknown_and_dial_only_transports() -> None:
    with pytest.raises(KeyError, match="unknown transport"):
        get_listen_factory("nope")

    async def dial(address: str) -> Carrier:
        raise OSError("never")

    register_transport("dial-only-test", dial)
    assert transport_kind("dial-only-test") is CarrierKind.STREAM
    with pytest.raises(ValueError, match="cannot listen"):
        get_listen_factory("dial-only-test")


def test_a_registered_listen_factory_serves_a_listener() -> None:
    """ListenSpec(name, ...) uses the registry: a transport registered under another
    name (here: TCP again) accepts flows, and its bound address is reported."""
    calls: list[str] = []

    async def listen(address: str, on_carrier: Callable[[Carrier], None], backlog: int
                     ) -> tuple[CarrierServer, tuple[str, int]]:
        calls.append(address)
        return await listen_tcp(address, on_carrier, backlog)

    register_transport("tcp-again", connect_tcp, listen=listen)

    async def main() -> bytes:
        async with await rendr.listen(rendr.ListenSpec("tcp-again", "127.0.0.1:0")) as lst:
            host, port = lst.addrs[0]
            dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp-again", f"{host}:{port}")])
            conn = await dialer.dial()
            server = await lst.accept()
            await conn.write(b"hi")
            got = await server.readexactly(2)
            await conn.close()
            await server.close()
            return got

    assert asyncio.run(main()) == b"hi"
    assert calls == ["127.0.0.1:0"]
