"""The datagram path's fuzz targets (issue 7), shared by the hypothesis suite
(``tests/fuzz/test_fuzz_dgram.py``) and the atheris harness (``fuzz/fuzz_dgram.py``).

Each target reads its input as a sequence of operations (:class:`Reader`: bytes past
the end read as 0), builds authentic datagrams itself where an operation asks for
one, and checks the outcome against a model written from docs/wire.md ("Datagram
carriers", "The udpflow carrier", "Packets"):

* :func:`run_opener`: a ``DatagramOpener`` fed authentic datagrams (sealed
  independently with AES-GCM on the documented nonce and associated data) at chosen
  packet numbers (replays, the window's edge, epoch boundaries, far jumps), tampered,
  truncated, extended, moved to another path or key, re-numbered, or forged: exactly
  the model's datagrams open, to exactly their frames; every other one is dropped and
  counted (``failures`` / ``replays`` as the model says), never raised.
* :func:`run_parse`: ``parse_datagram`` against a reference parser.
* :func:`run_packets`: ``PacketReceiver`` against a model of its de-duplication
  window and byte cap; the MODE and PATH_REPORT decoders and ``PathRates`` on any
  bytes.
* :func:`run_engine`: a keyed listener ``Flow`` of a packet flow on two datagram paths
  fed its dialer's datagrams, lost, duplicated, reordered, tampered, moved, forged, and
  authentic datagrams of fuzzed frames.
* :func:`run_udp_listener` / :func:`run_udp_dialer`: the udpflow carrier's datagram
  parsing, over a fake loop and socket (``_udpfake``).

Every target raises AssertionError (or lets an unexpected exception through) on a
bug, and nothing else.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rendr.carriers import udpflow, udplisten
from rendr.carriers.udpbase import (
    ANSWER,
    CHALLENGE,
    DATA,
    MIN_OPEN,
    OPEN,
    OPEN_TRIES,
    RESPONSE,
)
from rendr.carriers.udpflow import UdpClientCarrier, UdpServer
from rendr.carriers.udplisten import UdpServerCarrier
from rendr.config import FlowConfig
from rendr.core.crypto import FlowKeys
from rendr.core.dgram import OVERHEAD, REPLAY_WINDOW, DatagramOpener, DatagramSealer
from rendr.core.flow import Flow
from rendr.core.packetizer import DatagramDeframer, parse_datagram
from rendr.core.packets import DEDUP_WINDOW, PacketReceiver
from rendr.core.path import PathState
from rendr.core.pathreport import PathRates
from rendr.core.paths import PathSet
from rendr.core.types import Mode, Role, State
from rendr.core.wire import (
    MAX_REPORT_PATHS,
    PATH_REPORT,
    PREFACE,
    FrameType,
    Kind,
    decode_mode,
    decode_path_report,
    dgram_header,
    encode_ack,
    encode_close,
    encode_frame,
    encode_mode,
    encode_path_report,
    encode_u64,
)
from rendr.errors import ConnAborted, ProtocolError

from ._udpfake import DIALER_ADDR, LISTENER_ADDR, FakeLoop, FakeSocket

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PATH = 7
EPOCH_SHIFT = 18


class Reader:
    """The fuzz input, read front to back; bytes past the end read as 0."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def __bool__(self) -> bool:
        return self.pos < len(self.data)

    def u8(self) -> int:
        pos = self.pos
        self.pos = pos + 1
        return self.data[pos] if pos < len(self.data) else 0

    def u16(self) -> int:
        return self.u8() << 8 | self.u8()

    def u64(self) -> int:
        return int.from_bytes(self.take(8).ljust(8, b"\0"), "big")

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk


# ----------------------------------------------------------- the spec, independently

@functools.lru_cache(maxsize=64)
def record_key(secret: bytes, path: int, epoch: int) -> bytes:
    """HKDF-Expand(secret, "rendr v1 record" | u32 path | u32 epoch, 32): one block."""
    info = b"rendr v1 record" + path.to_bytes(4, "big") + epoch.to_bytes(4, "big")
    return hmac.new(secret, info + b"\x01", hashlib.sha256).digest()


def seal(secret: bytes, path: int, pn: int, frames: bytes, encrypt: bool) -> bytes:
    """A sealed datagram as docs/wire.md describes it: ``pn | body | tag``."""
    aead = AESGCM(record_key(secret, path, pn >> EPOCH_SHIFT))
    nonce = path.to_bytes(4, "big") + pn.to_bytes(8, "big")
    number = pn.to_bytes(8, "big")
    if encrypt:
        return number + aead.encrypt(nonce, frames, number)
    return number + frames + aead.encrypt(nonce, b"", number + frames)


def as_buffer(data: bytes, how: int) -> bytes | bytearray | memoryview:
    """``data`` as bytes, a bytearray, or a memoryview not at its buffer's start."""
    if how % 3 == 1:
        return bytearray(data)
    if how % 3 == 2:
        return memoryview(b"\xa5\xa5" + data)[2:]
    return data


