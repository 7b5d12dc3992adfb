"""Key-schedule test vectors (docs/wire.md, "Key-schedule vectors"): fixed inputs ->
expected hex.  Each expected value is checked three ways: against the constant below,
against ``rendr.core.crypto``, and against an independent computation with the
standard library's ``hmac``/``hashlib`` spelling HKDF (RFC 5869) out step by step, so
the test fails if the key schedule changes.  The X25519 keys are RFC 7748 section 6.1's
(Alice: the dialer's ephemeral, Bob: the listener's)."""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rendr.core import crypto
from rendr.core.cookie import CookieJar
from rendr.core.dgram import DatagramSealer
from rendr.core.opening import bound, flagged
from rendr.core.records import RecordSealer
from rendr.core.wire import (
    CAP_BUDGET,
    CAP_KEYS,
    CAP_PATH_AUTH,
    KEY_ENCRYPT,
    KEY_PATH_AUTH,
    KEY_RECORDS,
    PATH_AUTH_ONLY,
    FrameType,
    Hello,
    encode_u64,
)

ALICE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
BOB = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
ALICE_PUB = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
BOB_PUB = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
EE = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
FLOW = bytes(range(16))
HELLO_BODY = ("000102030405060708090a0b0c0d0e0f 00000001 01 00 0003 00800000 00015f90"
              + ALICE_PUB + "00" + "00" * 16)
ACK_BODY_NO_AUTH = ("000102030405060708090a0b0c0d0e0f 00000001 01 00 0003 00800000 00"
                    " 00015f90" + BOB_PUB + "00")
TRANSCRIPT = "614da0ad6b2fb446dae03db52445b8cc761df272d78b7f471e7ba1c7c0867164"
KEYS = {  # ee only (no psk, no server key)
    "d2l": "9285ca6d8d78a4a33077906c822ee7c87dc1a5f9cfb82cac77e5c6b67aba63ec",
    "l2d": "c4df459d1350157f676055ee85ccb76f5caf43df80282e6aaa8f615cb9cb5a3b",
    "join": "56ca24448015a6e0a948e3990437b5510d9bf43ea01397e65e5ef77649b21463",
    "confirm": "4b46374ff5bdfb1ef61ba0c487d67e6918946685c368ed1142d1a5ef5a4d5681",
}
CONFIRM_MAC = "d1be41667c9672995165ceeceb801bcd"
PSK = bytes(range(100, 132))
ES = bytes(range(64, 96))
PSK_KEYS = {  # ee, es = bytes 64..95, psk = bytes 100..131, same transcript
    "d2l": "36142de3db5568bff2dca70796d25e826fcb7e65a246fd31350125d5eb14b210",
    "l2d": "c1bf4be943bbe806184adb0f6ca640d2a637a6a80972c5cf4be321e0cd58c07f",
    "join": "a1a964581462de2dfcea41b42f8072944f50c9d9b68252c1fca5dbc13e1e9fa3",
    "confirm": "1dedd3ab132a53b4070aed8de59e1e309c313215f2fc97a7f0aeaa057a96b8c2",
}
HELLO_KEY = "be19152238e3bc14c48e3c40579d1a1bef0a29d1bfa01b38c4eb3f871df5fa45"
JOIN_MAC = "920b27dacd687dd1cbe9d39e736df2ba"  # key "k"*32, parts "join", FLOW, u32 7, 0*16


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# the independent computation: RFC 5869 with the standard library only

def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return _hmac(salt, ikm)


def _hkdf_expand_32(prk: bytes, info: bytes) -> bytes:
    return _hmac(prk, info + b"\x01")  # L = 32 = one SHA-256 block: T(1)


def _lp(*parts: bytes) -> bytes:
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def _keys(ee: bytes, es: bytes, psk: bytes | None, transcript: bytes) -> dict[str, str]:
    prk = _hkdf_extract(psk or bytes(32), b"rendr v1 " + ee + es)
    return {label: _hkdf_expand_32(prk, b"rendr v1 " + label.encode() + b" " + transcript
                                   ).hex() for label in KEYS}


