"""Wire format v0: preface, frame header and frame bodies (see ``docs/wire.md``).

Every stream carrier starts with an 8-byte preface in each direction::

    "RNDR" | version u8 | flags u8 | reserved u16        (big-endian)

followed by frames.  A frame on a stream carrier is a 4-byte header and a body::

    type u8 | body length u24 | body

DATA bodies start with the u64 byte offset of their first payload byte, so a DATA
frame costs 12 bytes of overhead.  All integers are big-endian.  Frame types below
0x80 are critical (an unknown one is a protocol error); types 0x80 and above are
extensions that a receiver that does not know them skips.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from ..errors import HandshakeError, ProtocolError

__all__ = [
    "ACK_FIN",
    "ACK_PROBE",
    "MAGIC",
    "MAX_ACK_RANGES",
    "MAX_BODY",
    "MAX_CONTROL_BODY",
    "MODE_ACK",
    "MODE_REFUSED",
    "PREFACE",
    "VERSION",
    "CloseCode",
    "FrameType",
    "Hello",
    "Join",
    "JoinAck",
    "Kind",
    "Result",
    "decode_ack",
    "decode_mode",
    "encode_ack",
    "encode_frame",
    "encode_mode",
    "parse_preface",
]

# Final: a compiled build (mypyc) reads these as native constants, not module globals
MAGIC: Final = b"RNDR"
VERSION: Final = 1
PREFACE_STRUCT: Final = struct.Struct("!4sBBH")
PREFACE: Final = PREFACE_STRUCT.pack(MAGIC, VERSION, 0, 0)
HEADER: Final = struct.Struct("!I")
DATA_HEADER: Final = struct.Struct("!IQ")
MAX_BODY: Final = (1 << 24) - 1
MAX_CONTROL_BODY: Final = 64 * 1024
EXTENSION_MIN: Final = 0x80


class FrameType(enum.IntEnum):
    """Frame type codes."""

    HELLO = 0x01
    HELLO_ACK = 0x02
    JOIN = 0x03
    JOIN_ACK = 0x04
    DATA = 0x10
    ACK = 0x11
    FIN = 0x12
    DGRAM = 0x13
    PING = 0x20
    PONG = 0x21
    ACTIVATE = 0x30
    PATH_CLOSE = 0x31
    MODE = 0x32
    CLOSE = 0x40


class Kind(enum.IntEnum):
    """What a flow carries."""

    STREAM = 0
    PACKET = 1


class Result(enum.IntEnum):
    """Result codes of HELLO_ACK and JOIN_ACK."""

    OK = 0
    UNKNOWN_FLOW = 1
    FLOW_CLOSED = 2
    BAD_MODE = 3
    BAD_KIND = 4
    TOO_MANY_PATHS = 5
    DUPLICATE_PATH = 6
    BUSY = 7
    AUTH_FAILED = 8
    RETRY = 9


class CloseCode(enum.IntEnum):
    """Codes carried by CLOSE. 0 is a clean close; anything else is an abort."""

    NO_ERROR = 0
    APPLICATION = 1
    PROTOCOL_ERROR = 2
    BUDGET_EXCEEDED = 3
    ZOMBIE = 4
    LINGER_TIMEOUT = 5
    INTERNAL = 6


ACK_FIN: Final = 0x01
"""ACK flag: the sender's FIN and every byte before it were received."""
ACK_PROBE: Final = 0x02
"""ACK flag: please acknowledge promptly (sent after a failover, before re-sending)."""
MAX_REASON: Final = 1024
"""The most bytes of a CLOSE reason (longer ones are cut by the receiver)."""
MAX_ACK_RANGES: Final = 16

