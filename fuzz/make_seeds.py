#!/usr/bin/env python3
"""Write the seed inputs of every harness into ``fuzz/corpus/<target>/`` (valid
encodings of every frame, openings, frame streams, flow runs).  Idempotent: seed
files are named by content."""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

from _setup import paths

paths()
from fuzz._common import x25519_share  # noqa: E402
from rendr.core.wire import (  # noqa: E402
    CAP_BUDGET,
    CAP_KEYS,
    KEY_ENCRYPT,
    PREFACE,
    FrameType,
    Hello,
    Join,
    JoinAck,
    data_header,
    encode_ack,
    encode_activate,
    encode_close,
    encode_frame,
    encode_path_close,
    encode_u64,
)

CORPUS = Path(__file__).resolve().parent / "corpus"
FID = bytes(range(16))


def write(target: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)


def frames() -> list[bytes]:
    return [
        Hello(FID, 1, 1, 0, CAP_BUDGET | CAP_KEYS, 1 << 20, 0, 30_000, x25519_share(1),
              KEY_ENCRYPT).encode(),
        Hello(FID, 1, 1, 0, CAP_KEYS, 1 << 20, 0, 0, x25519_share(2), KEY_ENCRYPT,
              bytes(16)).encode(ack=True),
        Join(FID, 2, bytes(range(16)), bytes(16)).encode(),
        JoinAck(FID, 2, 0, bytes(range(16)), bytes(16)).encode(),
        data_header(0, 5) + b"hello",
        encode_ack(5, 1 << 20, 1, [(7, 9), (12, 20)]),
        encode_u64(FrameType.FIN, 5),
        encode_u64(FrameType.PING, 123),
        encode_u64(FrameType.PONG, 123),
        encode_activate(2, 1, 1, 0),
        encode_activate(2, 2, 0, 1),
        encode_path_close(1),
        encode_close(2, "protocol error"),
        encode_frame(0x90, b"extension"),
    ]


def main() -> None:
    fs = frames()
    for f in fs:  # wire: selector + body
        for sel in range(10):
            write("wire", bytes([sel]) + f[4:])
        write("deframer", b"\x00\x00" + f)
        write("deframer", b"\x02\x00\x03\x00\x09\x01" + f + f)
        write("deframer", b"\x01\x00\x05\xc0" + f + f)  # sealed, encrypted
        write("deframer", b"\x01\x00\x05\xa0" + f)  # sealed, one bit flipped
        write("handshake", b"\x00\x00\x00\x00" + PREFACE + f + b"tail")
        write("handshake", bytes([2]) + bytes([f[0], len(f) - 4]) + f[4:])
        write("handshake", bytes([3]) + bytes([f[0], len(f) - 4]) + f[4:])
    # listener: a HELLO, then authentic JOINs of its flow (0xaa marker)
    write("handshake", bytes([2, FrameType.HELLO, len(fs[0]) - 4]) + fs[0][4:]
          + bytes([FrameType.JOIN, 6, 0xAA, 0, 0, 0, 0, 2])
          + bytes([FrameType.JOIN, 6, 0xAA, 0, 0, 0, 0, 3]))
    for result in range(9):  # dialer: an authentic HELLO_ACK, then JOIN_ACKs
        write("handshake", bytes([4, FrameType.HELLO_ACK, 14, 0xAA, 1, 0, 1, 0, 1, 0, 16, 0,
                                  0, 0, 0, 117, 48]) + bytes([FrameType.JOIN_ACK, 2, 0xAA,
                                                              result]))
    write("deframer", b"\x00\x00" + b"".join(fs))
    rnd = random.Random(7)
    for mode in (0, 2, 4, 8, 8 | 1 | 5 << 4, 1 | 5 << 4, 1 | 10 << 4 | 2):
        for _ in range(4):
            steps = b"".join(
                bytes([rnd.randrange(256), rnd.randrange(256)]) + rnd.randbytes(6)
                + bytes([n := rnd.randrange(8)]) + rnd.randbytes(n)
                for _ in range(rnd.randrange(10, 80)))
            write("flow", bytes([mode]) + rnd.randrange(1 << 16).to_bytes(2, "big")
                  + rnd.randrange(1 << 14).to_bytes(2, "big") + steps)
    for target in sorted(p.name for p in CORPUS.iterdir()):
        print(target, len(list((CORPUS / target).iterdir())), file=sys.stderr)


if __name__ == "__main__":
    main()
