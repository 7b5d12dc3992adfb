"""Shared pieces of the fuzz suite (issue 7): settings, allowed errors, a reference
deframer and strategies for frames.

Every property runs derandomized (a fixed sequence of examples: the same cases on
every run and machine, no example database).  ``RENDR_FUZZ_SCALE=N`` multiplies every
``max_examples`` for a longer local run (still deterministic); CI runs the default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from rendr.core import crypto
from rendr.core.session import DialerHandshake
from rendr.core.types import Mode
from rendr.core.wire import (
    AUTH_LEN,
    CAP_BUDGET,
    CAP_KEYS,
    KEY_ENCRYPT,
    MAGIC,
    MAX_CONTROL_BODY,
    VERSION,
    FrameType,
    Hello,
    Join,
    JoinAck,
    Kind,
    Result,
    data_header,
    encode_ack,
    encode_activate,
    encode_close,
    encode_frame,
    encode_path_close,
    encode_u64,
)
from rendr.errors import ProtocolError

SCALE = max(1, int(os.environ.get("RENDR_FUZZ_SCALE", "1") or "1"))


def fuzz_settings(max_examples: int) -> settings:
    """Deterministic settings: ``max_examples`` (times RENDR_FUZZ_SCALE) fixed examples."""
    return settings(
        max_examples=max_examples * SCALE,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much, HealthCheck.large_base_example],
    )


U8 = st.integers(0, 0xFF)
U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFF_FFFF)
U64 = st.integers(0, 0xFFFF_FFFF_FFFF_FFFF)
FLOW_IDS = st.binary(min_size=16, max_size=16)

KNOWN_TYPES = [int(t) for t in FrameType]
# every frame type a deframer may see: the known ones, reserved ones and extensions
FTYPES = st.one_of(st.sampled_from(KNOWN_TYPES), U8)


def as_view(data: bytes, pad: int) -> memoryview:
    """``data`` as a memoryview that does not start at its buffer's offset 0."""
    return memoryview(b"\xa5" * pad + data)[pad:]


# ------------------------------------------------------------------ frames

# An event of a deframer: ("data", offset, payload) or ("frame", type, body).
Event = tuple[str, int, bytes]


def build(events: list[Event]) -> bytes:
    """The carrier bytes of a sequence of frames."""
    out = bytearray()
    for kind, a, b in events:
        if kind == "data":
            out += data_header(a, len(b)) + b
        else:
            out += encode_frame(a, b)
    return bytes(out)


def merge(events: list[Event]) -> list[Event]:
    """Coalesce DATA pieces that continue one another (one frame handed out in pieces
    and one frame per piece then compare equal)."""
    out: list[Event] = []
    for ev in events:
        if (ev[0] == "data" and out and out[-1][0] == "data"
                and out[-1][1] + len(out[-1][2]) == ev[1]):
            prev = out.pop()
            out.append(("data", prev[1], prev[2] + ev[2]))
        else:
            out.append(ev)
    return out


@dataclass
class RefResult:
    events: list[Event]
    error: bool


def reference_deframe(stream: bytes) -> RefResult:
    """docs/wire.md "Stream framing", written independently of StreamDeframer: the
    frames of ``stream`` (the DATA payload that is there of a frame cut short) and
    whether the framing is broken (``length <= 8`` DATA; a control frame longer than
    MAX_CONTROL_BODY, as soon as its header is complete)."""
    events: list[Event] = []
    pos = 0
    n = len(stream)
    while n - pos >= 4:
        word = int.from_bytes(stream[pos : pos + 4], "big")
        ftype, length = word >> 24, word & 0xFFFFFF
        pos += 4
        if ftype == FrameType.DATA:
            if length <= 8:
                return RefResult(events, True)
            if n - pos < 8:
                break
            offset = int.from_bytes(stream[pos : pos + 8], "big")
            pos += 8
            payload = stream[pos : pos + length - 8]
            pos += len(payload)
            if payload:
                events.append(("data", offset, payload))
            continue
        if length > MAX_CONTROL_BODY:
            return RefResult(events, True)
        if n - pos < length:
            break
        events.append(("frame", ftype, stream[pos : pos + length]))
        pos += length
    return RefResult(events, False)


