"""The flow engine: one reliable byte stream over a changing set of paths (sans-I/O).

Theory of operation
-------------------
A :class:`Flow` is one end of a rendr connection.  It owns no socket and reads no
clock: the driver feeds it carrier bytes (:meth:`Flow.receive`), application
calls (:meth:`Flow.send`, :meth:`Flow.read`, ...) and time (``now`` arguments,
:meth:`Flow.handle_timer`), and takes out what to write on each carrier
(:meth:`Flow.transmits`), which carriers to close (:meth:`Flow.closes`) and
events (:meth:`Flow.events`).  After *every* input the driver must call, in this
order: ``transmits(now)``, ``closes()``, ``events()``, then re-arm one timer at
``get_timer()``; if ``wants_transmit()`` is true it should flush again soon
(after letting other callbacks run) — one flush writes at most
``config.write_burst`` bytes per path.

Sending.  Every byte written is kept in a :class:`SendBuffer` at its stream
offset until the peer's cumulative ACK covers it.  New data goes to the active
path (PRIME mode).  Each path remembers the ranges it carried (``inflight``);
when a path dies, the unacknowledged ones are queued for retransmission on the
new active path, ahead of new data.  A planned :meth:`migrate` leaves the old
path's in-flight data alone (that path is alive and delivers it), so nothing is
sent twice.  Flow control: never send beyond the peer's advertised limit.

Receiving.  Pieces are reordered and de-duplicated by offset
(:class:`ReceiveBuffer`); ACKs carry the cumulative offset, the flow-control
limit and a few selective ranges, and go out after ``ack_delay``, after
``recv_window/8`` bytes, on a FIN, or when reading opened the window by a quarter.

Liveness.  Every live path is PINGed (every ``ping_interval`` while busy, every
``idle_ping_interval`` while idle).  Anything received on a path answers.  A path
whose oldest unanswered PING is older than its dead time is declared dead
(cause ``timeout``); the driver is told to abort its carrier.  The application's
own traffic pattern never kills a path: only unanswered PINGs do.

Ends.  FIN marks the final offset of a direction (``b""`` to the reader after the
last byte).  ``close()`` sends FIN, waits (at most ``linger``) for it to be
acknowledged, then sends CLOSE(0).  CLOSE with another code aborts.  Carrier
EOF or reset never ends a flow: it only kills a path.  With no live path left,
the migration budget runs; when it expires the flow fails with
:class:`MigrationBudgetExceeded`.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Final

from ..config import FlowConfig
from ..errors import (
    ConnAborted,
    LastPathError,
    MigrationBudgetExceeded,
    ProtocolError,
    RendrError,
    ZombieFlow,
)
from .events import Event, EventKind
from .framing import StreamDeframer
from .path import PathState
from .rangeset import RangeSet
from .recvbuf import ReceiveBuffer
from .sendbuf import SendBuffer
from .stats import ConnStats, PathStats
from .types import Cause, Mode, PathStatus, Role, State
from .wire import (
    ACK_FIN,
    ACK_PROBE,
    EXTENSION_MIN,
    MAX_ACK_RANGES,
    CloseCode,
    FrameType,
    data_header,
    decode_ack,
    decode_activate,
    decode_close,
    decode_path_close,
    decode_u64,
    encode_ack,
    encode_activate,
    encode_close,
    encode_path_close,
    encode_u64,
)

__all__ = ["Flow"]


logger: Final = logging.getLogger("rendr.flow")

Buffer = bytes | memoryview

# Frame types as plain ints (the dispatch in Flow._on_frame compares them).  Final: a
# compiled build (mypyc) reads them as native constants, not module globals.
_ACK: Final = int(FrameType.ACK)
_FIN: Final = int(FrameType.FIN)
_PING: Final = int(FrameType.PING)
_PONG: Final = int(FrameType.PONG)
_ACTIVATE: Final = int(FrameType.ACTIVATE)
_PATH_CLOSE: Final = int(FrameType.PATH_CLOSE)
_CLOSE: Final = int(FrameType.CLOSE)
_HANDSHAKE_FRAMES: Final = frozenset({int(FrameType.HELLO), int(FrameType.HELLO_ACK),
                                      int(FrameType.JOIN), int(FrameType.JOIN_ACK)})


class Flow:
    """One end of a rendr flow (sans-I/O).

    Args:
        role: DIALER (decides the active path for both directions) or LISTENER.
        flow_id: the 16-byte flow id.
        mode: the flow's mode (only PRIME is implemented).
        config: tuning knobs.
        now: current time.
        peer_window: the peer's initial receive window (from the handshake).
    """

    def __init__(self, *, role: Role, flow_id: bytes, mode: Mode = Mode.PRIME,
                 config: FlowConfig | None = None, now: float, peer_window: int) -> None:
        self.role = role
        self.flow_id = flow_id
        self.mode = mode
        self.config = config or FlowConfig()
        self.created_at = now
        self.state = State.HANDSHAKING
        self.paths: dict[int, PathState] = {}
        self.active: int | None = None
        self._had_active = False
        self._epoch = 0
        self.migration_count = 0
        # send side
        self._sendbuf = SendBuffer()
        self._next_new = 0
        self._retx = RangeSet()
        self._peer_sacked = RangeSet()
        self._peer_max = peer_window
        self._send_limit = self.config.send_buffer_min
        self._rate_t0 = now
        self._rate_acked0 = 0
        self._ack_limited = False
        self._eof_offset: int | None = None
        self._fin_pending = False
        self._fin_acked = False
        # receive side
        self._recv = ReceiveBuffer()
        self._advertised_max = self.config.recv_window
        self._final_offset: int | None = None
        self._ack_needed = False
        self._ack_probe = False  # ask the peer for a prompt ACK (after a failover)
        self._ack_at: float | None = None
        # after a failover, re-sending waits (briefly) for the peer's fresh ACK
        self._replay_hold_at: float | None = None
        self._unacked_recv = 0
        self._ack_threshold = max(1, min(self.config.recv_window // 8, 1 << 20))
        self._last_data_at = now
        # lifecycle
        self._events: deque[Event] = deque()
        self.error: RendrError | None = None
        self.peer_closed = False
        self._close_requested = False
        self._budget_at: float | None = None
        self._linger_at: float | None = None
        self._timer_at: float | None = None
        self._close_pending = False
        self._rx_dirty = False
        self._zombie_strikes: list[float] = []
        self._last_switch_at = now
        self._challenger: int | None = None
        self._challenger_since = now
        self._now = now

    # ------------------------------------------------------------------ paths

    def add_path(self, path_id: int, *, now: float, transport: str = "tcp",
                 local_addr: str = "", remote_addr: str = "") -> None:
        """Attach a carrier whose handshake completed as path ``path_id``.

        Raises:
            RendrError: the flow is closed or the path id is already used.
        """
        if self.state is State.CLOSED:
            raise RendrError("flow is closed")
        if path_id in self.paths:
            raise RendrError(f"path {path_id} already exists")
        path = PathState(path_id, transport=transport, local_addr=local_addr,
                         remote_addr=remote_addr, now=now,
                         deframer=self._make_deframer(path_id),
                         rtt_window=self.config.rtt_window)
        self.paths[path_id] = path
        self._budget_at = None
        self._ack_needed = True
        self._emit(EventKind.PATH_UP, now, path_id=path_id,
                   detail=f"{transport} {local_addr} -> {remote_addr}")
        logger.debug("flow %s: path %d up (%s %s -> %s)", self.flow_id.hex()[:8], path_id,
                     transport, local_addr, remote_addr)
        current = self.paths.get(self.active) if self.active is not None else None
        if current is None or not current.alive:
            self._activate(path_id, "death" if self._had_active else "first", now)
        if self.state in (State.HANDSHAKING, State.MIGRATING):
            self._set_state(State.ACTIVE)
        self._check_close_done(now)

    def _make_deframer(self, path_id: int) -> StreamDeframer:
        # closures, not functools.partial: compiled (mypyc), they call the handlers natively
        def on_data(offset: int, piece: memoryview) -> None:
            self._on_data(path_id, offset, piece)

        def on_frame(ftype: int, body: memoryview) -> None:
            self._on_frame(path_id, ftype, body)

        return StreamDeframer(on_data, on_frame)

    def path_failed(self, path_id: int, cause: Cause, now: float, detail: str = "") -> None:
        """The driver reports that a carrier failed (reset, EOF, OS error).

        This never ends the flow; it kills the path and fails over.
        """
        path = self.paths.get(path_id)
        if path is None or path.status is PathStatus.DOWN:
            return
        if self.state is State.CLOSED:
            self._retire(path, now)
            return
        if path.status in (PathStatus.RETIRING, PathStatus.REMOVED):
            # A retired path's carrier ended.  After a clean EOF everything sent on it
            # before the PATH_CLOSE exchange was delivered (the stream is ordered); after
            # a reset it may not have been: re-send what is still unacknowledged.
            self._retire(path, now)
            if cause is not Cause.EOF:
                self._requeue(path)
            return
        self._path_died(path, cause, now, detail)

    def set_path_blocked(self, path_id: int, blocked: bool) -> None:
        """The carrier's write buffer is full (``True``) or drained again (``False``)."""
        path = self.paths.get(path_id)
        if path is not None:
            path.blocked = blocked

    def migrate(self, path_id: int, now: float) -> None:
        """Make ``path_id`` the active path for both directions (dialer only).

        The old path stays up and delivers what it already carries.

        Raises:
            RendrError: not the dialer, flow closed, or the path is not up.
        """
        if self.role is not Role.DIALER:
            raise RendrError("only the dialer chooses the active path")
        self._check_open()
        path = self.paths.get(path_id)
        if path is None or not path.alive:
            raise RendrError(f"path {path_id} is not up")
        if path_id != self.active:
            self._activate(path_id, "explicit", now)

    def remove_path(self, path_id: int, now: float) -> None:
        """Retire a path cleanly (PATH_CLOSE); migrate away first if it is active.

        Raises:
            LastPathError: it is the only live path.
            RendrError: the path is not up or the flow is closed.
        """
        self._check_open()
        path = self.paths.get(path_id)
        if path is None or not path.alive:
            raise RendrError(f"path {path_id} is not up")
        others = [p for p in self.paths.values() if p.alive and p.id != path_id]
        if not others:
            raise LastPathError(f"path {path_id} is the last path")
        if self.active == path_id:
            best = min(others, key=PathState.score)
            self._activate(best.id, "explicit", now)
        path.status = PathStatus.RETIRING
        path.retire_by = now + 2 * self._dead_time(path)
        path.outbox.append(encode_path_close(path_id))
        path.path_close_sent = True

    # ------------------------------------------------------------------ input

    def receive(self, path_id: int, data: Buffer, now: float) -> bool:
        """Bytes that arrived on a carrier (after its handshake).

        ``data`` must not be mutated afterwards (payload is kept without copying).

        Returns:
            False when the bytes were only stream data that changed nothing but what
            is readable (no frame to send, no event, no new deadline): the driver may
            then skip its flush and just wake a waiting reader.  True otherwise.
        """
        path = self.paths.get(path_id)
        if path is None or path.status in (PathStatus.DOWN, PathStatus.REMOVED):
            return False
        self._now = now
        path.last_recv_at = now
        path.unanswered_since = None
        path.bytes_received += len(data)
        self._rx_dirty = False
        try:
            path.deframer.feed(data)
        except ProtocolError as exc:
            logger.warning("flow %s: protocol error on path %d: %s",
                           self.flow_id.hex()[:8], path_id, exc)
            self._abort(CloseCode.PROTOCOL_ERROR, str(exc), now, ProtocolError(str(exc)))
            return True
        return self._rx_dirty

    def _on_data(self, path_id: int, offset: int, piece: memoryview) -> None:
        path = self.paths[path_id]
        path.frames_received += 1
        if self.state is State.CLOSED:
            return
        end = offset + len(piece)
        if end > self._advertised_max:
            raise ProtocolError(f"peer sent beyond the flow-control window ({end})")
        if self._final_offset is not None and end > self._final_offset:
            raise ProtocolError("peer sent data beyond its FIN")
        now = self._now
        self._last_data_at = now
        if self._recv.receive(offset, piece):
            self._zombie_strikes.clear()
        self._unacked_recv += len(piece)
        if self._unacked_recv >= self._ack_threshold:
            self._ack_needed = self._rx_dirty = True
        elif self._ack_at is None:
            self._ack_at = now + self.config.ack_delay
            self._rx_dirty = True  # a new deadline
        if self._final_offset is not None and self._recv.offset == self._final_offset:
            self._ack_needed = self._rx_dirty = True

    def _on_frame(self, path_id: int, ftype: int, body: memoryview) -> None:
        path = self.paths[path_id]
        path.frames_received += 1
        self._rx_dirty = True
        # An if-chain, not a table of methods: plain calls, so the engine compiles (mypyc).
        if ftype == _ACK:
            self._handle_ack(path, body)
        elif ftype == _PING:
            self._handle_ping(path, body)
        elif ftype == _PONG:
            self._handle_pong(path, body)
        elif ftype == _FIN:
            self._handle_fin(path, body)
        elif ftype == _ACTIVATE:
            self._handle_activate(path, body)
        elif ftype == _PATH_CLOSE:
            self._handle_path_close(path, body)
        elif ftype == _CLOSE:
            self._handle_close(path, body)
        elif ftype in _HANDSHAKE_FRAMES:
            raise ProtocolError("handshake frame on an attached path")
        elif ftype < EXTENSION_MIN:
            raise ProtocolError(f"unexpected frame type 0x{ftype:02x}")
        # else: an unknown extension frame: skip it (docs/wire.md, "Unknown frames")

    def _handle_ack(self, path: PathState, body: memoryview) -> None:
        cum, max_offset, flags, ranges = decode_ack(body)
        self._replay_hold_at = None  # fresh news of what the peer has: re-send the rest
        if flags & ACK_PROBE:
            self._ack_needed = True
        sb = self._sendbuf
        if cum > self._next_new:
            raise ProtocolError("peer acknowledged bytes never sent")
        if cum > sb.base:
            sb.ack(cum)
            self._autotune(cum)
            self._retx.remove_below(cum)
            self._zombie_strikes.clear()
            for p in self.paths.values():
                inflight = p.inflight
                while inflight and inflight[0][1] <= cum:
                    inflight.popleft()
        self._peer_sacked = RangeSet(ranges)
        for s, e in ranges:
            self._retx.subtract(s, e)
        if max_offset > self._peer_max:
            self._peer_max = max_offset
        if flags & ACK_FIN and self._eof_offset is not None and cum == self._eof_offset:
            self._fin_acked = True
            self._check_close_done(self._now)

    def _autotune(self, acked: int) -> None:
        """Size the send buffer to ~4 bandwidth-delay products of the active path
        (delivery rate over the last interval times the path's minimum RTT), but not
        below what the ACK clock needed lately: see :meth:`_ack_clock_limited`."""
        now = self._now
        path = self.paths.get(self.active) if self.active is not None else None
        min_rtt = path.rtt.min_rtt if path is not None else None
        if min_rtt is None:
            return
        elapsed = now - self._rate_t0
        if elapsed < max(2 * min_rtt, 0.02):
            return
        rate = (acked - self._rate_acked0) / elapsed
        self._rate_t0 = now
        self._rate_acked0 = acked
        cfg = self.config
        target = int(4 * rate * min_rtt)
        if self._ack_limited:
            target = max(target, self._send_limit)  # it was needed: keep it
        else:
            target = max(target, self._send_limit * 3 // 4)  # decay towards the BDP
        self._ack_limited = False
        self._send_limit = max(cfg.send_buffer_min, min(cfg.send_buffer, target))

    def _ack_clock_limited(self) -> None:
        """The application wants to write more, the send buffer is full, and all of it
        is already in flight: only ACKs can make room, so the buffer (not the path, not
        the peer's window) limits the rate.  The minimum RTT underestimates the time an
        ACK takes under load (it includes the peer's processing and socket queues), so
        grow the buffer (twice as large, up to ``send_buffer``)."""
        self._ack_limited = True
        cap = self.config.send_buffer
        if self._send_limit < cap:
            self._send_limit = min(cap, 2 * self._send_limit)

    def _handle_fin(self, path: PathState, body: memoryview) -> None:
        final = decode_u64(body)
        if final < self._recv.highest or (
            self._final_offset is not None and final != self._final_offset
        ):
            raise ProtocolError("inconsistent FIN offset")
        self._final_offset = final
        if self._recv.offset == final:
            self._ack_needed = True

    def _handle_ping(self, path: PathState, body: memoryview) -> None:
        path.outbox.append(encode_u64(FrameType.PONG, decode_u64(body)))

    def _handle_pong(self, path: PathState, body: memoryview) -> None:
        sent_at = decode_u64(body) / 1e6
        sample = self._now - sent_at
        if 0 <= sample < 600:
            path.rtt.update(sample, self._now)

    def _handle_activate(self, path: PathState, body: memoryview) -> None:
        path_id, epoch, dead_path = decode_activate(body)
        if self.role is Role.DIALER:
            raise ProtocolError("ACTIVATE sent to the dialer")
        dead = self.paths.get(dead_path) if dead_path else None
        if dead is not None and dead.alive and dead_path != path_id:
            # the dialer found this path dead first: fail over now, re-send what we
            # had in flight there, rather than wait for our own liveness timer
            self._path_died(dead, Cause.PEER, self._now, "declared dead by the dialer")
            if self.state is State.CLOSED:
                return
        if epoch <= self._epoch:
            return  # stale: a later ACTIVATE already arrived on another path
        self._epoch = epoch
        target = self.paths.get(path_id)
        if target is not None and target.alive and path_id != self.active:
            self._activate(path_id, "peer", self._now)

    def _handle_path_close(self, path: PathState, body: memoryview) -> None:
        if decode_path_close(body) != path.id:
            raise ProtocolError("PATH_CLOSE for another path")
        now = self._now
        if path.status is PathStatus.UP:
            # Peer retires this path: acknowledge everything first, on this same path, so
            # the peer does not re-send what it carried, then answer and close.
            path.status = PathStatus.RETIRING
            path.retire_by = now + 2 * self._dead_time(path)
            path.outbox.append(self._encode_ack())
            path.outbox.append(encode_path_close(path.id))
            path.path_close_sent = True
            if self.active == path.id:
                others = [p for p in self.paths.values() if p.alive]
                if others:
                    self._activate(min(others, key=PathState.score).id, "peer", now)
        self._retire(path, now)

    def _handle_close(self, path: PathState, body: memoryview) -> None:
        code, reason = decode_close(body)
        if self.state is State.CLOSED:
            return
        self.peer_closed = True
        if code == CloseCode.NO_ERROR:
            self._finish(None, self._now)
        else:
            self._finish(ConnAborted(code, reason), self._now)


    # ------------------------------------------------------------ application

    @property
    def send_space(self) -> int:
        """Bytes ``send()`` would accept now."""
        return max(0, self._send_limit - len(self._sendbuf))

    @property
    def unacked(self) -> int:
        """Bytes written and not yet acknowledged."""
        return len(self._sendbuf)

    @property
    def bytes_written(self) -> int:
        """Application bytes accepted so far."""
        return self._sendbuf.end

    @property
    def bytes_read(self) -> int:
        """Application bytes read so far."""
        return self._recv.read_offset

    @property
    def readable(self) -> bool:
        """Whether ``read()`` would return something (data, EOF or an error)."""
        return bool(self._recv.ready_bytes) or self.at_eof or self.state is State.CLOSED

    @property
    def at_eof(self) -> bool:
        """The peer's FIN was reached by the reader."""
        return self._final_offset is not None and self._recv.read_offset >= self._final_offset

    @property
    def eof_sent(self) -> bool:
        """``send_eof()`` or ``close()`` was called."""
        return self._eof_offset is not None

    @property
    def flushed(self) -> bool:
        """Everything written (and the FIN, if any) was acknowledged."""
        return not self._sendbuf and (self._eof_offset is None or self._fin_acked)

    def send(self, data: Buffer, now: float) -> int:
        """Accept as much of ``data`` as the send buffer has room for; return how much.

        Raises:
            RendrError: after ``send_eof()``/``close()``, or when the flow ended.
        """
        self._check_open()  # a failed flow reports its failure first
        if self._eof_offset is not None:
            raise RendrError("cannot write after write_eof()/close()")
        take = min(self.send_space, len(data))
        if take < len(data) and self._sendbuf and self._next_new >= self._sendbuf.end:
            self._ack_clock_limited()
            take = min(self.send_space, len(data))
        if take <= 0:
            return 0
        if not self._sendbuf:
            # idle -> busy: probe every path that has been quiet for a busy PING
            # interval, so a path that died while the flow was idle is found about
            # dead_timeout after this write, not a keepalive later.  A path heard from
            # just now is not probed again (chatty request/response traffic would
            # otherwise send a PING with every request).
            interval = self.config.ping_interval
            for path in self.paths.values():
                if path.alive:
                    due = path.last_recv_at + interval
                    if due < path.next_ping_at:
                        path.next_ping_at = due if due > now else now
        chunk = data[:take] if take < len(data) else data
        if isinstance(chunk, memoryview) and not (chunk.readonly and isinstance(chunk.obj, bytes)):
            chunk = chunk.tobytes()
        self._sendbuf.append(chunk)
        return take

    def send_eof(self, now: float) -> None:
        """Finish the sending direction: the peer reads ``b""`` after the last byte."""
        if self._eof_offset is not None or self.state is State.CLOSED:
            return
        self._eof_offset = self._sendbuf.end
        self._fin_pending = True

    def read(self, max_bytes: int) -> bytes | None:
        """Take up to ``max_bytes`` received bytes.

        Returns:
            Data; ``b""`` at the peer's clean EOF; ``None`` when nothing is ready yet.

        Raises:
            RendrError: the flow failed (budget, zombie, abort) and no data is left.
        """
        data = self._recv.read(max_bytes)
        if data:
            self._after_read()
            return data
        return None if self._nothing_to_read() else b""

    def readinto(self, dest: memoryview) -> int | None:
        """Copy up to ``len(dest)`` received bytes into ``dest`` (a writable byte view).

        Returns:
            How many bytes; ``0`` at the peer's clean EOF; ``None`` when nothing is
            ready yet.

        Raises:
            RendrError: the flow failed (budget, zombie, abort) and no data is left.
        """
        n = self._recv.readinto(dest)
        if n:
            self._after_read()
            return n
        return None if self._nothing_to_read() else 0

    def _after_read(self) -> None:
        window = self.config.recv_window
        if self._recv.read_offset + window - self._advertised_max >= window // 4:
            self._ack_needed = True  # the read opened the window by a quarter

    def _nothing_to_read(self) -> bool:
        """After an empty read: True if data may still come, False at EOF or a clean
        end; raises the flow's error if it failed."""
        if self.at_eof:
            return False
        if self.error is not None:
            raise self.error
        return self.state is not State.CLOSED

    def close(self, now: float) -> None:
        """Graceful close: FIN, wait (``linger``) for the peer's ACK, then CLOSE(0)."""
        if self.state is State.CLOSED or self._close_requested:
            return
        self._close_requested = True
        self.send_eof(now)
        self._linger_at = now + self.config.linger
        self._set_state(State.CLOSING)
        self._check_close_done(now)

    def abort(self, now: float, code: int = CloseCode.APPLICATION, reason: str = "") -> None:
        """End the flow at once with an error code (the peer's read/write raise ConnAborted)."""
        if self.state is not State.CLOSED:
            self._abort(code, reason, now, None)

    def fail(self, error: RendrError, now: float, code: int = CloseCode.INTERNAL) -> None:
        """End the flow with ``error`` (raised by later reads and writes); tell the peer."""
        if self.state is not State.CLOSED:
            self._abort(code, str(error), now, error)

    # ------------------------------------------------------------------ output

    def transmits(self, now: float) -> list[tuple[int, list[Buffer]]]:
        """What to write on each carrier now: ``[(path_id, buffers), ...]``.

        Write each list with one ``writelines`` call, in the order given.
        """
        self._now = now
        if self.state is not State.CLOSED:
            if self._ack_needed:
                self._send_ack()  # ahead of DATA: an ACK must not queue behind a burst
            self._fill()
        out: list[tuple[int, list[Buffer]]] = []
        for path in self.paths.values():
            if path.outbox:
                out.append((path.id, path.outbox))
                path.outbox = []
        return out

    def wants_transmit(self) -> bool:
        """Whether more data could be written right now (flush again soon)."""
        if self.state is State.CLOSED or self.active is None:
            return False
        path = self.paths[self.active]
        if not path.alive or path.blocked:
            return False
        if self._retx and not self._replay_held():
            return True
        return self._next_new < min(self._sendbuf.end, self._peer_max)

    def _replay_held(self) -> bool:
        return self._replay_hold_at is not None and self._now < self._replay_hold_at

    @property
    def ack_due(self) -> bool:
        """An ACK (or window update) is waiting to be sent: flush soon."""
        return self._ack_needed

    def closes(self) -> list[tuple[int, bool]]:
        """Carriers to close now: ``[(path_id, abort), ...]`` (abort: reset, don't flush)."""
        if not self._close_pending:
            return []
        self._close_pending = False
        out: list[tuple[int, bool]] = []
        for path in self.paths.values():
            if path.close_requested:
                out.append((path.id, path.close_requested == "abort"))
                path.close_requested = None
        return out

    def events(self) -> list[Event]:
        """Take every pending event."""
        if not self._events:
            return []
        out = list(self._events)
        self._events.clear()
        return out

    def get_timer(self) -> float | None:
        """The earliest time :meth:`handle_timer` must be called, or None."""
        if self.state is State.CLOSED:
            self._timer_at = None
            return None
        at = self._ack_at
        hold = self._replay_hold_at if self._retx else None
        for deadline in (self._budget_at, self._linger_at, hold):
            if deadline is not None and (at is None or deadline < at):
                at = deadline
        for path in self.paths.values():
            if not path.alive:
                if ((path.status is PathStatus.RETIRING
                     or (path.status is PathStatus.REMOVED and path.inflight))
                        and (at is None or path.retire_by < at)):
                    at = path.retire_by
                continue
            t = path.next_ping_at
            if path.unanswered_since is not None:
                t = min(t, path.unanswered_since + self._dead_time(path))
            if at is None or t < at:
                at = t
        self._timer_at = at
        return at

    def handle_timer(self, now: float) -> None:
        """Run every deadline that is due at ``now``."""
        self._now = now
        if self.state is State.CLOSED:
            return
        if self._timer_at is not None and now - self._timer_at > self.config.stall_grace:
            # Our own event loop was stalled: what the peer sent may be waiting unread
            # in socket buffers. Restart liveness waits rather than kill healthy paths.
            logger.debug("flow %s: timer %.3fs late, event loop stalled",
                         self.flow_id.hex()[:8], now - self._timer_at)
            for path in self.paths.values():
                if path.unanswered_since is not None:
                    path.unanswered_since = now
        if self._ack_at is not None and now >= self._ack_at:
            self._ack_needed = True
        if self._replay_hold_at is not None and now >= self._replay_hold_at:
            self._replay_hold_at = None
        busy = bool(self._sendbuf) or now - self._last_data_at < self.config.idle_ping_interval
        interval = self.config.ping_interval if busy else self.config.idle_ping_interval
        for path in list(self.paths.values()):
            if not path.alive:
                if path.status is PathStatus.RETIRING and now >= path.retire_by:
                    # the peer never answered our PATH_CLOSE: the path is dead, not retired
                    path.close_requested = "abort"
                    self._close_pending = True
                    self._retire(path, now)
                    self._requeue(path)
                elif path.status is PathStatus.REMOVED and path.inflight and now >= path.retire_by:
                    logger.debug("flow %s: path %d retired with data never acknowledged",
                                 self.flow_id.hex()[:8], path.id)
                    self._requeue(path)
                continue
            if (path.unanswered_since is not None
                    and now - path.unanswered_since >= self._dead_time(path)):
                self._path_died(path, Cause.TIMEOUT, now,
                                f"no answer for {now - path.unanswered_since:.3f}s")
                if self._is_closed():
                    return
                continue
            if now >= path.next_ping_at or path.next_ping_at - now > interval:
                path.outbox.append(encode_u64(FrameType.PING, int(now * 1e6)))
                if path.unanswered_since is None:
                    path.unanswered_since = now
                path.next_ping_at = now + interval
        if self.role is Role.DIALER and self.config.prime_switch and self.mode is Mode.PRIME:
            self._prime_quality_check(now)
        if self._budget_at is not None and now >= self._budget_at:
            budget = self.config.migration_budget
            self._abort(CloseCode.BUDGET_EXCEEDED, "migration budget exceeded", now,
                        MigrationBudgetExceeded(f"no path for {budget:g} s"))
            return
        if self._linger_at is not None and now >= self._linger_at:
            logger.warning("flow %s: close() linger expired with %d bytes unacknowledged",
                           self.flow_id.hex()[:8], len(self._sendbuf))
            self._abort(CloseCode.LINGER_TIMEOUT, "linger expired", now, None)

    # --------------------------------------------------------------- internal

    def _prime_quality_check(self, now: float) -> None:
        """Move to a clearly better path (see FlowConfig.prime_switch)."""
        cfg = self.config
        active = self.paths.get(self.active) if self.active is not None else None
        current = active.rtt.recent_min() if active is not None and active.alive else None
        best: PathState | None = None
        best_rtt = 0.0
        for p in self.paths.values():
            r = p.rtt.recent_min()
            if p.alive and p is not active and r is not None and (best is None or r < best_rtt):
                best, best_rtt = p, r
        if (current is None or best is None or best_rtt > current * (1 - cfg.prime_hysteresis)
                or current - best_rtt < cfg.prime_floor):
            self._challenger = None
            return
        if self._challenger != best.id:
            self._challenger = best.id
            self._challenger_since = now
        elif (now - self._challenger_since >= cfg.prime_dwell
              and now - self._last_switch_at >= cfg.prime_cooldown):
            self._challenger = None
            self._activate(best.id, "quality", now)

    def _dead_time(self, path: PathState) -> float:
        rtt = path.rtt
        if rtt.srtt is None:
            return self.config.dead_timeout
        return max(self.config.dead_timeout, 3 * rtt.srtt + 4 * rtt.rttvar)

    def _fill(self) -> None:
        active = self.active
        if active is None:
            return
        path = self.paths[active]
        if path.blocked or path.status is not PathStatus.UP:
            return
        sb = self._sendbuf
        end = sb.end
        limit = end if end < self._peer_max else self._peer_max
        retx = self._retx if self._retx and not self._replay_held() else None
        if self._next_new >= limit and not retx:
            if self._fin_pending:
                self._send_fin(path)
            return  # nothing to send: the common case of a flush
        budget = self.config.write_burst
        max_frame = self.config.max_frame
        outbox = path.outbox
        inflight = path.inflight
        while budget > 0:
            if retx:
                s, e = retx.pop_first(max_frame if max_frame < budget else budget)
                if e <= sb.base:
                    continue
                if s < sb.base:
                    s = sb.base
                path.retransmits += e - s
            else:
                s = self._next_new
                if s >= limit:
                    break
                e = s + (max_frame if max_frame < budget else budget)
                if e > limit:
                    e = limit
                self._next_new = e
            n = e - s
            outbox.append(data_header(s, n))
            outbox.extend(sb.view(s, e))
            inflight.append((s, e))
            path.frames_sent += 1
            path.bytes_sent += n
            budget -= n
        if self._fin_pending:
            self._send_fin(path)

    def _send_fin(self, path: PathState) -> None:
        if (self._eof_offset is not None and self._next_new >= self._eof_offset
                and not self._retx):
            path.outbox.append(encode_u64(FrameType.FIN, self._eof_offset))
            path.fin_sent = True
            self._fin_pending = False

    def _encode_ack(self) -> bytes:
        recv = self._recv
        max_offset = max(self._advertised_max, recv.read_offset + self.config.recv_window)
        self._advertised_max = max_offset
        flags = 0
        if self._final_offset is not None and recv.offset == self._final_offset:
            flags |= ACK_FIN
        if self._ack_probe:
            flags |= ACK_PROBE
            self._ack_probe = False
        self._ack_needed = False
        self._ack_at = None
        self._unacked_recv = 0
        return encode_ack(recv.offset, max_offset, flags, recv.sack_ranges(MAX_ACK_RANGES))

    def _send_ack(self) -> None:
        path = self.paths.get(self.active) if self.active is not None else None
        if path is None or not path.alive:
            path = next((p for p in self.paths.values() if p.alive), None)
        if path is not None:
            path.outbox.append(self._encode_ack())
        else:
            self._ack_at = None  # add_path() asks for a fresh ACK

    def _activate(self, path_id: int, cause: str, now: float) -> None:
        old = self.active
        self.active = path_id
        self._had_active = True
        self._last_switch_at = now
        if cause != "first":
            self.migration_count += 1
            self._emit(EventKind.MIGRATION, now, old_path=old, new_path=path_id, cause=cause)
            logger.info("flow %s: migration %s -> %d (%s)", self.flow_id.hex()[:8], old,
                        path_id, cause)
        if self.role is Role.DIALER and cause != "first":
            self._epoch += 1
            old_path = self.paths.get(old) if old is not None else None
            dead = old if old_path is not None and old_path.status is PathStatus.DOWN else 0
            self.paths[path_id].outbox.append(encode_activate(path_id, self._epoch, dead or 0))
        self._ack_needed = True
        if self._eof_offset is not None and not self._fin_acked:
            old_path = self.paths.get(old) if old is not None else None
            if old_path is None or not old_path.alive:
                self._fin_pending = True
        if cause == "death":
            self._zombie_check(now)
            if self._retx and self.state is not State.CLOSED:
                self._hold_replay(path_id, now)

    def _hold_replay(self, path_id: int, now: float) -> None:
        """Re-send after the peer's next ACK (asked for with ACK_PROBE), or after about
        two RTTs of the new path: what the dead path delivered but whose ACK was lost
        with it is then not sent twice."""
        srtt = self.paths[path_id].rtt.srtt
        hold = 0.1 if srtt is None else 2 * srtt + self.config.ack_delay
        self._replay_hold_at = now + min(max(hold, 0.01), 0.25)
        self._ack_probe = self._ack_needed = True

    def _zombie_check(self, now: float) -> None:
        limit = self.config.zombie_max_migrations
        if not limit:
            return
        window = self.config.zombie_window
        strikes = [t for t in self._zombie_strikes if now - t < window]
        if len(strikes) >= limit:
            self._abort(CloseCode.ZOMBIE, "migrations move no data", now,
                        ZombieFlow(f"{len(strikes) + 1} death-driven migrations within "
                                   f"{window:g} s moved no application data"))
            return
        strikes.append(now)
        self._zombie_strikes = strikes

    def _path_died(self, path: PathState, cause: Cause, now: float, detail: str) -> None:
        path.status = PathStatus.DOWN
        path.down_cause = str(cause)
        path.outbox = []
        path.close_requested = "abort"
        self._close_pending = True
        requeued = self._requeue(path)
        logger.info("flow %s: path %d down (%s%s), %d bytes to re-send",
                    self.flow_id.hex()[:8], path.id, cause, f": {detail}" if detail else "",
                    requeued)
        self._emit(EventKind.PATH_DOWN, now, path_id=path.id, cause=str(cause), detail=detail)
        self._ack_needed = True
        alive = [p for p in self.paths.values() if p.alive]
        if self.active == path.id and alive:
            self._activate(min(alive, key=PathState.score).id, "death", now)
        self._check_no_paths(now)

    def _check_no_paths(self, now: float) -> None:
        """With no live path left, run the migration budget."""
        if self.state is State.CLOSED or any(p.alive for p in self.paths.values()):
            return
        if self._budget_at is None:
            self._budget_at = now + self.config.migration_budget
        if self.state is not State.CLOSING:
            self._set_state(State.MIGRATING)

    def _requeue(self, path: PathState) -> int:
        """Queue what ``path`` carried and the peer has not acknowledged (cumulatively or
        selectively) for re-sending; return how many bytes."""
        base = self._sendbuf.base
        requeued = 0
        for s, e in path.inflight:
            if e > base:
                s = max(s, base)
                for ms, me in self._peer_sacked.missing(s, e):
                    self._retx.add(ms, me)
                    requeued += me - ms
        path.inflight.clear()
        if path.fin_sent and not self._fin_acked:
            path.fin_sent = False
            self._fin_pending = True
        return requeued

    def _retire(self, path: PathState, now: float) -> None:
        """The path leaves the flow cleanly.  What it carried stays attributed to it: it
        was (or will be) delivered before the PATH_CLOSE exchange; see path_failed()."""
        if path.status is PathStatus.REMOVED:
            return
        path.status = PathStatus.REMOVED
        path.down_cause = str(Cause.REMOVED)
        # What it carried should be acknowledged soon; if not (the carrier died after
        # the PATH_CLOSE exchange, with data still in flight), re-send it then.
        path.retire_by = now + 2 * self._dead_time(path)
        if path.close_requested is None:
            path.close_requested = "graceful"
            self._close_pending = True
        self._emit(EventKind.PATH_DOWN, now, path_id=path.id, cause=str(Cause.REMOVED))
        if self.active == path.id:
            alive = [p for p in self.paths.values() if p.alive]
            if alive:
                self._activate(min(alive, key=PathState.score).id, "peer", now)
        self._check_no_paths(now)

    def _check_close_done(self, now: float) -> None:
        # CLOSE(0) must be able to reach the peer (which may still wait for the ACK of
        # its own FIN): with no live path, wait for one (bounded by linger).
        if (self._close_requested and self._fin_acked and not self._sendbuf
                and any(p.alive for p in self.paths.values())):
            for path in self.paths.values():
                if path.alive or path.status is PathStatus.RETIRING:
                    path.outbox.append(encode_close(CloseCode.NO_ERROR))
            self._finish(None, now)

    def _abort(self, code: int, reason: str, now: float, error: RendrError | None) -> None:
        if self.state is State.CLOSED:
            return
        for path in self.paths.values():
            if path.alive or path.status is PathStatus.RETIRING:
                path.outbox.append(encode_close(code, reason))
        self._finish(error, now)

    def _finish(self, error: RendrError | None, now: float) -> None:
        if self.state is State.CLOSED:
            return
        self.error = error
        self._set_state(State.CLOSED)
        self._budget_at = self._linger_at = self._ack_at = None
        for path in self.paths.values():
            if path.status in (PathStatus.UP, PathStatus.RETIRING):
                path.status = PathStatus.REMOVED
                path.down_cause = str(Cause.CLOSED)
                path.close_requested = "graceful"
                self._close_pending = True
        self._emit(EventKind.CLOSED, now, error=error,
                   detail="" if error is None else str(error))

    def _is_closed(self) -> bool:
        return self.state is State.CLOSED

    def _check_open(self) -> None:
        if self.state is State.CLOSED:
            raise self.error if self.error is not None else RendrError("flow is closed")

    def _set_state(self, state: State) -> None:
        if state is not self.state:
            logger.debug("flow %s: state %s -> %s", self.flow_id.hex()[:8], self.state, state)
            self.state = state

    def _emit(self, kind: EventKind, now: float, **fields: object) -> None:
        self._events.append(Event(kind, now, **fields))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ stats

    @property
    def recv_dups(self) -> int:
        """Received pieces that carried already-received bytes."""
        return self._recv.dups

    @property
    def recv_queue_hwm(self) -> int:
        """The most bytes ever held in the reorder buffer."""
        return self._recv.reorder_hwm

    def stats(self, now: float) -> ConnStats:
        """A snapshot of the flow's counters."""
        paths = [
            PathStats(
                id=p.id, transport=p.transport, local_addr=p.local_addr,
                remote_addr=p.remote_addr, state=str(p.status), srtt=p.rtt.srtt,
                rttvar=p.rtt.rttvar if p.rtt.srtt is not None else None,
                bytes_sent=p.bytes_sent, bytes_received=p.bytes_received,
                frames_sent=p.frames_sent, frames_received=p.frames_received,
                retransmits=p.retransmits, last_recv_age=now - p.last_recv_at,
                down_cause=p.down_cause,
            )
            for p in sorted(self.paths.values(), key=lambda p: p.id)
        ]
        return ConnStats(
            flow_id=self.flow_id, state=self.state, mode=self.mode, active_path=self.active,
            paths=paths, recv_queue_hwm=self.recv_queue_hwm, recv_dups=self.recv_dups,
            bond_stuck_skips=0, migration_count=self.migration_count,
            created_at=self.created_at, bytes_written=self.bytes_written,
            bytes_read=self.bytes_read, unacked_bytes=self.unacked,
        )
