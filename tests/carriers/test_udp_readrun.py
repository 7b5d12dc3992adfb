"""How many datagrams a udpflow socket's readiness callback reads (``ReadRun``), and a
real socket read through a change from one datagram at a time to a burst."""

from __future__ import annotations

import asyncio
import socket

from rendr.carriers.udpbase import PROBE_EVERY, READ_BATCH, SINGLE_AFTER, ReadRun


def test_batches_until_single_datagrams_then_one_per_callback_with_probes() -> None:
    run = ReadRun()
    for _ in range(SINGLE_AFTER):
        assert run.limit() == READ_BATCH
        run.done(1, True)  # one datagram, then an empty socket
    limits = []
    for _ in range(2 * PROBE_EVERY):
        limits.append(run.limit())
        run.done(1, limits[-1] != 1)  # a probing batch again finds one, then nothing
    assert limits.count(READ_BATCH) == 2  # every PROBE_EVERY-th callback probes
    assert limits.count(1) == 2 * PROBE_EVERY - 2
    run.done(1, False)  # a read of one that did not look further: no news
    assert run.limit() in (1, READ_BATCH)
    while run.limit() == 1:  # up to the next probe
        run.done(1, False)
    run.done(3, True)  # the probe found a burst: batches again
    assert all(run.limit() == READ_BATCH for _ in range(3 * PROBE_EVERY))


def test_a_burst_after_single_datagrams_is_read_whole() -> None:
    """On a real socket and loop: single datagrams switch the carrier's callbacks to one
    read each; a burst of 500 then still arrives whole (the level-triggered readiness
    calls again while datagrams wait, and a probe switches back to batches)."""

    async def main() -> tuple[int, list[int]]:
        loop = asyncio.get_running_loop()
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.connect(rx.getsockname())
        run = ReadRun()
        got: list[bytes] = []
        reads_per_call: list[int] = []
        more = asyncio.Event()

        def on_readable() -> None:  # the carriers' read loop, reduced
            n = 0
            for _ in range(run.limit()):
                try:
                    got.append(rx.recv(2048))
                except BlockingIOError:
                    run.done(n, True)
                    break
                n += 1
            else:
                run.done(n, False)
            reads_per_call.append(n)
            more.set()

        loop.add_reader(rx.fileno(), on_readable)
        try:
            for i in range(10):  # one at a time
                tx.send(b"%d" % i)
                while len(got) <= i:
                    more.clear()
                    await asyncio.wait_for(more.wait(), 2)
            singles = reads_per_call[-1]
            for i in range(500):
                tx.send(b"b%d" % i)
            while len(got) < 510:
                more.clear()
                await asyncio.wait_for(more.wait(), 2)
        finally:
            loop.remove_reader(rx.fileno())
            rx.close()
            tx.close()
        assert got[10:] == [b"b%d" % i for i in range(500)]
        return singles, reads_per_call

    singles, reads = asyncio.run(main())
    assert singles == 1
    assert max(reads) > 1  # a probe found the burst and read it in batches
