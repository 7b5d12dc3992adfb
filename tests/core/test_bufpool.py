"""Reused receive buffers: memory is written again only once nothing refers to it."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from rendr.carriers.tcp import COPY_MAX, READ_BURST, SMALL_STREAK, TcpCarrier
from rendr.core import bufpool as rxbuf
from rendr.core.bufpool import BUFFER_SIZE, MIN_READ, ReadBuffers

pytestmark = pytest.mark.skipif(not rxbuf._REUSE, reason="no reference counts here: "
                                "buffers are never reused")


def _read(rb: ReadBuffers, data: bytes) -> memoryview:
    """What a socket read of ``data`` does: get room, fill it, report it."""
    room = rb.get()
    assert len(room) >= len(data)
    room[: len(data)] = data
    return rb.filled(len(data))


def test_calibration_sees_live_views() -> None:
    assert rxbuf._calibrate()[0]


def test_rewinds_only_when_nothing_refers_to_the_buffer() -> None:
    rb = ReadBuffers()
    a = _read(rb, b"A" * 1000)
    # a is alive: the next read must go after it, not over it
    assert len(rb.get()) == BUFFER_SIZE - 1000
    b = _read(rb, b"B" * 1000)
    assert bytes(a) == b"A" * 1000 and bytes(b) == b"B" * 1000
    piece = a[10:20]  # a slice keeps the buffer referenced too
    del a, b
    assert len(rb.get()) == BUFFER_SIZE - 2000
    assert bytes(piece) == b"A" * 10
    del piece
    assert len(rb.get()) == BUFFER_SIZE  # free again: rewound, cache-warm


def test_filled_views_are_read_only() -> None:
    rb = ReadBuffers()
    view = _read(rb, b"xyz")
    assert view.readonly
    with pytest.raises(TypeError):
        view[0] = 1


def test_short_tail_moves_to_another_buffer_and_keeps_the_old_data() -> None:
    rb = ReadBuffers()
    chunk = BUFFER_SIZE - MIN_READ + 1
    first_data = os.urandom(chunk)
    first = _read(rb, first_data)
    room = rb.get()  # tail too short: a different buffer
    assert room.obj is not first.obj and len(room) == BUFFER_SIZE
    second = _read(rb, b"z" * 4096)
    assert bytes(first) == first_data and bytes(second) == b"z" * 4096


def test_retired_buffer_is_reused_once_freed() -> None:
    rxbuf._spares.clear()
    rxbuf._retired.clear()
    rb = ReadBuffers()
    first = _read(rb, b"q" * (BUFFER_SIZE - MIN_READ + 1))
    old = id(first.obj)  # (a reference here would keep it in use)
    _read(rb, b"r")  # moved on: the first buffer is retired, still referenced
    assert any(id(buf) == old for buf in rxbuf._retired)
    other = ReadBuffers()
    assert id(other.get().obj) != old  # still referenced: not handed out
    del first
    third = ReadBuffers()
    assert id(third.get().obj) == old  # freed meanwhile: reused instead of allocating


def test_release_gives_back_a_free_buffer_only() -> None:
    rb = ReadBuffers()
    kept = _read(rb, b"k" * 100)
    rb.release()
    assert rb.held == BUFFER_SIZE  # a view is alive: nothing given back
    assert bytes(kept) == b"k" * 100
    del kept
    rb.release()
    assert rb.held == 0  # an idle carrier holds no buffer


class _FakeTransport:
    """A stand-in transport (a carrier on it always reads into its buffers)."""

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 1), "peername": ("127.0.0.1", 2)}.get(name, default)

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        assert not self.paused
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        assert self.paused
        self.paused = False

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


class _FakeUvloopTransport(_FakeTransport):
    """Stands in for uvloop's: a carrier on it takes message reads while they are small."""


_FakeUvloopTransport.__module__ = "uvloop.loop"


class _Sink:
    def __init__(self) -> None:
        self.data: list[memoryview] = []

    def carrier_data(self, data: memoryview) -> None:
        self.data.append(data)

    def carrier_lost(self, exc: BaseException | None) -> None:
        pass

    def carrier_pause(self) -> None:
        pass

    def carrier_resume(self) -> None:
        pass