def test_x25519_is_rfc7748() -> None:
    alice = X25519PrivateKey.from_private_bytes(ALICE)
    bob = X25519PrivateKey.from_private_bytes(BOB)
    assert crypto.public_bytes(alice).hex() == ALICE_PUB
    assert crypto.public_bytes(bob).hex() == BOB_PUB
    assert crypto.dh(alice, h(BOB_PUB)).hex() == EE == crypto.dh(bob, h(ALICE_PUB)).hex()


def test_transcript_vector() -> None:
    hello = Hello(FLOW, 1, 1, 0, CAP_BUDGET | CAP_KEYS, 8 << 20, budget_ms=90_000,
                  key_share=h(ALICE_PUB), key_flags=0)
    ack = Hello(FLOW, 1, 1, 0, CAP_BUDGET | CAP_KEYS, 8 << 20, 0, 90_000,
                key_share=h(BOB_PUB), key_flags=0)
    assert hello.encode_body() == h(HELLO_BODY)
    assert ack.encode_body(ack=True)[:-16] == h(ACK_BODY_NO_AUTH)
    independent = hashlib.sha256(_lp(h(HELLO_BODY), h(ACK_BODY_NO_AUTH))).hexdigest()
    assert crypto.transcript_hash(h(HELLO_BODY), h(ACK_BODY_NO_AUTH)).hex() == TRANSCRIPT
    assert independent == TRANSCRIPT


def test_derive_vector_ephemeral_only() -> None:
    keys = crypto.derive(h(EE), None, None, h(TRANSCRIPT))
    assert {k: getattr(keys, k).hex() for k in KEYS} == KEYS == _keys(
        h(EE), b"", None, h(TRANSCRIPT))
    confirm = crypto.mac(keys.confirm, b"hello-ack", h(TRANSCRIPT))
    assert confirm.hex() == CONFIRM_MAC
    assert _hmac(h(KEYS["confirm"]), _lp(b"hello-ack", h(TRANSCRIPT)))[:16].hex() == CONFIRM_MAC


def test_derive_vector_psk_and_static() -> None:
    keys = crypto.derive(h(EE), ES, PSK, h(TRANSCRIPT))
    assert {k: getattr(keys, k).hex() for k in PSK_KEYS} == PSK_KEYS == _keys(
        h(EE), ES, PSK, h(TRANSCRIPT))


def test_hello_key_vector() -> None:
    assert crypto.hello_key(PSK).hex() == HELLO_KEY
    assert _hkdf_expand_32(_hkdf_extract(b"rendr v1 psk", PSK), b"hello").hex() == HELLO_KEY


def test_mac_vector() -> None:
    parts = (b"join", FLOW, (7).to_bytes(4, "big"), bytes(16))
    assert crypto.mac(b"k" * 32, *parts).hex() == JOIN_MAC
    assert _hmac(b"k" * 32, _lp(*parts))[:16].hex() == JOIN_MAC
    assert crypto.verify_mac(b"k" * 32, h(JOIN_MAC), *parts)


def test_cookie_vector() -> None:
    """The cookie layout (docs/wire.md): u32 ms timestamp || MAC(secret, "cookie",
    source, flow id, share, timestamp)."""
    jar = CookieJar(10.0, secret=lambda: bytes(32))
    cookie = jar.make(b"192.0.2.1", FLOW, h(ALICE_PUB), 1.5)
    ts = (1500).to_bytes(4, "big")
    assert cookie == ts + _hmac(bytes(32), _lp(b"cookie", b"192.0.2.1", FLOW, h(ALICE_PUB),
                                               ts))[:16]


# ------------------------------------------- authentication-only paths (issue 10)

BINDING = bytes(range(0xA0, 0xC0))  # a QUIC path's channel binding (SHA-256 of a cert)
AUTH_HELLO_BODY = ("000102030405060708090a0b0c0d0e0f 00000001 01 00 000b 00800000 00015f90"
                   + ALICE_PUB + "19" + "00" * 16)
AUTH_ACK_BODY_NO_AUTH = ("000102030405060708090a0b0c0d0e0f 00000001 01 00 000b 00800000 00"
                         " 00015f90" + BOB_PUB + "19")
