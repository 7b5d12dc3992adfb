"""What arrives on a flow's paths: records opened, frames dispatched (sans-I/O).

:class:`Inbound` is the receiving half of :class:`~rendr.core.flow.Flow`: it opens
what a carrier delivers (authenticated records on a stream carrier, sealed
datagrams on a datagram carrier), keeps the path's liveness, and hands each frame
to the part it is for (DATA to the stream receiver, DGRAM to the packet receiver,
ACK to the sender and recovery, ACTIVATE and PATH_CLOSE to migration, CLOSE to the
flow's end).  The flow's own actions (abort, finish, events) come in as callbacks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from ..errors import ConnAborted, ProtocolError, RendrError
from .events import EventKind
from .framing import StreamDeframer
from .lifecycle import Lifecycle
from .migration import Migration
from .modeswitch import ModeSwitch
from .packetizer import DatagramDeframer
from .packets import PacketReceiver, PacketSender
from .path import PathState
from .pathreport import PathRates, Reporter
from .paths import PathSet
from .receiver import MUST_FLUSH, NEW_BYTES, StreamReceiver
from .records import RecordError
from .recovery import Recovery
from .reliability import PathReliability
from .sender import StreamSender
from .types import Cause, Mode, PathStatus, State
from .wire import (
    ACK_FIN,
    ACK_PROBE,
    EXTENSION_MIN,
    PATH_REPORT,
    CloseCode,
    FrameType,
    decode_ack,
    decode_close,
    decode_u64,
    encode_u64,
)

__all__ = ["Inbound"]

logger: Final = logging.getLogger("rendr.flow")

Buffer = bytes | memoryview

_ACK: Final = int(FrameType.ACK)
_DGRAM: Final = int(FrameType.DGRAM)
_FIN: Final = int(FrameType.FIN)
_PING: Final = int(FrameType.PING)
_PONG: Final = int(FrameType.PONG)
_ACTIVATE: Final = int(FrameType.ACTIVATE)
_PATH_CLOSE: Final = int(FrameType.PATH_CLOSE)
_CLOSE: Final = int(FrameType.CLOSE)
_MODE: Final = int(FrameType.MODE)
_PATH_REPORT: Final = PATH_REPORT
_CLOSED: Final = State.CLOSED
_HANDSHAKE_FRAMES: Final = frozenset({int(FrameType.HELLO), int(FrameType.HELLO_ACK),
                                      int(FrameType.JOIN), int(FrameType.JOIN_ACK)})

Emit = Callable[..., None]
"""``emit(kind, now, **fields)``: queue a flow event."""
Abort = Callable[[int, str, float, "RendrError | None"], None]
"""``abort(code, reason, now, error)``: end the flow, telling the peer."""
Finish = Callable[["RendrError | None", float], None]
"""``finish(error, now)``: the flow ended (the peer's CLOSE)."""
Check = Callable[[float], None]
"""``check_close_done(now)``: a graceful close may be complete."""


class Inbound:
    """The receiving half of a flow (see the module docstring).

    Attributes:
        auth_failures: records that failed authentication (each ended its path).
        last_packet_at: when the last packet arrived (packet flows), for liveness.
    """

    def __init__(self, *, name: str, paths: PathSet, sender: StreamSender,
                 receiver: StreamReceiver, recovery: Recovery, migration: Migration,
                 life: Lifecycle, packets: PacketReceiver | None,
                 reliable: dict[int, PathReliability], emit: Emit,
                 abort: Abort, finish: Finish, check_close_done: Check, modes: ModeSwitch,
                 now: float, packets_out: PacketSender | None = None) -> None:
        self._name = name
        self._paths = paths
        self._sender = sender
        self._receiver = receiver
        self._recovery = recovery
        self._migration = migration
        self._life = life
        self._packets_in = packets
        self._reliable = reliable
        self._emit_cb = emit
        self._abort = abort
        self._finish = finish
        self._check_close_done = check_close_done
        self._modes = modes
        self.auth_failures = 0
        self.last_packet_at = now
        # a packet flow: the peer's reports of our packets, and ours of its packets
        self._rates: PathRates | None = None if packets_out is None else packets_out.rates
        self._reporter = None if packets is None else Reporter(now)

    @property
    def report_at(self) -> float | None:
        """When a PATH_REPORT is due: a packet flow in BOND while packets arrive."""
        rep = self._reporter
        if rep is None or self._modes.mode is not Mode.BOND:
            return None
        return rep.due(self.last_packet_at)

    def send_report(self, active: int | None, now: float) -> None:
        """Queue a PATH_REPORT on the ACK path if one is due (:mod:`.pathreport`)."""
        if self._reporter is None:
            return
        at = self.report_at
        if at is None or now < at:
            return
        path = self._paths.ack_path(active)
        frame = self._reporter.build(self._paths, now)
        if frame is not None and path is not None:
            path.outbox.append(frame)

    def _emit(self, kind: EventKind, now: float, path_id: int) -> None:
        self._emit_cb(kind, now, path_id=path_id)

    def confirm(self, path_id: int, now: float) -> bool:
        """Listener: the dialer proved its keys (on ``path_id``); True the first time,
        with a CONFIRMED event (the flow may now be accepted)."""
        if self._life.confirmed():
            self._emit(EventKind.CONFIRMED, now, path_id)
            return True
        return False

    def make_deframer(self, path_id: int,
                       datagrams: bool) -> StreamDeframer | DatagramDeframer:
        # closures, not functools.partial: compiled (mypyc), they call the handlers natively
        def on_data(offset: int, piece: Buffer, now: float) -> int:
            return self._on_data(path_id, offset, piece, now)

        def on_frame(ftype: int, body: memoryview, now: float) -> int:
            return self._on_frame(path_id, ftype, body, now)

        if datagrams:
            return DatagramDeframer(on_data, on_frame)
        return StreamDeframer(on_data, on_frame)


    def receive(self, path_id: int, data: Buffer, now: float) -> bool:
        """Bytes that arrived on a carrier (after its handshake); ``data`` must not be
        mutated afterwards (payload is kept without copying).  Returns what changed:
        False when only what is readable did (no frame to send, no event, no new
        deadline; the driver may just wake a reader instead of flushing)."""
        path = self._paths.get(path_id)
        if path is None or path.status is PathStatus.DOWN or path.status is PathStatus.REMOVED:
            return False
        path.bytes_received += len(data)
        opener = path.opener
        pieces: list[bytes | memoryview] | None = None  # None: ``data`` as it came
        if opener is not None:  # authenticated records
            try:
                pieces = opener.feed(data)
            except RecordError as exc:  # not the peer's bytes: the path is lost, not the flow
                self.auth_failures += 1
                logger.warning("flow %s: %s; path %d dropped", self._name, exc, path_id)
                self._migration.carrier_failed(path_id, Cause.AUTH, now, str(exc))
                return True
            if not pieces:
                return False  # liveness counts authenticated records only
        path.last_recv_at = now
        path.authentic += 1
        path.unanswered_since = None
        flags = 0
        if self._life.unconfirmed and self.confirm(path_id, now):
            flags = MUST_FLUSH
        if path.suspect:
            self._migration.resumed(path, now)
            flags = MUST_FLUSH
        try:
            if pieces is None:
                flags |= path.deframer.feed(data, now)
            else:
                for piece in pieces:
                    flags |= path.deframer.feed(piece, now)
        except ProtocolError as err:  # not ``exc``: compiled, a name keeps one type
            logger.warning("flow %s: protocol error on path %d: %s", self._name, path_id, err)
            self._abort(CloseCode.PROTOCOL_ERROR, str(err), now, ProtocolError(str(err)))
            return True
        return bool(flags & MUST_FLUSH)

    def _on_data(self, path_id: int, offset: int, piece: Buffer, now: float) -> int:
        path = self._paths.by_id[path_id]
        path.frames_received += 1
        if self._life.state is _CLOSED:
            return 0
        flags = self._receiver.on_data(offset, piece, now)
        if path.mtu is not None:
            flags |= self._receiver.on_datagram_data(offset, len(piece))
        if flags & NEW_BYTES:
            self._migration.zombie.progress()
        return flags

    def _on_frame(self, path_id: int, ftype: int, body: memoryview, now: float) -> int:
        """Dispatch one frame; returns MUST_FLUSH unless only the application's
        packets changed (then the driver just wakes the reader)."""
        path = self._paths.by_id[path_id]
        path.frames_received += 1
        if ftype == _DGRAM:  # the application's datagrams: data, not control
            self._on_packet(path, body, now)
            return 0
        if not path.spend_control(ftype == _PING, now):
            raise ProtocolError(f"control frame flood on path {path_id} (frame type "
                                f"0x{ftype:02x})")
        # An if-chain, not a table of methods: plain calls, so the engine compiles (mypyc).
        if ftype == _ACK:
            self._handle_ack(path, body, now)
        elif ftype == _PING:
            if path.blocked:  # the peer is not reading: answer the latest PING, later
                path.pong_owed = decode_u64(body)
            else:
                path.outbox.append(encode_u64(FrameType.PONG, decode_u64(body)))
        elif ftype == _PONG:
            path.on_pong(decode_u64(body), now)
        elif ftype == _FIN:
            self._receiver.on_fin(decode_u64(body))
        elif ftype == _ACTIVATE:
            self._migration.on_activate(body, now)
        elif ftype == _PATH_CLOSE:
            self._migration.on_path_close(path, body, now)
        elif ftype == _CLOSE:
            self._handle_close(body, now)
        elif ftype == _MODE:
            if self._modes.receive(path, body, now):
                self._emit_cb(EventKind.MODE_CHANGE, now, detail=self._modes.refused or "")
        elif ftype == _PATH_REPORT:  # an extension: skipped on a stream flow
            if self._rates is not None:
                self._rates.on_report(body, self._paths, now)
            return 0
        elif ftype in _HANDSHAKE_FRAMES:
            raise ProtocolError("handshake frame on an attached path")
        elif ftype < EXTENSION_MIN:
            raise ProtocolError(f"unexpected frame type 0x{ftype:02x}")
        # else: an unknown extension frame: skip it (docs/wire.md, "Unknown frames")
        return MUST_FLUSH

    def _on_packet(self, path: PathState, body: memoryview, now: float) -> None:
        packets = self._packets_in
        if packets is None or len(body) < 8:
            raise ProtocolError("DGRAM frame on a stream flow" if packets is None
                                else "short DGRAM frame")
        path.pkts_in += 1  # for the PATH_REPORT: counters only, per packet
        path.pkt_bytes_in += len(body) - 8
        if self._life.state is not _CLOSED:
            self.last_packet_at = now
            if packets.on_packet(int.from_bytes(body[:8], "big"), body[8:]):
                self._migration.zombie.progress()

    def _handle_ack(self, path: PathState, body: memoryview, now: float) -> None:
        cum, max_offset, flags, ranges = decode_ack(body)
        self._recovery.on_ack()
        if flags & ACK_PROBE:
            self._receiver.ack_needed = True
        sender = self._sender
        progressed = sender.on_ack(cum, max_offset, ranges, bool(flags & ACK_FIN))
        if progressed:
            active = self._paths.get(self._migration.active)
            sender.autotune(now, active.rtt.min_rtt if active is not None else None)
            self._migration.zombie.progress()
        if progressed or ranges:
            Recovery.on_acked(self._paths, cum, ranges, now)
        for rel in self._reliable.values():  # datagram paths: loss and window
            rel.on_ack(cum, ranges, now, sender)
        if sender.fin_acked:
            self._check_close_done(now)

    def _handle_close(self, body: memoryview, now: float) -> None:
        code, reason = decode_close(body)
        if self._life.state is _CLOSED:
            return
        self._life.peer_closed = True
        self._finish(None if code == CloseCode.NO_ERROR else ConnAborted(code, reason), now)