def feed_all(chunks: list[bytes], kinds: list[int] | None = None) -> RefResult:
    """Feed ``chunks`` to a StreamDeframer (chunk i as bytes, bytearray or memoryview
    by ``kinds[i] % 3``); only ProtocolError may escape a feed, and each feed returns
    the OR of its callbacks' flags."""
    from rendr.core.framing import StreamDeframer

    events: list[Event] = []
    flags_seen = [0]

    def on_data(offset: int, piece: memoryview, now: float) -> int:
        assert len(piece) > 0, "empty DATA piece"
        events.append(("data", offset, bytes(piece)))
        flag = 1 << (offset % 7)
        flags_seen[0] |= flag
        return flag

    def on_frame(ftype: int, body: memoryview, now: float) -> int:
        assert ftype != FrameType.DATA
        events.append(("frame", ftype, bytes(body)))
        flag = 1 << (8 + ftype % 7)
        flags_seen[0] |= flag
        return flag

    deframer = StreamDeframer(on_data, on_frame)
    for i, chunk in enumerate(chunks):
        kind = kinds[i % len(kinds)] % 3 if kinds else 0
        data: bytes | bytearray | memoryview = (
            chunk if kind == 0 else bytearray(chunk) if kind == 1 else as_view(chunk, 3))
        flags_seen[0] = 0
        try:
            got = deframer.feed(data, float(i))
        except ProtocolError:
            return RefResult(events, True)
        assert got == flags_seen[0], "feed() must return the OR of the callbacks' flags"
    return RefResult(events, False)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given positions (taken modulo ``len(data) + 1``)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    out = []
    prev = 0
    for p in points:
        out.append(data[prev:p])
        prev = p
    out.append(data[prev:])
    return out


# ------------------------------------------------------------------ handshake

@dataclass
class Outcome:
    frame: tuple[int, bytes] | None
    leftover: bytes
    error: bool
    peer_version: int | None = None


def reference_handshake(stream: bytes, cap: int) -> Outcome:
    """docs/wire.md: preface (magic, version), one frame of at most MAX_CONTROL_BODY,
    then at most ``cap`` bytes (0: unbounded) before the answer."""
    if len(stream) < 8:
        return Outcome(None, b"", False)
    if stream[:4] != MAGIC:
        return Outcome(None, b"", True)
    if stream[4] != VERSION:
        return Outcome(None, b"", True, stream[4])
    if len(stream) < 12:
        return Outcome(None, b"", False)
    word = int.from_bytes(stream[8:12], "big")
    ftype, length = word >> 24, word & 0xFFFFFF
    if length > MAX_CONTROL_BODY:
        return Outcome(None, b"", True)
    if len(stream) < 12 + length:
        return Outcome(None, b"", False)
    frame = (ftype, stream[12 : 12 + length])
    tail = stream[12 + length :]
    if cap and len(tail) > cap:
        return Outcome(frame, b"", True)
    return Outcome(frame, tail, False)



# ------------------------------------------------------------------ wire v1 keys

def authentic_hello_ack(hs: DialerHandshake, path_id: int = 1, *, mode: int = Mode.PRIME,
                        kind: int = Kind.STREAM, caps: int = CAP_BUDGET,
                        window: int = 1 << 20, result: int = Result.OK,
                        budget_ms: int = 30_000, key_flags: int = KEY_ENCRYPT,
                        share: int = 1) -> tuple[bytes, crypto.FlowKeys]:
    """The HELLO_ACK body for ``hs``'s HELLO from a listener that holds the flow's keys
    (computed as ListenerHandshake._key_exchange does), with the given fields."""
    hello_body = hs.hello(path_id)[1][4:]
    hello = Hello.decode(hello_body)
    priv = X25519PrivateKey.from_private_bytes(hashlib.sha256(bytes([share])).digest())
    ack = Hello(hello.flow_id, path_id, mode, kind, caps | CAP_KEYS, window, result,
                budget_ms if caps & CAP_BUDGET else 0, crypto.public_bytes(priv), key_flags)
    transcript = crypto.transcript_hash(hello_body, ack.encode_body(ack=True)[:-AUTH_LEN])
    keys = crypto.derive(crypto.dh(priv, hello.key_share), None, None, transcript)
    ack = dataclasses.replace(ack, auth=crypto.mac(keys.confirm, b"hello-ack", transcript))
    return ack.encode_body(ack=True), keys


# ---------------------------------------------------------- valid frame values