class OpenerModel:
    """The receiving side of docs/wire.md's "Opening": the replay window (the highest
    pn accepted and the 4095 below it) and the one-epoch rule."""

    def __init__(self) -> None:
        self.top = -1
        self.accepted: set[int] = set()
        self.failures = 0
        self.replays = 0

    def expect(self, pn: int) -> bool:
        """Whether an authentic datagram numbered ``pn`` opens now (counts a drop)."""
        if self.top >= 0 and (self.top - pn >= REPLAY_WINDOW or pn in self.accepted):
            self.replays += 1
            return False
        top_epoch = self.top >> EPOCH_SHIFT if self.top >= 0 else 0
        if abs((pn >> EPOCH_SHIFT) - top_epoch) > 1:
            self.failures += 1
            return False
        self.accepted.add(pn)
        if pn > self.top:
            self.top = pn
            self.accepted = {n for n in self.accepted if pn - n < REPLAY_WINDOW}
        return True

    def drop(self, pn: int | None) -> None:
        """A datagram that cannot open was fed (forged, tampered, too short)."""
        if pn is not None and self.top >= 0 and (
                self.top - pn >= REPLAY_WINDOW or pn in self.accepted):
            self.replays += 1
        else:
            self.failures += 1


def pick_pn(r: Reader, top: int, authentic: bool = True) -> int:
    """A packet number near the interesting places: the next ones, the window's edge,
    the epoch boundaries, far ahead; an authentic one stays below epoch 2^32."""
    sel = r.u8() % 9
    small = r.u16()
    base = max(top, 0)
    if sel == 0:
        pn = small % 64
    elif sel == 1:
        pn = top + 1 + small % 8
    elif sel == 2:
        pn = top - small % (2 * REPLAY_WINDOW)
    elif sel == 3:  # around an epoch boundary near the top
        epoch = (base >> EPOCH_SHIFT) + (small & 3) - 1
        pn = (epoch << EPOCH_SHIFT) - 2 + (small >> 8) % 5
    elif sel == 4:  # around the window's edge
        pn = top - REPLAY_WINDOW - 2 + small % 5
    elif sel == 5:
        pn = top + REPLAY_WINDOW - 2 + small % 5
    elif sel == 6:
        pn = (small << EPOCH_SHIFT) + r.u8()
    elif sel == 7:
        pn = r.u64()
    else:
        pn = top + 1
    pn = max(0, pn) % (1 << 64)
    if authentic:
        pn %= 1 << (32 + EPOCH_SHIFT)  # a key exists only below epoch 2^32
    return pn


def _frames(r: Reader) -> bytes:
    """One whole frame for a datagram body (an extension frame with fuzzed bytes)."""
    return encode_frame(0x90 + r.u8() % 16, r.take(r.u8() % 48))


