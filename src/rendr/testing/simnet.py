"""A deterministic simulated network for two :class:`~rendr.core.flow.Flow` engines.

No sockets, no asyncio, no real time.  :class:`Sim` owns a dialer and a listener
engine, simulated paths and a virtual clock, and runs a discrete-event loop (a
heap of deliveries and scheduled actions, plus each engine's timer), driving the
engines as ``docs/engine-api.md`` says.  A path is a TCP-like carrier: per
direction an ordered reliable byte pipe with a one-way ``delay`` (plus seeded
``jitter`` that never reorders) and an optional ``rate`` (bytes/s), delivered in
``mss``-sized segments; a rate-limited sender is told it is blocked while its
backlog exceeds ``sndbuf``.  A pipe delivers every byte in order or dies::

    sim = Sim(FlowConfig(migration_budget=3.0), seed=1)
    p1 = sim.add_path(0.010, rate=10e6)
    p2 = sim.add_path(0.020, rate=10e6)
    sim.write(Side.DIALER, payload, close=True)
    sim.at(0.5, lambda: sim.kill(p1))        # RST: in-flight bytes lost, both ends told
    sim.at(0.7, lambda: sim.fin(p2))         # FIN: in-flight bytes delivered, then EOF
    sim.at(2.0, lambda: sim.add_path(0.01))  # the dialer re-dials
    assert sim.run_until(lambda: sim.eof[Side.LISTENER], max_time=60)

A closed carrier end reports nothing more (like a closed asyncio transport).
"""

from __future__ import annotations

import enum
import functools
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
from ..core.types import Cause, Mode, Role, State
from ..core.wire import Kind
from ..errors import RendrError

__all__ = ["Side", "Sim", "SimError", "SimPath"]

T = TypeVar("T")

_DATA, _RST, _EOF = 0, 1, 2
_Item = tuple[float, int, memoryview | None]  # (arrival time, kind, payload)


class SimError(AssertionError):
    """The simulation cannot go on (an engine timer that would spin forever)."""


class Side(enum.IntEnum):
    """One end of the flow; also the index into every per-side list of :class:`Sim`."""

    DIALER = 0
    LISTENER = 1

    @property
    def other(self) -> Side:
        """The opposite end."""
        return Side.LISTENER if self is Side.DIALER else Side.DIALER


class _Pipe:
    """One direction of a path: what is in flight, in arrival order."""

    def __init__(self) -> None:
        self.items: deque[_Item] = deque()
        self.tx_free_at = 0.0  # when the link will have serialized everything queued
        self.last_arrival = 0.0


class SimPath:
    """One simulated carrier between the engines (see :meth:`Sim.add_path` for parameters).

    Attributes:
        pipes: the two directions, indexed by the *sending* :class:`Side`.
        dead: the carrier was reset (fault or abortive close).
        blackholed: nothing is delivered or reported, in either direction (bytes are held).
        closed: per side, that end closed its carrier.
        blocked: per side, that end's engine was told the carrier is blocked.
    """

    def __init__(self, pid: int, delay: float, rate: float | None, mss: int, jitter: float,
                 sndbuf: int, mtu: int | None = None, loss: float = 0.0,
                 queue: int = 64 * 1024) -> None:
        self.pid, self.delay, self.rate, self.mss = pid, delay, rate, mss
        self.jitter, self.sndbuf = jitter, sndbuf
        self.mtu, self.loss, self.queue = mtu, loss, queue
        self.drops = [0, 0]  # per sending side: datagrams lost (at random or queue full)
        self.pipes = (_Pipe(), _Pipe())
        self.dead = self.blackholed = False
        self.closed, self.blocked = [False, False], [False, False]

    def backlog(self, side: Side, now: float) -> float:
        """Bytes ``side`` queued that the link has not serialized yet (0 without a rate)."""
        if self.rate is None:
            return 0.0
        return max(0.0, self.pipes[side].tx_free_at - now) * self.rate


