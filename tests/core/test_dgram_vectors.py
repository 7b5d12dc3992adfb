"""Golden vectors of the datagram layouts (docs/wire.md, "Datagram vectors"): sealed
engine datagrams (encrypted and authenticated only, on both sides of a key-epoch
boundary), datagrams of several whole frames, and the packet-mode frames (DGRAM,
MODE; PATH_REPORT is pinned in ``tests/core/test_wire.py``).

Each expected value is written out below and checked two ways: against what the code
produces, and against an independent computation from the spec (the record key with
HKDF-Expand spelled out over the standard library's HMAC-SHA256, the seal with
``cryptography``'s AES-GCM called directly on the documented nonce and associated
data), so the test fails if either drifts from the documented format.  The udpflow
carrier's own datagrams are pinned in ``tests/carriers/test_udpflow_vectors.py``.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rendr.core.crypto import FlowKeys, record_key
from rendr.core.dgram import OVERHEAD, DatagramOpener, DatagramSealer
from rendr.core.packetizer import DatagramDeframer, parse_datagram
from rendr.core.packets import PacketSender
from rendr.core.path import PathState
from rendr.core.wire import (
    MODE_ACK,
    MODE_REFUSED,
    FrameType,
    decode_mode,
    dgram_header,
    encode_ack,
    encode_close,
    encode_mode,
    encode_u64,
)

SECRET = bytes(range(32))  # a direction secret, bytes 00..1f (as the record vectors)
PATH = 7
KEY_EPOCH_0 = "f246d8d90f78bda0f9bf053886acc6b7c025acb2a5b70b105faa5ee6befc2ba5"
KEY_EPOCH_1 = "66ed0f7d12f94a656930c190ff448191a21e430a65e5054c07732ade5d3dd08f"
PING_1 = "20000008 0000000000000001"

# sealed datagram = u64 pn | body | tag (16); nonce = u32 path | u64 pn; key of epoch pn >> 18
ENCRYPTED = {  # pn -> the datagram carrying PING 1, encrypted (ciphertext 12 B, then tag)
    0: "0000000000000000 fc777720d9a2ce1fe809587d 0ba579a79fa351dd4762a4a992fa3d14",
    (1 << 18) - 1: ("000000000003ffff a22bfd1c77f1679d41522130"
                    " 134f2fa26af2b2c2fec9e9e258dbadc0"),
    1 << 18: "0000000000040000 45d95b0a10303d6d92984d64 2a9c399c1a5417cf8b25f55f8f0b4aff",
}
# authenticated only, pn 5, two whole frames: ACK (cum 5, max_offset 1 MiB) and DGRAM
# (packet 3, "hi"), in clear, then the tag over pn | body
AUTH_FRAMES = ("11000012 0000000000000005 0000000000100000 00 00"
               " 1300000a 0000000000000003 6869")
AUTH_5 = "0000000000000005 " + AUTH_FRAMES + " 8a5b42fe246c77ce6f2f6f6f960a79cc"
# the key-schedule flow (docs/wire.md, "Key-schedule vectors"): its dialer's first
# datagram on path 1 (d2l), a packet flow sending packet 0 "rendr"; and its listener's
# first datagram on path 1 (l2d), the clean CLOSE
D2L = bytes.fromhex("9285ca6d8d78a4a33077906c822ee7c87dc1a5f9cfb82cac77e5c6b67aba63ec")
L2D = bytes.fromhex("c4df459d1350157f676055ee85ccb76f5caf43df80282e6aaa8f615cb9cb5a3b")
D2L_PATH_1_KEY = "046bbc34f840952507762159cf49e8e4e9b3e529c34cd7e484b7b27b061e2abe"
PACKET_FRAME = "1300000d 0000000000000000 72656e6472"  # DGRAM, packet 0, "rendr"
PACKET_DATAGRAM = ("0000000000000000 e9d842067b6d0f6effead32dc698ae56797dec56"
                   " 80ccb9bae57b073c54b262b364")
CLOSE_DATAGRAM = "0000000000000000 8e8e792e982a 5b421080a27827c0a5bf94fa8357f205"


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# the independent computation: docs/wire.md with the standard library and AES-GCM only

def _record_key(secret: bytes, path: int, epoch: int) -> bytes:
    # HKDF-Expand(secret, "rendr v1 record" | u32 path | u32 epoch, 32): one block
    info = b"rendr v1 record" + path.to_bytes(4, "big") + epoch.to_bytes(4, "big")
    return hmac.new(secret, info + b"\x01", hashlib.sha256).digest()


def _seal(secret: bytes, path: int, pn: int, frames: bytes, encrypt: bool = True) -> bytes:
    aead = AESGCM(_record_key(secret, path, pn >> 18))
    nonce = path.to_bytes(4, "big") + pn.to_bytes(8, "big")
    number = pn.to_bytes(8, "big")
    if encrypt:  # the body encrypted, pn the associated data
        return number + aead.encrypt(nonce, frames, number)
    return number + frames + aead.encrypt(nonce, b"", number + frames)


def _sealed_by_code(secret: bytes, path: int, pn: int, frames: list[bytes],
                    encrypt: bool = True) -> bytes:
    sealer = DatagramSealer(secret, path, 1200, encrypt)
    sealer.next_number = pn
    (datagram,) = sealer.seal(frames)
    assert sealer.next_number == pn + 1
    return bytes(datagram)


def test_record_keys_of_a_path() -> None:
    for epoch, want in ((0, KEY_EPOCH_0), (1, KEY_EPOCH_1)):
        assert record_key(SECRET, PATH, epoch).hex() == want
        assert _record_key(SECRET, PATH, epoch).hex() == want
    assert record_key(D2L, 1, 0).hex() == D2L_PATH_1_KEY == _record_key(D2L, 1, 0).hex()


def test_encrypted_datagrams_across_the_epoch_boundary() -> None:
    """pn 0 and 2^18 - 1 under the epoch-0 key, 2^18 under the epoch-1 key; 24 bytes
    more than the frames (OVERHEAD)."""
    for pn, want in ENCRYPTED.items():
        ours = _sealed_by_code(SECRET, PATH, pn, [h(PING_1)])
        assert ours == h(want) == _seal(SECRET, PATH, pn, h(PING_1)), pn
        assert len(ours) == len(h(PING_1)) + OVERHEAD == 8 + 12 + 16
        assert ours[:8] == pn.to_bytes(8, "big")


def test_authentication_only_datagram_of_two_frames() -> None:
    """Frames in clear, whole, back to back; the tag over pn | frames."""
    frames = [encode_ack(5, 1 << 20, 0, []), dgram_header(3, 2), b"hi"]
    assert b"".join(frames) == h(AUTH_FRAMES)
    ours = _sealed_by_code(SECRET, PATH, 5, frames, encrypt=False)
    assert ours == h(AUTH_5) == _seal(SECRET, PATH, 5, h(AUTH_FRAMES), encrypt=False)


def test_vectors_open_and_nothing_else_does() -> None:
    """Each vector opens to its frames on its path and direction secret (once); moved to
    another path, under the other secret, or one bit flipped, it is dropped."""
    cases = [(h(d), True, h(PING_1)) for d in ENCRYPTED.values()]
    cases.append((h(AUTH_5), False, h(AUTH_FRAMES)))
    for datagram, encrypt, frames in cases:
        opener = DatagramOpener(SECRET, PATH, encrypt)
        assert [bytes(p) for p in opener.feed(datagram)] == [frames]
        assert opener.feed(datagram) == [] and opener.replays == 1
        for other in (DatagramOpener(SECRET, PATH + 1, encrypt),
                      DatagramOpener(bytes(32), PATH, encrypt),
                      DatagramOpener(SECRET, PATH, not encrypt)):
            assert other.feed(datagram) == [] and other.failures == 1
        for bit in (0, 8 * 8, 8 * len(datagram) - 1):
            bad = bytearray(datagram)
            bad[bit // 8] ^= 0x80 >> (bit % 8)
            fresh = DatagramOpener(SECRET, PATH, encrypt)
            assert fresh.feed(bytes(bad)) == [] and fresh.failures == 1


def test_frames_of_an_opened_datagram() -> None:
    got: list[tuple[str, int, bytes]] = []

    def on_data(offset: int, piece: memoryview, _now: float) -> int:
        got.append(("data", offset, bytes(piece)))
        return 0

    def on_frame(ftype: int, body: memoryview, _now: float) -> int:
        got.append(("frame", ftype, bytes(body)))
        return 0

    (plain,) = DatagramOpener(SECRET, PATH, encrypt=False).feed(h(AUTH_5))
    parse_datagram(plain, on_data, on_frame)
    assert got == [("frame", FrameType.ACK, h("0000000000000005 0000000000100000 00 00")),
                   ("frame", FrameType.DGRAM, h("0000000000000003 6869"))]
    got.clear()
    DatagramDeframer(on_data, on_frame).feed(h("10000009 0000000000000007 21"))
    assert got == [("data", 7, b"!")]


def test_packet_flow_datagram_of_the_key_schedule_flow() -> None:
    """The whole send side: the application's packet 0 "rendr" queued, put in a DGRAM
    frame on a datagram path (MTU 1191: a default udpflow path) protected with the
    key-schedule flow's keys, sealed as that path's datagram 0 under d2l."""
    keys = FlowKeys(d2l=D2L, l2d=L2D, join=bytes(32), confirm=bytes(32))
    path = PathState(1, transport="udpflow", local_addr="", remote_addr="", now=0.0,
                     deframer=DatagramDeframer(lambda *a: 0, lambda *a: 0), mtu=1191)
    path.protect(keys, dialer=True, encrypt=True)
    assert path.max_frame == 1191 - OVERHEAD == 1167
    sender = PacketSender(1 << 20)
    assert sender.push(b"rendr")
    sender.fill([path], 1 << 20)
    assert b"".join(bytes(b) for b in path.outbox) == h(PACKET_FRAME)
    assert path.sealer is not None
    (datagram,) = path.sealer.seal(path.outbox)
    assert bytes(datagram) == h(PACKET_DATAGRAM) == _seal(D2L, 1, 0, h(PACKET_FRAME))
    # and the listener's first datagram on that path: the clean CLOSE, under l2d
    assert encode_close(0) == h("40000002 0000")
    assert _sealed_by_code(L2D, 1, 0, [encode_close(0)]) == h(CLOSE_DATAGRAM) == _seal(
        L2D, 1, 0, encode_close(0))


def test_packet_mode_frames() -> None:
    """DGRAM: the length counts the u64 number; MODE: u32 seq | u8 mode | u8 flags."""
    assert dgram_header((1 << 32) + 1, 3) + b"abc" == h("1300000b 0000000100000001 616263")
    sender = PacketSender(1 << 20)
    assert sender.push(b"rendr") and sender.push(b"")
    path = PathState(1, transport="udpflow", local_addr="", remote_addr="", now=0.0,
                     deframer=DatagramDeframer(lambda *a: 0, lambda *a: 0), mtu=1191)
    sender.fill([path], 1 << 20)
    assert b"".join(bytes(b) for b in path.outbox) == h(
        PACKET_FRAME + " 13000008 0000000000000001")  # the empty packet 1
    request = encode_mode(1, 2)  # seq 1: switch to BOND
    answer = encode_mode(1, 2, MODE_ACK)
    refused = encode_mode(7, 1, MODE_ACK | MODE_REFUSED)  # seq 7 refused, PRIME kept
    assert request == h("32000006 00000001 02 00")
    assert answer == h("32000006 00000001 02 01")
    assert refused == h("32000006 00000007 01 03")
    assert [decode_mode(f[4:]) for f in (request, answer, refused)] == [
        (1, 2, 0), (1, 2, 1), (7, 1, 3)]
    assert encode_u64(FrameType.PING, 1) == h(PING_1)