def x25519_share(n: int) -> bytes:
    """A valid X25519 public key, the same for the same ``n`` (deterministic runs)."""
    priv = X25519PrivateKey.from_private_bytes(hashlib.sha256(n.to_bytes(8, "big")).digest())
    return priv.public_key().public_bytes_raw()


@st.composite
def hellos(draw: st.DrawFn, ack: bool = False) -> Hello:
    """Any HELLO / HELLO_ACK the v1 layout can carry (with or without budget and keys)."""
    caps = draw(st.one_of(U16, st.sampled_from([CAP_KEYS, CAP_BUDGET | CAP_KEYS])))
    keys = bool(caps & CAP_KEYS)
    return Hello(draw(FLOW_IDS), draw(U32), draw(U8), draw(U8), caps, draw(U32),
                 draw(U8) if ack else 0, draw(U32) if caps & CAP_BUDGET else 0,
                 draw(st.binary(min_size=32, max_size=32)) if keys else b"",
                 draw(U8) if keys else 0,
                 draw(st.binary(min_size=16, max_size=16)) if keys else bytes(16))


AUTH16 = st.binary(min_size=16, max_size=16)
joins = st.one_of(
    st.builds(Join, FLOW_IDS, U32),
    st.builds(Join, FLOW_IDS, U32, AUTH16, AUTH16),
)
join_acks = st.one_of(
    st.builds(JoinAck, FLOW_IDS, U32, U8),
    st.builds(JoinAck, FLOW_IDS, U32, U8, AUTH16, AUTH16),
)


@st.composite
def ack_ranges(draw: st.DrawFn, cum: int, max_n: int = 20,
               limit: int = 0xFFFF_FFFF_FFFF_FFFF) -> list[tuple[int, int]]:
    """Valid SACK ranges above ``cum``: ascending, disjoint, non-adjacent, non-empty."""
    ranges: list[tuple[int, int]] = []
    prev = cum
    for _ in range(draw(st.integers(0, max_n))):
        gap = draw(st.integers(1, 1 << draw(st.sampled_from([2, 8, 20, 40]))))
        size = draw(st.integers(1, 1 << draw(st.sampled_from([2, 8, 20, 40]))))
        start = prev + gap
        end = start + size
        if end > limit:
            break
        ranges.append((start, end))
        prev = end
    return ranges


def control_frames() -> st.SearchStrategy[Event]:
    """Well-formed control frames of every known type plus extension frames."""
    body = st.one_of(
        st.builds(lambda h: h.encode()[4:], hellos()),
        st.builds(lambda h: h.encode(ack=True)[4:], hellos(ack=True)),
        st.builds(lambda j: j.encode()[4:], joins),
        st.builds(lambda j: j.encode()[4:], join_acks),
    )
    handshake = st.tuples(st.sampled_from([1, 2, 3, 4]), body).map(
        lambda t: ("frame", t[0], t[1]))
    return st.one_of(
        st.builds(lambda t, v: ("frame", t, encode_u64(t, v)[4:]),
                  st.sampled_from([FrameType.FIN, FrameType.PING, FrameType.PONG]), U64),
        st.builds(lambda c, m, f: ("frame", FrameType.ACK, encode_ack(c, m, f, [])[4:]),
                  U64, U64, U8),
        st.builds(lambda a, b, c, d: ("frame", FrameType.ACTIVATE,
                                      encode_activate(a, b, c, d)[4:]), U32, U32, U32, U32),
        st.builds(lambda p: ("frame", FrameType.PATH_CLOSE, encode_path_close(p)[4:]), U32),
        st.builds(lambda c, r: ("frame", FrameType.CLOSE, encode_close(c, r)[4:]),
                  U16, st.text(max_size=40)),
        st.builds(lambda t, b: ("frame", t, b), st.integers(0x80, 0xFF),
                  st.binary(max_size=300)),
        handshake,
    )


def data_frames(max_payload: int = 600) -> st.SearchStrategy[Event]:
    return st.builds(lambda o, p: ("data", o, p),
                     st.one_of(st.integers(0, 1 << 20), U64.map(lambda v: v >> 8)),
                     st.binary(min_size=1, max_size=max_payload))


def frame_sequences(max_frames: int = 12) -> st.SearchStrategy[list[Event]]:
    return st.lists(st.one_of(data_frames(), control_frames()), max_size=max_frames)