_HELLO: Final = struct.Struct("!16sIBBHI")
_BUDGET: Final = struct.Struct("!I")
CAP_BUDGET: Final = 0x0001
"""HELLO caps bit: a u32 migration budget in milliseconds follows the fixed fields."""
CAP_KEYS: Final = 0x0002
"""HELLO caps bit: the key block follows (the budget, if any, comes first):
key share (X25519, 32 bytes), key flags (1 byte), auth (16 bytes: in HELLO the
pre-shared key's MAC or zeros, in HELLO_ACK the confirmation MAC)."""
CAP_COOKIE: Final = 0x0004
"""HELLO caps bit: a cookie follows the budget (u8 length, then the cookie): in
HELLO_ACK with result RETRY the listener's cookie, in HELLO the same cookie sent
back (see rendr.core.cookie)."""
CAP_PATH_AUTH: Final = 0x0008
"""HELLO caps bit: the sender knows authentication-only paths (:data:`KEY_PATH_AUTH`
in HELLO, :data:`PATH_AUTH_ONLY` in JOIN / JOIN_ACK); no field of its own."""
MAX_COOKIE: Final = 255
KEY_ENCRYPT: Final = 0x01
"""Key flags bit: encrypt records (HELLO: the dialer asks; HELLO_ACK: agreed)."""
KEY_PSK: Final = 0x02
"""Key flags bit: a pre-shared key is mixed in (HELLO: its MAC is in auth)."""
KEY_STATIC: Final = 0x04
"""Key flags bit: the dialer mixes in the listener's pinned static key."""
KEY_RECORDS: Final = 0x08
"""Key flags bit: every frame after the handshake travels in authenticated records
(HELLO: the dialer asks; HELLO_ACK: agreed)."""
KEY_PATH_AUTH: Final = 0x10
"""Key flags bit, with :data:`CAP_PATH_AUTH`: this HELLO's path carries records
authenticated only, not encrypted (its carrier encrypts, and the dialer verified the
certificate its channel binding names): HELLO: the dialer asks; HELLO_ACK: agreed."""
PATH_AUTH_ONLY: Final = 0x01
"""JOIN / JOIN_ACK ``flags`` bit: as :data:`KEY_PATH_AUTH`, for a joined path."""
_KEY_BLOCK: Final = struct.Struct("!32sB16s")
AUTH_LEN: Final = 16
_JOIN: Final = struct.Struct("!16sI")
_JOIN_ACK: Final = struct.Struct("!16sIB")
_JOIN_AUTH: Final = struct.Struct("!16s16s")
_ACK_HEAD: Final = struct.Struct("!QQBB")
_RANGE: Final = struct.Struct("!QQ")
_U64: Final = struct.Struct("!Q")
_U32: Final = struct.Struct("!I")
_ACTIVATE: Final = struct.Struct("!III")
_ACTIVATE_SUSPECT: Final = struct.Struct("!IIII")
_CLOSE_HEAD: Final = struct.Struct("!H")
_DATA_WORD: Final = int(FrameType.DATA) << 24


def encode_frame(ftype: int, body: bytes = b"") -> bytes:
    """Encode a control frame (header + body) for a stream carrier."""
    if len(body) > MAX_BODY:
        raise ValueError("frame body too large")
    return HEADER.pack((ftype << 24) | len(body)) + body


DGRAM_HEADER: Final = struct.Struct("!IQ")
"""A DGRAM frame's header and packet number (the payload follows)."""
_DGRAM_WORD: Final = int(FrameType.DGRAM) << 24


def dgram_header(number: int, length: int) -> bytes:
    """The header of a DGRAM frame: packet ``number`` and a ``length``-byte payload."""
    return DGRAM_HEADER.pack(_DGRAM_WORD | (length + 8), number)


def data_header(offset: int, length: int) -> bytes:
    """The 12-byte header of a DATA frame carrying ``length`` payload bytes."""
    return DATA_HEADER.pack(_DATA_WORD | (length + 8), offset)


def parse_preface(buf: bytes | bytearray | memoryview) -> None:
    """Validate an 8-byte carrier preface.

    Raises:
        HandshakeError: the peer is not a rendr peer or speaks another version.
    """
    if len(buf) < PREFACE_STRUCT.size:
        raise HandshakeError("short preface")
    magic, version, _flags, _reserved = PREFACE_STRUCT.unpack(bytes(buf[:8]))
    if magic != MAGIC:
        raise HandshakeError(f"peer is not a rendr endpoint (preface {bytes(buf[:8])!r})")
    if version != VERSION:
        exc = HandshakeError(f"peer speaks rendr wire version {version}, we speak {VERSION}")
        exc.peer_version = version
        raise exc


