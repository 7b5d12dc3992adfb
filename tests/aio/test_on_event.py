"""Issue 6 (observability): events from dial()/accept on, through on_event=."""

from __future__ import annotations

import asyncio

import rendr


def test_dialer_and_listener_see_the_first_path_up() -> None:
    async def main() -> tuple[list[str], list[str]]:
        client_events: list[str] = []
        server_events: list[str] = []
        lst = await rendr.listen_tcp("127.0.0.1:0",
                                     on_event=lambda e: server_events.append(str(e.kind)))
        try:
            host, port = lst.addrs[0]
            dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"{host}:{port}")],
                                  on_event=lambda e: client_events.append(str(e.kind)))
            conn = await dialer.dial()
            server = await lst.accept()
            await conn.write(b"x")
            await server.readexactly(1)
            await conn.close()
            await server.close()
        finally:
            await lst.close()
        return client_events, server_events

    client, server = asyncio.run(asyncio.wait_for(main(), 20))
    assert client[0] == str(rendr.EventKind.PATH_UP) and str(rendr.EventKind.CLOSED) in client
    assert server[0] == str(rendr.EventKind.PATH_UP) and str(rendr.EventKind.CLOSED) in server
