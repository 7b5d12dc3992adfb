"""Issue 6, the hostile-input suite: the attacks of tests/hostile all at once against a
real listener, while a legitimate flow measures its echo RTT.

The listener runs in a process of its own (``_listener_proc.py``, on the same event
loop as the test) so that its RSS, descriptors and asyncio tasks are its alone.  From
here, on raw sockets, each attack from its own 127.0.0.x source address (so that one
attack filling the per-source cap on pending handshakes does not refuse another; the
legitimate flow dials from 127.0.0.1):

- half-open silent sockets, never closed by the attacker (a host that vanished);
- a PING flood on flows whose attacker never reads a byte (paced, see below);
- out-of-order fragment bombs (1-byte DATA at every other offset, descending), and
  flows that fill their receive window out of order but for its first byte (8 MiB
  each, within every cap, held until the attacker leaves);
- ACKs with bogus SACK ranges;
- huge CLOSE reasons full of terminal escapes;
- JOINs followed by garbage: for an unknown flow, 1 KiB that is not frames and 1 MiB
  (more than the 64 KiB a carrier may send before its answer); for the attacker's own
  flow, bytes that are not frames;
- a HELLO flood of twice ``max_flows``, whose flows then never answer.

Asserted: the caps hold while it lasts (refusals at once, BUSY, at most ``max_flows``
connections, each hostile carrier ended by the listener, sanitised CLOSE reasons); the
legitimate flow never sees an error or a path event and its median RTT stays within 2x
of its median before the attack; once the attackers have left, the listener's
descriptors, tasks and connections are back to what they were before (the silent
sockets included: the listener drops them at ``first_frame_timeout``) and its RSS is
within :data:`RSS_SLACK_KIB` of it (:data:`TRIMMED_SLACK_KIB` after ``malloc_trim``).

The caps are scaled down from their defaults (``max_flows`` 1024 -> 64,
``first_frame_timeout`` 3 -> 1 s) to keep the run short; the code enforcing them is
the same.  ``migration_budget`` (90 s by default) is how long a listener keeps a flow
whose attacker left: 1 s here, or the settle phase would last 90 s.

The PING flood is paced to 250 PINGs per 10 ms per flow (about 20,000 PINGs/s on each
of 2 flows, 200-400 times an honest peer's rate); past the per-path control-frame
budget (1,000 PINGs/s, 10,000 control frames/s, one-second bursts) the flooding flow
ends with PROTOCOL_ERROR.  An unpaced flood used to starve the listener's loop
(:func:`test_unpaced_ping_flood_does_not_starve_the_listener`), and a JOIN that
overflowed at handoff leaked its socket
(:func:`test_join_overflowing_at_handoff_is_closed_by_the_listener`).  Each test takes
about 4 s (Linux only: /proc, and 127.0.0.x source addresses).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import rendr
from rendr.aio import runner
from rendr.core.framing import StreamDeframer
from rendr.core.handshake import HandshakeParser
from rendr.core.records import RecordError
from rendr.core.recvbuf import MAX_GAPS
from rendr.core.types import Mode
from rendr.core.wire import (
    MAX_REASON,
    PREFACE,
    FrameType,
    Hello,
    Join,
    JoinAck,
    Kind,
    Result,
    data_header,
    decode_close,
    encode_frame,
    encode_u64,
)
from rendr.errors import ProtocolError
from rendr.testing.rawpeer import RawDialer

from .test_frames import _raw_ack
from .test_listener_caps import _closed_by_peer

HELPER = Path(__file__).with_name("_listener_proc.py")
KIB = 1024
MIB = 1024 * KIB

MAX_FLOWS = 64
KNOBS: dict[str, Any] = {"max_flows": MAX_FLOWS, "first_frame_timeout": 1.0,
                         "migration_budget": 1.0}
PER_SOURCE = rendr.FlowConfig().max_pending_per_source  # 32, the default
WINDOW = rendr.FlowConfig().recv_window  # the listener's receive window, the default

WARMUP_S = 0.3  # RTT samples before this are not counted (first dial, cold caches)
BASE_S = 0.7  # the baseline RTT window
ATTACK_S = 1.5  # the attack window lasts at least this long
SETTLE_S = 8.0  # the listener must be back at its baseline within this once they left
PROBE_PAUSE_S = 0.004  # one 64-byte echo, then this pause
RTT_FLOOR_S = 0.0015
# The RTT bound is 2 x max(baseline median, 1.5 ms).  On loopback the baseline median is
# 0.3-1 ms here; on a shared 2-core machine the scheduler alone delays a wakeup by a
# fraction of a millisecond whenever the other core's tenant is busy, so a bare ratio of
# two sub-millisecond medians would fail on noise that has nothing to do with rendr
# (seen once with a 1 ms floor while other test suites ran on the same 2 cores: 1.24 ms
# before, 2.57 ms under attack).  A real regression (work growing with the attack)
# shows as a multiple, not as a millisecond.
FD_SLACK = 0  # descriptors: measured exactly back in every run, both loops
TASK_SLACK = 0  # tasks: the same
RSS_SLACK_KIB = 48 * 1024  # RSS as it is; measured up to +28 MiB (see the assertion)
TRIMMED_SLACK_KIB = 14 * 1024  # RSS after malloc_trim(0); measured up to +7.3 MiB

SOURCES = {"silent": "127.0.0.2", "ping": "127.0.0.3", "bomb": "127.0.0.4",
           "sack": "127.0.0.5", "close": "127.0.0.6", "join": "127.0.0.7",
           "flood": "127.0.0.8", "hold": "127.0.0.9"}
ALL_ATTACKS = frozenset(SOURCES)
SILENT_N = PER_SOURCE + 16
PING_FLOWS = 2
PING_BATCH = 250  # PINGs per send when paced ...
PING_PAUSE_S = 0.01  # ... and the pause after each
PING_BLOB = b"".join(encode_u64(FrameType.PING, i) for i in range(10_000))  # 120 KB
BOMB_FLOWS = 3
BOMB = b"".join(data_header(off, 1) + b"x"
                for off in range(WINDOW - 2, 0, -2)[: 2 * MAX_GAPS])  # 2x the gaps allowed
HOLD_FLOWS = 2
HOLD_PIECE = 16 * KIB
BOGUS_SACKS = [[(5000, 4000)], [(3000, 4000), (1000, 2000)], [(2000, 200_000)]]
EVIL_REASON = (("\x1b]0;owned\x07\x1b[2J\x1b[31m" + "A" * 100) * 600).encode()[: 60 * KIB]
CLOSE_FLOWS = 2
NOT_FRAMES = b"\x7f" * KIB  # a header of critical type 0x7f with an 8 MB body
FLOOD_N = 2 * MAX_FLOWS
FLOOD_BATCH = 16  # handshakes pending at once, below PER_SOURCE

try:
    import uvloop  # noqa: F401

    HAVE_UVLOOP = True
except ImportError:  # pragma: no cover - platforms without uvloop
    HAVE_UVLOOP = False

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="Linux: reads /proc/self, binds 127.0.0.x source addresses")

LOOPS = ["asyncio",
         pytest.param("uvloop", marks=pytest.mark.skipif(not HAVE_UVLOOP, reason="no uvloop"))]


# ------------------------------------------------------------------ the listener process


class Child:
    """The listener process: its port, and its figures on request."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.errors: list[list[Any]] = []  # how its echoes ended, accumulated

    @classmethod
    async def start(cls, loop: str) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HELPER), loop, json.dumps(KNOBS),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line, "the listener process exited before listening"
        hello = json.loads(line)
        assert hello["loop"].startswith(loop), hello
        return cls(proc, hello["port"])

    async def stats(self, trim: bool = False) -> dict[str, Any]:
        """The listener's figures; with ``trim``, RSS also after ``malloc_trim(0)``
        (which changes later RSS figures: only at the baseline and at the end)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b'{"cmd": "stats", "trim": %s}\n' % (b"true" if trim else b"false"))
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 5)
        assert line, "the listener process died"
        msg: dict[str, Any] = json.loads(line)
        self.errors += msg["errors"]
        return msg

    async def stop(self, kill: bool = False) -> None:
        if self.proc.returncode is not None:
            return
        try:
            if kill:
                raise OSError("killed")
            assert self.proc.stdin is not None
            self.proc.stdin.write(b'{"cmd": "exit"}\n')
            await asyncio.wait_for(self.proc.wait(), 5)
        except (OSError, asyncio.TimeoutError):
            self.proc.kill()
            await self.proc.wait()


# ------------------------------------------------------------------ the legitimate flow


@dataclass
class Probe:
    """One 64-byte echo at a time on a dialed flow; its RTTs by phase."""

    conn: rendr.Conn
    phase: str = "warmup"
    rtts: dict[str, list[float]] = field(default_factory=dict)
    _stopped: bool = False
    _in_flight: tuple[str, float] | None = None  # (phase, start) of an unanswered echo

    async def run(self) -> None:
        msg = os.urandom(64)
        while not self._stopped:
            phase = self.phase  # a sample counts in the phase it started in
            start = time.perf_counter()
            self._in_flight = (phase, start)
            await self.conn.write(msg)
            echo = await asyncio.wait_for(self.conn.readexactly(64), 5)
            self._in_flight = None
            assert echo == msg
            self.rtts.setdefault(phase, []).append(time.perf_counter() - start)
            await asyncio.sleep(PROBE_PAUSE_S)

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Stop probing; raise the flow's error if it had one.  An echo still unanswered
        after 1 s counts with the time it has waited (a lower bound)."""
        self._stopped = True
        await asyncio.wait([task], timeout=1.0)
        if not task.done():
            task.cancel()
            if self._in_flight is not None:
                phase, start = self._in_flight
                self.rtts.setdefault(phase, []).append(time.perf_counter() - start)
            return
        task.result()

    def median(self, phase: str) -> float:
        return statistics.median(self.rtts[phase])


