"""The receive path on real sockets: readinto, a reader that lags far behind while the
carriers reuse their buffers, and idle paths that hold no receive buffer (both loops)."""

from __future__ import annotations

import array
import asyncio
import collections
import hashlib
import os
from typing import Any

import pytest

import rendr

from .conftest import Pair, assert_drivers_coroutine, pump


async def test_readinto_reads_data_then_zero_at_eof(pair: Pair) -> None:
    c, s = pair.client, pair.server
    await c.write(b"hello world")
    buf = bytearray(5)
    assert await s.readinto(buf) == 5 and buf == b"hello"
    view = memoryview(bytearray(100))
    n = await s.readinto(view[10:])
    assert view[10 : 10 + n] == b" world"[:n]
    got = bytes(view[10 : 10 + n])
    while len(got) < 6:
        n = await s.readinto(view)
        got += bytes(view[:n])
    assert got == b" world"
    ints = array.array("i", [0, 0])  # any writable buffer, counted in bytes
    await c.write(b"12345678")
    assert await s.readinto(ints) == 8
    assert ints.tobytes() == b"12345678"
    assert await s.readinto(bytearray()) == 0
    with pytest.raises(TypeError):
        await s.readinto(b"read-only")  # type: ignore[arg-type]
    await c.write_eof()
    assert await s.readinto(buf) == 0  # only EOF reads zero
    assert await s.readinto(buf) == 0


async def test_reader_far_behind_gets_every_byte_intact(pair: Pair) -> None:
    """The writer fills most of the receive window before the reader reads anything:
    carrier buffers stay referenced by unread data and must never be written over."""
    c, s = pair.client, pair.server
    data = os.urandom(6 << 20)  # below the 8 MiB window: all of it arrives unread
    writer = asyncio.create_task(pump(c, data, chunk=100_000))
    await asyncio.wait_for(writer, 20)
    for _ in range(2000):  # all of it arrived (and sits unread)
        if sum(p.bytes_received for p in s.stats().paths) >= len(data):
            break
        await asyncio.sleep(0.01)
    await c.write_eof()
    digest = hashlib.sha256()
    buf = bytearray(70_000)
    got = 0
    use_read = False
    while True:  # alternate read() and readinto() with odd sizes
        if use_read:
            chunk = await s.read(123_457)
            n = len(chunk)
            digest.update(chunk)
        else:
            n = await s.readinto(buf)
            digest.update(memoryview(buf)[:n])
        if not n:
            break
        got += n
        use_read = not use_read
    assert got == len(data)
    assert digest.digest() == hashlib.sha256(data).digest()


def _rx_held(conn: rendr.Conn) -> int:
    return sum(c._rx.held for c in conn._driver.carriers.values() if hasattr(c, "_rx"))


async def test_idle_paths_hold_no_receive_buffer(pair: Pair) -> None:
    c, s = pair.client, pair.server
    data = os.urandom(3 << 20)
    task = asyncio.create_task(pump(c, data))
    got = bytearray()
    buf = bytearray(1 << 20)
    while len(got) < len(data):
        n = await s.readinto(buf)
        got += buf[:n]
    await task
    assert got == data
    await asyncio.sleep(0.3)  # PINGs and ACKs only
    assert _rx_held(s) == 0 and _rx_held(c) == 0


async def test_reading_the_last_byte_frees_retired_buffers(pair: Pair) -> None:
    """CI's idle_paths failed (70 KiB per idle path end): buffers retired while unread
    data referred to them were only trimmed by a carrier's next receive, so when the
    application read the last of them after the last arrival they stayed listed (and
    held) for as long as the path stayed quiet.  The read that frees them trims them."""
    from rendr.core import bufpool

    c, s = pair.client, pair.server
    data = os.urandom(5 << 20)  # arrives unread: the carriers retire referenced buffers
    await asyncio.wait_for(pump(c, data, chunk=100_000), 20)
    for _ in range(2000):
        if sum(p.bytes_received for p in s.stats().paths) >= len(data):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # the carriers' last release() ran, with data unread
    assert bufpool.pool_stats()[1] > 0
    buf = bytearray(1 << 20)
    got = 0
    while got < len(data):  # everything is here: no read waits (no carrier runs)
        got += await s.readinto(buf)
    assert got == len(data)
    assert bufpool.pool_stats()[1] == 0