AUTH_TRANSCRIPT = "ccded60d926256e19d9b041ad0a856dbb44fadd8842645fa84a00d821b27692f"
FLAGGED_JOIN_MAC = "a52356da90bf5710e068cda07c09fb4b"
RECORD_SECRET = bytes(range(32))
AUTH_RECORD = "00000015 72656e6472 14a19e6bbac35b17b90ade15cb073c12"  # "rendr", path 7
AUTH_DATAGRAM = ("0000000000000000 20000008 0000000000000001"  # pn 0, PING 1, path 7
                 " 36dbecdde144026497c930da1806ae9f")


def test_transcript_vector_with_binding_and_path_auth() -> None:
    """A HELLO over a verified QUIC path: caps 000b (CAP_PATH_AUTH), key flags 0x19
    (KEY_ENCRYPT | KEY_RECORDS | KEY_PATH_AUTH), both bodies and then the binding in
    the transcript."""
    caps, flags = CAP_BUDGET | CAP_KEYS | CAP_PATH_AUTH, KEY_ENCRYPT | KEY_RECORDS | KEY_PATH_AUTH
    hello = Hello(FLOW, 1, 1, 0, caps, 8 << 20, budget_ms=90_000, key_share=h(ALICE_PUB),
                  key_flags=flags)
    ack = Hello(FLOW, 1, 1, 0, caps, 8 << 20, 0, 90_000, key_share=h(BOB_PUB), key_flags=flags)
    assert hello.encode_body() == h(AUTH_HELLO_BODY)
    assert ack.encode_body(ack=True)[:-16] == h(AUTH_ACK_BODY_NO_AUTH)
    ours = crypto.transcript_hash(h(AUTH_HELLO_BODY), h(AUTH_ACK_BODY_NO_AUTH), *bound(BINDING))
    independent = hashlib.sha256(_lp(h(AUTH_HELLO_BODY), h(AUTH_ACK_BODY_NO_AUTH),
                                     b"channel-binding", BINDING)).hexdigest()
    assert ours.hex() == independent == AUTH_TRANSCRIPT


def test_flagged_join_mac_vector() -> None:
    """A JOIN asking for authentication-only records over a bound carrier: the flags
    byte, then the binding, after the v1 parts."""
    parts = (b"join", FLOW, (7).to_bytes(4, "big"), bytes(16), *flagged(PATH_AUTH_ONLY),
             *bound(BINDING))
    assert crypto.mac(b"k" * 32, *parts).hex() == FLAGGED_JOIN_MAC
    assert _hmac(b"k" * 32, _lp(b"join", FLOW, (7).to_bytes(4, "big"), bytes(16),
                                b"path-flags", b"\x01", b"channel-binding", BINDING)
                 )[:16].hex() == FLAGGED_JOIN_MAC
    assert flagged(0) == ()  # no flags: the v1 MAC


def _record_key_independent(secret: bytes, path: int, epoch: int) -> bytes:
    return _hkdf_expand_32(secret, b"rendr v1 record" + path.to_bytes(4, "big")
                           + epoch.to_bytes(4, "big"))


def test_authentication_only_record_vector() -> None:
    """Record 0 of path 7, authenticated only: u32 length | the frames in clear | tag =
    AES-256-GCM(record key, nonce u32 path | u64 number, plaintext empty, associated
    data the body)."""
    sealed = b"".join(bytes(b) for b in RecordSealer(RECORD_SECRET, 7, encrypt=False)
                      .seal([b"rendr"]))
    nonce = (7).to_bytes(4, "big") + (0).to_bytes(8, "big")
    tag = AESGCM(_record_key_independent(RECORD_SECRET, 7, 0)).encrypt(nonce, b"", b"rendr")
    assert sealed == h(AUTH_RECORD) == (21).to_bytes(4, "big") + b"rendr" + tag


def test_authentication_only_datagram_vector() -> None:
    """Datagram 0 of path 7 (a QUIC DATAGRAM frame of a packet flow), authenticated
    only: u64 packet number | the frames in clear | tag over number and body."""
    (sealed,) = DatagramSealer(RECORD_SECRET, 7, 1200, encrypt=False).seal(
        [encode_u64(FrameType.PING, 1)])
    pn, body = bytes(8), encode_u64(FrameType.PING, 1)
    nonce = (7).to_bytes(4, "big") + pn
    tag = AESGCM(_record_key_independent(RECORD_SECRET, 7, 0)).encrypt(nonce, b"", pn + body)
    assert bytes(sealed) == h(AUTH_DATAGRAM) == pn + body + tag
