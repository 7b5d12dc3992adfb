"""Echo server and client over two paths; the active path is cut mid-stream.

The client dials one flow over two TCP paths (each through a small fault relay so the
script can cut one), streams 8 MiB to an echo server, and resets the active path's TCP
connection halfway.  rendr migrates to the other path: the client gets every byte back,
in order, and never sees an error.

    python examples/echo_migration.py
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import rendr
from rendr.testing.relay import TcpRelay

PSK = b"example-psk-0123456789abcdef"  # both ends; >= 16 bytes
SIZE = 8 << 20


async def echo(conn: rendr.Conn) -> None:
    """Send back everything, then close when the client half-closes."""
    while data := await conn.read(65536):
        await conn.write(data)
    await conn.close()


async def main() -> None:
    listener = await rendr.listen_tcp("127.0.0.1:0", psk=PSK)
    port = listener.addrs[0][1]
    relays = [TcpRelay(("127.0.0.1", port)) for _ in range(2)]  # two "networks"
    for relay in relays:
        await relay.start()

    async def serve() -> None:
        tasks: set[asyncio.Task[None]] = set()
        async for conn in listener:
            task = asyncio.create_task(echo(conn))
            tasks.add(task)  # (the loop keeps only weak references to tasks)
            task.add_done_callback(tasks.discard)

    server = asyncio.create_task(serve())
    dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{r.addr[1]}")
                                 for r in relays], psk=PSK)
    conn = await dialer.dial()

    def on_event(event: rendr.Event) -> None:
        if event.kind is rendr.EventKind.MIGRATION:
            print(f"migrated: path {event.old_path} -> {event.new_path}")

    conn.on_event(on_event)
    payload = os.urandom(SIZE)

    async def send() -> None:
        for i in range(0, SIZE, 256 * 1024):
            await conn.write(payload[i:i + 256 * 1024])
            if i == SIZE // 2:  # cut the active path's TCP connection
                stats = conn.stats()
                remote = next(p.remote_addr for p in stats.paths if p.id == stats.active_path)
                print(f"cutting path {stats.active_path} ({remote})")
                next(r for r in relays if remote.endswith(f":{r.addr[1]}")).kill()
        await conn.write_eof()

    sender = asyncio.create_task(send())
    echoed = await conn.read(-1)  # everything until the server's close
    await sender
    ok = hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    print(f"echoed {len(echoed)} of {SIZE} bytes, intact={ok}, "
          f"migrations={conn.migration_count}")
    await conn.close()
    server.cancel()
    await listener.close()
    for relay in relays:
        await relay.close()
    if not (ok and conn.migration_count >= 1):
        raise SystemExit("FAILED")
    print("OK")


if __name__ == "__main__":
    rendr.run(main())