async def test_read_view_reads_uncopied_then_empty_at_eof(pair: Pair) -> None:
    c, s = pair.client, pair.server
    await c.write(b"hello world")
    got = b""
    while len(got) < 11:
        view = await s.read_view(5)
        assert isinstance(view, memoryview) and view.readonly and 1 <= len(view) <= 5
        got += bytes(view)
    assert got == b"hello world"
    assert len(await s.read_view(0)) == 0
    await c.write_eof()
    assert len(await s.read_view()) == 0  # only EOF reads empty
    assert len(await s.read_view()) == 0


async def test_held_views_are_never_written_over(pair: Pair) -> None:
    """The application keeps every view it read while megabytes more arrive through
    the same carriers: receive buffers still referenced must not be reused."""
    c, s = pair.client, pair.server
    data = os.urandom(12 << 20)
    writer = asyncio.create_task(pump(c, data, chunk=1 << 20))
    held: list[memoryview] = []
    got = 0
    while got < len(data):
        view = await s.read_view(1 << 20)
        assert view.readonly and len(view)
        held.append(view)
        got += len(view)
    await asyncio.wait_for(writer, 20)
    assert got == len(data)
    assert any(v.nbytes > 16 * 1024 for v in held)  # large reads came as views
    assert b"".join(held) == data



