"""A cancelled handshake stays cancelled (bench/repro/add_path_lost_cancel.py).

``asyncio.wait_for`` before Python 3.12 returns the result when it is already there as
the waiting task is cancelled: the cancellation is lost.  Each test here completes
what the task waits for and cancels the task in the same loop iteration, which is
exactly that moment, deterministically.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from rendr.aio.dialer import open_carrier
from rendr.aio.handshake import exchange
from rendr.aio.listener import Listener
from rendr.aio.timeouts import wait_for, wait_for_fallback
from rendr.carriers.base import Buffer, Carrier
from rendr.config import FlowConfig
from rendr.core.session import DialerHandshake
from rendr.core.types import Mode
from rendr.core.wire import PREFACE, JoinAck, Result
from rendr.spec import PathSpec

WaitFor = Callable[..., Awaitable[Any]]
IMPLEMENTATIONS = [pytest.param(wait_for, id="wait_for"),
                   pytest.param(wait_for_fallback, id="fallback")]


class FakeCarrier(Carrier):
    """A carrier whose peer is the test: it records writes and closes."""

    transport = "fake"

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.remote_addr = "127.0.0.1:1"

    def write(self, buffers: Sequence[Buffer]) -> None:
        self.written.extend(bytes(b) for b in buffers)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def receive(self, data: bytes) -> None:
        self._sink.carrier_data(data)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
async def test_wait_for_keeps_a_cancellation_when_the_result_is_there(impl: WaitFor) -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(impl(fut, 5.0))
    await asyncio.sleep(0)
    fut.set_result(1)
    assert task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
async def test_wait_for_results_and_timeouts(impl: WaitFor) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    loop.call_later(0.01, fut.set_result, 7)
    assert await impl(fut, 5.0) == 7
    slow: asyncio.Future[int] = loop.create_future()
    with pytest.raises(asyncio.TimeoutError):
        await impl(slow, 0.01)
    assert slow.cancelled()

    async def coro() -> str:
        await asyncio.sleep(0)
        return "x"

    assert await impl(coro(), None) == "x"
    assert await impl(coro(), 1.0) == "x"


async def test_fallback_hands_a_late_result_to_discard() -> None:
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    discarded: list[str] = []

    async def opener() -> str:
        try:
            await gate
        except asyncio.CancelledError:
            return "opened anyway"  # e.g. a connect that completed as it was cancelled
        return "opened"

    task = asyncio.ensure_future(wait_for_fallback(opener(), 5.0, discard=discarded.append))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(3):
        await asyncio.sleep(0)
    assert discarded == ["opened anyway"]


async def test_cancelled_exchange_raises_although_the_answer_came() -> None:
    carrier = FakeCarrier()
    task = asyncio.ensure_future(exchange(carrier, [b"hi"], 5.0))
    await asyncio.sleep(0)
    assert carrier.written == [b"hi"]
    carrier.receive(PREFACE + JoinAck(os.urandom(16), 2, Result.OK).encode())
    assert task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancelled_open_carrier_raises_although_the_carrier_is_there() -> None:
    gate: asyncio.Future[Carrier] = asyncio.get_running_loop().create_future()

    async def factory(address: str) -> Carrier:
        return await gate

    task = asyncio.ensure_future(open_carrier(PathSpec("gated", "x:1"),
                                              {"gated": factory}, 5.0))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    gate.set_result(FakeCarrier())
    assert task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancelled_listener_handshake_creates_no_flow() -> None:
    listener = Listener(FlowConfig())
    carrier = FakeCarrier()
    task = asyncio.ensure_future(listener._answer(carrier, "127.0.0.1"))
    await asyncio.sleep(0)
    hello = DialerHandshake(os.urandom(16), Mode.PRIME, FlowConfig()).hello(1)
    carrier.receive(b"".join(hello))
    assert task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not listener._session.flows
    assert carrier.written == []
