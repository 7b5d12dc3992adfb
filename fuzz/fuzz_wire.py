#!/usr/bin/env python3
"""Coverage-guided fuzzing of the frame decoders (``rendr.core.wire``).

Input: ``selector (1 B) | body`` (``TARGETS[selector % 12]``; MODE is the last).  The
DGRAM body has no decoder of its own here (the engine reads it inline): fuzz_dgram.py
fuzzes it through a packet flow.  Every decoder must return or raise ProtocolError
(``parse_preface``: HandshakeError); ``bytes`` and memoryview input must decode alike;
what decodes must re-encode and decode to the same value.
"""

from __future__ import annotations

import sys

import atheris
from _setup import paths

paths()
with atheris.instrument_imports(include=["rendr"]):
    from rendr.core.wire import (
        MAX_ACK_RANGES,
        Hello,
        Join,
        JoinAck,
        decode_ack,
        decode_activate,
        decode_close,
        decode_mode,
        decode_path_close,
        decode_path_report,
        decode_u64,
        encode_ack,
        encode_activate,
        encode_close,
        encode_mode,
        encode_path_close,
        encode_path_report,
        parse_preface,
    )
    from rendr.errors import HandshakeError, ProtocolError


def _hello(b: bytes | memoryview) -> object:
    h = Hello.decode(b)
    assert Hello.decode(h.encode()[4:]) == h
    return h


def _hello_ack(b: bytes | memoryview) -> object:
    h = Hello.decode(b, ack=True)
    assert Hello.decode(h.encode(ack=True)[4:], ack=True) == h
    return h


def _join(b: bytes | memoryview) -> object:
    j = Join.decode(b)
    assert Join.decode(j.encode()[4:]) == j
    return j


def _join_ack(b: bytes | memoryview) -> object:
    j = JoinAck.decode(b)
    assert JoinAck.decode(j.encode()[4:]) == j
    return j


def _ack(b: bytes | memoryview) -> object:
    cum, max_offset, flags, ranges = value = decode_ack(b)
    again = decode_ack(encode_ack(cum, max_offset, flags, ranges)[4:])
    assert again == (cum, max_offset, flags, ranges[:MAX_ACK_RANGES])
    return value


def _activate(b: bytes | memoryview) -> object:
    value = decode_activate(b)
    assert decode_activate(encode_activate(*value)[4:]) == value
    return value


def _path_close(b: bytes | memoryview) -> object:
    value = decode_path_close(b)
    assert decode_path_close(encode_path_close(value)[4:]) == value
    return value


def _close(b: bytes | memoryview) -> object:
    code, reason = decode_close(b)
    assert reason.isprintable() and len(reason) <= 1024
    assert decode_close(encode_close(code, reason)[4:])[0] == code
    return code, reason


def _path_report(b: bytes | memoryview) -> object:
    value = decode_path_report(b)
    assert decode_path_report(encode_path_report(*value)[4:]) == value
    return value


def _mode(b: bytes | memoryview) -> object:
    value = decode_mode(b)
    assert all(0 <= v < 256 for v in value[1:]) and 0 <= value[0] < 1 << 32
    assert decode_mode(encode_mode(*value)[4:]) == value
    return value


def _preface(b: bytes | memoryview) -> object:
    try:
        parse_preface(b)
    except HandshakeError as exc:
        return "HandshakeError", exc.peer_version
    return "ok"


TARGETS = [_hello, _hello_ack, _join, _join_ack, _ack, decode_u64, _activate, _path_close,
           _close, _path_report, _preface, _mode]


def _run(fn: object, body: bytes | memoryview) -> object:
    try:
        return fn(body)  # type: ignore[operator]
    except ProtocolError as exc:
        return "ProtocolError", str(exc)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    fn = TARGETS[data[0] % len(TARGETS)]
    body = data[1:]
    got = _run(fn, body)
    assert _run(fn, memoryview(data)[1:]) == got, "bytes and memoryview decode differently"


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
