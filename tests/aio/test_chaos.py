"""Seeded fault schedules on real sockets: RST kills, silent blackholes (later lifted,
delivering what they held), delay and rate changes on random paths, while data flows
both ways. The application must see exact byte streams and no exception.

The engine's own fault schedules run on the simulated network (tests/core); these
exercise what the simulator cannot: carriers, the dialer's re-dials, the listener's
bridge table and the event loop, on the default loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import hashlib
import random

import pytest

import rendr

from .conftest import Pair, close_pair, drain_all, make_pair, pump

MIB = 1 << 20


async def _send(conn: rendr.Conn, data: bytes) -> None:
    await pump(conn, data, chunk=64 * 1024)
    await conn.write_eof()


async def _chaos(pair: Pair, rng: random.Random, stop: asyncio.Event, log: list[str]) -> None:
    """An RST kill of the active path at 0.3 s and a blackhole of the new active path at
    1.0 s (both before the transfer can end), then random faults every 0.2-0.8 s; every
    blackhole is lifted 0.2-1.2 s later."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    def fault(i: int, action: str) -> None:
        relay = pair.relays[i]
        log.append(f"{loop.time() - t0:.2f} relay{i} {action}")
        if action == "kill":
            relay.kill()
        elif action == "blackhole" and not relay.blackholed:
            relay.blackhole()
            loop.call_later(rng.uniform(0.2, 1.2), relay.forward)
        elif action == "delay":
            relay.set_delay(rng.choice([0.0, 0.002, 0.02, 0.08]))
        elif action == "rate":
            relay.set_rate(rng.choice([0.75 * MIB, 1.5 * MIB, 3 * MIB]))

    def active_relay() -> int:
        return pair.relays.index(pair.relay_of(pair.client.active_path))

    await asyncio.sleep(0.3)
    fault(active_relay(), "kill")
    await asyncio.sleep(0.7)
    fault(active_relay(), "blackhole")
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(0.2, 0.8))
        fault(rng.randrange(len(pair.relays)),
              rng.choice(["kill", "blackhole", "delay", "rate", "kill", "blackhole"]))
    for relay in pair.relays:
        relay.forward()


@pytest.mark.parametrize("seed", [11, 12])
async def test_seeded_faults_are_invisible_both_ways(seed: int) -> None:
    rng = random.Random(seed)
    pair = await make_pair(n_paths=3, migration_budget=30.0)
    for relay in pair.relays:
        relay.set_rate(1.5 * MIB)  # ~3 s of transfer per direction: faults hit mid-flow
    up = rng.randbytes(4 * MIB)
    down = rng.randbytes(4 * MIB)
    stop = asyncio.Event()
    log: list[str] = []
    chaos = asyncio.create_task(_chaos(pair, rng, stop, log))
    try:
        got_down, got_up, _, _ = await asyncio.wait_for(asyncio.gather(
            drain_all(pair.client), drain_all(pair.server),
            _send(pair.client, up), _send(pair.server, down)), 60)
        stop.set()
        await chaos
        assert hashlib.sha256(got_up).digest() == hashlib.sha256(up).digest(), log
        assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest(), log
        assert "kill" in log[0] and "blackhole" in log[1], log
        # the connection is still usable after the storm
        await pair.client.close()
        await pair.server.close()
    finally:
        stop.set()
        if not chaos.done():
            chaos.cancel()
        await close_pair(pair)