class Sim:
    """A dialer and a listener engine back to back over simulated paths.

    Args:
        config: the dialer's config (and the listener's, unless ``listener_config``).
        listener_config: the listener's config.
        seed: seeds :attr:`rng` (jitter; tests may draw from it too).
        flow_id: the flow id of both engines.
        mode: both engines' mode (as agreed in the handshake).
        spin_poll: if ``handle_timer(now)`` leaves ``get_timer() <= now`` (a real driver
            would busy-loop): None raises :class:`SimError`; a number re-runs that timer
            every ``spin_poll`` virtual seconds and counts it in :attr:`timer_spins`.

    Per-side lists, indexed by :class:`Side`: ``events`` (all engine events),
    ``received`` (what the reader drained), ``eof`` (the reader got ``b""``),
    ``read_error`` / ``write_error`` (what ``read()`` / ``send()`` raised),
    ``written`` (bytes ``send()`` accepted), ``reading`` (False pauses the reader).
    """

    def __init__(self, config: FlowConfig | None = None, *,
                 listener_config: FlowConfig | None = None, seed: int = 0,
                 flow_id: bytes = b"F" * 16, spin_poll: float | None = None,
                 mode: Mode = Mode.PRIME, kind: Kind = Kind.STREAM) -> None:
        dcfg = config or FlowConfig()
        lcfg = listener_config or dcfg
        self.now = 0.0
        self.rng = random.Random(seed)
        self.flows = (
            Flow(role=Role.DIALER, flow_id=flow_id, config=dcfg, now=0.0,
                 peer_window=lcfg.recv_window, mode=mode, kind=kind),
            Flow(role=Role.LISTENER, flow_id=flow_id, config=lcfg, now=0.0,
                 peer_window=dcfg.recv_window, mode=mode, kind=kind),
        )
        self.paths: dict[int, SimPath] = {}
        self.events: tuple[list[Event], list[Event]] = ([], [])
        self.received = (bytearray(), bytearray())
        self.eof = [False, False]
        self.read_error: list[BaseException | None] = [None, None]
        self.write_error: list[BaseException | None] = [None, None]
        self.written = [0, 0]
        self.packets_read = [0, 0]  # a packet flow: packets (and bytes) the reader took
        self.packet_bytes_read = [0, 0]
        self.packets_refused = [0, 0]  # offer_packets(): packets the full queue refused
        self.reading = [True, True]
        self.spin_poll = spin_poll
        self.timer_spins = [0, 0]
        self._pending: tuple[deque[memoryview], deque[memoryview]] = (deque(), deque())
        self._then: list[str | None] = [None, None]
        self._timers: list[float | None] = [None, None]
        self._stale: list[tuple[float | None, int]] = [(None, 0), (None, 0)]
        self._flush_scheduled = [False, False]
        self._heap: list[tuple[float, int, Callable[[], object]]] = []
        self._seq = itertools.count()
        self._next_pid = 1

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

    def at(self, when: float, action: Callable[[], object]) -> None:
        """Run ``action()`` at virtual time ``when`` (now, if that is past)."""
        heapq.heappush(self._heap, (max(when, self.now), next(self._seq), action))

    def call(self, side: Side, fn: Callable[[Flow, float], T]) -> T:
        """Give ``side``'s engine the input ``fn(flow, now)`` now, then service it."""
        try:
            return fn(self.flows[side], self.now)
        finally:
            self._service(side)

    # ------------------------------------------------------------ paths and faults

    def add_path(self, delay: float = 0.005, *, rate: float | None = None, mss: int = 64 * 1024,
                 jitter: float = 0.0, sndbuf: int = 256 * 1024, pid: int | None = None,
                 mtu: int | None = None, loss: float = 0.0, queue: int = 64 * 1024) -> int:
        """Attach a new path on both engines now (the dialer re-dials); return its id.

        Args:
            delay: one-way delay in seconds (both directions).
            rate: link rate per direction in bytes/s (None: unlimited).
            mss: bytes per delivered segment.
            jitter: extra per-segment delay, uniform in ``[0, jitter]`` (never reorders).
            sndbuf: backlog above which the sender's carrier reports itself blocked.
            pid: the id (default: one more than the highest so far; ids are never reused).
            mtu: a *datagram* path (like udpflow) carrying at most ``mtu`` bytes per
                datagram: each buffer the engine writes is one datagram, lost with
                probability ``loss`` or when the link's queue (``rate`` given) holds
                more than ``queue`` bytes; never blocked.  None: a byte stream.

        Raises:
            RendrError: either engine is closed (a closed flow takes no new path).
        """
        pid = self._next_pid if pid is None else pid
        if pid < self._next_pid:
            raise ValueError(f"path id {pid} was already used")
        if any(f.state is State.CLOSED for f in self.flows):
            raise RendrError("flow is closed")
        self._next_pid = pid + 1
        self.paths[pid] = SimPath(pid, delay, rate, mss, jitter, sndbuf, mtu, loss, queue)
        for side in Side:
            self.call(side, lambda f, now: f.add_path(pid, now=now, transport="sim", mtu=mtu))
        return pid

    def kill(self, pid: int, near: Side = Side.DIALER) -> None:
        """Reset the carrier: in-flight bytes are lost; ``near`` is told now, the far end
        one delay later (if the path is not blackholed then)."""
        path = self.paths[pid]
        if not path.dead:
            self._reset(path, near)
            self.at(self.now, lambda: self._notify(near, path, Cause.RESET))

    def fin(self, pid: int, near: Side = Side.DIALER) -> None:
        """End the carrier cleanly from ``near``'s end (TCP FIN: the host or a middlebox
        closed it): ``near``'s engine is told now that its carrier ended (``Cause.EOF``)
        and that end takes nothing more; what ``near`` already sent is delivered in
        order, then the far end is told ``Cause.EOF`` (if the path is not blackholed)."""
        path = self.paths[pid]
        if path.dead or path.closed[near]:
            return
        self._close_end(near, pid, abort=False)  # the FIN queues behind what is in flight
        self.at(self.now, lambda: self.call(
            near, lambda f, now: f.path_failed(pid, Cause.EOF, now, "sim fin")))

    def blackhole(self, pid: int) -> None:
        """From now on deliver nothing on the path, either way, and report nothing."""
        self.paths[pid].blackholed = True

    def unblackhole(self, pid: int) -> None:
        """End a blackhole: held bytes arrive in order, one delay from now at the earliest."""
        path = self.paths[pid]
        path.blackholed = False
        for side in Side:
            pipe = path.pipes[side]
            last = self.now + path.delay
            retimed: deque[_Item] = deque()
            for t, kind, data in pipe.items:
                last = max(last, t)
                retimed.append((last, kind, data))
            pipe.items = retimed
            pipe.last_arrival = max(pipe.last_arrival, last)
            if retimed:
                self.at(retimed[0][0], functools.partial(self._deliver, path, side))

    # ------------------------------------------------------------ application

    def write(self, side: Side, data: bytes, *, eof: bool = False, close: bool = False) -> None:
        """Queue ``data`` for ``side``'s writer, which feeds ``send()`` as space frees,
        then (optionally) calls ``send_eof()`` or ``close()``."""
        if data:
            self._pending[side].append(memoryview(data))
        if close or eof:
            self._then[side] = "close" if close else "eof"
        self._service(side)

    def offer_packets(self, side: Side, size: int, rate: float, start: float, stop: float,
                      tick: float = 0.001) -> None:
        """A packet flow: ``side``'s application offers ``rate`` bytes/s of ``size``-byte
        packets from ``start`` to ``stop``, every ``tick`` seconds what is due (a packet
        the full queue refuses is dropped and counted in :attr:`packets_refused`)."""
        sent = [0]

        def offer() -> None:
            due = int((self.now - start) * rate / size) + 1 - sent[0]
            flow = self.flows[side]
            for _ in range(max(0, due)):
                sent[0] += 1
                try:
                    if not flow.send_packet(bytes(size), self.now):
                        self.packets_refused[side] += 1
                except RendrError as exc:
                    self.write_error[side] = exc
                    return
            self._service(side)
            if self.now + tick < stop:
                self.at(self.now + tick, offer)

        self.at(start, offer)

    def migrate(self, pid: int) -> None:
        """The dialer makes ``pid`` the active path."""
        self.call(Side.DIALER, lambda f, now: f.migrate(pid, now))

    def remove_path(self, side: Side, pid: int) -> None:
        """``side`` retires path ``pid``."""
        self.call(side, lambda f, now: f.remove_path(pid, now))

    def close(self, side: Side) -> None:
        """``side`` closes the flow gracefully, after its queued writes."""
        self.write(side, b"", close=True)

    def abort(self, side: Side, code: int = 1, reason: str = "") -> None:
        """``side`` aborts the flow."""
        self.call(side, lambda f, now: f.abort(now, code, reason))

    # ------------------------------------------------------------ running

    def step(self, limit: float = math.inf) -> bool:
        """Process the next event if it is due by ``limit``; False if there is none."""
        best: tuple[float, int] | None = (self._heap[0][0], -1) if self._heap else None
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
        """Process every event due by ``until``, then set the clock to ``until``."""
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
        # handle_timer(now) left a deadline <= now.  Retrying a float ulp later absorbs
        # rounding (deadline a + b, tested as now - a >= b); past that it is a spin.
        last, count = self._stale[side]
        count = count + 1 if last == due else 1
        self._stale[side] = (due, count)
        if count <= 3:
            self._timers[side] = math.nextafter(self.now, math.inf)
            return
        self.timer_spins[side] += 1
        if self.spin_poll is None:
            raise SimError(f"{side.name} engine timer spins at t={self.now}: get_timer() "
                           f"returns {due} after handle_timer({self.now})")
        self._timers[side] = self.now + self.spin_poll

    def _service(self, side: Side) -> None:
        """What the driver does after every input to ``side``'s engine."""
        flow, now = self.flows[side], self.now
        self._pump_writer(side)
        self._drain_reader(side)
        for pid, buffers in flow.transmits(now):
            self._transmit(side, pid, buffers)
        for pid, abort in flow.closes():
            self._close_end(side, pid, abort)
        self.events[side].extend(flow.events())
        self._timers[side] = self._engine_timer(side)
        if flow.wants_transmit() and not self._flush_scheduled[side]:
            self._flush_scheduled[side] = True
            self.at(now, lambda: self._flush(side))

    def _engine_timer(self, side: Side) -> float | None:
        """``side``'s ``get_timer()`` (a seam: a test may fake a stuck deadline here; the
        engine itself may be compiled, and compiled instances take no patched methods)."""
        return self.flows[side].get_timer()

    def _flush(self, side: Side) -> None:
        self._flush_scheduled[side] = False
        self._service(side)

    def _pump_writer(self, side: Side) -> None:
        flow, pending = self.flows[side], self._pending[side]
        try:
            while pending:
                n = flow.send(pending[0], self.now)
                self.written[side] += n
                if n == 0:
                    return
                pending[0] = pending[0][n:]
                if not pending[0]:
                    pending.popleft()
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
        if flow.kind is Kind.PACKET:
            while self.reading[side]:
                try:
                    packet = flow.recv_packet()
                except (RendrError, EOFError):
                    return
                if packet is None:
                    return
                self.packets_read[side] += 1
                self.packet_bytes_read[side] += len(packet)
            return
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
        pipe = path.pipes[side]
        if path.mtu is not None:
            for buf in buffers:
                self._datagram(path, side, bytes(buf))
            return
        data = memoryview(b"".join(buffers))
        for i in range(0, len(data), path.mss):
            seg = data[i:i + path.mss]
            sent = self.now
            if path.rate is not None:
                sent = pipe.tx_free_at = max(self.now, pipe.tx_free_at) + len(seg) / path.rate
            self._push(path, side, sent, _DATA, seg)
        if not path.blocked[side] and path.backlog(side, self.now) > path.sndbuf:
            path.blocked[side] = True
            self.flows[side].set_path_blocked(pid, True)
            self._schedule_unblock(path, side)

    def _datagram(self, path: SimPath, side: Side, data: bytes) -> None:
        assert path.mtu is not None
        if len(data) > path.mtu:
            raise SimError(f"a {len(data)}-byte datagram on a path of mtu {path.mtu}")
        pipe = path.pipes[side]
        sent = self.now
        if path.rate is not None:
            if path.backlog(side, self.now) + len(data) > path.queue:
                path.drops[side] += 1  # the bottleneck's queue is full: dropped
                return
            sent = pipe.tx_free_at = max(self.now, pipe.tx_free_at) + len(data) / path.rate
        if path.loss and self.rng.random() < path.loss:
            path.drops[side] += 1
            return
        self._push(path, side, sent, _DATA, memoryview(data))

    def _schedule_unblock(self, path: SimPath, side: Side) -> None:
        assert path.rate is not None

        def unblock() -> None:
            if path.dead or path.closed[side] or not path.blocked[side]:
                return
            if path.backlog(side, self.now) > path.sndbuf / 2 + 1e-6:
                self._schedule_unblock(path, side)  # more was queued meanwhile
                return
            path.blocked[side] = False
            self.call(side, lambda f, now: f.set_path_blocked(path.pid, False))

        self.at(path.pipes[side].tx_free_at - path.sndbuf / 2 / path.rate, unblock)

    def _push(self, path: SimPath, side: Side, sent: float, kind: int,
              data: memoryview | None) -> None:
        pipe = path.pipes[side]
        arrival = sent + path.delay + (self.rng.uniform(0.0, path.jitter) if path.jitter else 0)
        pipe.last_arrival = arrival = max(arrival, pipe.last_arrival)
        pipe.items.append((arrival, kind, data))
        self.at(arrival, lambda: self._deliver(path, side))

    def _deliver(self, path: SimPath, sender: Side) -> None:
        pipe, to = path.pipes[sender], sender.other
        while not path.blackholed and pipe.items and pipe.items[0][0] <= self.now:
            _, kind, data = pipe.items.popleft()
            if kind != _DATA:
                self._notify(to, path, Cause.RESET if kind == _RST else Cause.EOF)
            elif not path.closed[to]:
                assert data is not None
                self.flows[to].receive(path.pid, data, self.now)
                self._service(to)

    def _notify(self, side: Side, path: SimPath, cause: Cause) -> None:
        if path.closed[side]:
            return  # a closed carrier reports nothing
        if cause is Cause.RESET:
            path.closed[side] = True
        self.call(side, lambda f, now: f.path_failed(path.pid, cause, now, "sim"))

    def _reset(self, path: SimPath, near: Side) -> None:
        """Kill the carrier from ``near``'s end: drop what is in flight, RST the far end."""
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
        else:  # FIN after everything queued
            self._push(path, side, max(self.now, path.pipes[side].tx_free_at), _EOF, None)