def run_opener(data: bytes) -> None:
    r = Reader(data)
    encrypt = not r.u8() & 1
    opener = DatagramOpener(KEY, PATH, encrypt)
    model = OpenerModel()
    sent: list[tuple[int, bytes, bytes]] = []  # authentic (pn, frames, datagram)
    steps = 0
    while r and steps < 64:
        steps += 1
        op = r.u8() % 9
        how = r.u8()
        if op == 4 and sent:  # a datagram already fed, again
            pn, frames, datagram = sent[r.u8() % len(sent)]
        else:
            pn = pick_pn(r, model.top)
            frames = _frames(r)
            datagram = seal(KEY, PATH, pn, frames, encrypt)
            if op == 0:  # the engine's sealer makes the same bytes
                sealer = DatagramSealer(KEY, PATH, len(frames) + OVERHEAD, encrypt)
                sealer.next_number = pn
                assert [bytes(d) for d in sealer.seal([frames])] == [datagram]
        before = (opener.failures, opener.replays)
        if op in (0, 4) or (op == 3 and not datagram):
            want = model.expect(pn)
            got = opener.feed(as_buffer(datagram, how))
            if want:
                assert [bytes(p) for p in got] == [frames], "an authentic datagram opened wrong"
                sent.append((pn, frames, datagram))
            else:
                assert got == [], f"pn {pn} opened, the model drops it"
        else:
            if op == 1:  # one bit flipped
                bit = r.u16() % (8 * len(datagram))
                bad = bytearray(datagram)
                bad[bit // 8] ^= 1 << (bit % 8)
                forged: bytes = bytes(bad)
                claimed: int | None = int.from_bytes(forged[:8], "big")
            elif op == 2:  # cut short, or longer
                cut = r.u16() % len(datagram)
                forged = datagram[:cut] if how & 1 else (
                    datagram + r.take(1 + r.u8() % 16).ljust(1, b"\0"))
                claimed = pn if len(forged) >= OVERHEAD else None
            elif op == 3:  # moved: another path, key, or protection
                which = how % 3
                forged = (seal(KEY, PATH + 1 + r.u8(), pn, frames, encrypt) if which == 0
                          else seal(OTHER_KEY, PATH, pn, frames, encrypt) if which == 1
                          else seal(KEY, PATH, pn, frames, not encrypt))
                claimed = pn
            elif op == 5:  # re-numbered: an authentic body under another pn
                other = pick_pn(r, model.top, authentic=False)
                if other == pn:
                    other = (pn + 1) % (1 << 64)
                forged = other.to_bytes(8, "big") + datagram[8:]
                claimed = other
            elif op == 6:  # tag or body swapped with another authentic datagram's
                if not sent:
                    continue
                _, _, donor = sent[r.u8() % len(sent)]
                forged = datagram[:-16] + donor[-16:]
                if forged == datagram:
                    continue
                claimed = pn
            else:  # forged outright (7), or shorter than a seal (8)
                forged = r.take(r.u8() if op == 7 else r.u8() % OVERHEAD)
                claimed = int.from_bytes(forged[:8], "big") if len(forged) >= OVERHEAD else None
            model.drop(claimed)
            got = opener.feed(as_buffer(forged, how))
            assert got == [], "a tampered or forged datagram opened"
        after = (opener.failures, opener.replays)
        assert after == (model.failures, model.replays), (op, before, after, pn)
        if sent and len(sent) > 32:
            del sent[:16]


# -------------------------------------------------------------- frames of a datagram

def reference_parse(packet: bytes) -> tuple[list[tuple[str, int, bytes]], str | None]:
    """docs/wire.md: whole frames back to back; a truncated header, a frame past the
    end, or a DATA frame without payload is an error."""
    events: list[tuple[str, int, bytes]] = []
    pos = 0
    n = len(packet)
    while pos < n:
        if n - pos < 4:
            return events, "truncated frame header"
        word = int.from_bytes(packet[pos : pos + 4], "big")
        ftype, length = word >> 24, word & 0xFFFFFF
        end = pos + 4 + length
        if end > n:
            return events, "runs past the end"
        if ftype == FrameType.DATA:
            if length <= 8:
                return events, "DATA frame without payload"
            events.append(("data", int.from_bytes(packet[pos + 4 : pos + 12], "big"),
                           packet[pos + 12 : end]))
        else:
            events.append(("frame", ftype, packet[pos + 4 : end]))
        pos = end
    return events, None


def run_parse(data: bytes) -> None:
    """``data`` is ``how (1 B) | datagram``."""
    how = data[0] if data else 0
    packet = data[1:]
    events: list[tuple[str, int, bytes]] = []
    want_flags = 0

    def on_data(offset: int, piece: memoryview, _now: float) -> int:
        events.append(("data", offset, bytes(piece)))
        return 1 << (offset % 7)

    def on_frame(ftype: int, body: memoryview, _now: float) -> int:
        events.append(("frame", ftype, bytes(body)))
        return 1 << (8 + ftype % 5)

    want, error = reference_parse(packet)
    for kind, a, _ in want:
        want_flags |= 1 << (a % 7) if kind == "data" else 1 << (8 + a % 5)
    try:
        if how & 4:
            flags = DatagramDeframer(on_data, on_frame).feed(as_buffer(packet, how))
        else:
            flags = parse_datagram(as_buffer(packet, how), on_data, on_frame)
    except ProtocolError as exc:
        assert error is not None and error in str(exc), (str(exc), error)
        assert events == want
        return
    assert error is None, f"accepted, the reference says {error}"
    assert events == want and flags == want_flags


# ------------------------------------------------------------------- packet mode

def _mode_expected(body: bytes) -> tuple[int, int, int] | None:
    if len(body) < 6:
        return None
    return int.from_bytes(body[:4], "big"), body[4], body[5]


def _report_expected(body: bytes) -> tuple[int, list[tuple[int, int, int]]] | None:
    if len(body) < 9 or len(body) < 9 + 20 * body[8]:
        return None
    entries = [(int.from_bytes(body[9 + 20 * i : 13 + 20 * i], "big"),
                int.from_bytes(body[13 + 20 * i : 21 + 20 * i], "big"),
                int.from_bytes(body[21 + 20 * i : 29 + 20 * i], "big"))
               for i in range(min(body[8], MAX_REPORT_PATHS))]
    return int.from_bytes(body[:8], "big"), entries


def run_packets(data: bytes) -> None:
    r = Reader(data)
    cap = 1 + r.u16() * 8
    rx = PacketReceiver(cap)
    top = -1
    seen: set[int] = set()
    queue: list[bytes] = []
    counts = [0, 0, 0, 0]  # received, dups, too_old, overflow
    paths = PathSet(FlowConfig())  # a real one: the compiled engine checks the type
    for pid in (1, 2, 3):
        p = PathState(pid, transport="udpflow", local_addr="", remote_addr="", now=0.0,
                      deframer=DatagramDeframer(lambda *a: 0, lambda *a: 0), mtu=1200)
        p.pkts_out, p.pkt_bytes_out = 1000 * pid, 1_000_000 * pid
        paths.add(p)
    rates = PathRates()
    now = 0.0
    steps = 0
    while r and steps < 200:
        steps += 1
        op = r.u8() % 6
        if op <= 1:  # a packet arrives
            if op == 0:
                number = pick_pn(r, top, authentic=False)
            else:
                number = max(0, top - DEDUP_WINDOW + r.u16() % 8 - 4 + (r.u8() % 2) * 4)
            payload = r.take(r.u8() * (1 + r.u8() % 8))
            if number in seen or (top >= 0 and top - number >= DEDUP_WINDOW):
                counts[1 if top - number < DEDUP_WINDOW else 2] += 1
                want = False
            else:
                seen.add(number)
                if number > top:
                    top = number
                    seen = {s for s in seen if top - s < DEDUP_WINDOW}
                if queue and sum(map(len, queue)) + len(payload) > cap:
                    counts[3] += 1
                    want = False
                else:
                    queue.append(payload)
                    counts[0] += 1
                    want = True
            assert rx.on_packet(number, memoryview(b"\0" + payload)[1:]) is want
        elif op == 2:  # the application reads
            for _ in range(r.u8() % 4):
                assert rx.pop() == (queue.pop(0) if queue else None)
        elif op == 3:  # MODE
            body = r.take(r.u8() % 12)
            want_mode = _mode_expected(body)
            try:
                assert decode_mode(memoryview(body)) == want_mode
            except ProtocolError:
                assert want_mode is None
            if want_mode is not None:
                assert decode_mode(encode_mode(*want_mode)[4:]) == want_mode
        else:  # PATH_REPORT: decoded as the spec says; PathRates never raises
            if op == 4:
                body = r.take(r.u16() % 800)
            else:  # a well-formed report with fuzzed counters
                n = r.u8() % 6
                body = encode_path_report(r.u64() % (1 << 40), [
                    (r.u8() % 5, r.u16() * (1 + r.u8()), r.u64() % (1 << 40))
                    for _ in range(n)])[4:]
            want_report = _report_expected(body)
            try:
                assert decode_path_report(body) == want_report
            except ProtocolError:
                assert want_report is None
            now += r.u8() / 100
            rates.on_report(body, paths, now)
            shares = rates.shares(list(paths.by_id.values()), now)
            assert shares is None or all(s >= 0 and s == s for s in shares), shares
        assert (rx.received, rx.dups, rx.too_old, rx.overflow) == tuple(counts)
        assert rx.ready_bytes == sum(map(len, queue))


# ----------------------------------------------------------------------- the engine

KEYS = FlowKeys(d2l=bytes(range(32)), l2d=bytes(range(32, 64)), join=bytes(32),
                confirm=bytes(32))
FLOW_ID = bytes(range(16))


def _known_frames(r: Reader, packets_sent: int) -> bytes:
    """Frames an authenticated peer might send, valid or not (for the engine)."""
    kind = r.u8() % 12
    if kind == 0:
        return encode_mode(r.u16(), r.u8() % 5, r.u8() % 4)
    if kind == 1:
        return encode_path_report(r.u64() % (1 << 40), [
            (1 + r.u8() % 3, r.u16(), r.u64() % (1 << 32)) for _ in range(r.u8() % 4)])
    if kind == 2:
        return encode_u64(FrameType.PING, r.u64())
    if kind == 3:
        return encode_u64(FrameType.PONG, r.u64())
    if kind == 4:
        return encode_ack(0, r.u64() % (1 << 30) + (1 << 20), r.u8() & 3, [])
    if kind == 5:
        number = packets_sent + r.u16() - 100
        payload = r.take(r.u8())
        return dgram_header(max(0, number), len(payload)) + payload
    if kind == 6:
        return encode_frame(FrameType.DGRAM, r.take(r.u8() % 10))  # maybe short
    if kind == 7:
        return encode_frame(r.u8(), r.take(r.u8() % 40))
    if kind == 8:
        return encode_close(r.u8() % 3, "fuzz")
    if kind == 9:
        return encode_frame(PATH_REPORT + r.u8() % 3, r.take(r.u8()))
    if kind == 10:
        return r.take(r.u8())  # anything at all
    return encode_u64(FrameType.FIN, r.u16())


def run_engine(data: bytes) -> None:
    r = Reader(data)
    flags = r.u8()
    encrypt = not flags & 1
    # no liveness verdicts: the listener's answers never reach the dialer here, so a
    # path would otherwise die of silence after dead_timeout (0.6 s)
    cfg = FlowConfig(dead_timeout=30.0, suspect_timeout=30.0)
    mode = Mode.BOND if flags & 2 else Mode.PRIME
    dialer = Flow(role=Role.DIALER, flow_id=FLOW_ID, now=0.0, peer_window=1 << 23,
                  keys=KEYS, encrypt=encrypt, kind=Kind.PACKET, config=cfg, mode=mode)
    listener = Flow(role=Role.LISTENER, flow_id=FLOW_ID, now=0.0, peer_window=1 << 23,
                    keys=KEYS, encrypt=encrypt, kind=Kind.PACKET, config=cfg, mode=mode)
    for f in (dialer, listener):
        f.add_path(1, now=0.0, mtu=1200, transport="udpflow")
        f.add_path(2, now=0.0, mtu=600, transport="udpflow")
    # a spy opener per path sees what the dialer sends, in order (the plaintext of each)
    spies = {pid: DatagramOpener(KEYS.d2l, pid, encrypt) for pid in (1, 2)}
    # extra sealers: an authenticated peer's own datagrams of fuzzed frames, numbered
    # far ahead of the dialer's (so they never collide with its numbers)
    rogue = {pid: DatagramSealer(KEYS.d2l, pid, 1 << 16, encrypt) for pid in (1, 2)}
    for s in rogue.values():
        s.next_number = 1 << 17
    payloads: dict[int, bytes] = {}  # the packets the dialer sent, by content
    in_flight: list[tuple[int, bytes, list[int]]] = []  # (path, datagram, its packets)
    arrived: list[tuple[int, bytes]] = []  # delivered already (for replays)
    delivered: list[bytes] = []
    authentic_packets: set[bytes] = set()  # packets in datagrams the listener got whole
    rogue_frames = False
    forged = 0
    deliveries = 0
    now = 0.0
    steps = 0
    while r and steps < 48:
        steps += 1
        op = r.u8() % 10
        now += r.u8() / 10_000  # at most ~1.2 s in all: no liveness verdicts
        if op == 0:  # the dialer sends packets
            for _ in range(1 + r.u8() % 4):
                body = len(payloads).to_bytes(4, "big") + r.take(r.u8() % 64)
                if not dialer.send_packet(body, now):
                    break
                payloads[len(payloads)] = body
            for pid, datagrams in dialer.transmits(now):
                for d in datagrams:
                    plain = spies[pid].feed(bytes(d))
                    assert len(plain) == 1, "the dialer's datagram does not open"
                    numbers = _packets_in(bytes(plain[0]))
                    in_flight.append((pid, bytes(d), numbers))
        elif not in_flight and op < 6:
            continue
        elif op == 1:  # delivered (maybe out of order)
            pid, d, numbers = in_flight.pop(r.u8() % len(in_flight))
            listener.receive(pid, d, now)
            deliveries += 1
            arrived.append((pid, d))
            authentic_packets.update(payloads[n] for n in numbers)
        elif op == 2:  # lost
            in_flight.pop(r.u8() % len(in_flight))
        elif op == 3:  # delivered again (a replay), or moved to the other path
            again = r.u8() & 1
            if arrived and again:
                pid, d = arrived[r.u8() % len(arrived)]
            else:
                pid, d, _ = in_flight[r.u8() % len(in_flight)]
                pid = 3 - pid
            listener.receive(pid, d, now)
            forged += 1
        elif op == 4:  # tampered
            pid, d, _ = in_flight[r.u8() % len(in_flight)]
            bad = bytearray(d)
            bit = r.u16() % (8 * len(bad))
            bad[bit // 8] ^= 1 << (bit % 8)
            listener.receive(pid, bytes(bad), now)
            forged += 1
        elif op == 5:  # truncated
            pid, d, _ = in_flight[r.u8() % len(in_flight)]
            listener.receive(pid, d[: r.u16() % len(d)], now)
            forged += 1
        elif op == 6:  # forged outright
            listener.receive(1 + r.u8() % 2, r.take(r.u16() % 1300), now)
            forged += 1
        elif op == 7:  # an authentic datagram of fuzzed frames (the peer misbehaves)
            pid = 1 + r.u8() % 2
            frames = b"".join(_known_frames(r, len(payloads)) for _ in range(1 + r.u8() % 3))
            if len(frames) + OVERHEAD > 1200:
                continue
            sealer = rogue[pid]
            number = sealer.next_number
            sealer.next_number += 1
            # sealed by hand: the frames may not even be whole
            aead_datagram = seal(KEYS.d2l, pid, number, frames, encrypt)
            listener.receive(pid, aead_datagram, now)
            rogue_frames = True
        elif op == 8:  # the application reads; time passes
            listener.handle_timer(now)
            dialer.handle_timer(now)
            listener.transmits(now)
        else:
            for _ in range(1 + r.u8() % 8):
                try:
                    packet = listener.recv_packet()
                except (EOFError, ConnAborted, ProtocolError):
                    break
                except Exception as exc:  # the flow ended some other way
                    assert listener.state is State.CLOSED, exc
                    break
                if packet is None:
                    break
                delivered.append(packet)
        # the checks, after every step
        error = listener.error
        if not rogue_frames:
            assert error is None, f"the listener failed without a misbehaving peer: {error!r}"
        elif error is not None:
            assert isinstance(error, (ProtocolError, ConnAborted)), repr(error)
    while True:
        try:
            packet = listener.recv_packet()
        except Exception:
            break
        if packet is None:
            break
        delivered.append(packet)
    if not rogue_frames:
        # every packet delivered once, only packets the dialer sent, and every packet
        # of a datagram that arrived whole (the queue is far from full)
        assert len(delivered) == len(set(delivered)), "a packet delivered twice"
        assert set(delivered) <= set(payloads.values()), "a packet nobody sent"
        assert set(delivered) == authentic_packets, "an authentic packet went missing"
        dropped = sum(op.failures + op.replays for op in (
            p.opener for p in (listener.find_path(1), listener.find_path(2))
            if p is not None) if isinstance(op, DatagramOpener))
        assert dropped == forged, "a forged datagram not counted, or an authentic one dropped"
        taken = sum(p.authentic for p in listener.paths.values())
        assert taken == deliveries, "authentic receives miscounted"


def _packets_in(plain: bytes) -> list[int]:
    """The packet indexes (our 4-byte prefix) of the DGRAM frames of a datagram."""
    out: list[int] = []
    for kind, ftype, body in reference_parse(plain)[0]:
        if kind == "frame" and ftype == FrameType.DGRAM:
            out.append(int.from_bytes(body[8:12], "big"))
    return out


# --------------------------------------------------------------------- udpflow

ADDRS: list[tuple[Any, ...]] = [DIALER_ADDR, (DIALER_ADDR[0], DIALER_ADDR[1] + 1),
                                 ("203.0.113.9", 61000), ("2001:db8::1", 443, 0, 0)]


class _Random:
    """A deterministic ``os`` for a carrier module (connection ids, tokens, nonces)."""

    def __init__(self) -> None:
        self.n = 0

    def urandom(self, n: int) -> bytes:
        self.n += 1
        return hashlib.sha256(self.n.to_bytes(4, "big")).digest()[:n]


class _Patched:
    """``module.os`` replaced by a :class:`_Random` for the duration."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.saved = module.os

    def __enter__(self) -> _Random:
        rnd = _Random()
        self.module.os = rnd
        return rnd

    def __exit__(self, *_exc: object) -> None:
        self.module.os = self.saved


def _opening(r: Reader) -> bytes:
    """A whole opening (preface, then a frame of fuzzed type and body)."""
    body = r.take(r.u8())
    return PREFACE + encode_frame((FrameType.HELLO, FrameType.JOIN, r.u8())[r.u8() % 3], body)


def opening_len(data: bytes) -> int:
    """docs/wire.md: the preface (8), a frame header (4) and its body, all present."""
    if len(data) < 12:
        return 0
    n = 12 + (int.from_bytes(data[8:12], "big") & 0xFFFFFF)
    return n if n <= len(data) else 0


class _RecordingSink:
    """A carrier sink that keeps what arrives and ignores loss and flow control."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def carrier_data(self, data: Any) -> None:
        self.received.append(bytes(data))

    def carrier_lost(self, exc: BaseException | None) -> None:
        pass

    def carrier_pause(self) -> None:
        pass

    def carrier_resume(self) -> None:
        pass


class _ServerSink(_RecordingSink):
    """A listener carrier's engine: opens what arrives with the path's keys (path 1 of
    the harness's flow) and counts the authentic datagrams."""

    def __init__(self, carrier: UdpServerCarrier, encrypt: bool) -> None:
        super().__init__()
        self.carrier = carrier
        self.opener = DatagramOpener(KEY, 1, encrypt)
        self.sealer = DatagramSealer(KEY, 1, 1 << 16, encrypt)  # the peer's side
        self.authentic = 0
        self.answered = False
        self.original = carrier.addr
        self.opens = 1  # OPENs of its opening received (each allows MIN_OPEN * 3 bytes)
        self.validated = False
        self.sent_unvalidated = 0
        self.challenges: list[tuple[tuple[Any, ...], bytes]] = []  # (address, token)
        self.finished = False

    def carrier_data(self, data: Any) -> None:
        data = bytes(data)
        self.received.append(data)
        if len(self.received) > 1 and self.opener.feed(data):
            self.authentic += 1

    def carrier_authentic(self) -> int:
        return self.authentic


def run_udp_listener(data: bytes) -> None:
    with _Patched(udplisten):
        _run_udp_listener(data)


def _run_udp_listener(data: bytes) -> None:
    r = Reader(data)
    first = r.u8()
    encrypt = not first & 1
    mtu = (1200, 1500, 200, 64)[(first >> 1) % 4]
    loop, sock = FakeLoop(), FakeSocket(LISTENER_ADDR)
    sinks: list[_ServerSink] = []

    def on_carrier(carrier: Any) -> None:
        sink = _ServerSink(carrier, encrypt)
        sinks.append(sink)
        carrier.set_sink(sink)

    server = UdpServer(loop, sock, on_carrier, mtu)  # type: ignore[arg-type]
    opens: list[bytes] = []
    steps = 0
    while r and steps < 64:
        steps += 1
        op = r.u8() % 11
        addr = ADDRS[r.u8() % len(ADDRS)]
        pick = r.u8()
        sink = sinks[pick % len(sinks)] if sinks else None
        datagram: bytes | None = None
        if op == 0:  # a padded OPEN, or one seen before (a repeat)
            again = r.u8() & 1
            if opens and again:
                datagram = opens[r.u8() % len(opens)]
            else:
                head = b"\x01" + r.take(8).ljust(8, b"\0") + _opening(r)
                extra = r.u8() % 4
                datagram = head + bytes(max(0, MIN_OPEN - len(head)) + extra) + r.take(extra)
                opens.append(datagram)
        elif op == 1:  # anything starting as an OPEN
            datagram = b"\x01" + r.take(r.u16() % 1400)
        elif op == 2 and sink is not None:  # authentic DATA of a path
            frames = encode_frame(0x90, r.take(r.u8()))
            (sealed,) = sink.sealer.seal([frames])
            datagram = b"\x03" + sink.carrier.cid + bytes(sealed)
            if r.u8() & 1:
                addr = sink.carrier.addr
        elif op == 3 and sink is not None:  # forged DATA with a path's connection id
            datagram = b"\x03" + sink.carrier.cid + r.take(r.u8())
        elif op == 4 and sink is not None:  # a RESPONSE: the right token, or not
            right = r.u8() % 4
            if sink.challenges and right:
                to, token = sink.challenges[-1 if r.u8() & 1 else 0]
                if r.u8() % 4:
                    addr = to
            else:
                token = r.take(16).ljust(16, b"\0")
            datagram = b"\x05" + sink.carrier.cid + token + r.take(r.u8() % 2)
        elif op == 5:  # junk of any type
            datagram = r.take(r.u8() % 64)
        elif op == 6 and sink is not None:  # the engine writes: the answer, then DATA
            if not sink.answered:
                sink.answered = True
                sink.carrier.write([PREFACE + r.take(r.u8())])
            else:
                count = 1 + r.u8() % 3
                sink.carrier.write([r.take(r.u16() % 1400) for _ in range(count)])
        elif op == 7 and sink is not None:
            if r.u8() & 1:
                sink.carrier.close()
            else:
                sink.carrier.abort()
        elif op == 8:
            loop.advance(r.u8() / 10)
        elif op == 9:
            server.close()
        elif op == 10 and sink is not None:  # DATA from the carrier's first address
            datagram = b"\x03" + sink.carrier.cid + r.take(r.u8())
            addr = sink.original
        if datagram is None:
            _check_sends(sock.take(), sinks, None, None)
            continue
        _feed_listener(server, sinks, datagram, addr, loop, sock)


def _feed_listener(server: UdpServer, sinks: list[_ServerSink], datagram: bytes,
                   addr: tuple[Any, ...], loop: FakeLoop, sock: FakeSocket) -> None:
    """One datagram into the listener, checked against docs/wire.md."""
    n = len(datagram)
    kind = datagram[0] if n else -1
    cid = datagram[1:9]
    known = server._carriers.get(cid) if n >= 9 else None
    target = next((s for s in sinks if s.carrier is known), None) if known else None
    size = opening_len(datagram[9:])
    key = (addr, datagram[: 9 + size])
    repeat = server._openings.get(key) if kind == OPEN else None
    dropped = server.dropped
    count = len(sinks)
    got = target.received[:] if target else []
    before_auth = target.authentic if target else 0
    addr_before = {id(s): s.carrier.addr for s in sinks}
    closed = server._closed
    draining = known is not None and known._closing >= 0
    if not sock.deliver(loop, datagram, addr):  # the socket is closed
        assert server._closed and not server._carriers
        return
    sent = sock.take()
    # what is dropped and counted (docs/wire.md, "The udpflow carrier")
    if n < 9:
        want = 1
    elif kind == DATA:
        want = 0 if known else 1
    elif kind == OPEN:
        want = 1 if closed or n < MIN_OPEN or not size else 0
    elif kind == RESPONSE:
        want = 0 if n == 25 and known else 1
    else:
        want = 1
    assert server.dropped - dropped == want, (datagram[:20].hex(), want)
    # a new path only for a padded OPEN with a whole opening, not seen before
    new = sinks[count:]
    if kind == OPEN and not want and repeat is None:
        assert len(new) == 1, "a valid OPEN made no path"
        assert new[0].received == [datagram[9 : 9 + size]], "the opening is not what came"
        assert new[0].carrier.addr == addr
    else:
        assert not new, "a path without a valid new OPEN"
    if repeat is not None:
        rs = next(s for s in sinks if s.carrier is repeat[0])
        rs.opens += 1
    # the engine gets a DATA's datagram, exactly, when its id is known (not draining)
    if kind == DATA and target is not None and not draining:
        assert target.received == [*got, datagram[9:]], "DATA not handed on as it came"
        if addr == addr_before[id(target)]:
            target.validated = True
    elif target is not None and kind != DATA:
        assert target.received == got
    elif target is not None:
        assert target.received == got, "DATA reached the engine of a closing path"
    for s in sinks:  # a path moves only to the address it challenged, with its token
        if s.carrier.addr != addr_before.get(id(s), s.carrier.addr):
            assert kind == RESPONSE and s is target and (addr, datagram[9:25]) in s.challenges, \
                "the path moved without validation"
            assert s.challenges[-1] == (addr, datagram[9:25]), "moved on a stale token"
    authentic_now = target is not None and target.authentic > before_auth
    _check_sends(sent, sinks, addr if authentic_now and kind == DATA else None, target)


def _check_sends(sent: list[tuple[Any, bytes]], sinks: list[_ServerSink],
                 challenged: tuple[Any, ...] | None, source: _ServerSink | None) -> None:
    """What the listener sent: ANSWERs and DATA of known paths, CHALLENGEs only to the
    address an authentic DATA just came from; at most 3 x what came from an address
    not validated yet."""
    by_cid = {s.carrier.cid: s for s in sinks}
    for to, d in sent:
        assert to is not None and len(d) >= 9
        s = by_cid.get(d[1:9])
        assert s is not None, "a datagram for no path"
        if d[0] == CHALLENGE:
            assert len(d) == 25 and s is source and to == challenged, "an unasked CHALLENGE"
            s.challenges.append((to, d[9:]))
            continue
        assert d[0] in (ANSWER, DATA), d[:1].hex()
        assert to == s.carrier.addr, "an ANSWER or DATA to another address than the path's"
        if not s.validated:
            s.sent_unvalidated += len(d)
            assert s.sent_unvalidated <= 3 * MIN_OPEN * s.opens, "amplification"


def run_udp_dialer(data: bytes) -> None:
    with _Patched(udpflow):
        _run_udp_dialer(data)


def _run_udp_dialer(data: bytes) -> None:
    r = Reader(data)
    loop, sock = FakeLoop(), FakeSocket(DIALER_ADDR, LISTENER_ADDR)
    carrier = UdpClientCarrier(loop, sock, 1200)  # type: ignore[arg-type]
    sink = _RecordingSink()
    carrier.set_sink(sink)
    carrier.write([_opening(r)])
    ((_, first),) = sock.take()
    assert first[0] == OPEN and len(first) >= MIN_OPEN
    nonce = first[1:9]
    cid: bytes | None = None
    opens = 1
    closing = False
    steps = 0
    while r and steps < 64:
        steps += 1
        op = r.u8() % 8
        got = sink.received[:]
        datagram: bytes | None = None
        if op == 0:  # an ANSWER: our nonce or not, a whole answer or not
            their = r.take(8).ljust(8, b"\0")
            answer = _opening(r) if r.u8() & 1 else r.take(r.u8() % 24)
            datagram = (b"\x02" + their + (nonce if r.u8() % 4 else r.take(8)) + answer)
        elif op in (1, 2):  # DATA or a CHALLENGE, for our id or another
            ours = r.u8() % 4
            mine = cid if cid is not None and ours else r.take(8).ljust(8, b"\0")
            body = r.take(r.u8()) if op == 1 else r.take(16 + r.u8() % 3 - 1)
            datagram = (b"\x03" if op == 1 else b"\x04") + mine + body
        elif op == 3:
            datagram = r.take(r.u8() % 40)
        elif op == 4:
            loop.advance(r.u8() / 20)
        elif op == 5:
            carrier.write([r.take(r.u16() % 1300) for _ in range(1 + r.u8() % 3)])
        elif op == 6:
            closing = closing or (cid is not None and carrier._last != b"")
            carrier.close()
        else:
            carrier.abort()
        if datagram is not None and not sock.deliver(loop, datagram, LISTENER_ADDR):
            assert carrier._done
            datagram = None
        sent = sock.take()
        for to, d in sent:
            assert to is None
            if d[0] == OPEN:
                assert d == first and cid is None, "an OPEN after the answer, or another one"
                opens += 1
            elif d[0] == RESPONSE:
                assert datagram is not None and datagram[0] == CHALLENGE and not closing
                assert cid is not None and datagram[1:9] == cid and len(datagram) == 25
                assert d == b"\x05" + datagram[1:]
            else:
                assert d[0] == DATA and cid is not None and d[1:9] == cid
        assert opens <= OPEN_TRIES
        if datagram is None or carrier._done:
            assert sink.received == got
            continue
        kind = datagram[0] if datagram else -1
        if (kind == ANSWER and cid is None and len(datagram) >= 17
                and datagram[9:17] == nonce and opening_len(datagram[17:]) and not closing):
            cid = datagram[1:9]
            assert sink.received == [*got, datagram[17:]], "the answer not handed on"
        elif (kind == DATA and cid is not None and len(datagram) >= 9
              and datagram[1:9] == cid and not closing):
            assert sink.received == [*got, datagram[9:]]
        else:
            assert sink.received == got, "a datagram reached the engine that should not"
