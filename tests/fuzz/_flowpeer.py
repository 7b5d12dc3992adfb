"""A listener-side ``Flow`` driven as the aio driver does, against a model dialer.

Shared by ``test_fuzz_flow.py`` (hypothesis) and ``fuzz/fuzz_flow.py`` (atheris).  A
run is a list of *raw steps*, tuples of plain numbers and bytes ``(op, a, b, c, blob)``
that :meth:`FlowHarness.step` interprets against the current state (which paths the
peer has, what it sent), so any list of raw steps is a valid run.

The peer is a well-behaved dialer: it sends its payload as DATA frames (new data, and
re-sends of any part, on any of its paths) within the window the listener advertised,
its FIN, PINGs, ACKs of what the listener sent (with SACK ranges), ACTIVATE (newest
epoch, naming a path it declared dead or left as suspect, or a stale one), PATH_CLOSE,
new paths (JOIN), carrier failures; it answers PINGs with PONGs and the listener's
PATH_CLOSE, and checks everything the listener sends (``PeerViolation``).  With
``hostile=True`` it also sends malformed frames and bytes (see :meth:`_hostile`).
With ``keyed=True`` the flow has keys (wire v1): both ends exchange authenticated
records (encrypted or not), and raw bytes the hostile peer sends fail authentication
and end their path, not the flow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rendr.config import FlowConfig
from rendr.core.crypto import FlowKeys
from rendr.core.events import EventKind
from rendr.core.flow import Flow
from rendr.core.framing import StreamDeframer
from rendr.core.memory import MemoryBudget
from rendr.core.records import RecordError, RecordOpener, RecordSealer
from rendr.core.types import Cause, PathStatus, Role, State
from rendr.core.wire import (
    _ACK_HEAD,
    _RANGE,
    ACK_FIN,
    ACK_PROBE,
    MAX_ACK_RANGES,
    MAX_CONTROL_BODY,
    CloseCode,
    FrameType,
    Hello,
    Join,
    data_header,
    decode_ack,
    decode_close,
    decode_path_close,
    decode_u64,
    encode_ack,
    encode_activate,
    encode_close,
    encode_frame,
    encode_path_close,
    encode_u64,
)
from rendr.errors import (
    ConnAborted,
    LastPathError,
    MigrationBudgetExceeded,
    ProtocolError,
    RendrError,
    ZombieFlow,
)

KIB = 1024
RawStep = tuple[int, int, int, int, bytes]

WINDOW = 16 * KIB  # the listener's receive window
PEER_FRAME = 4 * KIB  # the peer's largest DATA payload
CONTROL_TYPES = [int(t) for t in FrameType if t != FrameType.DATA]
ALLOWED_ENDS = (ProtocolError, ConnAborted, MigrationBudgetExceeded, ZombieFlow)
KEYS = FlowKeys(d2l=bytes(range(32)), l2d=bytes(range(32, 64)), join=bytes(32),
                confirm=bytes(32))


class PeerViolation(AssertionError):
    """The listener sent something a correct rendr endpoint never sends."""


def make_config(hostile: bool) -> FlowConfig:
    return FlowConfig(recv_window=WINDOW, max_frame=PEER_FRAME, recv_window_floor=4 * KIB,
                      zombie_max_migrations=2 if hostile else 0, migration_budget=5.0,
                      linger=20.0)


@dataclass
class PeerPath:
    pid: int
    parser: StreamDeframer
    out: bytearray = field(default_factory=bytearray)  # peer -> listener, not delivered yet
    sendable: bool = True  # the peer may queue new frames on it
    gone: bool = False  # the carrier is closed (either end): nothing more is delivered
    retiring: bool = False  # a PATH_CLOSE was sent by the peer
    pending_rst: bool = False  # the peer closed it; the listener has not been told yet
    sealer: RecordSealer | None = None  # keyed flows: what the peer sends, as records
    opener: RecordOpener | None = None  # keyed flows: what the listener sends


class FlowHarness:
    """One listener Flow and its model dialer (see the module docstring)."""

    def __init__(self, payload: bytes, back: bytes, *, hostile: bool, first_path: int = 1,
                 peer_window: int = 64 * KIB, memory_limit: int | None = None,
                 hostile_rate: int = 20, keyed: bool = False, encrypt: bool = True) -> None:
        self.hostile = hostile
        self.keys = KEYS if keyed else None
        self.encrypt = encrypt
        self.hostile_rate = hostile_rate  # percent of steps that are malformed
        self.payload = payload  # the dialer's stream (what the listener's reader gets)
        self.back = back  # the listener application's stream
        self.now = 0.0
        self.memory = (None if memory_limit is None
                       else MemoryBudget(memory_limit, 4 * KIB))
        self.flow = Flow(role=Role.LISTENER, flow_id=b"\x42" * 16, config=make_config(hostile),
                         now=0.0, peer_window=peer_window, memory=self.memory,
                         keys=self.keys, encrypt=encrypt)
        # the peer's view
        self.paths: dict[int, PeerPath] = {}
        self.next_pid = first_path
        self.peer_max = self.flow.advertised_window  # HELLO_ACK's recv_window
        self.sent_hi = 0  # one past the highest payload byte sent
        self.lcum = 0  # the listener's cumulative ACK (as the peer learned it)
        self.fin_sent = False
        self.epoch = 0
        self.adv_max = peer_window  # the window the peer gave the listener
        self.have = bytearray(len(back))  # back bytes received from the listener
        self.back_cum = 0
        self.back_fin: int | None = None
        self.listener_close: list[int] = []
        self.last_ack_cum = 0
        self.last_ack_max = 0
        self.tokens: set[int] = set()
        # the listener application
        self.read = bytearray()
        self.eof_read = False
        self.written = 0
        self.timer: float | None = None
        self.closed_events = 0
        self.steps = 0
        self.junk = 0  # raw (unsealed) byte strings sent
        self._attach()

    # ----------------------------------------------------------- driver duties

    def _attach(self) -> int | None:
        if self.flow.state is State.CLOSED or len(self.paths) >= 64:
            return None
        pid = self.next_pid
        self.next_pid += 1
        self.flow.add_path(pid, now=self.now)
        path = self.paths[pid] = PeerPath(pid, self._parser(pid))
        if self.keys is not None:
            path.sealer = RecordSealer(self.keys.d2l, pid, self.encrypt)
            path.opener = RecordOpener(self.keys.l2d, pid, self.encrypt)
        self.service()
        return pid

    def service(self) -> None:
        """What the aio driver does after every input: transmits, closes, events, timer."""
        flow = self.flow
        for pid, bufs in flow.transmits(self.now):
            path = self.paths.get(pid)
            if path is None:
                raise PeerViolation(f"transmit on path {pid} that was never attached")
            data = b"".join(bytes(b) for b in bufs)
            try:
                # parsed even if the peer dropped it
                for piece in [data] if path.opener is None else path.opener.feed(data):
                    path.parser.feed(piece, self.now)
            except RecordError as exc:
                raise PeerViolation(f"listener sent a bad record: {exc}") from exc
            except ProtocolError as exc:
                raise PeerViolation(f"listener sent broken framing: {exc}") from exc
        for pid, _abort in flow.closes():
            path = self.paths[pid]
            path.gone = True
            path.sendable = False
            path.out.clear()
        for ev in flow.events():
            if ev.kind is EventKind.CLOSED:
                self.closed_events += 1
        if self.closed_events > 1:
            raise PeerViolation("two CLOSED events")
        self.timer = flow.get_timer()
        if self.timer is not None and not math.isfinite(self.timer):
            raise PeerViolation(f"timer at {self.timer}")

    def _parser(self, pid: int) -> StreamDeframer:
        def on_data(offset: int, piece: memoryview, now: float) -> int:
            end = offset + len(piece)
            if end > self.adv_max:
                raise PeerViolation(f"listener sent beyond our window ({end} > {self.adv_max})")
            if bytes(piece) != self.back[offset:end]:
                raise PeerViolation(f"listener sent wrong bytes at {offset}")
            if self.paths[pid].gone:
                return 0
            self.have[offset:end] = b"\x01" * (end - offset)
            cum = self.have.find(0, self.back_cum)
            self.back_cum = len(self.have) if cum < 0 else cum
            return 0

        def on_frame(ftype: int, body: memoryview, now: float) -> int:
            self._from_listener(self.paths[pid], ftype, bytes(body))
            return 0

        return StreamDeframer(on_data, on_frame)

    def _from_listener(self, path: PeerPath, ftype: int, body: bytes) -> None:
        if ftype == FrameType.CLOSE:
            self.listener_close.append(decode_close(body)[0])
            return
        if path.gone:
            return  # the peer's carrier is closed: it never reads this
        if ftype == FrameType.PING:
            if path.sendable:
                self._put(path, encode_u64(FrameType.PONG, decode_u64(body)))
        elif ftype == FrameType.PONG:
            if decode_u64(body) not in self.tokens and not self.hostile:
                raise PeerViolation("PONG for a PING never sent")
        elif ftype == FrameType.ACK:
            cum, max_offset, flags, ranges = decode_ack(body)
            if cum > self.sent_hi or (ranges and ranges[-1][1] > self.sent_hi):
                raise PeerViolation(f"listener acknowledged bytes never sent ({cum})")
            if cum < self.last_ack_cum or max_offset < self.last_ack_max:
                raise PeerViolation("listener's ACK went backwards")
            if (flags & ACK_FIN and not self.hostile
                    and not (self.fin_sent and cum == len(self.payload))):
                raise PeerViolation("ACK_FIN before our FIN and every byte before it")
            self.last_ack_cum, self.last_ack_max = cum, max_offset
            self.lcum = max(self.lcum, cum)
            self.peer_max = max(self.peer_max, max_offset)
        elif ftype == FrameType.FIN:
            final = decode_u64(body)
            if not self.flow.eof_sent or final != len(self.back) or self.written != final:
                raise PeerViolation(f"listener FIN at {final}")
            self.back_fin = final
        elif ftype == FrameType.PATH_CLOSE:
            if decode_path_close(body) != path.pid:
                raise PeerViolation("listener's PATH_CLOSE names another path")
            if not path.retiring:  # the listener retires it: acknowledge and answer
                self._put(path, self._ack_frame(False) + encode_path_close(path.pid))
                path.retiring = True
            path.sendable = False
        else:
            raise PeerViolation(f"listener sent frame type 0x{ftype:02x}")

    def _ack_frame(self, probe: bool) -> bytes:
        cum = self.back_cum
        ranges: list[tuple[int, int]] = []
        pos = cum
        have = self.have
        while len(ranges) < MAX_ACK_RANGES:
            start = have.find(1, pos)
            if start < 0:
                break
            end = have.find(0, start)
            end = len(have) if end < 0 else end
            ranges.append((start, end))
            pos = end
        flags = (ACK_PROBE if probe else 0) | (
            ACK_FIN if self.back_fin is not None and cum == self.back_fin else 0)
        self.adv_max = max(self.adv_max, cum + 64 * KIB)
        return encode_ack(cum, cum + 64 * KIB, flags, ranges)

    # ------------------------------------------------------------------ steps

    def _put(self, path: PeerPath, frames: bytes) -> None:
        """Queue ``frames`` on ``path`` (as records on a keyed flow)."""
        if path.sealer is None:
            path.out += frames
        else:
            path.out += b"".join(bytes(b) for b in path.sealer.seal([frames]))

    def _sendable(self) -> list[PeerPath]:
        return [p for p in self.paths.values() if p.sendable]

    def _pick(self, paths: list[PeerPath], a: int) -> PeerPath | None:
        return paths[a % len(paths)] if paths else None

    def _deliver(self, path: PeerPath, n: int) -> None:
        if path.gone or not path.out:
            return
        chunk = bytes(path.out[:n])
        del path.out[:n]
        self.flow.receive(path.pid, chunk, self.now)
        self.service()

    def _tick(self, dt: float) -> None:
        self.now += dt
        if self.timer is not None and self.now >= self.timer:
            self.flow.handle_timer(self.now)
        self.service()

    def _data(self, path: PeerPath, start: int, length: int) -> None:
        limit = min(len(self.payload), self.peer_max)
        if start >= limit:
            return
        end = min(limit, start + max(1, length))
        self._put(path, data_header(start, end - start) + self.payload[start:end])
        self.sent_hi = max(self.sent_hi, end)

    def _app_read(self, n: int, into: bool) -> None:
        flow = self.flow
        try:
            if into:
                buf = bytearray(n)
                got = flow.readinto(memoryview(buf))
                data = None if got is None else bytes(buf[:got])
            else:
                data = flow.read(n)
        except RendrError as exc:
            if exc is not flow.error:
                raise PeerViolation(f"read raised {exc!r}, not the flow's error") from exc
            return
        if data == b"":
            self.eof_read = True
        elif data is not None:
            if self.eof_read:
                raise PeerViolation("data after EOF")
            self.read += data
        self.service()

    def _check(self) -> None:
        flow = self.flow
        if not self.hostile:
            if not self.payload.startswith(self.read):
                raise PeerViolation("the application read bytes the peer never sent")
            if flow.state is State.CLOSED and flow.error is not None:
                raise PeerViolation(f"a well-behaved peer's flow failed: {flow.error!r}")
        elif flow.error is not None and not isinstance(flow.error, ALLOWED_ENDS):
            raise PeerViolation(f"flow ended with {flow.error!r}")
        if flow.state is State.CLOSED and self.memory is not None and self.memory.promised:
            raise PeerViolation(f"{self.memory.promised} B of window still promised")
        if flow.advertised_window < 0:
            raise PeerViolation("negative window")
        if flow.auth_failures > self.junk:
            raise PeerViolation(f"{flow.auth_failures} records of ours failed authentication")

    def step(self, raw: RawStep) -> None:
        """Interpret one raw step (any tuple of numbers and bytes is a valid step)."""
        op, a, b, c, blob = raw
        op = 80 + op % 20 if self.hostile and c % 100 < self.hostile_rate else op % 80
        self.steps += 1
        flow = self.flow
        sendable = self._sendable()
        path = self._pick(sendable, a)
        if op < 18:  # DATA: new, re-sent above the listener's cum, or already acked
            if path is not None:
                how = b % 4
                start = (self.sent_hi if how < 2
                         else self.lcum + c % (self.sent_hi - self.lcum + 1) if how == 2
                         else c % (self.lcum + 1))
                self._data(path, start, 1 + (c >> 8) % PEER_FRAME)
        elif op < 36:  # the network delivers part (or all) of what is in flight
            live = [p for p in self.paths.values() if p.out and not p.gone]
            target = self._pick(live, a)
            if target is not None:
                self._deliver(target, len(target.out) if b % 3 == 0
                              else 1 + c % len(target.out))
        elif op < 44:
            self._app_read(1 + c % 20_000, bool(b & 1))
        elif op < 49:
            self._tick((c % 1000) / 10_000)
        elif op < 53:
            if path is not None:
                self.tokens.add(c)
                self._put(path, encode_u64(FrameType.PING, c))
        elif op < 58:
            if path is not None:
                self._put(path, self._ack_frame(bool(b & 1)))
        elif op < 61:  # FIN: any time (no byte is ever sent at or above it)
            if path is not None:
                self._put(path, encode_u64(FrameType.FIN, len(self.payload)))
                self.fin_sent = True
        elif op < 64:
            self._activate(path, a, b, c)
        elif op < 66:
            if len([p for p in self.paths.values() if not p.gone]) < 4:
                self._attach()
        elif op < 68:  # the peer retires a path (it keeps another)
            if path is not None and len(sendable) >= 2:
                self._put(path, encode_path_close(path.pid))
                path.sendable = False
                path.retiring = True
        elif op < 70:  # a carrier fails
            if path is not None:
                path.sendable = False
                path.gone = True
                path.out.clear()
                flow.path_failed(path.pid, Cause.RESET if b & 1 else Cause.EOF, self.now)
                self.service()
        elif op < 73:
            if flow.state is not State.CLOSED and not flow.eof_sent:
                chunk = self.back[self.written : self.written + 1 + c % 8000]
                self.written += flow.send(chunk, self.now)
                self.service()
        elif op < 74:
            if self.written == len(self.back) and flow.state is not State.CLOSED:
                flow.send_eof(self.now)
                self.service()
        elif op < 76:
            if path is not None:
                flow.set_path_blocked(path.pid, bool(b & 1))
                self.service()
        elif op < 77:  # the listener application retires a path
            target = self._pick(list(self.paths.values()), a)
            if target is not None:
                try:
                    flow.remove_path(target.pid, self.now)
                except (LastPathError, RendrError):
                    pass
                self.service()
        elif op < 80:  # a reset the peer's closed carrier sends arrives now
            for p in self.paths.values():
                if p.pending_rst:
                    p.pending_rst = False
                    flow.path_failed(p.pid, Cause.RESET, self.now)
            self.service()
        else:
            self._hostile(op, path, a, b, c, blob)
        self._check()

    def _activate(self, path: PeerPath | None, a: int, b: int, c: int) -> None:
        if path is None:
            return
        others = [p for p in self._sendable() if p is not path]
        other = self._pick(others, a // 7)
        how = b % 4
        if how == 3 and self.epoch:  # a stale ACTIVATE (delayed on another path)
            self._put(path, encode_activate(path.pid, 1 + c % self.epoch))
            return
        self.epoch += 1
        dead = suspect = 0
        if how == 1 and other is not None:  # the peer declared ``other`` dead
            dead = other.pid
            other.sendable = False
            other.gone = True
            other.out.clear()
            other.pending_rst = True
        elif how == 2 and other is not None:  # the peer left ``other``, suspect
            suspect = other.pid
        self._put(path, encode_activate(path.pid, self.epoch, dead, suspect))

    def _hostile(self, op: int, path: PeerPath | None, a: int, b: int, c: int,
                 blob: bytes) -> None:
        """Malformed input: mostly well-framed frames that break the protocol, some
        broken framing and raw bytes, and frames on paths that do not exist."""
        if op == 89 or op == 90:  # frames on a path id the flow does not have (or, by
            self.junk += c in self.paths  # chance, raw frames on one it has)
            self.flow.receive(c, encode_u64(FrameType.PING, 7) + blob, self.now)
            self.service()
            return
        if path is None:
            return
        if op < 84:
            ftype = ([*CONTROL_TYPES, a] * 2)[b % (2 * len(CONTROL_TYPES) + 2)]
            frame = encode_frame(ftype, blob)
        elif op < 86:  # DATA anywhere (beyond the window or FIN), with any content
            offset = c % (3 * WINDOW + len(self.payload) + 1)
            frame = data_header(offset, len(blob) + 1) + bytes([a]) + blob
            self.sent_hi = max(self.sent_hi, offset + len(blob) + 1)
        elif op < 87:
            frame = bytes([FrameType.DATA, 0, 0, a % 9]) + bytes(a % 9)
        elif op < 88:
            frame = bytes([a]) + (MAX_CONTROL_BODY + 1 + c % 1000).to_bytes(3, "big")
        elif op < 89:  # raw bytes: on a keyed flow, not even a record (the path dies)
            path.out += blob
            self.junk += 1
            return
        elif op < 93:  # ACKs of bytes never sent, or with broken ranges
            cum = self.written + 1 + c % 1000 if b % 2 else self.back_cum
            ranges = [(cum + 1 + c % 50, max(0, cum + 1 + c % 50 - b % 3)),
                      (cum + 10, cum + 5 + b)]
            body = _ACK_HEAD.pack(cum, cum + 1000, a, len(ranges)) + b"".join(
                _RANGE.pack(s, e) for s, e in ranges)
            frame = encode_frame(FrameType.ACK, body)
        elif op < 94:
            frame = encode_path_close(path.pid + 1 + c % 5)
        elif op < 95:
            frame = encode_u64(FrameType.FIN, c % (len(self.payload) + 10))
        elif op < 96:
            frame = encode_close(b % 8, blob.decode("utf-8", "replace"))
        elif op < 97:
            frame = encode_activate(a % 8, c, b % 8, (a >> 3) % 8)
        elif op < 98:
            frame = (Hello(b"\x42" * 16, a, 1, 0, 0, c).encode() if b & 1
                     else Join(b"\x42" * 16, a).encode())
        else:  # a PING flood (1000 PINGs/s with a 1 s burst are allowed)
            frame = encode_u64(FrameType.PING, c) * (1100 if b % 8 == 0 else 50)
            self.tokens.add(c)
        self._put(path, frame)

    # ------------------------------------------------------------------ finish

    def finish(self) -> None:
        """Well-behaved: complete both streams, close cleanly, check everything
        arrived.  Hostile: stop answering and let the flow's timers end it."""
        flow = self.flow
        if self.hostile:
            for _ in range(400):
                if flow.state is State.CLOSED:
                    break
                self._app_read(1 << 16, False)
                self._tick(0.25)
            if flow.state is not State.CLOSED:
                raise PeerViolation("a flow nobody answers never ended")
            self._check()
            return
        for p in self.paths.values():
            if p.pending_rst:  # carriers the peer closed: the listener learns
                p.pending_rst = False
                flow.path_failed(p.pid, Cause.RESET, self.now)
            flow.set_path_blocked(p.pid, False)  # the peer reads: carriers drain
        self.service()
        closing = False
        for _ in range(2000):
            if flow.state is State.CLOSED:
                break
            if not self._sendable():
                self._attach()
            path = self._sendable()[0]
            if self.lcum < len(self.payload):  # re-send what the listener has not got
                self._data(path, self.lcum, 2 * PEER_FRAME)
            if not self.fin_sent or self.lcum >= len(self.payload):
                self._put(path, encode_u64(FrameType.FIN, len(self.payload)))
                self.fin_sent = True
            if self.written < len(self.back):
                self.written += flow.send(self.back[self.written : self.written + 8000],
                                          self.now)
            elif not flow.eof_sent:
                flow.send_eof(self.now)
            if self.eof_read and self.written == len(self.back) and not closing:
                flow.close(self.now)  # CLOSE(0) once our FIN is acknowledged
                closing = True
            self._put(path, self._ack_frame(False))
            self.service()
            for p in list(self.paths.values()):
                self._deliver(p, len(p.out))
            self._app_read(1 << 16, False)
            self._tick(0.02)
        if flow.state is not State.CLOSED:
            raise PeerViolation(f"transfer did not complete (read {len(self.read)} of "
                                f"{len(self.payload)}, peer got {self.back_cum} of "
                                f"{len(self.back)})")
        while not self.eof_read and len(self.read) < len(self.payload):
            before = len(self.read)
            self._app_read(1 << 16, bool(len(self.read) & 1))
            if len(self.read) == before:
                break
        self._app_read(1, False)
        self._check()
        if bytes(self.read) != self.payload or not self.eof_read:
            raise PeerViolation(f"the reader got {len(self.read)} of {len(self.payload)} "
                                f"bytes (EOF: {self.eof_read})")
        if self.back_cum != len(self.back) or self.back_fin != len(self.back):
            raise PeerViolation("the peer did not get the listener's whole stream")
        if flow.error is not None or CloseCode.NO_ERROR not in self.listener_close:
            raise PeerViolation(f"not a clean close: {flow.error!r} {self.listener_close}")
        if any(p.status is PathStatus.UP for p in flow.paths.values()):
            raise PeerViolation("a path is still up after the flow ended")