def _connected(uvloop: bool = False) -> tuple[TcpCarrier, _FakeTransport, _Sink]:
    """A TCP carrier on a fake transport (must run inside a loop), reporting to a sink."""
    carrier = TcpCarrier()
    transport = _FakeUvloopTransport() if uvloop else _FakeTransport()
    carrier.connection_made(transport)  # type: ignore[arg-type]
    sink = _Sink()
    carrier.set_sink(sink)
    return carrier, transport, sink


def _feed(carrier: TcpCarrier, data: bytes) -> None:
    room = carrier.get_buffer(-1)
    room[: len(data)] = data
    carrier.buffer_updated(len(data))


async def test_tcp_carrier_reads_at_most_a_burst_per_loop_iteration() -> None:
    carrier, transport, sink = _connected()
    chunk = os.urandom(128 * 1024)
    for _ in range(READ_BURST // len(chunk)):
        assert not transport.paused
        _feed(carrier, chunk)
    assert transport.paused  # a whole burst in one iteration: stop reading
    await asyncio.sleep(0)  # the next iteration
    assert not transport.paused and transport.pauses == 1
    assert b"".join(bytes(v) for v in sink.data) == chunk * (READ_BURST // len(chunk))


async def test_tcp_carrier_switches_between_message_and_bulk_reads() -> None:
    carrier, transport, sink = _connected(uvloop=True)
    assert transport.protocol is carrier._messages  # starts with message reads
    assert transport.protocol.data_received == carrier.data_received  # no call in between
    transport.protocol.data_received(b"hello")
    transport.protocol.data_received(os.urandom(COPY_MAX - 1))
    assert transport.protocol is carrier._messages
    big = os.urandom(COPY_MAX)
    transport.protocol.data_received(big)
    assert transport.protocol is carrier  # the next reads go into reused buffers
    _feed(carrier, b"x" * (COPY_MAX + 1))
    for i in range(SMALL_STREAK - 1):
        _feed(carrier, b"%d" % i)
        assert transport.protocol is carrier
        if i == 3:
            _feed(carrier, b"y" * (COPY_MAX + 1))  # a large read starts the streak again
    for _ in range(5):
        _feed(carrier, b"z")
    assert transport.protocol is carrier._messages
    got = b"".join(bytes(d) for d in sink.data)
    assert got.startswith(b"hello") and big in got and got.endswith(b"zzzzz")
    assert sum(len(d) for d in sink.data) == len(got)


async def test_tcp_carrier_small_reads_are_copies_and_idle_holds_no_buffer() -> None:
    carrier, transport, sink = _connected()
    for i in range(50):
        _feed(carrier, b"ping %d" % i)
        assert isinstance(sink.data[-1], bytes)  # pins no buffer
        assert carrier._rx.held == 0  # given back at once
        big = os.urandom(COPY_MAX + 1)
        _feed(carrier, big)
        assert isinstance(sink.data[-1], memoryview)  # no copy
        _feed(carrier, b"pong")  # small, but the buffer is in use: kept
        assert carrier._rx.held
        assert bytes(sink.data[-2]) == big and sink.data[-1] == b"pong"
        await asyncio.sleep(0)
        assert carrier._rx.held  # the sink still holds the view
        assert bytes(sink.data[-2]) == big
        sink.data.clear()
        await asyncio.sleep(0)
        # the next iteration after a read gives the free buffer back
        _feed(carrier, b"x")
        await asyncio.sleep(0)
        assert carrier._rx.held == 0
    assert transport.pauses == 0


def test_release_lets_freed_retired_buffers_and_shared_arenas_go() -> None:
    """idle_paths (CI) failed once the record layer shared the pool: buffers retired
    while referenced stayed in the retired list after they were freed (10 MiB at
    idle), and the record arenas kept theirs.  A carrier's release() now trims them."""
    rxbuf._retired.clear()
    rxbuf._spares.clear()
    rb = ReadBuffers()
    held = _read(rb, b"x" * (BUFFER_SIZE - MIN_READ + 1))  # next read starts another
    _read(rb, b"y")
    assert rxbuf.pool_stats()[1] == 1  # the first buffer is retired, still referenced
    arena = rxbuf.shared()
    room = arena.get(100)
    del room
    kept = arena.filled(100)
    rb.release()
    assert rxbuf.pool_stats()[1] == 1 and arena.held  # both still referenced
    del held, kept
    rb.release()
    assert rxbuf.pool_stats()[1] == 0  # the freed retired buffer became a spare
    assert not arena.held  # the arena gave its buffer back
    rxbuf._arenas.remove(arena)
