"""A deterministic simulated network for testing two :class:`~rendr.core.flow.Flow` engines.

No sockets, no asyncio, no real time: a :class:`Sim` owns a dialer and a
listener engine, a set of simulated paths between them and a virtual clock, and
runs a discrete-event loop (a heap of pipe deliveries and scheduled actions,
plus each engine's own timer).  It drives the engines exactly as
``docs/engine-api.md`` prescribes: after every input it calls ``transmits``,
``closes``, ``events`` and ``get_timer``, and flushes again while
``wants_transmit()`` is true.

Each path models a TCP-like carrier: per direction an ordered, reliable byte
pipe with a one-way ``delay`` (plus optional seeded ``jitter`` that never
reorders) and an optional ``rate`` in bytes/s, so a bulk write takes virtual
time and bytes are in flight.  Writes are cut into ``mss``-sized segments that
arrive separately.  When more than ``sndbuf`` bytes wait to be serialized the
sender's carrier reports itself blocked (``set_path_blocked``) until half of it
drained.  Faults::

    sim = Sim(FlowConfig(migration_budget=3.0), seed=1)
    p1 = sim.add_path(0.010)
    sim.at(0.5, lambda: sim.kill(p1))        # RST: in-flight bytes lost, both ends told
    sim.at(0.7, lambda: sim.blackhole(p1))   # silence, nothing reported
    sim.write(Side.DIALER, payload, close=True)
    assert sim.run_until(lambda: sim.eof[Side.LISTENER], max_time=60)

A pipe either delivers every byte in order or dies: a blackholed path holds
its bytes (and any RST/EOF) and delivers them after :meth:`Sim.unblackhole`.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from ..config import FlowConfig
from ..core.events import Event, EventKind
from ..core.flow import Flow
from ..core.types import Cause, Role
from ..errors import RendrError

__all__ = ["Side", "Sim", "SimError", "SimPath"]

T = TypeVar("T")

_DATA, _RST, _EOF = 0, 1, 2
_Item = tuple[float, int, memoryview | None]  # (arrival time, kind, payload)


class SimError(AssertionError):
    """The simulation cannot go on (e.g. an engine timer that never moves forward)."""


class Side(enum.IntEnum):
    """One end of the simulated flow; also the index into the per-side lists of :class:`Sim`."""

    DIALER = 0
    LISTENER = 1

    @property
    def other(self) -> Side:
        """The opposite end."""
        return Side.LISTENER if self is Side.DIALER else Side.DIALER


class _Pipe:
    """One direction of a path: segments in flight, in arrival order."""

    def __init__(self) -> None:
        self.items: deque[_Item] = deque()
        self.tx_free_at = 0.0  # when the link finished serializing what was queued
        self.last_arrival = 0.0


class SimPath:
    """One simulated carrier between the two engines.

    Attributes:
        pid: path id (the same on both ends).
        delay / rate / mss / jitter / sndbuf: link parameters (see :meth:`Sim.add_path`).
        pipes: the two directions, indexed by the *sending* :class:`Side`.
        dead: the carrier was reset (by a fault or an abortive close).
        blackholed: nothing is delivered (or reported) in either direction.
        closed: per side, the end closed its carrier (it reads and writes nothing more).
        blocked: per side, the end's carrier told its engine that it is blocked.
    """

    def __init__(self, pid: int, delay: float, rate: float | None, mss: int, jitter: float,
                 sndbuf: int) -> None:
        self.pid = pid
        self.delay = delay
        self.rate = rate
        self.mss = mss
        self.jitter = jitter
        self.sndbuf = sndbuf
        self.pipes = (_Pipe(), _Pipe())
        self.dead = False
        self.blackholed = False
        self.closed = [False, False]
        self.blocked = [False, False]

    def backlog(self, side: Side, now: float) -> float:
        """Bytes ``side`` queued that the link has not serialized yet (0 without a rate)."""
        if self.rate is None:
            return 0.0
        return max(0.0, self.pipes[side].tx_free_at - now) * self.rate


class Sim:
    """Two engines (dialer and listener) back to back over simulated paths.

    Args:
        config: the dialer's config (and the listener's unless ``listener_config``).
        listener_config: the listener's config.
        seed: seeds :attr:`rng` (jitter; free for tests to use).
        flow_id: the flow id of both engines.
        spin_poll: what to do when an engine's timer would spin (``get_timer()`` still
            returns a past deadline after ``handle_timer``, so a real driver would busy-loop):
            None raises :class:`SimError`; a number re-runs the timer every ``spin_poll``
            seconds instead and counts the episode in ``timer_spins``.

    Per-side attributes are lists indexed by :class:`Side`: ``events`` (every
    event the engine emitted), ``received`` (what the reader drained), ``eof``
    (the reader got ``b""``), ``read_error`` / ``write_error`` (what
    ``read()`` / ``send()`` raised), ``written`` (bytes ``send()`` accepted),
    ``reading`` (set False to stop the automatic reader).
    """

    def __init__(self, config: FlowConfig | None = None, *,
                 listener_config: FlowConfig | None = None, seed: int = 0,
                 flow_id: bytes = b"F" * 16, spin_poll: float | None = None) -> None:
        dcfg = config or FlowConfig()
        lcfg = listener_config or dcfg
        self.now = 0.0
        self.rng = random.Random(seed)
        self.flows = (
            Flow(role=Role.DIALER, flow_id=flow_id, config=dcfg, now=0.0,
                 peer_window=lcfg.recv_window),
            Flow(role=Role.LISTENER, flow_id=flow_id, config=lcfg, now=0.0,
                 peer_window=dcfg.recv_window),
        )
        self.paths: dict[int, SimPath] = {}
        self.events: tuple[list[Event], list[Event]] = ([], [])
        self.received = (bytearray(), bytearray())
        self.eof = [False, False]
        self.read_error: list[BaseException | None] = [None, None]
        self.write_error: list[BaseException | None] = [None, None]
        self.written = [0, 0]
        self.reading = [True, True]
        self._pending: tuple[deque[memoryview], deque[memoryview]] = (deque(), deque())
        self._then: list[str | None] = [None, None]
        self._timers: list[float | None] = [None, None]
        self._flush_scheduled = [False, False]
        self._stale: list[tuple[float | None, int]] = [(None, 0), (None, 0)]
        self.spin_poll = spin_poll
        self.timer_spins = [0, 0]
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._next_pid = 1

    # ------------------------------------------------------------ accessors

    @property
    def dialer(self) -> Flow:
        """The dialer's engine."""
        return self.flows[Side.DIALER]

    @property
    def listener(self) -> Flow:
        """The listener's engine."""
        return self.flows[Side.LISTENER]

    def events_of(self, side: Side, kind: EventKind) -> list[Event]:
        """The events of one kind that ``side`` emitted so far."""
        return [e for e in self.events[side] if e.kind is kind]

    # ------------------------------------------------------------ scheduling

    def at(self, when: float, action: Callable[[], object]) -> None:
        """Run ``action()`` at virtual time ``when`` (now, if already past)."""
        def run() -> None:
            action()

        heapq.heappush(self._heap, (max(when, self.now), next(self._seq), run))

    def call(self, side: Side, fn: Callable[[Flow, float], T]) -> T:
        """Give ``side``'s engine an input ``fn(flow, now)`` now, then service it."""
        try:
            return fn(self.flows[side], self.now)
        finally:
            self._service(side)

    # ------------------------------------------------------------ paths and faults

    def add_path(self, delay: float = 0.005, *, rate: float | None = None, mss: int = 64 * 1024,
                 jitter: float = 0.0, sndbuf: int = 256 * 1024, pid: int | None = None) -> int:
        """Attach a new path on both engines now; return its id (ids are never reused).

        Args:
            delay: one-way delay in seconds (both directions).
            rate: link rate in bytes/s per direction (None: unlimited).
            mss: bytes per delivered segment.
            jitter: extra per-segment delay, uniform in ``[0, jitter]`` (never reorders).
            sndbuf: unserialized bytes above which the sender's carrier reports blocked.
            pid: the id to use (default: one more than the highest so far).
        """
        if pid is None:
            pid = self._next_pid
        if pid in self.paths or pid < self._next_pid:
            raise ValueError(f"path id {pid} was already used")
        self._next_pid = pid + 1
        self.paths[pid] = SimPath(pid, delay, rate, mss, jitter, sndbuf)
        for side in Side:
            self.flows[side].add_path(pid, now=self.now, transport="sim",
                                      local_addr=f"{side.name.lower()}:{pid}")
            self._service(side)
        return pid

    def kill(self, pid: int, near: Side = Side.DIALER) -> None:
        """RST the carrier: in-flight bytes are lost; ``near`` is told now, the other end
        after the one-way delay (unless the path is blackholed then)."""
        path = self.paths[pid]
        if path.dead:
            return
        self._reset(path, near)
        self.at(self.now, lambda: self._notify(near, path, Cause.RESET))

    def blackhole(self, pid: int) -> None:
        """From now on nothing is delivered on the path, in either direction, and nothing
        is reported; bytes are held (a blackhole never breaks the byte stream)."""
        self.paths[pid].blackholed = True

    def unblackhole(self, pid: int) -> None:
        """End a blackhole: held bytes arrive (in order) one delay from now at the earliest."""
        path = self.paths[pid]
        path.blackholed = False
        for side in Side:
            pipe = path.pipes[side]
            last = self.now
            items: deque[_Item] = deque()
            for t, kind, data in pipe.items:
                last = max(last, t, self.now + path.delay)
                items.append((last, kind, data))
            pipe.items = items
            pipe.last_arrival = max(pipe.last_arrival, last)
            if items:
                self._schedule_delivery(path, side, items[0][0])

    # ------------------------------------------------------------ application

    def write(self, side: Side, data: bytes, *, eof: bool = False, close: bool = False) -> None:
        """Queue ``data`` for ``side``'s application writer, which pushes it through
        ``send()`` as space frees; then (optionally) ``send_eof()`` or ``close()``."""
        if data:
            self._pending[side].append(memoryview(data))
        if close or eof:
            self._then[side] = "close" if close else "eof"
        self._service(side)

    def migrate(self, pid: int) -> None:
        """The dialer makes ``pid`` its active path."""
        self.call(Side.DIALER, lambda f, now: f.migrate(pid, now))

    def remove_path(self, side: Side, pid: int) -> None:
        """``side`` retires path ``pid`` (PATH_CLOSE)."""
        self.call(side, lambda f, now: f.remove_path(pid, now))

    def close(self, side: Side) -> None:
        """``side`` closes the flow gracefully (after its queued writes, if any)."""
        self.write(side, b"", close=True)

    def abort(self, side: Side, code: int = 1, reason: str = "") -> None:
        """``side`` aborts the flow."""
        self.call(side, lambda f, now: f.abort(now, code, reason))

    # ------------------------------------------------------------ running

    def step(self, limit: float = float("inf")) -> bool:
        """Process the next event if it is due no later than ``limit``; False if none."""
        best: tuple[float, int] | None = None  # (time, -1 heap / side)
        if self._heap:
            best = (self._heap[0][0], -1)
        for side in Side:
            t = self._timers[side]
            if t is not None and (best is None or t < best[0]):
                best = (t, side)
        if best is None or best[0] > limit:
            return False
        self.now = max(self.now, best[0])
        if best[1] < 0:
            heapq.heappop(self._heap)[2]()
        else:
            self._fire_timer(Side(best[1]))
        return True

    def run(self, until: float) -> None:
        """Process every event due up to ``until``, then set the clock to ``until``."""
        while self.step(until):
            pass
        self.now = max(self.now, until)

    def run_until(self, predicate: Callable[[], bool], max_time: float) -> bool:
        """Run until ``predicate()`` holds (True) or virtual ``max_time`` passes (False)."""
        while not predicate():
            if not self.step(max_time):
                self.now = max(self.now, max_time)
                return predicate()
        return True

    # ------------------------------------------------------------ internals

    def _fire_timer(self, side: Side) -> None:
        self._timers[side] = None
        self.flows[side].handle_timer(self.now)
        self._service(side)
        due = self._timers[side]
        if due is None or due > self.now:
            self._stale[side] = (None, 0)
            return
        # handle_timer(now) left a deadline <= now in place.  A few retries one float
        # ulp later absorb rounding (deadline computed as a + b, tested as now - a >= b);
        # beyond that the engine would spin: raise, or (spin_poll) poll and count it.
        last, count = self._stale[side]
        count = count + 1 if last == due else 1
        self._stale[side] = (due, count)
        if count <= 3:
            self._timers[side] = math.nextafter(self.now, math.inf)
            return
        self.timer_spins[side] += 1
        if self.spin_poll is None:
            raise SimError(f"{side.name} engine timer livelock at t={self.now}: get_timer() "
                           f"keeps returning {due} after handle_timer({self.now})")
        self._timers[side] = self.now + self.spin_poll

    def _service(self, side: Side) -> None:
        """What the driver does after every input to ``side``'s engine."""
        flow = self.flows[side]
        now = self.now
        self._pump_writer(side)
        self._drain_reader(side)
        for pid, buffers in flow.transmits(now):
            self._transmit(side, pid, buffers)
        for pid, abort in flow.closes():
            self._close_end(side, pid, abort)
        self.events[side].extend(flow.events())
        self._timers[side] = flow.get_timer()
        if flow.wants_transmit() and not self._flush_scheduled[side]:
            self._flush_scheduled[side] = True

            def flush() -> None:
                self._flush_scheduled[side] = False
                self._service(side)

            heapq.heappush(self._heap, (now, next(self._seq), flush))

    def _pump_writer(self, side: Side) -> None:
        flow = self.flows[side]
        pending = self._pending[side]
        try:
            while pending:
                n = flow.send(pending[0], self.now)
                self.written[side] += n
                if n == len(pending[0]):
                    pending.popleft()
                elif n == 0:
                    return
                else:
                    pending[0] = pending[0][n:]
            then, self._then[side] = self._then[side], None
            if then == "close":
                flow.close(self.now)
            elif then == "eof":
                flow.send_eof(self.now)
        except RendrError as exc:
            self.write_error[side] = exc
            pending.clear()

    def _drain_reader(self, side: Side) -> None:
        flow = self.flows[side]
        while self.reading[side] and not self.eof[side] and self.read_error[side] is None:
            try:
                data = flow.read(1 << 20)
            except RendrError as exc:
                self.read_error[side] = exc
                return
            if data is None:
                return
            if not data:
                self.eof[side] = True
                return
            self.received[side].extend(data)

    def _transmit(self, side: Side, pid: int, buffers: list[bytes | memoryview]) -> None:
        path = self.paths.get(pid)
        if path is None or path.dead or path.closed[side]:
            return
        data = memoryview(b"".join(buffers))
        pipe = path.pipes[side]
        now = self.now
        for i in range(0, len(data), path.mss):
            seg = data[i:i + path.mss]
            sent = now
            if path.rate is not None:
                sent = max(now, pipe.tx_free_at) + len(seg) / path.rate
                pipe.tx_free_at = sent
            self._push(path, side, sent, _DATA, seg)
        if path.rate is not None and not path.blocked[side] and \
                path.backlog(side, now) > path.sndbuf:
            path.blocked[side] = True
            self.flows[side].set_path_blocked(pid, True)
            self._schedule_unblock(path, side)

    def _schedule_unblock(self, path: SimPath, side: Side) -> None:
        assert path.rate is not None
        when = path.pipes[side].tx_free_at - path.sndbuf / 2 / path.rate

        def unblock() -> None:
            if path.dead or path.closed[side] or not path.blocked[side]:
                return
            if path.backlog(side, self.now) > path.sndbuf / 2 + 1e-6:
                self._schedule_unblock(path, side)
                return
            path.blocked[side] = False
            self.call(side, lambda f, now: f.set_path_blocked(path.pid, False))

        self.at(when, unblock)

    def _push(self, path: SimPath, side: Side, sent: float, kind: int,
              data: memoryview | None) -> None:
        pipe = path.pipes[side]
        arrival = sent + path.delay
        if path.jitter:
            arrival += self.rng.uniform(0.0, path.jitter)
        arrival = max(arrival, pipe.last_arrival)
        pipe.last_arrival = arrival
        pipe.items.append((arrival, kind, data))
        self._schedule_delivery(path, side, arrival)

    def _schedule_delivery(self, path: SimPath, side: Side, when: float) -> None:
        heapq.heappush(self._heap, (max(when, self.now), next(self._seq),
                                    lambda: self._deliver(path, side)))

    def _deliver(self, path: SimPath, sender: Side) -> None:
        pipe = path.pipes[sender]
        to = sender.other
        while not path.blackholed and pipe.items and pipe.items[0][0] <= self.now:
            _, kind, data = pipe.items.popleft()
            if kind == _DATA:
                if not path.closed[to]:
                    assert data is not None
                    self.flows[to].receive(path.pid, data, self.now)
                    self._service(to)
            else:
                self._notify(to, path, Cause.RESET if kind == _RST else Cause.EOF)

    def _notify(self, side: Side, path: SimPath, cause: Cause) -> None:
        if path.closed[side]:
            return  # nobody left at this end to tell
        if cause is Cause.RESET:
            path.closed[side] = True
        self.flows[side].path_failed(path.pid, cause, self.now, "sim")
        self._service(side)

    def _reset(self, path: SimPath, near: Side) -> None:
        """Kill the carrier from ``near``'s end: drop what is in flight, RST to the far end."""
        path.dead = True
        for pipe in path.pipes:
            pipe.items.clear()
            pipe.last_arrival = self.now
        if not path.closed[near.other]:
            self._push(path, near, self.now, _RST, None)

    def _close_end(self, side: Side, pid: int, abort: bool) -> None:
        path = self.paths.get(pid)
        if path is None or path.closed[side]:
            return
        path.closed[side] = True
        if path.dead:
            return
        if abort:
            self._reset(path, side)
        else:
            pipe = path.pipes[side]
            self._push(path, side, max(self.now, pipe.tx_free_at), _EOF, None)