# ------------------------------------------------------------------ the attackers


@dataclass
class Seen:
    """What the attackers saw."""

    silent_refused: int = 0  # silent sockets the listener closed at once
    ping_bytes: int = 0
    ping_ended: int = 0  # PING floods the listener ended
    hold_ended: int = 0  # holders the listener dropped while they filled the window (a
    # holder never answers PINGs: a loaded listener may find it dead before it is done)
    got_in: dict[str, int] = field(default_factory=dict)  # attack -> carriers answered OK
    ended: dict[str, int] = field(default_factory=dict)  # ... then ended by the listener
    close_codes: list[int] = field(default_factory=list)  # CLOSE frames that reached us
    joins: dict[str, int | None] = field(default_factory=dict)  # JOIN_ACK (None: closed)
    flood: dict[str, int] = field(default_factory=dict)  # HELLO flood: ok / busy / retry / other


class Attackers:
    def __init__(self, port: int, paced: bool) -> None:
        self.addr = ("127.0.0.1", port)
        self.paced = paced
        self.loop = asyncio.get_running_loop()
        self.socks: list[socket.socket] = []  # closed when the attackers leave
        self.vanished: list[socket.socket] = []  # left open: the listener must drop them
        self.seen = Seen()

    async def _open(self, source: str, vanish: bool = False) -> socket.socket:
        s = socket.socket()
        s.setblocking(False)
        (self.vanished if vanish else self.socks).append(s)
        s.bind((source, 0))
        await self.loop.sock_connect(s, self.addr)
        return s

    async def _recv(self, s: socket.socket, timeout: float) -> bytes | None:
        """The next bytes; b"" at EOF or reset, None at the timeout."""
        try:
            return await asyncio.wait_for(self.loop.sock_recv(s, 64 * KIB), timeout)
        except asyncio.TimeoutError:  # (an OSError too, since Python 3.11)
            return None
        except OSError:
            return b""

    async def _answer(self, s: socket.socket, opening: bytes
                      ) -> tuple[tuple[int, bytes] | None, bytes]:
        """Send ``opening``: the listener's first frame (None: it closed the carrier) and
        what followed.  It must do one or the other within 5 s."""
        parser = HandshakeParser()
        try:
            await self.loop.sock_sendall(s, opening)
        except OSError:
            return None, b""
        while data := await self._recv(s, 5):
            if (frame := parser.feed(data)) is not None:
                return frame, parser.leftover
        assert data is not None, (
            f"the listener neither answered a {FrameType(opening[8]).name} nor closed within 5 s")
        return None, b""

    async def _hello(self, source: str
                     ) -> tuple[socket.socket, RawDialer, Hello | None, bytes]:
        """A new flow, keyed like any dialer's (v1: anyone may open a flow unless the
        listener has a psk): (socket, the raw dialer, the HELLO_ACK or None, bytes
        after it).  Frames sent on it must be sealed: ``peer.seal(frames)``."""
        s = await self._open(source)
        peer = RawDialer()
        frame, rest = await self._answer(s, peer.hello())
        if frame is None or frame[0] != FrameType.HELLO_ACK:
            return s, peer, None, b""
        ack = Hello.decode(frame[1], ack=True)
        if ack.result == Result.OK:
            peer.on_hello_ack(frame[1])
        return s, peer, ack, rest

    async def _until_ended(self, name: str, s: socket.socket, rest: bytes,
                           peer: RawDialer | None = None, path_id: int = 1) -> None:
        """Read until the listener ends the carrier (within 5 s: counted in
        ``seen.ended``), noting the code of a CLOSE that arrives before that."""
        self.seen.got_in[name] = self.seen.got_in.get(name, 0) + 1

        def on_frame(ftype: int, body: memoryview, now: float) -> int:
            if ftype == FrameType.CLOSE:
                self.seen.close_codes.append(decode_close(body)[0])
            return 0

        deframer = StreamDeframer(lambda off, piece, now: 0, on_frame)
        deadline = self.loop.time() + 5
        data = rest
        while True:
            try:
                deframer.feed(data if peer is None else peer.open(data, path_id))
            except (ProtocolError, RecordError):  # not ours to judge: we wait for the end
                deframer = StreamDeframer(lambda off, piece, now: 0, lambda t, b, n: 0)
                peer = None
            got = await self._recv(s, max(0.0, deadline - self.loop.time()))
            if got is None:  # still open at the deadline
                return
            if not got:
                break
            data = got
        self.seen.ended[name] = self.seen.ended.get(name, 0) + 1

    async def _flow_then(self, name: str, payload: bytes) -> None:
        s, peer, ack, rest = await self._hello(SOURCES[name])
        assert ack is not None and ack.result == Result.OK, f"{name}: HELLO answered {ack}"
        try:
            await self.loop.sock_sendall(s, peer.seal(payload))
        except OSError:
            pass  # the listener ended it already
        await self._until_ended(name, s, rest, peer)

    # ---- the attacks

    async def silent(self) -> None:
        """Connect and say nothing; count those closed at once, i.e. well before
        first_frame_timeout (1 s after the listener accepted them, at the earliest)."""
        until = self.loop.time() + 0.8
        for _ in range(SILENT_N):
            await self._open(SOURCES["silent"], vanish=True)
        while True:
            self.seen.silent_refused = sum(_closed_by_peer(s) for s in self.vanished)
            if self.seen.silent_refused >= SILENT_N - PER_SOURCE or self.loop.time() > until:
                return
            await asyncio.sleep(0.02)

    async def ping(self) -> None:
        """Flows that send PINGs until cancelled, and never read."""
        async def one() -> None:
            s, peer, ack, _ = await self._hello(SOURCES["ping"])
            assert ack is not None and ack.result == Result.OK, f"ping: HELLO answered {ack}"
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # block the PONGs soon
            blob = PING_BLOB[: 12 * PING_BATCH] if self.paced else PING_BLOB
            try:
                while True:
                    await self.loop.sock_sendall(s, peer.seal(blob))
                    self.seen.ping_bytes += len(blob)
                    if self.paced:
                        await asyncio.sleep(PING_PAUSE_S)
            except OSError:  # a listener may end a flood: fine
                self.seen.ping_ended += 1

        await asyncio.gather(*(one() for _ in range(PING_FLOWS)))

    async def bomb(self) -> None:
        await asyncio.gather(*(self._flow_then("bomb", BOMB) for _ in range(BOMB_FLOWS)))

    async def hold(self) -> None:
        """Flows that fill the receive window but for its first byte: never delivered,
        held (within every cap) until the attacker leaves."""
        async def one() -> None:
            s, peer, ack, _ = await self._hello(SOURCES["hold"])
            assert ack is not None and ack.result == Result.OK, f"hold: HELLO answered {ack}"
            window = ack.recv_window  # granted by the listener's memory budget
            try:
                await self.loop.sock_sendall(s, peer.seal(b"".join(
                    data_header(off, HOLD_PIECE) + b"h" * HOLD_PIECE
                    for off in range(1, window - HOLD_PIECE, HOLD_PIECE))))
            except OSError:
                self.seen.hold_ended += 1

        await asyncio.gather(*(one() for _ in range(HOLD_FLOWS)))

    async def sack(self) -> None:
        # 100 B of data first (echoed: the listener has bytes in flight), then the ACK
        data = data_header(0, 100) + b"d" * 100
        await asyncio.gather(*(self._flow_then("sack", data + _raw_ack(0, ranges))
                               for ranges in BOGUS_SACKS))

    async def close(self) -> None:
        frame = encode_frame(FrameType.CLOSE, b"\x00\x05" + EVIL_REASON)
        await asyncio.gather(*(self._flow_then("close", frame) for _ in range(CLOSE_FLOWS)))

    async def join(self) -> None:
        source = SOURCES["join"]

        async def join(name: str, opening: bytes, garbage: bytes) -> None:
            s = await self._open(source)
            frame, rest = await self._answer(s, opening + garbage)
            if frame is None or frame[0] != FrameType.JOIN_ACK:
                self.seen.joins[name] = None  # closed without an answer: ended too
                return
            self.seen.joins[name] = JoinAck.decode(frame[1]).result
            await self._until_ended(name, s, rest)

        # the attacker's own flow (its first path stays open until it leaves); more than
        # 64 KiB after a JOIN for it: see test_join_overflowing_at_handoff_is_closed
        _, own, ack, _ = await self._hello(source)
        assert ack is not None and ack.result == Result.OK, f"join: HELLO answered {ack}"
        unkeyed = PREFACE + Join(own.flow_id, 3).encode()  # the flow id alone opens nothing
        await join("join-no-key", unkeyed, b"")  # first: "join-garbage" ends the flow
        await asyncio.gather(
            join("join-unknown", PREFACE + Join(os.urandom(16), 2).encode(), NOT_FRAMES),
            join("join-unknown-1MiB", PREFACE + Join(os.urandom(16), 2).encode(),
                 b"\xff" * MIB),
            join("join-garbage", own.join(2), NOT_FRAMES))  # keyed JOIN, then not frames

    async def flood(self) -> None:
        counts = {"ok": 0, "busy": 0, "retry": 0, "other": 0}

        async def one() -> None:
            _, _, ack, _ = await self._hello(SOURCES["flood"])  # then silent
            result = None if ack is None else ack.result
            counts["ok" if result == Result.OK else "busy" if result == Result.BUSY
                   else "retry" if result == Result.RETRY else "other"] += 1

        for _ in range(FLOOD_N // FLOOD_BATCH):
            await asyncio.gather(*(one() for _ in range(FLOOD_BATCH)))
        self.seen.flood = counts

    async def run(self, attacks: frozenset[str], seconds: float) -> asyncio.Task[None]:
        """Run ``attacks``; return once all but the PING flood (left running: cancel it)
        are done and at least ``seconds`` have passed."""
        start = self.loop.time()
        pinging = self.loop.create_task(self.ping() if "ping" in attacks else _nothing())
        await asyncio.gather(*(getattr(self, name)() for name in
                               ("silent", "bomb", "hold", "sack", "close", "join")
                               if name in attacks))
        if "flood" in attacks:  # last: it takes every flow left
            await self.flood()
        await asyncio.sleep(max(0.0, start + seconds - self.loop.time()))
        if pinging.done():
            pinging.result()  # it failed: say why
        return pinging

    def leave(self) -> None:
        for s in self.socks:
            s.close()


async def _nothing() -> None:
    pass


# ------------------------------------------------------------------ the scenario


@dataclass
class Outcome:
    before: dict[str, Any]
    during: dict[str, Any]  # at the end of the attack; its peaks: since the baseline
    after: dict[str, Any]
    settle_s: float
    probe: Probe
    events: list[rendr.Event]
    seen: Seen
    silent_dropped: int  # silent sockets the listener had closed by the end
    errors: dict[str, int]  # how the listener's echoes ended: exception name -> count
    reasons: list[tuple[int, bool]]  # (length, printable) of those exceptions' texts

    def summary(self, loop: str) -> str:
        rtt = {k: (statistics.median(v) * 1e3, max(v) * 1e3, len(v))
               for k, v in self.probe.rtts.items()}
        lines = [f"[{loop}] RTT ms (median, max, n): {rtt}"]
        for name, fig in (("before", self.before), ("during", self.during),
                          ("after", self.after)):
            trimmed = fig["trimmed_rss_kib"]
            peaks = (f"; peaks fds {fig['peak_fds']}, tasks {fig['peak_tasks']}, conns "
                     f"{fig['peak_conns']}" if name == "during" else "")
            lines.append(f"[{loop}] {name}: RSS {fig['rss_kib'] / 1024:.1f} MiB (trimmed "
                         f"{trimmed / 1024 if trimmed else float('nan'):.1f}), fds "
                         f"{fig['fds']}, tasks {fig['tasks']}, conns {fig['conns']}{peaks}")
        lines.append(f"[{loop}] settled in {self.settle_s:.2f} s; silent sockets dropped "
                     f"{self.silent_dropped}/{SILENT_N}; echoes ended {self.errors}")
        lines.append(f"[{loop}] {self.seen}")
        return "\n".join(lines)


async def _scenario(loop: str, attacks: frozenset[str], paced: bool = True,
                    attack_s: float = ATTACK_S, settle: bool = True) -> Outcome:
    """Baseline, attack, settle (without ``settle``: no wait for the baseline, and the
    listener process is killed at the end)."""
    child = await Child.start(loop)
    conn: rendr.Conn | None = None
    probing: asyncio.Task[None] | None = None
    attackers: Attackers | None = None
    pinging: asyncio.Task[None] | None = None
    try:
        events: list[rendr.Event] = []
        dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{child.port}")],
                              on_event=events.append)
        conn = await asyncio.wait_for(dialer.dial(), 10)
        probe = Probe(conn)
        probing = asyncio.create_task(probe.run())
        await asyncio.sleep(WARMUP_S)
        before = await child.stats(trim=True)
        probe.phase = "base"
        await asyncio.sleep(BASE_S)

        attackers = Attackers(child.port, paced)
        probe.phase = "attack"
        pinging = await attackers.run(attacks, attack_s)
        probe.phase = "after"
        during = await child.stats() if settle else dict(before)
        pinging.cancel()
        attackers.leave()

        def back(now: dict[str, Any]) -> bool:
            return bool(now["conns"] == before["conns"]
                        and now["fds"] <= before["fds"] + FD_SLACK
                        and now["tasks"] <= before["tasks"] + TASK_SLACK)

        after, settle_s, start = during, 0.0, time.monotonic()
        if settle:  # poll until the listener is back at its baseline, or SETTLE_S
            while not back(await child.stats()) and settle_s < SETTLE_S:
                await asyncio.sleep(0.2)
                settle_s = time.monotonic() - start
            after = await child.stats(trim=True)

        await probe.stop(probing)  # the legitimate flow's error, if it had one, is raised
        errors: dict[str, int] = {}
        for kind, _, _ in child.errors:
            errors[kind] = errors.get(kind, 0) + 1
        return Outcome(before, during, after, settle_s, probe, list(events), attackers.seen,
                       sum(_closed_by_peer(s) for s in attackers.vanished), errors,
                       [(length, printable) for _, length, printable in child.errors])
    finally:
        for task in (pinging, probing):
            if task is not None:
                task.cancel()
        if conn is not None:
            conn.abort()
        if attackers is not None:
            attackers.leave()
            for s in attackers.vanished:
                s.close()
        await child.stop(kill=not settle)