async def test_a_later_deadline_keeps_the_armed_loop_timer(pair: Pair) -> None:
    """Receiving moves the engine's next deadline later (the next PING, the path's
    liveness) on nearly every read of a bulk transfer.  The driver keeps the loop timer
    it armed then (it fires early, finds nothing due and re-arms once) instead of a new
    timer handle and a cancelled heap entry per read; an earlier deadline re-arms at
    once.  Counted through asyncio's ``call_at`` (uvloop's cannot be wrapped)."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, asyncio.BaseEventLoop):
        pytest.skip("counts through asyncio's own call_at; uvloop's cannot be wrapped")
    driver = pair.server._driver
    arms: list[float] = []
    call_at = loop.call_at

    def counting_call_at(when: float, callback: Any, *args: Any, **kw: Any) -> Any:
        if getattr(callback, "__name__", "") == "_on_timer":
            arms.append(when)
        return call_at(when, callback, *args, **kw)

    setattr(loop, "call_at", counting_call_at)  # noqa: B010 (an instance attribute)
    try:
        now = loop.time()
        driver._arm_timer(None)  # no deadline: no timer
        driver._arm_timer(now + 0.05)
        for i in range(1, 50):  # later and later: the timer armed for +0.05 s stays
            driver._arm_timer(now + 0.05 + i * 0.01)
        assert arms == [pytest.approx(now + 0.05)]
        driver._arm_timer(now + 0.03)  # earlier: re-armed at once
        assert arms[-1] == pytest.approx(now + 0.03)
        driver._arm_timer(now + 0.3)  # later again: kept; fires at +0.03 s and re-arms
        assert len(arms) == 2
        await asyncio.sleep(0.15)
        assert len(arms) >= 3  # (for +0.3 s, or the engine's own deadline by then)
    finally:
        delattr(loop, "call_at")
        driver.flush()  # back to the engine's own deadline
    await pair.client.write(b"still alive")
    assert await pair.server.readexactly(11) == b"still alive"


async def test_asyncio_loop_bulk_reads_schedule_no_callback_per_read(pair: Pair) -> None:
    """asyncio's loops read a socket at most once per iteration: a carrier there notices
    idleness with a check every ``IDLE_CHECK`` s instead of an end-of-burst callback
    after every read (a sixth of the receiver's interpreted work per read), and an idle
    path still gives its buffer back."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, asyncio.BaseEventLoop):
        pytest.skip("uvloop reads up to 32 times per event: its bursts are capped per iteration")
    scheduled: collections.Counter[str] = collections.Counter()
    call_soon, call_later = loop.call_soon, loop.call_later

    def counting_soon(callback: Any, *args: Any, **kw: Any) -> Any:
        scheduled[getattr(callback, "__name__", "")] += 1
        return call_soon(callback, *args, **kw)

    def counting_later(delay: float, callback: Any, *args: Any, **kw: Any) -> Any:
        scheduled[getattr(callback, "__name__", "")] += 1
        return call_later(delay, callback, *args, **kw)

    data = os.urandom(16 << 20)
    setattr(loop, "call_soon", counting_soon)  # noqa: B010 (instance attributes)
    setattr(loop, "call_later", counting_later)  # noqa: B010
    try:
        task = asyncio.create_task(pump(pair.client, data))
        digest = hashlib.sha256()
        got = reads = 0
        while got < len(data):
            view = await pair.server.read_view(1 << 20)
            digest.update(view)
            got += len(view)
            reads += 1
            del view
        await task
    finally:
        delattr(loop, "call_soon")
        delattr(loop, "call_later")
    assert digest.digest() == hashlib.sha256(data).digest()
    assert reads >= 16
    assert scheduled["_end_burst"] == 0, scheduled
    assert scheduled["_check_idle"] <= 40, scheduled  # one per IDLE_CHECK while busy
    await asyncio.sleep(0.3)
    assert _rx_held(pair.server) == 0 and _rx_held(pair.client) == 0


def _tcp_carriers(conn: rendr.Conn) -> list[Any]:
    from rendr.carriers.tcp import TcpCarrier
    return [c for c in conn._driver.carriers.values() if isinstance(c, TcpCarrier)]


async def test_small_messages_use_message_reads_and_bulk_uses_reused_buffers(pair: Pair) -> None:
    """A BufferedProtocol read costs a loop ~7k more instructions than ``data_received``
    (uvloop: a get_buffer call, a buffer export, a buffer_updated call); a 64 B echo
    round trip cost 13 % more.  Small messages now arrive as the loop's own ``bytes``;
    a large read switches the carrier to reading into reused buffers, and a run of
    small reads switches it back.  Every byte arrives, in order, across the switches."""
    c, s = pair.client, pair.server
    modes: list[bool] = []
    for carrier in _tcp_carriers(s):
        set_bulk = carrier._set_bulk

        def logged(bulk: bool, set_bulk: Any = set_bulk) -> None:
            modes.append(bulk)
            set_bulk(bulk)
        carrier._set_bulk = logged
    for i in range(40):
        msg = b"ping %d" % i
        await c.write(msg)
        assert await s.readexactly(len(msg)) == msg
    carriers = _tcp_carriers(s)
    assert carriers and not modes
    assert all(c._transport.get_protocol() is c._messages for c in carriers)
    assert _rx_held(s) == 0
    data = os.urandom(8 << 20)
    task = asyncio.create_task(pump(c, data))
    digest = hashlib.sha256()
    got = 0
    buf = bytearray(1 << 20)
    while got < len(data):
        n = await s.readinto(buf)
        digest.update(memoryview(buf)[:n])
        got += n
    await task
    assert digest.digest() == hashlib.sha256(data).digest()
    assert modes[:1] == [True]  # the bulk went into reused buffers
    for i in range(40):  # ping-pong: one small read at a time
        msg = b"pong %d" % i
        await c.write(msg)
        assert await s.readexactly(len(msg)) == msg
    assert modes[-1] is False  # back to message reads
    assert all(c._transport.get_protocol() is c._messages for c in carriers)
    await asyncio.sleep(0.2)
    assert _rx_held(s) == 0



_ECHO_FAULTS = """
import asyncio, os, resource, sys
import rendr

def run(main):
    if sys.argv[1] == "uvloop":
        import uvloop
        uvloop.run(main)
    else:
        asyncio.run(main)

async def serve(sock):
    listener = await rendr.listen(rendr.ListenSpec("tcp", "127.0.0.1:0"))
    sock.send(str(listener.addrs[0][1]).encode())
    server = await listener.accept()
    while data := await server.read(65536):
        await server.write(data)

async def measure(port):
    client = await rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{port}")]).dial()
    msg = b"m" * 64
    async def round_trips(n):
        for _ in range(n):
            await client.write(msg)
            assert await client.readexactly(64) == msg
    await round_trips(200)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    await round_trips(2000)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    await client.close()

import socket
a, b = socket.socketpair()
pid = os.fork()
if pid == 0:  # the echo server: its own process, as deployed
    run(serve(b))
    os._exit(0)
port = int(a.recv(16))
run(measure(port))
os.waitpid(pid, 0)
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_small_reads_cost_no_page_faults(loop: str) -> None:
    """Message reads on asyncio's selector loop first let the transport recv(256 KiB)
    per read: in a fresh process glibc served each with an mmap, a mremap and a munmap
    (three syscalls and a page fault per read; a two-process echo client's CPU per round
    trip went from 66 to 101 µs).  The carrier now caps such reads at COPY_MAX.  Measured
    in a fresh client process (pytest's own has long raised glibc's mmap threshold),
    the echo server in another: 2000 round trips, 2000 small reads."""
    import subprocess
    import sys
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    out = subprocess.run([sys.executable, "-c", _ECHO_FAULTS, loop], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    faults = int(out.split()[-1])
    assert faults < 400, f"{faults} page faults for 2000 small reads ({loop})"


async def test_bytes_stay_in_order_across_many_read_mode_switches(pair: Pair) -> None:
    """Message and bulk reads alternate with the traffic (a switch happens inside a read
    callback): a seeded mix of small echo exchanges and bulk bursts, both directions,
    arrives byte-exact and in order."""
    import random
    rng = random.Random(5)
    c, s = pair.client, pair.server
    switches: list[bool] = []
    for carrier in _tcp_carriers(s) + _tcp_carriers(c):
        set_bulk = carrier._set_bulk

        def logged(bulk: bool, set_bulk: Any = set_bulk) -> None:
            switches.append(bulk)
            set_bulk(bulk)
        carrier._set_bulk = logged
    sent = hashlib.sha256()
    got = hashlib.sha256()
    for _ in range(12):
        for _ in range(rng.randrange(17, 40)):  # enough small reads to switch back
            msg = os.urandom(rng.randrange(1, 2000))
            await c.write(msg)
            echo = await s.readexactly(len(msg))
            await s.write(echo)
            assert await c.readexactly(len(msg)) == msg
        burst = os.urandom(rng.randrange(64 << 10, 3 << 20))
        sent.update(burst)
        task = asyncio.create_task(pump(c, burst, chunk=rng.choice([4096, 65536, 1 << 20])))
        left = len(burst)
        while left:
            view = await s.read_view(min(left, 1 << 20))
            got.update(view)
            left -= len(view)
            del view
        await task
    assert got.digest() == sent.digest()
    assert switches.count(True) >= 6 and switches.count(False) >= 6, switches


async def test_read_and_write_are_the_drivers_coroutines(pair: Pair) -> None:
    """``read``, ``readexactly`` and ``write`` hand back the driver's coroutines (compiled
    with the engine in a compiled build): no interpreted coroutine per message.  They
    still behave as coroutines everywhere (tasks, cancellation, errors at await)."""
    c, s = pair.client, pair.server
    coros = [c.write(b"abcdef"), s.read(3), s.readexactly(3)]
    for coro in coros:
        assert_drivers_coroutine(coro)
    await coros[0]
    assert await asyncio.create_task(coros[1]) == b"abc"
    assert await coros[2] == b"def"
    reader = asyncio.create_task(s.read())
    await asyncio.sleep(0.05)
    reader.cancel()  # parked in the driver's coroutine: cancelling loses no data
    with pytest.raises(asyncio.CancelledError):
        await reader
    await c.write(b"after")
    assert await s.readexactly(5) == b"after"
    assert await s.read(0) == b""
    await c.close()
    with pytest.raises(rendr.ConnClosed):
        await c.read()  # raised when awaited (the call itself returns the coroutine)
    late = c.write(b"x")
    with pytest.raises(rendr.ConnClosed):
        await late


def test_read_and_write_still_look_like_coroutine_functions() -> None:
    """Code that checks a callback before awaiting it still awaits these methods (they
    return the driver's coroutines without being ``async def``)."""
    import inspect

    methods = [rendr.Conn.read, rendr.Conn.readexactly, rendr.Conn.write,
               rendr.PacketConn.send, rendr.PacketConn.recv]
    for method in methods:
        assert asyncio.iscoroutinefunction(method), method
        if hasattr(inspect, "markcoroutinefunction"):  # Python 3.12+
            assert inspect.iscoroutinefunction(method), method
