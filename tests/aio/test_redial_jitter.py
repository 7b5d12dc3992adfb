"""Re-dial delays are jittered (``FlowConfig.redial_jitter``) from the dialer's random
source, so flows that lost the same path do not re-dial it in lock-step."""

from __future__ import annotations

import asyncio
import os
import random
import socket

import pytest

import rendr
from rendr.aio.dialer import DialSession


class Scripted(random.Random):
    """A random source that returns ``values`` in turn and counts its calls."""

    def __init__(self, values: list[float]) -> None:
        super().__init__(0)
        self.values = values
        self.calls = 0

    def random(self) -> float:
        value = self.values[self.calls % len(self.values)]
        self.calls += 1
        return value


def _refused_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # nobody listens there once closed


async def test_redial_delay_draws_from_the_rng() -> None:
    dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", "127.0.0.1:1")],
                          rng=Scripted([0.0, 1.0, 0.5]), redial_jitter=0.5)
    session = DialSession(dialer, os.urandom(16))
    assert [session.redial_delay(0.4) for _ in range(3)] == pytest.approx([0.4, 0.2, 0.3])
    steady = rendr.Dialer(paths=[rendr.PathSpec("tcp", "127.0.0.1:1")],
                          rng=Scripted([0.7]), redial_jitter=0.0)
    assert DialSession(steady, os.urandom(16)).redial_delay(0.4) == 0.4


async def test_two_dialers_do_not_redial_in_lock_step() -> None:
    delays = []
    for seed in (1, 2):
        dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", "127.0.0.1:1")],
                              rng=random.Random(seed))
        session = DialSession(dialer, os.urandom(16))
        delays.append([session.redial_delay(1.0) for _ in range(4)])
    assert delays[0] != delays[1]
    assert all(0.5 <= d <= 1.0 for d in delays[0] + delays[1])


def test_redial_jitter_must_be_a_fraction() -> None:
    with pytest.raises(ValueError, match="redial_jitter"):
        rendr.FlowConfig(redial_jitter=1.5)


async def test_a_failing_path_is_redialed_with_jittered_delays() -> None:
    """The supervisor of a path that cannot connect waits ``redial_delay`` each time."""
    listener = await rendr.listen_tcp("127.0.0.1:0")
    rng = Scripted([0.999])
    dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{listener.addrs[0][1]}"),
                                 rendr.PathSpec("tcp", _refused_address())],
                          rng=rng, redial_backoff=0.02, redial_backoff_max=0.02)
    conn = await dialer.dial()
    try:
        for _ in range(200):
            if rng.calls >= 3:
                break
            await asyncio.sleep(0.01)
        assert rng.calls >= 3  # every re-dial of the refused path drew its delay
    finally:
        conn.abort()
        await listener.close()