@dataclass(frozen=True)
class Hello:
    """HELLO (dialer → listener) and HELLO_ACK (listener → dialer).

    Attributes:
        flow_id: 16 random bytes naming the flow for its whole life.
        path_id: the dialer-assigned id of the path this carrier becomes.
        mode: requested (HELLO) or granted (HELLO_ACK) :class:`~rendr.Mode` value.
        kind: :class:`Kind` value.
        caps: capability bits (:data:`CAP_BUDGET`; unknown bits are ignored).
        recv_window: the sender's initial receive window in bytes.
        result: :class:`Result` (HELLO_ACK only; 0 in HELLO).
        budget_ms: with :data:`CAP_BUDGET`, the migration budget in milliseconds:
            proposed (HELLO) or agreed (HELLO_ACK); 0 without it.
        key_share, key_flags, auth: with :data:`CAP_KEYS`, the key block.
        cookie: with :data:`CAP_COOKIE` (at most 255 bytes), the listener's cookie:
            minted in a HELLO_ACK with result RETRY, sent back in the HELLO.
    """

    flow_id: bytes
    path_id: int
    mode: int
    kind: int
    caps: int
    recv_window: int
    result: int = Result.OK
    budget_ms: int = 0
    key_share: bytes = b""
    key_flags: int = 0
    auth: bytes = bytes(AUTH_LEN)
    cookie: bytes = b""

    def encode(self, ack: bool = False) -> bytes:
        """Encode as HELLO or, with ``ack``, as HELLO_ACK (which appends the result byte);
        with :data:`CAP_BUDGET` in ``caps``, the budget follows, then with
        :data:`CAP_KEYS` the key block."""
        return encode_frame(FrameType.HELLO_ACK if ack else FrameType.HELLO,
                            self.encode_body(ack))

    def encode_body(self, ack: bool = False) -> bytes:
        """The body :meth:`encode` frames (the handshake transcript hashes bodies)."""
        body = _HELLO.pack(
            self.flow_id, self.path_id, self.mode, self.kind, self.caps, self.recv_window)
        if ack:
            body += bytes([self.result])
        if self.caps & CAP_BUDGET:
            body += _BUDGET.pack(self.budget_ms)
        if self.caps & CAP_COOKIE:
            body += bytes([len(self.cookie)]) + self.cookie
        if self.caps & CAP_KEYS:
            body += _KEY_BLOCK.pack(self.key_share, self.key_flags, self.auth)
        return body

    @classmethod
    def decode(cls, body: bytes | memoryview, ack: bool = False) -> Hello:
        """Decode a HELLO or HELLO_ACK body (bytes after the known fields are ignored)."""
        need = _HELLO.size + (1 if ack else 0)
        if len(body) < need:
            raise ProtocolError("short HELLO")
        flow_id, path_id, mode, kind, caps, window = _HELLO.unpack_from(body, 0)
        result = body[_HELLO.size] if ack else Result.OK
        budget_ms = 0
        if caps & CAP_BUDGET:
            if len(body) < need + _BUDGET.size:
                raise ProtocolError("HELLO announces a budget it does not carry")
            (budget_ms,) = _BUDGET.unpack_from(body, need)
            need += _BUDGET.size
        cookie = b""
        if caps & CAP_COOKIE:
            if len(body) < need + 1 or len(body) < need + 1 + body[need]:
                raise ProtocolError("HELLO announces a cookie it does not carry")
            cookie = bytes(body[need + 1 : need + 1 + body[need]])
            need += 1 + len(cookie)
        share, flags, auth = b"", 0, bytes(AUTH_LEN)
        if caps & CAP_KEYS:
            if len(body) < need + _KEY_BLOCK.size:
                raise ProtocolError("HELLO announces a key block it does not carry")
            share, flags, auth = _KEY_BLOCK.unpack_from(body, need)
        return cls(bytes(flow_id), path_id, mode, kind, caps, window, result, budget_ms,
                   bytes(share), flags, bytes(auth), cookie)

    def __reduce__(self) -> tuple[type[Hello], tuple[bytes, int, int, int, int, int, int,
                                                     int, bytes, int, bytes, bytes]]:
        # copy and pickle rebuild through __init__: compiled (mypyc), a frozen dataclass
        # cannot be restored field by field
        return (type(self), (self.flow_id, self.path_id, self.mode, self.kind, self.caps,
                             self.recv_window, self.result, self.budget_ms, self.key_share,
                             self.key_flags, self.auth, self.cookie))


