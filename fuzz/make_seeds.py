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
    dgram_header,
    encode_ack,
    encode_activate,
    encode_close,
    encode_frame,
    encode_mode,
    encode_path_close,
    encode_path_report,
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


def dgram_seeds(rnd: random.Random) -> None:
    """fuzz_dgram: ``target | operations`` (the layouts: tests/fuzz/_dgram.py)."""
    u16 = lambda v: v.to_bytes(2, "big")  # noqa: E731

    def auth(pn_sel: int = 8, body: bytes = b"hello", how: int = 0) -> bytes:
        return bytes([0, how, pn_sel]) + u16(3) + bytes([0x90, len(body)]) + body

    for enc in (0, 1):  # the opener: in order, replay, tampered, moved, re-numbered...
        steps = [auth(), auth(), auth(how=1), auth(how=2), bytes([4, 0, 1]),
                 auth(0, b"x")[:0] + bytes([1, 0, 8, 0, 0, 0x91, 2]) + b"ab" + u16(77),
                 bytes([2, 1, 8, 0, 0, 0x92, 1]) + b"c" + u16(9),
                 bytes([2, 0, 8, 0, 0, 0x92, 1]) + b"c" + u16(40) + b"\x02zz",
                 bytes([3, 0, 8, 0, 0, 0x93, 0, 1]), bytes([3, 1, 8, 0, 0, 0x93, 0]),
                 bytes([3, 2, 8, 0, 0, 0x93, 0]), bytes([5, 0, 8, 0, 0, 0x90, 0, 2, 0, 5]),
                 bytes([6, 0, 8, 0, 0, 0x90, 0, 0]), bytes([7, 0, 30]) + bytes(30),
                 bytes([8, 0, 10]) + bytes(10),
                 auth(3, b"epoch"), auth(3, b"edge"), auth(4), auth(5), auth(6), auth(2)]
        write("dgram", bytes([0, enc]) + b"".join(steps))
        write("dgram", bytes([0, enc]) + auth(5) + auth(4) + auth(3) + auth(1) + auth(0))
    # parse: whole frames of every kind, then cut short
    frames = (data_header(7, 3) + b"abc" + encode_ack(5, 1 << 20, 0, [(7, 9)])
              + dgram_header(3, 2) + b"hi" + encode_mode(1, 2, 0)
              + encode_path_report(1_000_000, [(1, 5, 5500)]) + encode_u64(FrameType.PING, 1))
    for how in (0, 1, 2, 4, 5):
        write("dgram", bytes([1, how]) + frames)
        write("dgram", bytes([1, how]) + frames[:-3])
    write("dgram", bytes([1, 0]) + data_header(0, 0))
    # packets: arrivals, copies, old ones, reads, MODE and PATH_REPORT bodies
    pk = bytes([0, 4])  # cap
    for number_sel in (8, 8, 0, 2, 4, 5, 6, 8):
        pk += bytes([0, number_sel]) + u16(3) + bytes([2, 1]) + b"xx"
    pk += bytes([1]) + u16(10) + bytes([1, 1, 1]) + b"y"
    pk += bytes([2, 3]) + bytes([3, 6]) + encode_mode(1, 2, 1)[4:] + bytes([3, 3, 0, 0, 1])
    pk += bytes([4]) + u16(49) + encode_path_report(5, [(1, 5, 5500), (2, 3, 3)])[4:] + b"\x05"
    pk += bytes([5, 3]) + bytes(8) + bytes([1, 2, 3, 0, 1]) + bytes(8) + b"\x30"
    write("dgram", bytes([2]) + pk)
    # the engine: packets sent, delivered, copied, tampered, forged, misbehaving frames
    for flags in (0, 1, 2, 3):
        steps = [bytes([0, 1, 2, 5]) + b"abcde" + b"\x00" + b"\x03xyz",  # 3 packets
                 bytes([1, 1, 0]), bytes([3, 1, 1, 0]), bytes([0, 2, 1, 2]) + b"zz",
                 bytes([4, 1, 0]) + u16(100), bytes([5, 1, 0]) + u16(30),
                 bytes([2, 0, 0]), bytes([6, 1, 0]) + u16(40) + bytes(40),
                 bytes([1, 1, 0]), bytes([8, 50]), bytes([9, 9, 7])]
        write("dgram", bytes([3, flags]) + b"".join(steps))
        rogue = bytes([7, 1, 0, 2, 0]) + u16(1) + bytes([2, 0]) + bytes([1]) + bytes(12)
        write("dgram", bytes([3, flags]) + b"".join(steps[:2]) + rogue + b"".join(steps[2:]))
    # the udpflow listener (op | address | path | ...): OPEN, the same OPEN again, the
    # answer, DATA from the first address (validates it), authentic DATA from a new
    # address (a CHALLENGE), the RESPONSE (the path moves), forged DATA, junk, DATA
    # sent, close (repeats), DATA while draining (answered), the drain's end
    for first in (0, 1, 2, 4):
        steps = [bytes([0, 0, 0, 0]) + b"N" * 8 + bytes([20]) + bytes(20) + bytes([0, 0, 0]),
                 bytes([0, 0, 0, 1, 0]), bytes([6, 0, 0, 10]) + bytes(10),
                 bytes([10, 0, 0, 5]) + b"hello", bytes([2, 2, 0, 3]) + b"abc" + b"\x00",
                 bytes([4, 2, 0, 1, 1, 1, 0]), bytes([3, 2, 0, 4]) + b"junk",
                 bytes([5, 0, 0, 3]) + b"\x05ab",
                 bytes([6, 2, 0, 1]) + u16(100) + bytes(100) + u16(7) + bytes(7),
                 bytes([7, 0, 0, 1]), bytes([2, 2, 0, 3]) + b"abc" + b"\x01",
                 bytes([8, 0, 0, 30]), bytes([9, 0, 0]), bytes([1, 0, 0]) + u16(20) + bytes(20)]
        write("dgram", bytes([4, first]) + b"".join(steps))
        write("dgram", bytes([4, first]) + b"".join(steps[:4]) + bytes([7, 0, 0, 1])
              + b"".join(steps[4:]))
    # the udpflow dialer: its opening, ANSWERs (not whole, then ours), DATA, CHALLENGEs
    # (25 bytes, 26), DATA sent, close, DATA while draining, the drain's end
    steps = [bytes([10]) + bytes(10) + bytes([0, 0]),
             bytes([0]) + b"C" * 8 + bytes([0, 5]) + bytes(5) + bytes([1]),
             bytes([0]) + b"C" * 8 + bytes([1, 5]) + bytes(5) + bytes([0, 0, 1]),
             bytes([1, 1, 4]) + b"data", bytes([2, 1, 1]) + bytes(16),
             bytes([2, 1, 2]) + bytes(17), bytes([4, 20]),
             bytes([5, 0]) + u16(50) + bytes(50), bytes([6]),
             bytes([1, 1, 4]) + b"more", bytes([4, 60])]
    write("dgram", bytes([5]) + b"".join(steps))
    for target in range(6):
        for _ in range(4):
            write("dgram", bytes([target]) + rnd.randbytes(rnd.randrange(20, 300)))


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
    dgram_seeds(rnd)
    for target in sorted(p.name for p in CORPUS.iterdir()):
        print(target, len(list((CORPUS / target).iterdir())), file=sys.stderr)


if __name__ == "__main__":
    main()
