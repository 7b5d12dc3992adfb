"""The flow engine: one reliable byte stream over a changing set of paths (sans-I/O).

A :class:`Flow` is one end of a rendr connection.  It owns no socket and reads no
clock: the driver feeds it carrier bytes, application calls and time, and takes
out what to write on each carrier, which carriers to close and events; after
*every* input: ``transmits(now)``, ``closes()``, ``events()``, then one timer at
``get_timer()`` (the full contract: docs/architecture.md, "The engine's contract").

``Flow`` is a thin facade: it dispatches frames and wires the parts, each in its own
module behind a small interface (``sender``, ``receiver``, ``paths``, ``scheduler``...).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Final

from ..config import FlowConfig
from ..errors import MigrationBudgetExceeded, ProtocolError, RendrError, ZombieFlow
from .crypto import FlowKeys
from .events import Event, EventKind
from .inbound import Inbound
from .lifecycle import Lifecycle
from .memory import MemoryBudget
from .migration import Migration
from .modeswitch import ModeSwitch
from .packets import PacketReceiver, PacketSender, max_payload, packet_stats
from .path import PathState
from .pathreport import PathRates
from .paths import PathSet
from .receiver import StreamReceiver
from .recovery import Recovery
from .reliability import PathReliability, any_room, earliest, run_timers
from .sender import StreamSender
from .stats import ConnStats, conn_stats
from .types import Cause, Mode, Role, State
from .wire import CloseCode, Kind, encode_close

__all__ = ["Flow"]

logger: Final = logging.getLogger("rendr.flow")

Buffer = bytes | memoryview

_CLOSED: Final = State.CLOSED


class Flow:
    """One end of a rendr flow (sans-I/O).

    Args:
        role: DIALER (decides the active path for both directions) or LISTENER.
        flow_id: the 16-byte flow id.
        mode: the flow's mode (PRIME, RACE or BOND; :meth:`set_mode` switches it).
        config: tuning knobs.
        now: current time.
        peer_window: the peer's initial receive window (from the handshake).
        memory: the listener-wide receive-memory budget of this flow's windows (None:
            every window is ``config.recv_window``).
        keys: the handshake's keys: then every path carries authenticated records if
            ``records`` (encrypted with ``encrypt``); None: plain frames (tests).
        kind: ``Kind.STREAM`` (bytes) or ``Kind.PACKET`` (:meth:`send_packet`).
    """

    def __init__(self, *, role: Role, flow_id: bytes, mode: Mode = Mode.PRIME,
                 config: FlowConfig | None = None, now: float, peer_window: int,
                 memory: MemoryBudget | None = None, keys: FlowKeys | None = None,
                 encrypt: bool = True, records: bool = True,
                 kind: Kind = Kind.STREAM) -> None:
        cfg = config or FlowConfig()
        self.role = role
        self.kind = kind
        self._reliable: dict[int, PathReliability] = {}  # datagram paths of a stream
        self._packets_out: PacketSender | None = None
        self._packets_in: PacketReceiver | None = None
        if kind is Kind.PACKET:
            self._packets_out = PacketSender(cfg.packet_queue)
            self._packets_in = PacketReceiver(cfg.packet_queue)
        self.flow_id = flow_id
        self.modes = ModeSwitch(mode, role, cfg, now, self._reliable, kind is Kind.PACKET)
        """The flow's mode, its scheduler and switches in progress."""
        self.config = cfg
        self.created_at = now
        self._name = flow_id.hex()[:8]
        self._paths = PathSet(cfg)
        self.paths = self._paths.by_id
        """The paths the flow works with, by id (``PathState``): up, retiring, or gone
        with work left.  Paths that left are pruned (see :meth:`find_path`)."""
        self._sender = StreamSender(cfg, peer_window, now)
        self._receiver = StreamReceiver(cfg, now, memory)
        self._recovery = Recovery()
        self._life = Lifecycle(self._name)
        if role is Role.LISTENER:  # accept() only once the dialer proved its keys
            self._life.unconfirmed = True
            if cfg.confirm_timeout:  # bound half-open flows
                self._life.confirm_at = now + cfg.confirm_timeout
        self._events: deque[Event] = deque()
        self._migration = Migration(
            role=role, name=self._name, config=cfg, paths=self._paths, sender=self._sender,
            receiver=self._receiver, recovery=self._recovery, modes=self.modes,
            life=self._life, events=self._events, on_zombie=self._on_zombie)
        self._timer_at: float | None = None
        self.keys = keys
        self.encrypt = encrypt
        self.records = records
        self.auth_only: set[int] = set()  # paths whose records the handshake agreed
        # to authenticate only (their carrier encrypts: KEY_PATH_AUTH, PATH_AUTH_ONLY)
        self._inbound = Inbound(
            name=self._name, paths=self._paths, sender=self._sender, receiver=self._receiver,
            recovery=self._recovery, migration=self._migration, life=self._life,
            packets=self._packets_in, reliable=self._reliable, emit=self._emit,
            abort=self._abort, finish=self._finish, check_close_done=self._check_close_done,
            modes=self.modes, now=now, packets_out=self._packets_out)
        self.undelivered_close: bytes | None = None
        """The CLOSE frame of an abort that found no path to carry it (the dialer
        delivers it later over a new carrier, so the listener need not wait out its
        migration budget)."""

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> State:
        """The flow's :class:`State`."""
        return self._life.state

    @property
    def error(self) -> RendrError | None:
        """Why the flow failed (None while open, or after a clean end)."""
        return self._life.error

    @property
    def confirmed(self) -> bool:
        """Listener: the dialer proved its keys (its first authenticated bytes, or an
        authenticated JOIN: :meth:`proven`); always True on the dialer."""
        return not self._life.unconfirmed

    def proven(self, path_id: int, now: float) -> None:
        """Listener: an authenticated JOIN (of ``path_id``) proved the dialer's keys."""
        self._inbound.confirm(path_id, now)

    @property
    def peer_closed(self) -> bool:
        """The peer sent CLOSE."""
        return self._life.peer_closed

    # ------------------------------------------------------------------ paths

    def add_path(self, path_id: int, *, now: float, transport: str = "tcp",
                 local_addr: str = "", remote_addr: str = "",
                 rtt: float | None = None, mtu: int | None = None) -> None:
        """Attach a carrier whose handshake completed as path ``path_id``; ``rtt``: the
        handshake's round trip (the first RTT sample); ``mtu``: the carrier carries
        datagrams of at most this many bytes (None: a byte stream).

        Raises:
            RendrError: the flow is closed or the path id is already used.
        """
        if self._life.state is _CLOSED or path_id in self._paths or self._paths.used(path_id):
            raise RendrError("flow is closed" if self._life.state is _CLOSED else
                             f"path {path_id} already exists (ids are never reused)")
        path = PathState(path_id, transport=transport, local_addr=local_addr,
                         remote_addr=remote_addr, now=now,
                         deframer=self._inbound.make_deframer(path_id, mtu is not None),
                         rtt_window=self.config.rtt_window, mtu=mtu)
        if rtt is not None:
            path.rtt.update(rtt, now)
        if self.keys is not None and self.records:
            path.protect(self.keys, self.role is Role.DIALER,
                         self.encrypt and path_id not in self.auth_only)
        if mtu is not None:  # a lossy path: loss recovery (and a FIN that is re-sent)
            self._reliable[path_id] = PathReliability(path, mtu, self.config.congestion)
        self._paths.add(path)
        self._migration.attached(path, now)
        self._check_close_done(now)

    def path_failed(self, path_id: int, cause: Cause, now: float, detail: str = "") -> None:
        """A carrier failed (reset, EOF, OS error): never the flow's end, only the
        path's (the flow fails over)."""
        self._migration.carrier_failed(path_id, cause, now, detail)

    def find_path(self, path_id: int) -> PathState | None:
        """A path by id: one the flow works with (:attr:`paths`) or one of the latest
        that left it (kept for statistics); None if unknown or long gone."""
        return self._paths.find(path_id)

    def path_id_used(self, path_id: int) -> bool:
        """Whether ``path_id`` was ever attached to this flow (ids are never reused)."""
        return self._paths.used(path_id)

    def set_path_blocked(self, path_id: int, blocked: bool) -> None:
        """The carrier's write buffer is full (``True``) or drained again (``False``)."""
        path = self._paths.get(path_id)
        if path is not None:
            path.set_blocked(blocked)

    def migrate(self, path_id: int, now: float) -> None:
        """Make ``path_id`` the active path for both directions (dialer only); the old
        path stays up and delivers what it already carries.

        Raises:
            RendrError: not the dialer, flow closed, or the path is not up.
        """
        self._migration.migrate(path_id, now)

    def remove_path(self, path_id: int, now: float) -> None:
        """Retire a path cleanly (PATH_CLOSE); migrate away first if it is active.

        Raises:
            LastPathError: it is the only live path.
            RendrError: the path is not up or the flow is closed.
        """
        self._migration.remove(path_id, now)

    @property
    def active(self) -> int | None:
        """The active path's id (None before the first path)."""
        return self._migration.active

    @property
    def advertised_window(self) -> int:
        """The receive window advertised so far, beyond what the application read."""
        return self._receiver.advertised_window

    @property
    def migration_count(self) -> int:
        """Active-path changes after the first."""
        return self._migration.count

    # ------------------------------------------------------------------ input

    def receive(self, path_id: int, data: Buffer, now: float) -> bool:
        """Bytes that arrived on a carrier (see :meth:`Inbound.receive`; ``data`` is
        kept without copying).  False when only what is readable changed."""
        return self._inbound.receive(path_id, data, now)

    @property
    def auth_failures(self) -> int:
        """Records that failed authentication (each ended its path; on a datagram path
        each was dropped)."""
        return self._inbound.auth_failures

    # ------------------------------------------------------------ application

    @property
    def send_space(self) -> int:
        """Bytes ``send()`` (``send_packet()``) would accept now."""
        if self._packets_out is not None:
            return self._packets_out.space
        return self._sender.space

    @property
    def unacked(self) -> int:
        """Bytes written and not yet acknowledged."""
        return self._sender.unacked

    @property
    def bytes_written(self) -> int:
        """Application bytes accepted so far."""
        return self._sender.written

    @property
    def bytes_read(self) -> int:
        """Application bytes read so far."""
        return self._receiver.read_offset

    @property
    def readable(self) -> bool:
        """Whether ``read()`` (``recv_packet()``) would return something (data, EOF
        or an error)."""
        if self._packets_in is not None and self._packets_in.readable:
            return True
        return self._receiver.readable or self._life.state is _CLOSED

    @property
    def at_eof(self) -> bool:
        """The peer's FIN was reached by the reader."""
        return self._receiver.at_eof

    @property
    def eof_sent(self) -> bool:
        """``send_eof()`` or ``close()`` was called."""
        return self._sender.eof_offset is not None

    @property
    def flushed(self) -> bool:
        """Everything written (and the FIN, if any) was acknowledged."""
        return self._sender.flushed

    def send(self, data: Buffer, now: float) -> int:
        """Accept as much of ``data`` as the send buffer has room for; return how much.

        ``data`` is kept as it is when it is ``bytes`` or a view of ``bytes``; any other
        buffer is copied as far as it is accepted (this is the one copy decision).

        Raises:
            RendrError: after ``send_eof()``/``close()``, or when the flow ended.
        """
        self._life.check_open()  # a failed flow reports its failure first
        sender = self._sender
        if sender.eof_offset is not None:
            raise RendrError("cannot write after write_eof()/close()")
        was_idle = sender.idle
        taken = sender.send(data)
        if taken and was_idle:
            self._paths.probe_quiet(now)
        return taken

    def send_eof(self, now: float) -> None:
        """Finish the sending direction: the peer reads ``b""`` after the last byte."""
        if self._life.state is not _CLOSED:
            self._sender.send_eof()

    def read(self, max_bytes: int) -> bytes | None:
        """Take up to ``max_bytes`` received bytes: ``b""`` at the peer's clean EOF,
        ``None`` when nothing is ready yet.  Raises the flow's error (``RendrError``:
        budget, zombie, abort) once it failed and no data is left."""
        data = self._receiver.read(max_bytes)
        if data:
            return data
        return None if self._nothing_to_read() else b""

    def read_view(self, max_bytes: int) -> memoryview | None:
        """:meth:`read` without a copy: a read-only view of the receive memory (valid
        while referenced), empty at the peer's clean EOF."""
        view = self._receiver.read_view(max_bytes)
        return view if len(view) or not self._nothing_to_read() else None

    def readinto(self, dest: memoryview) -> int | None:
        """Copy up to ``len(dest)`` received bytes into ``dest`` (a writable byte view):
        how many; ``0`` at the peer's clean EOF; ``None`` when nothing is ready yet.
        Raises like :meth:`read`."""
        n = self._receiver.readinto(dest)
        if n:
            return n
        return None if self._nothing_to_read() else 0

    def _nothing_to_read(self) -> bool:
        """After an empty read: True if data may still come, False at EOF or a clean
        end; raises the flow's error if it failed."""
        if self._receiver.at_eof:
            return False
        if self._life.error is not None:
            raise self._life.error
        return self._life.state is not _CLOSED

    def close(self, now: float) -> None:
        """Graceful close: FIN, wait (``linger``) for the peer's ACK, then CLOSE(0)."""
        if self._life.state is _CLOSED or self._life.close_requested:
            return
        self._sender.send_eof()
        self._life.request_close(now, self.config.linger)
        self._check_close_done(now)

    def abort(self, now: float, code: int = CloseCode.APPLICATION, reason: str = "") -> None:
        """End the flow at once with an error code (the peer's read/write raise ConnAborted)."""
        self._abort(code, reason, now, None)

    def fail(self, error: RendrError, now: float, code: int = CloseCode.INTERNAL) -> None:
        """End the flow with ``error`` (raised by later reads and writes); tell the peer."""
        self._abort(code, str(error), now, error)

    # ---------------------------------------------------------------- packets

    @property
    def max_payload(self) -> int:
        """Packet flows: the largest packet every live path carries whole."""
        return max_payload(self._paths)

    def send_packet(self, data: bytes, now: float) -> bool:
        """Queue one packet (a packet flow): it goes whole, in one frame, on the paths
        the scheduler names; False while the queue is full (nothing queued).

        Raises:
            PacketTooLarge: above :attr:`max_payload`.
            RendrError: not a packet flow, after ``close()``, or the flow ended.
        """
        self._life.check_open()
        if self._packets_out is None or self._sender.eof_offset is not None:
            raise RendrError("send_packet() on a stream flow" if self._packets_out is None
                             else "cannot send after close()")
        if not self._packets_out.push_checked(data, max_payload(self._paths)):
            return False
        self._inbound.last_packet_at = max(self._inbound.last_packet_at, now)
        return True

    def recv_packet(self) -> bytes | None:
        """The next packet received (a packet flow), or None when none is ready.

        Raises:
            EOFError: the peer closed cleanly and every packet before was read.
            RendrError: the flow failed (budget, zombie, abort) and no packet is left.
        """
        packets = self._packets_in
        if packets is None:
            raise RendrError("recv_packet() on a stream flow")
        data = packets.pop()
        if data is not None:
            return data
        if self._nothing_to_read():
            return None
        raise EOFError("the peer closed the connection")

    def packet_stats(self) -> tuple[int, int, int, int, int, int]:
        """``(sent, received, dups, too_old, overflow, dropped)``; zeros on a stream."""
        return packet_stats(self._packets_out, self._packets_in)

    @property
    def packet_rates(self) -> PathRates | None:
        """A packet flow's delivery reports (BOND; None on a stream flow)."""
        return None if self._packets_out is None else self._packets_out.rates

    # ------------------------------------------------------------------ output

    def transmits(self, now: float) -> list[tuple[int, list[Buffer]]]:
        """What to write on each carrier now: ``[(path_id, buffers), ...]``; write each
        list with one ``writelines`` call, in the order given."""
        if self._life.state is not _CLOSED:
            if self._receiver.ack_needed:
                self._send_ack()  # ahead of DATA: an ACK must not queue behind a burst
            self._inbound.send_report(self._migration.active, now)  # packets, in BOND
            self._migration.repeat_activate(now)
            with_retx = self._recovery.hold_until is None  # the replay is not held
            scheduler = self.modes.scheduler
            senders = scheduler.senders(self._paths, self._migration.active, self._sender)
            packets = self._packets_out
            if packets is not None and packets.pending and senders:
                scheduler.fill_packets(packets, senders, self.config.write_burst, now)
                if packets.pending:  # the FIN goes after the last packet
                    senders = []
            if senders:
                scheduler.fill(senders, self._sender, with_retx, self.config, self._reliable,
                               now)
        out: list[tuple[int, list[Buffer]]] = []
        for path in self._paths.by_id.values():
            if path.outbox:
                sealer = path.sealer
                out.append((path.id, path.outbox if sealer is None
                            else sealer.seal(path.outbox)))
                path.outbox = []
        return out

    def wants_transmit(self) -> bool:
        """Whether more data could be written right now (flush again soon)."""
        if self._life.state is _CLOSED:
            return False
        pending = self._packets_out is not None and self._packets_out.pending
        if not pending and not self._sender.has_data(not self._recovery.held):
            return False  # nothing to send (after most flushes): no senders list to build
        senders = self.modes.scheduler.senders(self._paths, self._migration.active,
                                                self._sender)
        if not senders:
            return False
        # a full window or the pacer: an ACK or the timer resumes sending
        return pending or not self._reliable or any_room(self._reliable, senders)

    @property
    def ack_due(self) -> bool:
        """An ACK (or window update) is waiting to be sent: flush soon."""
        return self._receiver.ack_needed

    def closes(self) -> list[tuple[int, bool]]:
        """Carriers to close now: ``[(path_id, abort), ...]`` (abort: reset, don't flush)."""
        return self._paths.take_closes()

    def events(self) -> list[Event]:
        """Take every pending event."""
        if not self._events:
            return []
        out = list(self._events)
        self._events.clear()
        return out

    def get_timer(self) -> float | None:
        """The earliest time :meth:`handle_timer` must be called, or None."""
        if self._life.state is _CLOSED:
            self._timer_at = None
            return None
        # inlined (a call per deadline costs more than the comparison in pure Python)
        at = self._receiver.ack_at
        t = self._life.deadline()
        if t is not None and (at is None or t < at):
            at = t
        t = self._recovery.hold_until
        if t is not None and (at is None or t < at) and self._sender.retx_queued:
            at = t
        t = self._paths.deadline()
        if t is not None and (at is None or t < at):
            at = t
        t = self.modes.deadline()
        if t is not None and (at is None or t < at):
            at = t
        t = self._inbound.report_at  # packet flows in BOND (None otherwise)
        if t is not None and (at is None or t < at):
            at = t
        if self._reliable:
            at = earliest(self._reliable, at)
        self._timer_at = at
        return at

    def handle_timer(self, now: float) -> None:
        """Run every deadline that is due at ``now``."""
        life = self._life
        if life.state is _CLOSED:
            return
        if self._timer_at is not None and now - self._timer_at > self.config.stall_grace:
            logger.debug("flow %s: timer %.3fs late, event loop stalled", self._name,
                         now - self._timer_at)
            self._paths.restart_waits(now)
        self._receiver.on_timer(now)
        self._recovery.on_timer(now)
        self.modes.on_timer(self._paths, now)
        if self._reliable:
            run_timers(self._reliable, self._paths, now, self._sender)
        cfg = self.config
        busy = (not self._sender.idle
                or now - self._receiver.last_data_at < cfg.idle_ping_interval
                or now - self._inbound.last_packet_at < cfg.idle_ping_interval)
        interval = cfg.ping_interval if busy else cfg.idle_ping_interval
        self._migration.on_timer(now, interval)
        expired = None if life.closed else life.expired(now)
        if expired == "budget":
            self._abort(CloseCode.BUDGET_EXCEEDED, "migration budget exceeded", now,
                        MigrationBudgetExceeded(f"no path for {cfg.migration_budget:g} s"))
        elif expired == "confirm":
            self._abort(CloseCode.PROTOCOL_ERROR, "handshake never confirmed", now,
                        ProtocolError("the dialer sent nothing after the HELLO_ACK"))
        elif expired == "linger":
            logger.warning("flow %s: close() linger expired with %d bytes unacknowledged",
                           self._name, self._sender.unacked)
            self._abort(CloseCode.LINGER_TIMEOUT, "linger expired", now, None)

    # --------------------------------------------------------------- internal

    def _send_ack(self) -> None:
        paths = self.modes.scheduler.ack_paths(self._paths, self._migration.active)
        if paths:
            ack = self._receiver.build_ack()
            for path in paths:
                path.outbox.append(ack)
        else:
            self._receiver.ack_at = None  # add_path() asks for a fresh ACK

    # ------------------------------------------------------------------ modes

    @property
    def mode(self) -> Mode:
        """The mode this end sends by (both ends agree once a switch is answered)."""
        return self.modes.mode

    def set_mode(self, mode: Mode, now: float) -> None:
        """Ask the peer to switch both directions to ``mode`` (see
        :meth:`ModeSwitch.set_mode`; raises ``RendrError`` on a closed flow)."""
        self._life.check_open()
        self.modes.set_mode(mode, self._paths, now)

    def _check_close_done(self, now: float) -> None:
        # CLOSE(0) must be able to reach the peer (which may still wait for the ACK of
        # its own FIN): with no live path, wait for one (bounded by linger).
        if (self._life.close_requested and self._sender.flushed
                and self._sender.eof_offset is not None and self._paths.any_alive()):
            self._paths.broadcast(encode_close(CloseCode.NO_ERROR, ""))
            self._finish(None, now)

    def _abort(self, code: int, reason: str, now: float, error: RendrError | None) -> None:
        if self._life.state is not _CLOSED:
            frame = encode_close(code, reason)
            if not self._paths.closable():
                self.undelivered_close = frame
            self._paths.broadcast(frame)
            self._finish(error, now)

    def _finish(self, error: RendrError | None, now: float) -> None:
        if not self._life.finish(error):
            return
        self._receiver.ack_at = None
        self._receiver.release_memory()
        self._paths.end_all(str(Cause.CLOSED))
        self._emit(EventKind.CLOSED, now, error=error,
                   detail="" if error is None else str(error))

    def _emit(self, kind: EventKind, now: float, **fields: object) -> None:
        self._events.append(Event(kind, now, **fields))  # type: ignore[arg-type]

    def _on_zombie(self, error: ZombieFlow, now: float) -> None:
        self._abort(CloseCode.ZOMBIE, "migrations move no data", now, error)

    @property
    def recv_dups(self) -> int:
        """Received pieces that carried already-received bytes (and packet copies)."""
        return self._receiver.dups + (0 if self._packets_in is None else self._packets_in.dups)

    @property
    def recv_queue_hwm(self) -> int:
        """The most bytes ever held in the reorder buffer."""
        return self._receiver.reorder_hwm

    def stats(self, now: float) -> ConnStats:
        """A snapshot of the flow's counters."""
        return conn_stats(self, list(self._paths.history) + list(self._paths), now)