@dataclass(frozen=True)
class Join:
    """JOIN: attach this carrier to an existing flow as path ``path_id``.

    ``nonce`` (16 random bytes) and ``mac`` (under the flow's JOIN key, see
    rendr.core.crypto) prove the dialer holds the flow's keys; empty in the
    unkeyed form (which a v1 listener refuses).  ``flags`` (:data:`PATH_AUTH_ONLY`,
    with :data:`CAP_PATH_AUTH`): a u8 after the MAC, sent only when not 0."""

    flow_id: bytes
    path_id: int
    nonce: bytes = b""
    mac: bytes = b""
    flags: int = 0

    def encode(self) -> bytes:
        """Encode as a JOIN frame."""
        body = _JOIN.pack(self.flow_id, self.path_id)
        if self.nonce:
            body += _JOIN_AUTH.pack(self.nonce, self.mac) + _flags_byte(self.flags)
        return encode_frame(FrameType.JOIN, body)

    @classmethod
    def decode(cls, body: bytes | memoryview) -> Join:
        """Decode a JOIN body."""
        if len(body) < _JOIN.size:
            raise ProtocolError("short JOIN")
        flow_id, path_id = _JOIN.unpack_from(body, 0)
        nonce, mac = b"", b""
        if len(body) >= _JOIN.size + _JOIN_AUTH.size:
            nonce, mac = _JOIN_AUTH.unpack_from(body, _JOIN.size)
        return cls(bytes(flow_id), path_id, bytes(nonce), bytes(mac),
                   _flags_at(body, _JOIN.size + _JOIN_AUTH.size))

    def __reduce__(self) -> tuple[type[Join], tuple[bytes, int, bytes, bytes, int]]:
        return (type(self), (self.flow_id, self.path_id, self.nonce, self.mac, self.flags))


def _flags_byte(flags: int) -> bytes:
    """A JOIN / JOIN_ACK's flags byte: absent when 0 (the v1 layout)."""
    return bytes([flags]) if flags else b""


def _flags_at(body: bytes | memoryview, at: int) -> int:
    return body[at] if len(body) > at else 0


@dataclass(frozen=True)
class JoinAck:
    """JOIN_ACK: the listener's answer to a JOIN (``nonce`` and ``mac`` prove it
    holds the flow's keys; empty when it does not know the flow; ``flags``: what
    the listener agreed of the JOIN's, as there)."""

    flow_id: bytes
    path_id: int
    result: int
    nonce: bytes = b""
    mac: bytes = b""
    flags: int = 0

    def encode(self) -> bytes:
        """Encode as a JOIN_ACK frame."""
        body = _JOIN_ACK.pack(self.flow_id, self.path_id, self.result)
        if self.nonce:
            body += _JOIN_AUTH.pack(self.nonce, self.mac) + _flags_byte(self.flags)
        return encode_frame(FrameType.JOIN_ACK, body)

    @classmethod
    def decode(cls, body: bytes | memoryview) -> JoinAck:
        """Decode a JOIN_ACK body."""
        if len(body) < _JOIN_ACK.size:
            raise ProtocolError("short JOIN_ACK")
        flow_id, path_id, result = _JOIN_ACK.unpack_from(body, 0)
        nonce, mac = b"", b""
        if len(body) >= _JOIN_ACK.size + _JOIN_AUTH.size:
            nonce, mac = _JOIN_AUTH.unpack_from(body, _JOIN_ACK.size)
        return cls(bytes(flow_id), path_id, result, bytes(nonce), bytes(mac),
                   _flags_at(body, _JOIN_ACK.size + _JOIN_AUTH.size))

    def __reduce__(self) -> tuple[type[JoinAck], tuple[bytes, int, int, bytes, bytes, int]]:
        return (type(self), (self.flow_id, self.path_id, self.result, self.nonce, self.mac,
                             self.flags))


