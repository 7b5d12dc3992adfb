"""Golden vectors of the udpflow carrier's datagrams (docs/wire.md, "Datagram vectors"):
OPEN (padded), ANSWER, DATA (with the connection id), CHALLENGE / RESPONSE, and the
closing repeats, byte for byte, written from the spec's table and produced by the
carrier's own code driven through a fake loop and socket (``tests/fuzz/_udpfake.py``:
no real socket; the random nonce, connection id and token are fixed).

The handshake inside is the key-schedule flow's (its HELLO and HELLO_ACK, docs/wire.md
"Key-schedule vectors"), the sealed datagrams those of ``tests/core/test_dgram_vectors.py``
(its dialer's packet 0 "rendr" and its listener's CLOSE, both on path 1).
"""

from __future__ import annotations

import types
from typing import Any

import pytest

from fuzz._udpfake import DIALER_ADDR, LISTENER_ADDR, FakeLoop, FakeSocket
from rendr.carriers import udpflow, udplisten
from rendr.carriers.udpbase import CLOSE_REPEATS, DRAIN, MIN_OPEN
from rendr.carriers.udpflow import UdpClientCarrier, UdpServer
from rendr.carriers.udplisten import UdpServerCarrier
from rendr.core.wire import PREFACE

NONCE = bytes(range(0xB0, 0xB8))
CID = bytes(range(0xA0, 0xA8))
TOKEN = bytes(range(0xC0, 0xD0))
NEW_ADDR = ("203.0.113.9", 61000)

ALICE_PUB = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
BOB_PUB = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
PREFACE_HEX = "524e4452 01 00 0000"  # "RNDR", version 1, flags 0, reserved 0
HELLO = ("01000051 000102030405060708090a0b0c0d0e0f 00000001 01 00 0003 00800000 00015f90 "
         + ALICE_PUB + " 00 " + "00" * 16)  # the key-schedule HELLO (body 81 bytes)
HELLO_ACK = ("02000052 000102030405060708090a0b0c0d0e0f 00000001 01 00 0003 00800000 00"
             " 00015f90 " + BOB_PUB + " 00 d1be41667c9672995165ceeceb801bcd")
PACKET_DATAGRAM = ("0000000000000000 e9d842067b6d0f6effead32dc698ae56797dec56"
                   " 80ccb9bae57b073c54b262b364")
CLOSE_DATAGRAM = "0000000000000000 8e8e792e982a 5b421080a27827c0a5bf94fa8357f205"

OPEN_HEAD = "01 b0b1b2b3b4b5b6b7 " + PREFACE_HEX + " " + HELLO  # then zeros up to 1200
ANSWER = "02 a0a1a2a3a4a5a6a7 b0b1b2b3b4b5b6b7 " + PREFACE_HEX + " " + HELLO_ACK
DATA = "03 a0a1a2a3a4a5a6a7 " + PACKET_DATAGRAM
CHALLENGE = "04 a0a1a2a3a4a5a6a7 c0c1c2c3c4c5c6c7c8c9cacbcccdcecf"
RESPONSE = "05 a0a1a2a3a4a5a6a7 c0c1c2c3c4c5c6c7c8c9cacbcccdcecf"
CLOSING = "03 a0a1a2a3a4a5a6a7 " + CLOSE_DATAGRAM


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