def _run(loop: str, scenario: Coroutine[Any, Any, Outcome]) -> Outcome:
    async def bounded() -> Outcome:
        return await asyncio.wait_for(scenario, 40)

    return runner.run(bounded(), use_uvloop=loop == "uvloop")


def _assert_rtt_held(out: Outcome) -> None:
    """No error (the probe would have raised), no path event, median RTT within 2x."""
    assert not [e for e in out.events if e.kind is not rendr.EventKind.PATH_UP], out.events
    base, attack = out.probe.median("base"), out.probe.median("attack")
    assert attack <= 2 * max(base, RTT_FLOOR_S), (
        f"median RTT {attack * 1e3:.3f} ms under attack, {base * 1e3:.3f} ms before")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop", LOOPS)
def test_listener_under_every_attack_keeps_caps_rtt_and_baseline(loop: str) -> None:
    out = _run(loop, _scenario(loop, ALL_ATTACKS))
    print("\n" + out.summary(loop))
    seen, before, after = out.seen, out.before, out.after

    # -- the caps held while the attack lasted
    refused = seen.silent_refused
    assert refused >= SILENT_N - PER_SOURCE, (
        f"{refused} of {SILENT_N} silent sockets refused at once "
        f"(max_pending_per_source {PER_SOURCE})")
    # refused: BUSY, or (the listener under load: flows at half of max_flows) RETRY,
    # which this flood does not follow
    assert seen.flood["busy"] + seen.flood["retry"] > 0 and not seen.flood["other"], (
        f"HELLO flood of {FLOOD_N}, max_flows {MAX_FLOWS}: {seen.flood}")
    assert out.during["peak_conns"] <= MAX_FLOWS, "more connections than max_flows at once"
    assert seen.got_in.get("bomb") == BOMB_FLOWS and seen.got_in.get("close") == CLOSE_FLOWS
    assert seen.got_in.get("sack") == len(BOGUS_SACKS), seen.got_in
    assert seen.joins["join-unknown"] == Result.UNKNOWN_FLOW, seen.joins  # after join_wait
    assert seen.joins["join-unknown-1MiB"] in (Result.UNKNOWN_FLOW, None), seen.joins
    assert seen.joins["join-garbage"] == Result.OK, seen.joins  # then not frames
    assert seen.joins["join-no-key"] == Result.AUTH_FAILED, seen.joins
    assert seen.ended == seen.got_in, "a hostile carrier was not ended by the listener"
    # the bombs, bogus SACKs and non-frames after a JOIN end their flows: protocol errors
    assert out.errors.get("ProtocolError", 0) >= BOMB_FLOWS + len(BOGUS_SACKS) + 1, out.errors
    assert out.errors.get("ConnAborted", 0) >= CLOSE_FLOWS, out.errors  # the hostile CLOSEs
    for length, printable in out.reasons:  # the reasons: capped and sanitised
        assert printable and length <= MAX_REASON + 100, (length, printable)

    # -- the legitimate flow
    _assert_rtt_held(out)

    # -- back at the baseline once the attackers left
    dropped = out.silent_dropped
    assert dropped == SILENT_N, f"{SILENT_N - dropped} silent sockets outlived first_frame_timeout"
    assert after["conns"] == before["conns"], (before, after)
    assert after["fds"] <= before["fds"] + FD_SLACK, (before, after)
    assert after["tasks"] <= before["tasks"] + TASK_SLACK, (before, after)
    # The allocators keep much of what the attack made the listener allocate: glibc does
    # not give back freed heap pages below the top of its heap, pymalloc keeps arenas
    # with a live object, the carriers keep a pool of spare receive buffers.  Measured
    # (pure and compiled engines, Python 3.11, 2-core machine) against the RSS before
    # the attack: +23 to +28 MiB as it is, +2.3 to +7.3 MiB after malloc_trim(0), on
    # both loops; neither grew when the whole attack was repeated against one listener
    # process (10 rounds on the default loop, 4 on uvloop): kept, not leaked.  The two
    # hold flows alone had 16 MiB out of order, so the trimmed bound (14 MiB) catches a
    # listener that keeps their memory (a listener that kept its ended flows: +23.6 MiB).
    assert after["rss_kib"] <= before["rss_kib"] + RSS_SLACK_KIB, (before, after)
    if after["trimmed_rss_kib"] is not None:  # glibc
        assert after["trimmed_rss_kib"] <= before["trimmed_rss_kib"] + TRIMMED_SLACK_KIB, (
            before, after)


