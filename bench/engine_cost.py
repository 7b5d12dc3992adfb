#!/usr/bin/env python3
"""What the sans-I/O engine alone costs: two ``Flow`` engines wired back to back.

No sockets, no event loop: the bytes one engine transmits are fed straight into the
other, so the figures are the engine's own Python work, free of kernel and network
noise (the machine's load still matters: repeat and compare medians).

- ping-pong: 64-byte message, answered, one outstanding; µs per round trip (both
  engines' send, receive, read and flush work, ACKs by their delayed-ACK timer).
- bulk: one direction, 1 MiB writes, the receiver reads as it goes; CPU seconds of
  engine work per GiB and the resulting MB/s (an upper bound for one core).

Usage::

    python bench/engine_cost.py [--messages 20000] [--bulk-mib 512] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import rendr
from rendr.core.flow import Flow
from rendr.core.types import Role

MIB = 1 << 20


class Pair:
    """Two engines joined by one path; ``now`` is advanced by the caller."""

    def __init__(self) -> None:
        self.now = 0.0
        self.a = Flow(role=Role.DIALER, flow_id=b"F" * 16, now=0.0, peer_window=8 * MIB)
        self.b = Flow(role=Role.LISTENER, flow_id=b"F" * 16, now=0.0, peer_window=8 * MIB)
        for flow in (self.a, self.b):
            flow.add_path(1, now=0.0)
        self.pump(self.a, self.b)
        self.pump(self.b, self.a)

    def pump(self, src: Flow, dst: Flow) -> None:
        """Deliver what ``src`` wants to send (one read per transmit, as a carrier would)."""
        for pid, buffers in src.transmits(self.now):
            dst.receive(pid, b"".join(buffers), self.now)
        src.get_timer()

    def timers(self) -> None:
        for flow in (self.a, self.b):
            at = flow.get_timer()
            if at is not None and at <= self.now:
                flow.handle_timer(self.now)


def ping_pong(messages: int) -> float:
    """Microseconds of engine work per 64-byte round trip."""
    p = Pair()
    msg = b"x" * 64
    start = time.perf_counter()
    for _ in range(messages):
        p.now += 0.0001  # 100 µs per round trip of virtual time: ACKs every ~50 messages
        p.a.send(msg, p.now)
        p.pump(p.a, p.b)
        data = p.b.read(65536)
        assert data == msg
        p.b.send(data, p.now)
        p.pump(p.b, p.a)
        assert p.a.read(65536) == msg
        p.timers()
        p.pump(p.a, p.b)
        p.pump(p.b, p.a)
    return (time.perf_counter() - start) / messages * 1e6


def bulk(size: int) -> tuple[float, float]:
    """(CPU seconds per GiB, MB/s) of engine work for a one-way transfer of ``size``."""
    p = Pair()
    block = os.urandom(4 * MIB)
    view = memoryview(block)
    sent = received = 0
    cpu0 = time.process_time()
    start = time.perf_counter()
    while received < size:
        p.now += 0.0001
        while sent < size and p.a.send_space > 0:
            off = sent % len(block)
            n = min(MIB, size - sent, len(block) - off)
            sent += p.a.send(view[off : off + n], p.now)
        p.pump(p.a, p.b)
        while data := p.b.read(MIB):
            received += len(data)
        p.timers()
        p.pump(p.b, p.a)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    return cpu / (size / (1 << 30)), size / elapsed / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--bulk-mib", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"engine cost (rendr.__compiled__={rendr.__compiled__}, "
          f"Python {sys.version.split()[0]})", flush=True)
    rtts = [ping_pong(args.messages) for _ in range(args.repeat)]
    bulks = [bulk(args.bulk_mib * MIB) for _ in range(args.repeat)]
    print(f"engine ping-pong (64 B, {args.messages} x {args.repeat}): "
          f"median {statistics.median(rtts):.1f} µs per round trip "
          f"(min {min(rtts):.1f}, max {max(rtts):.1f})")
    print(f"engine bulk ({args.bulk_mib} MiB x {args.repeat}): median "
          f"{statistics.median(c for c, _ in bulks):.3f} CPU-s/GiB, "
          f"{statistics.median(r for _, r in bulks):.0f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