class Sink:
    """A carrier's sink that records what reaches the engine; ``authentic`` is what
    its ``carrier_authentic`` reports (the engine's count of authentic receives)."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.authentic = 0
        self.lost: list[BaseException | None] = []

    def carrier_data(self, data: Any) -> None:
        self.data.append(bytes(data))

    def carrier_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)

    def carrier_authentic(self) -> int:
        return self.authentic

    def carrier_pause(self) -> None:
        pass

    def carrier_resume(self) -> None:
        pass


def _random(*values: bytes) -> types.SimpleNamespace:
    """An ``os`` for a carrier module whose ``urandom`` returns ``values`` in turn."""
    queue = list(values)

    def urandom(n: int) -> bytes:
        value = queue.pop(0)
        assert len(value) == n
        return value

    return types.SimpleNamespace(urandom=urandom)


def test_layout_sizes_match_the_table() -> None:
    assert len(h(OPEN_HEAD)) == 1 + 8 + 8 + 4 + 81
    assert len(h(ANSWER)) == 111  # "a keyed HELLO_ACK with a budget makes a 111-byte ANSWER"
    assert len(h(CHALLENGE)) == len(h(RESPONSE)) == 25
    assert h(DATA)[:9] == h(CLOSING)[:9] == b"\x03" + CID


def _dialer(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeLoop, FakeSocket, UdpClientCarrier,
                                                      Sink]:
    monkeypatch.setattr(udpflow, "os", _random(NONCE))
    loop, sock = FakeLoop(), FakeSocket(DIALER_ADDR, LISTENER_ADDR)
    carrier = UdpClientCarrier(loop, sock, 1200)  # type: ignore[arg-type]
    sink = Sink()
    carrier.set_sink(sink)
    return loop, sock, carrier, sink


def test_dialer_sends_open_data_and_response(monkeypatch: pytest.MonkeyPatch) -> None:
    loop, sock, carrier, sink = _dialer(monkeypatch)
    carrier.write([PREFACE, h(HELLO)])
    want_open = h(OPEN_HEAD) + bytes(MIN_OPEN - len(h(OPEN_HEAD)))
    assert sock.take() == [(None, want_open)] and len(want_open) == 1200
    loop.advance(0.25)  # re-sent, the same OPEN byte for byte, until an answer comes
    assert sock.take() == [(None, want_open)]
    carrier._on_datagram(h(ANSWER))
    assert sink.data == [h(PREFACE_HEX + HELLO_ACK)]  # the answer after cid and nonce
    loop.advance(10.0)
    assert sock.take() == []  # answered: no more OPENs
    assert carrier.mtu == 1200 - 9
    carrier.write([h(PACKET_DATAGRAM)])
    assert sock.take() == [(None, h(DATA))]
    carrier._on_datagram(h(CHALLENGE))
    assert sock.take() == [(None, h(RESPONSE))]
    carrier._on_datagram(h(CLOSING))  # DATA of its connection id: the engine datagram
    assert sink.data[-1] == h(CLOSE_DATAGRAM)


def test_dialer_ignores_answers_with_another_nonce(monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, carrier, sink = _dialer(monkeypatch)
    carrier.write([PREFACE, h(HELLO)])
    bad = bytearray(h(ANSWER))
    bad[9] ^= 1  # the nonce's first byte
    carrier._on_datagram(bytes(bad))
    carrier._on_datagram(h(ANSWER)[:-1] + b"")  # not a whole answer
    assert sink.data == []
    carrier._on_datagram(h(DATA))  # DATA before the ANSWER: no connection id yet
    assert sink.data == []


def _listener(monkeypatch: pytest.MonkeyPatch, *randoms: bytes
              ) -> tuple[FakeLoop, FakeSocket, UdpServer, list[UdpServerCarrier], Sink]:
    monkeypatch.setattr(udplisten, "os", _random(*randoms))
    loop, sock = FakeLoop(), FakeSocket(LISTENER_ADDR)
    carriers: list[UdpServerCarrier] = []
    sink = Sink()

    def on_carrier(carrier: Any) -> None:
        carriers.append(carrier)
        carrier.set_sink(sink)

    server = UdpServer(loop, sock, on_carrier, 1200)  # type: ignore[arg-type]
    return loop, sock, server, carriers, sink


def test_listener_answers_challenges_and_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    loop, sock, server, carriers, sink = _listener(monkeypatch, CID, TOKEN)

    def feed(datagram: bytes, addr: Any) -> None:
        server._on_datagram(datagram, addr, loop.time())

    want_open = h(OPEN_HEAD) + bytes(MIN_OPEN - len(h(OPEN_HEAD)))
    feed(want_open[:-1], DIALER_ADDR)  # 1199 bytes: unpadded, dropped
    assert carriers == [] and server.dropped == 1
    feed(want_open, DIALER_ADDR)
    (carrier,) = carriers
    assert sink.data == [PREFACE + h(HELLO)]  # the opening, without nonce or padding
    carrier.write([PREFACE + h(HELLO_ACK)])
    assert sock.take() == [(DIALER_ADDR, h(ANSWER))]
    feed(want_open, DIALER_ADDR)  # a repeated OPEN: the same ANSWER, byte for byte
    assert sock.take() == [(DIALER_ADDR, h(ANSWER))] and len(carriers) == 1
    feed(h(DATA), DIALER_ADDR)
    assert sink.data[-1] == h(PACKET_DATAGRAM)
    # authentic DATA from a new address: a CHALLENGE there; the RESPONSE moves the path
    sink.authentic = 1
    real_data = sink.carrier_data

    def authentic_data(data: Any) -> None:
        real_data(data)
        sink.authentic += 1

    sink.carrier_data = authentic_data  # type: ignore[method-assign]
    feed(h(DATA), NEW_ADDR)
    assert sock.take() == [(NEW_ADDR, h(CHALLENGE))]
    assert carrier.addr == DIALER_ADDR
    feed(h(RESPONSE), NEW_ADDR)
    assert carrier.addr == NEW_ADDR and sock.take() == []
    # closing: the last datagram (the CLOSE) sent CLOSE_REPEATS more times, then each
    # DATA from the peer is answered with it again while draining
    carrier.write([h(CLOSE_DATAGRAM)])
    carrier.close()
    assert sock.take() == [(NEW_ADDR, h(CLOSING))] * (1 + CLOSE_REPEATS)
    feed(h(DATA), NEW_ADDR)
    assert sock.take() == [(NEW_ADDR, h(CLOSING))]
    loop.advance(DRAIN)
    assert server.carriers == 0
    feed(h(DATA), NEW_ADDR)  # gone: unknown connection id, dropped and counted
    assert sock.take() == [] and server.dropped == 2
