"""A dialer whose flow ended while no path could carry its CLOSE delivers it later,
so the listener learns the flow is gone (issue 6)."""

from __future__ import annotations

import asyncio

import pytest

import rendr

from .conftest import close_pair, make_pair


async def test_abort_without_a_path_reaches_the_listener_when_the_network_returns() -> None:
    """The client aborts while its only path is silent: the CLOSE had no path.  When
    the network returns, the dialer delivers it on a fresh carrier (JOIN + CLOSE), so
    the server sees ConnAborted at once instead of waiting out its budget (it waited
    the whole 90 s before)."""
    pair = await make_pair(n_paths=1)
    try:
        relay = pair.relays[0]
        relay.blackhole()
        await asyncio.sleep(1.0)  # both ends declare the path dead (dead_timeout 0.6 s)
        assert not any(p.state == "up" for p in pair.client.stats().paths)
        pair.client.abort(7, "user gave up")
        await asyncio.sleep(0.2)
        relay.forward()  # the network is back
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(rendr.ConnAborted) as info:
            await asyncio.wait_for(pair.server.read(10), 10)
        assert info.value.code == 7 and info.value.reason == "user gave up"
        assert asyncio.get_running_loop().time() - t0 < 5
    finally:
        await close_pair(pair)
