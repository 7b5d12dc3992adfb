"""Fixtures for loopback integration tests: a listener with two addresses, a TCP
fault relay in front of each, and a dialer whose paths go through the relays.

Every test here runs on the default loop and on uvloop, and is bounded on its own
loop: a test still running after three quarters of its pytest-timeout (120 s by
default, ``@pytest.mark.timeout(s)`` per test) is cancelled and fails with the stack
it was stuck in, and the run goes on.  A loop that never gets back to its tasks (a
blocking call) is ended by pytest-timeout's thread method (pyproject.toml), which
stops the whole run with every thread's stack: its signal method cannot interrupt a
hung uvloop."""

from __future__ import annotations

import asyncio
import functools
import inspect
import io
import os
import types
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import rendr
from rendr.testing.relay import TcpRelay


@dataclass
class Pair:
    """A connected client/server pair over relayed loopback paths."""

    listener: rendr.Listener
    relays: list[TcpRelay]
    client: rendr.Conn
    server: rendr.Conn
    events: list[rendr.Event] = field(default_factory=list)
    server_events: list[rendr.Event] = field(default_factory=list)

    def relay_of(self, path_id: int) -> TcpRelay:
        """The relay carrying the client's path ``path_id``."""
        remote = next(p.remote_addr for p in self.client.stats().paths if p.id == path_id)
        port = int(remote.rsplit(":", 1)[1])
        return next(r for r in self.relays if r.addr[1] == port)

    async def wait_paths(self, n: int, timeout: float = 5.0) -> None:
        """Wait until both ends have ``n`` live paths."""
        async def ready() -> None:
            while True:
                c = sum(p.state == "up" for p in self.client.stats().paths)
                s = sum(p.state == "up" for p in self.server.stats().paths)
                if c >= n and s >= n:
                    return
                await asyncio.sleep(0.01)

        await asyncio.wait_for(ready(), timeout)


async def make_pair(n_paths: int = 2, **knobs: Any) -> Pair:
    """Listener + relays + dialed connection, both ends with ``knobs``."""
    specs = [rendr.ListenSpec("tcp", "127.0.0.1:0") for _ in range(n_paths)]
    listener = await rendr.listen(*specs, **knobs)
    relays = []
    for host, port in listener.addrs:
        relay = TcpRelay((host, port))
        await relay.start()
        relays.append(relay)
    dialer = rendr.Dialer(
        paths=[rendr.PathSpec("tcp", f"127.0.0.1:{r.addr[1]}") for r in relays], **knobs)
    client = await dialer.dial()
    server = await asyncio.wait_for(listener.accept(), 5)
    pair = Pair(listener, relays, client, server)
    client.on_event(pair.events.append)
    server.on_event(pair.server_events.append)
    await pair.wait_paths(n_paths)
    return pair


def assert_drivers_coroutine(coro: object) -> None:
    """``coro`` is a coroutine of ``rendr.aio.driver`` (compiled with the engine in a
    compiled build, so that a message runs no interpreted coroutine)."""
    assert asyncio.iscoroutine(coro)
    if rendr.__compiled__:
        assert type(coro).__module__ == "rendr.aio.driver", type(coro)
    else:
        assert isinstance(coro, types.CoroutineType)
        assert coro.cr_code.co_filename.endswith(os.path.join("aio", "driver.py"))


async def pump(conn: rendr.Conn, data: bytes, chunk: int = 256 * 1024) -> None:
    """Write ``data`` in ``chunk``-sized writes."""
    view = memoryview(data)
    for i in range(0, len(data), chunk):
        await conn.write(view[i : i + chunk])


async def drain_all(conn: rendr.Conn) -> bytes:
    """Read until the peer's clean EOF."""
    parts = []
    while True:
        d = await conn.read(1 << 20)
        assert d is not None
        if not d:
            return b"".join(parts)
        parts.append(d)


async def close_pair(pair: Pair) -> None:
    """Tear everything down."""
    for conn in (pair.client, pair.server):
        if not conn.is_closed:
            conn.abort()
    await pair.listener.close()
    for relay in pair.relays:
        await relay.close()


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    p = await make_pair()
    try:
        yield p
    finally:
        await close_pair(p)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]] | None:
    """Every loopback test runs on the default loop and, where installed, on uvloop."""
    if Path(__file__).parent not in Path(item.path).parents:
        return None
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop}
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


def _here(item: pytest.Item) -> bool:
    return Path(__file__).parent in Path(item.path).parents


def loop_bound(item: pytest.Item) -> float | None:
    """Seconds a loopback test may run on its loop: 3/4 of its pytest-timeout."""
    marker = item.get_closest_marker("timeout")
    total: object = marker.args[0] if marker is not None and marker.args else None
    if total is None:
        total = item.config.getoption("timeout", None) or item.config.getini("timeout")
    try:
        seconds = float(total)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return 0.75 * seconds if seconds > 0 else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """Run each coroutine test of this directory under :func:`loop_bound`."""
    func = getattr(item, "obj", None)
    bound = loop_bound(item) if _here(item) else None
    if bound is None or func is None or not inspect.iscoroutinefunction(func):
        return (yield)

    @functools.wraps(func)
    async def bounded(*args: Any, **kwargs: Any) -> Any:
        task = asyncio.ensure_future(func(*args, **kwargs))
        stuck: list[str] = []

        def expire() -> None:
            out = io.StringIO()
            task.print_stack(file=out)
            stuck.append(out.getvalue())
            task.cancel()

        timer = asyncio.get_running_loop().call_later(bound, expire)
        try:
            return await task
        except asyncio.CancelledError:
            if not stuck:
                raise
        finally:
            timer.cancel()
        pytest.fail(f"still running after {bound:g} s on its event loop: cancelled "
                    f"(tests/aio/conftest.py)\n{stuck[0]}", pytrace=False)

    item.obj = bounded  # type: ignore[attr-defined]
    try:
        return (yield)
    finally:
        item.obj = func  # type: ignore[attr-defined]