@pytest.mark.timeout(60)
def test_unpaced_ping_flood_does_not_starve_the_listener() -> None:
    """An unpaced PING flood (2 flows, as fast as the listener reads) used to starve
    its loop (median RTT 90-570 ms, the legitimate path declared dead): the per-path
    control-frame budget now ends the flooding flows with PROTOCOL_ERROR."""
    out = _run("asyncio", _scenario("asyncio", frozenset({"ping"}), paced=False, attack_s=1.0,
                                    settle=False))
    print("\n" + out.summary("asyncio"))
    _assert_rtt_held(out)


@pytest.mark.timeout(30)
def test_join_overflowing_at_handoff_is_closed_by_the_listener() -> None:
    """A JOIN whose early bytes pass 64 KiB while it waits for its flow's HELLO is
    attached, then fails at handoff: the listener closes its carrier (it used to keep
    the socket, one descriptor per such JOIN)."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ln = await rendr.listen_tcp("127.0.0.1:0", migration_budget=1.0)
        socks: list[socket.socket] = []

        async def connect() -> socket.socket:
            s = socket.socket()
            s.setblocking(False)
            socks.append(s)
            await loop.sock_connect(s, ln.addrs[0])
            return s

        async def attempt() -> bool:
            """True when the listener ended the JOIN's carrier within 1.5 s."""
            flow_id = os.urandom(16)
            join = await connect()
            await loop.sock_sendall(join, PREFACE + Join(flow_id, 2).encode())
            await asyncio.sleep(0.15)  # the listener has read the JOIN: it waits for HELLO
            await loop.sock_sendall(join, b"\xff" * 96 * KIB)
            await asyncio.sleep(0.15)
            hello = await connect()
            await loop.sock_sendall(hello, PREFACE + Hello(
                flow_id, 1, Mode.PRIME, Kind.STREAM, 0, 8 * MIB).encode())
            deadline = loop.time() + 1.5
            while (left := deadline - loop.time()) > 0:
                try:
                    if not await asyncio.wait_for(loop.sock_recv(join, 64 * KIB), left):
                        return True
                except asyncio.TimeoutError:  # (an OSError too, since Python 3.11)
                    break
                except OSError:
                    return True
            return False

        try:
            ended = await asyncio.gather(*(attempt() for _ in range(4)))
            assert all(ended), f"JOIN carriers still open after 1.5 s: {ended}"
        finally:
            for s in socks:
                s.close()
            await ln.close()

    asyncio.run(asyncio.wait_for(main(), 20))
