"""Carrier tests over real loopback sockets run on the default loop and, where
installed, on uvloop (as tests/aio does)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

_BOTH_LOOPS = {"test_quic.py", "test_quic_auth.py", "test_udp_gso.py"}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]] | None:
    """The loopback carrier tests run on the default loop and on uvloop."""
    if item.path.name not in _BOTH_LOOPS:
        return None
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop}
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories
