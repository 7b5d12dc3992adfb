"""Packet mode: datagrams with their boundaries kept, over migrating UDP paths.

A :class:`rendr.PacketConn` is like a connected UDP socket that survives path changes:
one ``send()`` is one packet, one ``recv()`` returns one packet whole.  Like UDP,
packets are delivered at most once and are not retransmitted, so this client does what
a UDP application does: it waits a little for each answer and re-sends if none comes.
Halfway it moves the flow to its second path.

    python examples/packet_mode.py
"""

from __future__ import annotations

import asyncio

import rendr

PSK = b"example-psk-0123456789abcdef"


async def echo(pc: rendr.PacketConn) -> None:
    """Answer each packet with the same packet in upper case."""
    async for packet in pc:  # ends at the peer's clean close
        await pc.send(packet.upper())


async def echo_all(listener: rendr.PacketListener) -> None:
    """Serve every packet flow the listener accepts."""
    tasks: set[asyncio.Task[None]] = set()
    async for pc in listener:
        task = asyncio.create_task(echo(pc))
        tasks.add(task)  # (the loop keeps only weak references to tasks)
        task.add_done_callback(tasks.discard)


async def request(pc: rendr.PacketConn, packet: bytes, tries: int = 5) -> bytes:
    """Send ``packet`` and wait for its answer, re-sending when one is lost."""
    for _ in range(tries):
        await pc.send(packet)
        try:
            while True:
                answer = await asyncio.wait_for(pc.recv(), 0.5)
                if answer == packet.upper():
                    return answer
                # a late answer to an earlier try: skip it
        except asyncio.TimeoutError:
            continue
    raise TimeoutError(f"no answer to {packet!r}")


async def main() -> None:
    listener = await rendr.listen_udpflow_packet("127.0.0.1:0", "127.0.0.1:0", psk=PSK)
    server = asyncio.create_task(echo_all(listener))
    dialer = rendr.Dialer(paths=[rendr.PathSpec("udpflow", f"{host}:{port}")
                                 for host, port, *_ in listener.addrs], psk=PSK)
    pc = await dialer.dial_packet()
    while sum(p.state == "up" for p in pc.stats().paths) < 2:  # noqa: ASYNC110
        await asyncio.sleep(0.01)  # the second path attaches in the background
    print(f"largest packet on these paths: {pc.max_payload} bytes")
    packets = [f"packet {i} ".encode() * (1 + i % 40) for i in range(100)]
    answers = []
    for i, packet in enumerate(packets):
        if i == 50:
            other = next(p.id for p in pc.stats().paths if p.id != pc.active_path)
            await pc.migrate(other)
            print(f"moved the flow to path {other}")
        answers.append(await request(pc, packet))
    ok = answers == [p.upper() for p in packets]
    print(f"{len(answers)} packets answered whole, correct={ok}, "
          f"migrations={pc.migration_count}")
    await pc.close()
    server.cancel()
    await listener.close()
    if not (ok and pc.migration_count >= 1):
        raise SystemExit("FAILED")
    print("OK")


if __name__ == "__main__":
    rendr.run(main())