def encode_ack(cum: int, max_offset: int, flags: int, ranges: list[tuple[int, int]]) -> bytes:
    """Encode an ACK frame: cumulative offset, flow-control limit, flags, SACK ranges."""
    ranges = ranges[:MAX_ACK_RANGES]
    parts = [_ACK_HEAD.pack(cum, max_offset, flags, len(ranges))]
    parts.extend(_RANGE.pack(s, e) for s, e in ranges)
    return encode_frame(FrameType.ACK, b"".join(parts))


def decode_ack(body: bytes | memoryview) -> tuple[int, int, int, list[tuple[int, int]]]:
    """Decode an ACK body into (cum, max_offset, flags, ranges)."""
    if len(body) < _ACK_HEAD.size:
        raise ProtocolError("short ACK")
    cum, max_offset, flags, n = _ACK_HEAD.unpack_from(body, 0)
    if len(body) < _ACK_HEAD.size + n * _RANGE.size:
        raise ProtocolError("truncated ACK ranges")
    ranges: list[tuple[int, int]] = []
    prev = cum
    for i in range(n):
        start, end = _RANGE.unpack_from(body, _ACK_HEAD.size + i * _RANGE.size)
        # ascending, disjoint, non-adjacent, non-empty, above cum (docs/wire.md)
        if start <= prev or end <= start:
            raise ProtocolError(f"ACK range {i} [{start}, {end}) is out of order, empty "
                                f"or not above {prev}")
        ranges.append((start, end))
        prev = end
    return cum, max_offset, flags, ranges


def encode_u64(ftype: int, value: int) -> bytes:
    """Encode a frame whose body is one u64 (FIN, PING, PONG)."""
    return HEADER.pack((ftype << 24) | 8) + _U64.pack(value)


def decode_u64(body: bytes | memoryview) -> int:
    """Decode a u64 body."""
    if len(body) < 8:
        raise ProtocolError("short frame")
    value: int = _U64.unpack_from(body, 0)[0]
    return value


def encode_activate(path_id: int, epoch: int, dead_path: int = 0,
                    suspect_path: int = 0) -> bytes:
    """ACTIVATE: the dialer's active path is now ``path_id`` (epoch orders them).

    ``dead_path`` (0 = none) names the path the dialer just declared dead, so the
    listener re-sends what it had in flight there at once instead of waiting for its
    own liveness timer.  ``suspect_path`` (0 = none; the 16-byte form) names the path
    the dialer left because it stopped answering: the listener re-sends what it had
    in flight there too, but keeps the path.
    """
    if suspect_path:
        return encode_frame(FrameType.ACTIVATE,
                            _ACTIVATE_SUSPECT.pack(path_id, epoch, dead_path, suspect_path))
    return encode_frame(FrameType.ACTIVATE, _ACTIVATE.pack(path_id, epoch, dead_path))


def decode_activate(body: bytes | memoryview) -> tuple[int, int, int, int]:
    """Decode an ACTIVATE body into (path_id, epoch, dead_path, suspect_path)."""
    if len(body) < 8:
        raise ProtocolError("short ACTIVATE")
    if len(body) < _ACTIVATE.size:  # the 8-byte form of early v0 drafts
        path_id, epoch = struct.unpack_from("!II", body, 0)
        return path_id, epoch, 0, 0
    if len(body) < _ACTIVATE_SUSPECT.size:
        path_id, epoch, dead_path = _ACTIVATE.unpack_from(body, 0)
        return path_id, epoch, dead_path, 0
    path_id, epoch, dead_path, suspect_path = _ACTIVATE_SUSPECT.unpack_from(body, 0)
    return path_id, epoch, dead_path, suspect_path


_MODE: Final = struct.Struct("!IBB")

MODE_ACK: Final = 0x01
"""MODE flag: an answer (the mode now in force at the sender of the answer)."""
MODE_REFUSED: Final = 0x02
"""MODE flag, with :data:`MODE_ACK`: the request was refused (an illegal switch, or
it crossed the dialer's own request); the mode named is the one kept."""


