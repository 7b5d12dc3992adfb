"""conn.events(): path changes are awaitable (issue 6, observability)."""

from __future__ import annotations

import asyncio

import rendr

from .conftest import Pair, close_pair, make_pair


async def test_events_iterator_sees_path_changes_and_ends_after_closed() -> None:
    pair: Pair = await make_pair()
    try:
        stream = pair.client.events()
        active = pair.client.active_path
        pair.relay_of(active).kill()
        await pair.client.write(b"x")
        kinds = []
        async for event in stream:
            kinds.append(event.kind)
            if event.kind is rendr.EventKind.MIGRATION:
                break
        assert rendr.EventKind.PATH_DOWN in kinds and kinds[-1] is rendr.EventKind.MIGRATION
        pair.client.abort()
        rest = [e.kind async for e in stream]
        assert rest and rest[-1] is rendr.EventKind.CLOSED
        assert [e async for e in pair.client.events()] == []  # closed: ends at once
    finally:
        await close_pair(pair)


async def test_unread_events_are_bounded() -> None:
    pair = await make_pair()
    try:
        stream = pair.client.events(maxlen=2)
        for pid in list(pair.client._driver.carriers)[:1]:
            pair.relay_of(pid).kill()
        await pair.client.write(b"x")
        await asyncio.sleep(0.3)
        pair.client.abort()
        got = [e async for e in stream]
        assert len(got) <= 2 and stream.dropped >= 1
        assert got[-1].kind is rendr.EventKind.CLOSED
    finally:
        await close_pair(pair)

