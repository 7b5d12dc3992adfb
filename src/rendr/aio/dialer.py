"""The dialer: opens a flow's paths, attaches them, and re-dials dead ones.

The dialer owns every dial: the listener never dials.  ``dial()`` connects all
configured paths at once and sends HELLO on the first carrier that connects, and on
the next ones too while no answer has come (``hello_stagger`` apart; the first
HELLO_ACK opens the flow, see docs/wire.md); the other carriers JOIN.  After that,
one supervisor task per path re-dials it with exponential backoff
(``redial_jitter`` of each delay random, from the dialer's ``rng``) whenever it
dies (including while the migration budget runs with no path at all), until the
path is removed or the flow ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..carriers.base import Carrier, TransportFactory, get_transport
from ..carriers.streams import StreamsCarrier
from ..config import FlowConfig
from ..core.events import Event, EventKind
from ..core.session import DialerHandshake
from ..core.types import Mode, State
from ..core.wire import Kind
from ..errors import HandshakeError, RendrError
from ..keys import check_authentication
from ..spec import PathSpec
from .conn import Conn
from .driver import EventCallback, FlowDriver
from .handshake import HandshakeCollector, exchange, named
from .packetconn import PacketConn
from .timeouts import wait_for

__all__ = ["DialSession", "Dialer"]

logger = logging.getLogger("rendr.dialer")


class Dialer:
    """Opens rendr connections over one or more paths.

    Args:
        mode: :class:`~rendr.Mode`: PRIME (one active path), RACE (every frame on every
            path, first copy wins) or BOND (striped by measured delivery rate);
            change it later with ``conn.set_mode()``.
        paths: the paths to use; at least one.
        transports: per-dialer transport factories, consulted before the registry.
        on_event: called with every :class:`~rendr.Event` of every flow this dialer
            opens, from the first PATH_UP on (``Conn.on_event`` subscribes later).
        psk: a pre-shared key (the listener must hold the same): only holders of it
            can open flows, and no one in the middle can read or change them.
        server_key: the listener's static X25519 public key (32 bytes, from
            :func:`rendr.generate_server_key`), pinned like an SSH known host.
        rng: the random source of the re-dial jitter (``FlowConfig.redial_jitter``);
            a fresh :class:`random.Random` by default (tests pass a seeded one).
        config: a :class:`~rendr.FlowConfig`; keyword arguments override its fields
            (``migration_budget=90.0``, ``ping_interval=0.05``, ``dead_timeout=0.6``,
            ``encrypt=True``, ``send_buffer``, ``recv_window``, ``linger``, ... see
            FlowConfig).

    Without ``psk`` or ``server_key`` the flow is encrypted and authenticated
    against passive observers only: an active attacker in the middle could run its
    own key exchange with each end (a warning is logged).
    """

    def __init__(self, mode: Mode = Mode.PRIME, paths: Sequence[PathSpec] = (), *,
                 transports: dict[str, TransportFactory] | None = None,
                 config: FlowConfig | None = None, on_event: EventCallback | None = None,
                 psk: bytes | None = None, server_key: bytes | None = None,
                 rng: random.Random | None = None, **knobs: Any) -> None:
        if server_key is not None and len(server_key) != 32:
            raise ValueError("server_key must be a 32-byte X25519 public key")
        self.config = (config or FlowConfig()).replace(**knobs) if knobs else (
            config or FlowConfig())
        check_authentication("Dialer", psk, server_key, self.config.records)
        self.psk = psk
        self.server_key = server_key
        self.on_event = on_event
        self.rng = rng if rng is not None else random.Random()
        self.mode = Mode(mode)
        self.paths = list(paths)
        self.transports = dict(transports or {})

    async def dial(self) -> Conn:
        """Open a new flow and return its connection once the first path is up.

        It succeeds if any one path works: HELLO goes on the first carrier that
        connects and, if no answer comes within ``hello_stagger``, on the next too.
        Other paths attach in the background as they connect.

        Raises:
            ValueError: no paths.
            HandshakeError, OSError: no path could be set up.
        """
        conn = await self._dial(Kind.STREAM)
        assert isinstance(conn, Conn)
        return conn

    async def dial_packet(self) -> PacketConn:
        """Open a new packet flow (datagrams with preserved boundaries: see
        :class:`~rendr.PacketConn`) over the dialer's paths, as :meth:`dial` does.

        Raises:
            ValueError: no paths.
            HandshakeError, OSError: no path could be set up (as :meth:`dial`).
        """
        conn = await self._dial(Kind.PACKET)
        assert isinstance(conn, PacketConn)
        return conn

    async def _dial(self, kind: Kind) -> Conn | PacketConn:
        if not self.paths:
            raise ValueError("Dialer has no paths")
        for spec in self.paths:
            get_transport(spec.transport, self.transports)  # unknown names fail now
        session = DialSession(self, os.urandom(16), kind)
        return await session.establish()


async def open_carrier(spec: PathSpec, transports: dict[str, TransportFactory],
                       timeout: float) -> Carrier:
    """Open one carrier for ``spec`` with its transport factory, within ``timeout``."""
    factory = get_transport(spec.transport, transports)
    try:
        opening = factory(spec.address, **spec.options) if spec.options else factory(
            spec.address)
        opened = await wait_for(opening, timeout, discard=_discard)
    except (asyncio.TimeoutError, TimeoutError):
        raise TimeoutError(f"connect {spec.transport} {spec.address}: "
                           f"no answer within {timeout:g} s") from None
    except OSError as exc:
        # OSError(errno, text) is the errno's own subclass (ConnectionRefusedError, ...)
        raise OSError(exc.errno, f"connect {spec.transport} {spec.address}: "
                                 f"{exc.strerror or exc}") from exc
    if isinstance(opened, Carrier):
        return opened
    reader, writer = opened
    return StreamsCarrier(reader, writer, transport=spec.transport)


def _discard(opened: Carrier | tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    """Close a carrier whose connect finished after its caller gave up (Python 3.10)."""
    if isinstance(opened, Carrier):
        opened.abort()
    else:
        opened[1].transport.abort()


_FAREWELLS: set[asyncio.Task[None]] = set()
"""Farewell tasks running (a reference keeps each alive until it ends)."""


def _route(carrier: Carrier) -> str:
    return f"{carrier.transport} {carrier.local_addr} -> {carrier.remote_addr}"


class _Slot:
    """One configured path of a dial session and its supervisor."""

    def __init__(self, spec: PathSpec) -> None:
        self.spec = spec
        self.path_id: int | None = None
        self.down = asyncio.Event()
        self.removed = False
        self.task: asyncio.Task[None] | None = None


_Answer = tuple[int, bytes, HandshakeCollector]


@dataclass
class _Hello:
    """A HELLO in flight during ``dial()``."""

    slot: _Slot
    carrier: Carrier
    path_id: int
    label: str
    answer: asyncio.Future[_Answer]


def _drop(opening: dict[asyncio.Future[Carrier], _Slot],
          hellos: dict[asyncio.Future[_Answer], _Hello],
          idle: list[tuple[_Slot, Carrier]]) -> None:
    """``dial()`` ends without a flow (cancelled, or a bug): close what it opened."""
    for task in opening:
        if task.done() and not task.cancelled() and task.exception() is None:
            task.result().abort()
        task.cancel()
    for hello in hellos.values():
        hello.answer.cancel()
        hello.carrier.abort()
    for _, carrier in idle:
        carrier.abort()


class DialSession:
    """The dialer side of one flow: its slots, supervisors and re-dials.

    It is the :class:`~rendr.aio.driver.PathOwner` of the flow's driver; the
    handshake decisions are :class:`~rendr.core.session.DialerHandshake`'s.
    """

    def __init__(self, dialer: Dialer, flow_id: bytes, kind: Kind = Kind.STREAM) -> None:
        self.dialer = dialer
        self.kind = kind
        self.config = dialer.config
        self.flow_id = flow_id
        self.loop = asyncio.get_running_loop()
        self.handshake = DialerHandshake(flow_id, dialer.mode, dialer.config, psk=dialer.psk,
                                         server_key=dialer.server_key, kind=kind)
        self.driver: FlowDriver | None = None
        self.conn: Conn | PacketConn | None = None
        self.slots: list[_Slot] = []
        self._stopped = False

    async def _open(self, spec: PathSpec) -> Carrier:
        return await open_carrier(spec, self.dialer.transports, self.config.connect_timeout)

    async def establish(self) -> Conn | PacketConn:
        """Connect every path at once and open the flow over whichever answers first.

        HELLO goes out on the first carrier that connects; when its answer has not
        come within ``hello_stagger`` (or the HELLO failed), on the next connected
        carrier too, and so on (happy eyeballs).  The first HELLO_ACK that opens the
        flow wins.  Carriers that sent nothing yet then JOIN the flow; those whose
        HELLO is still unanswered are dropped and their paths re-dialled (the
        listener refuses a second HELLO of a flow: ``DUPLICATE_PATH``).
        """
        self.slots = [_Slot(spec) for spec in self.dialer.paths]
        opening: dict[asyncio.Future[Carrier], _Slot] = {
            asyncio.ensure_future(self._open(s.spec)): s for s in self.slots}
        hellos: dict[asyncio.Future[_Answer], _Hello] = {}
        idle: list[tuple[_Slot, Carrier]] = []  # connected, nothing sent yet
        errors: list[BaseException] = []
        next_hello = self.loop.time()
        try:
            while self.conn is None:
                now = self.loop.time()
                if idle and (not hellos or now >= next_hello):
                    hello = self._send_hello(*idle.pop(0))
                    hellos[hello.answer] = hello
                    next_hello = now + self.config.hello_stagger
                    continue
                waiting: set[asyncio.Future[Any]] = {*opening, *hellos}
                if not waiting:
                    break  # every path failed
                timeout = max(0.0, next_hello - now) if idle else None
                done, _ = await asyncio.wait(waiting, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task in opening:
                        slot = opening.pop(task)
                        failure = task.exception()
                        if failure is not None:
                            errors.append(failure)
                        else:
                            idle.append((slot, task.result()))
                        continue
                    hello = hellos.pop(task)
                    if self.conn is not None:  # another HELLO_ACK of this batch won
                        hellos[task] = hello
                        continue
                    try:
                        self._on_hello_answer(hello)
                    except (HandshakeError, OSError) as exc:
                        hello.carrier.abort()
                        errors.append(exc)
                        next_hello = self.loop.time()  # try the next carrier at once
        except BaseException:
            _drop(opening, hellos, idle)
            raise
        if self.conn is None:
            detail = "; ".join(f"{type(e).__name__}: {e}" for e in errors)
            if errors and all(isinstance(e, OSError) for e in errors):
                raise OSError(f"could not connect any path ({detail})")
            raise HandshakeError(f"could not establish the flow ({detail})")
        for hello in hellos.values():  # unanswered: drop, re-dial and JOIN at once
            hello.answer.cancel()
            hello.carrier.abort()
            hello.slot.task = self.loop.create_task(self._supervise(hello.slot, None))
        for slot, carrier in idle:
            slot.task = self.loop.create_task(self._supervise(slot, carrier))
        for task, slot in opening.items():
            slot.task = self.loop.create_task(self._supervise(slot, task))
        for slot in self.slots:
            if slot.task is None:  # connect or HELLO failed: keep re-dialing it
                slot.task = self.loop.create_task(self._supervise(slot, None, failed=True))
        return self.conn

    def _send_hello(self, slot: _Slot, carrier: Carrier) -> _Hello:
        """Start a HELLO exchange on ``carrier`` (a path id of its own)."""
        path_id = self.handshake.next_path_id()
        label = f"HELLO on path {path_id} ({_route(carrier)})"
        hello = _Hello(slot, carrier, path_id, label, self.loop.create_future())
        hello.answer = asyncio.ensure_future(self._exchange_hello(hello))
        return hello

    async def _exchange_hello(self, hello: _Hello) -> _Answer:
        """HELLO and its answer; a RETRY (the listener is under load and kept nothing)
        is followed at once: the same HELLO with its cookie, on a fresh carrier
        (``hello.carrier`` then names it)."""
        hs = self.handshake
        opening = hs.hello(hello.path_id, hello.carrier.binding, hello.carrier.verified)
        while True:
            answer = await exchange(hello.carrier, opening, self.config.handshake_timeout,
                                    hello.label)
            with named(hello.label):
                retry = hs.retry_hello(answer[0], answer[1], hello.path_id)
            if retry is None:
                return answer
            hello.carrier.close()
            hello.carrier = await self._open(hello.slot.spec)
            hs.bind(hello.path_id, hello.carrier.binding, hello.carrier.verified)
            opening = retry

    def _on_hello_answer(self, hello: _Hello) -> None:
        """A HELLO's answer came: open the flow over its carrier, or raise why not."""
        ftype, body, collector = hello.answer.result()
        with named(hello.label):
            flow = self.handshake.on_hello_ack(ftype, body, hello.path_id, self.loop.time())
        self.driver = FlowDriver(flow, self.loop, self)
        if self.dialer.on_event is not None:  # before the first path: it sees PATH_UP
            self.driver.callbacks.append(self.dialer.on_event)
        self.conn = (PacketConn if self.kind is Kind.PACKET else Conn)(self.driver)
        if self.handshake.opened_by != hello.path_id:
            # the listener repeated its answer to another of our HELLOs (whose own
            # answer was lost) and closes this carrier: re-dial it and JOIN
            hello.carrier.close()
        else:
            self.driver.attach(hello.path_id, hello.carrier, collector)
            hello.slot.path_id = hello.path_id
            self._weigh(hello.path_id, hello.slot.spec)
        hello.slot.task = self.loop.create_task(self._supervise(hello.slot, None))

    async def _join(self, carrier: Carrier, fatal_if_unknown: bool = True) -> int:
        driver = self.driver
        assert driver is not None
        hs = self.handshake
        path_id = hs.next_path_id()
        label = f"JOIN of path {path_id} ({_route(carrier)})"
        opening = hs.join(path_id, carrier.binding, carrier.verified)
        ftype, body, collector = await exchange(carrier, opening,
                                                self.config.handshake_timeout, label)
        try:
            with named(label):
                hs.on_join_ack(ftype, body, path_id, self.loop.time(),
                               fatal_if_unknown=fatal_if_unknown)
        finally:
            driver.flush()  # the flow may have failed (the listener forgot it)
        if self._stopped:
            raise HandshakeError("flow closed")
        driver.attach(path_id, carrier, collector)
        return path_id

    def _weigh(self, path_id: int, spec: PathSpec) -> None:
        assert self.driver is not None
        path = self.driver.flow.find_path(path_id)
        if path is not None:
            path.weight = spec.weight

    def redial_delay(self, backoff: float) -> float:
        """``backoff`` with ``redial_jitter`` of it random (the dialer's ``rng``)."""
        return backoff * (1.0 - self.config.redial_jitter * self.dialer.rng.random())

    @property
    def _closed(self) -> bool:
        return self._stopped or self.driver is None or self.driver.flow.state is State.CLOSED

    async def _supervise(self, slot: _Slot, first: asyncio.Future[Carrier] | Carrier | None,
                         failed: bool = False) -> None:
        """Keep ``slot``'s path attached: (re-)dial with backoff whenever it is down."""
        cfg = self.config
        backoff = cfg.redial_backoff
        if failed:
            await asyncio.sleep(self.redial_delay(backoff))
        while not self._closed and not slot.removed:
            if slot.path_id is not None:
                await slot.down.wait()
                slot.down.clear()
                slot.path_id = None
                if self._closed or slot.removed:
                    return
                await asyncio.sleep(self.redial_delay(cfg.redial_backoff))
                continue
            carrier: Carrier | None = None
            try:
                if first is None:
                    carrier = await self._open(slot.spec)
                elif isinstance(first, Carrier):
                    carrier = first
                else:
                    carrier = await first
                first = None
                if self._closed or slot.removed:
                    carrier.close()
                    return
                slot.path_id = await self._join(carrier)
                self._weigh(slot.path_id, slot.spec)
                backoff = cfg.redial_backoff
                logger.info("flow %s: path %d attached over %s %s", self.flow_id.hex()[:8],
                            slot.path_id, slot.spec.transport, slot.spec.address)
            except asyncio.CancelledError:
                if carrier is not None:
                    carrier.abort()
                if isinstance(first, asyncio.Future):
                    first.cancel()
                raise
            except (OSError, asyncio.TimeoutError, HandshakeError, RendrError) as exc:
                first = None
                if carrier is not None:
                    carrier.abort()
                delay = self.redial_delay(backoff)
                logger.debug("flow %s: dial %s %s failed: %r; retry in %.2fs",
                             self.flow_id.hex()[:8], slot.spec.transport, slot.spec.address,
                             exc, delay)
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, cfg.redial_backoff_max)

    async def add_path(self, spec: PathSpec) -> int:
        """Dial ``spec`` now and attach it; keep re-dialing it when it dies."""
        if self._closed:
            raise RendrError("flow is closed")
        self.handshake.check_room()
        carrier = await self._open(spec)
        try:
            path_id = await self._join(carrier, fatal_if_unknown=False)
        except BaseException:
            carrier.abort()
            raise
        slot = _Slot(spec)
        slot.path_id = path_id
        self._weigh(path_id, spec)
        slot.task = self.loop.create_task(self._supervise(slot, None))
        self.slots.append(slot)
        return path_id

    def forget(self, path_id: int) -> None:
        """A path was removed on purpose: stop re-dialing it."""
        for slot in self.slots:
            if slot.path_id == path_id:
                slot.removed = True
                slot.down.set()

    def on_event(self, event: Event) -> None:
        """Engine events: wake the supervisor of a path that went down."""
        if event.kind is EventKind.PATH_DOWN:
            for slot in self.slots:
                if slot.path_id == event.path_id:
                    slot.down.set()
        elif event.kind is EventKind.CLOSED:
            self.stop()
            driver = self.driver
            if driver is not None and driver.flow.undelivered_close is not None:
                task = self.loop.create_task(self._farewell(driver.flow.undelivered_close))
                _FAREWELLS.add(task)
                task.add_done_callback(_FAREWELLS.discard)

    async def _farewell(self, close_frame: bytes) -> None:
        """The flow was aborted while no path could carry its CLOSE: keep trying to
        deliver it (JOIN + CLOSE on a fresh carrier) for the migration budget, so the
        listener ends its flow now instead of waiting out its own budget."""
        cfg = self.config
        deadline = self.loop.time() + cfg.migration_budget
        backoff = cfg.redial_backoff
        specs = [slot.spec for slot in self.slots] or list(self.dialer.paths)
        while self.loop.time() < deadline:
            for spec in specs:
                carrier: Carrier | None = None
                try:
                    carrier = await self._open(spec)
                    path_id = self.handshake.next_path_id()
                    await exchange(carrier, [*self.handshake.join(path_id, carrier.binding),
                                             *self.handshake.seal(path_id, [close_frame])],
                                   cfg.handshake_timeout,
                                   f"farewell JOIN of path {path_id} ({_route(carrier)})")
                    # any answer will do: OK (the CLOSE follows the JOIN), or the
                    # listener no longer knows the flow
                    carrier.close()
                    logger.info("flow %s: CLOSE delivered after the flow ended",
                                self.flow_id.hex()[:8])
                    return
                except (OSError, HandshakeError) as exc:
                    if carrier is not None:
                        carrier.abort()
                    logger.debug("flow %s: farewell over %s %s failed: %s",
                                 self.flow_id.hex()[:8], spec.transport, spec.address, exc)
            await asyncio.sleep(self.redial_delay(backoff))
            backoff = min(backoff * 2, cfg.redial_backoff_max)

    def stop(self) -> None:
        """Stop every supervisor (the flow ended or was closed)."""
        self._stopped = True
        for slot in self.slots:
            if slot.task is not None and not slot.task.done():
                slot.task.cancel()