def encode_mode(seq: int, mode: int, flags: int = 0) -> bytes:
    """MODE: a request to switch the flow's mode (``flags`` 0), numbered ``seq`` by
    its sender, or the answer to request ``seq`` (:data:`MODE_ACK`, maybe
    :data:`MODE_REFUSED`)."""
    return encode_frame(FrameType.MODE, _MODE.pack(seq, mode, flags))


def decode_mode(body: bytes | memoryview) -> tuple[int, int, int]:
    """Decode a MODE body into (seq, mode, flags).

    Raises:
        ProtocolError: too short.
    """
    if len(body) < _MODE.size:
        raise ProtocolError("short MODE")
    seq, mode, flags = _MODE.unpack_from(body, 0)
    return int(seq), int(mode), int(flags)


def encode_path_close(path_id: int) -> bytes:
    """PATH_CLOSE: retire path ``path_id`` cleanly."""
    return encode_frame(FrameType.PATH_CLOSE, _U32.pack(path_id))


def decode_path_close(body: bytes | memoryview) -> int:
    """Decode a PATH_CLOSE body."""
    if len(body) < 4:
        raise ProtocolError("short PATH_CLOSE")
    value: int = _U32.unpack_from(body, 0)[0]
    return value


def encode_close(code: int, reason: str = "") -> bytes:
    """CLOSE: end the flow. Code 0 after both FINs is clean; anything else aborts."""
    raw = reason.encode("utf-8", "replace")[:MAX_REASON].decode("utf-8", "ignore").encode()
    return encode_frame(FrameType.CLOSE, _CLOSE_HEAD.pack(code) + raw)


def decode_close(body: bytes | memoryview) -> tuple[int, str]:
    """Decode a CLOSE body into (code, reason)."""
    if len(body) < 2:
        raise ProtocolError("short CLOSE")
    (code,) = _CLOSE_HEAD.unpack_from(body, 0)
    reason = bytes(body[2 : 2 + MAX_REASON]).decode("utf-8", "replace")
    if not reason.isprintable():  # terminal escapes and other controls never reach users
        reason = "".join(ch if ch.isprintable() else "\ufffd" for ch in reason)
    return code, reason


PATH_REPORT: Final = 0x80
"""Extension frame: the packets (DGRAM frames) its sender received so far on each path
of a packet flow, so that the peer's BOND can stripe by delivery (docs/wire.md)."""
MAX_REPORT_PATHS: Final = 32
"""The most paths one PATH_REPORT names (a decoder reads no more)."""
_REPORT_HEAD: Final = struct.Struct("!QB")
_REPORT_ENTRY: Final = struct.Struct("!IQQ")


def encode_path_report(time_us: int, entries: list[tuple[int, int, int]]) -> bytes:
    """PATH_REPORT: at ``time_us`` (the reporter's clock, microseconds since its flow
    began), per path ``(path_id, packets, payload_bytes)`` received since it attached
    (cumulative; at most :data:`MAX_REPORT_PATHS` entries are sent)."""
    entries = entries[:MAX_REPORT_PATHS]
    parts = [_REPORT_HEAD.pack(time_us, len(entries))]
    parts.extend(_REPORT_ENTRY.pack(*e) for e in entries)
    return encode_frame(PATH_REPORT, b"".join(parts))


def decode_path_report(body: bytes | memoryview) -> tuple[int, list[tuple[int, int, int]]]:
    """Decode a PATH_REPORT body into (time_us, entries); at most
    :data:`MAX_REPORT_PATHS` entries are read.

    Raises:
        ProtocolError: shorter than its count says (the caller ignores such a report:
            an extension frame never ends the flow).
    """
    if len(body) < _REPORT_HEAD.size:
        raise ProtocolError("short PATH_REPORT")
    time_us, n = _REPORT_HEAD.unpack_from(body, 0)
    if len(body) < _REPORT_HEAD.size + n * _REPORT_ENTRY.size:
        raise ProtocolError("truncated PATH_REPORT")
    size = _REPORT_ENTRY.size
    return int(time_us), [_REPORT_ENTRY.unpack_from(body, _REPORT_HEAD.size + i * size)
                          for i in range(min(n, MAX_REPORT_PATHS))]
