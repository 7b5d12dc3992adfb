"""DatagramPacketizer and parse_datagram: frames in MTU-sized packets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rendr.core.packetizer import MIN_MTU, DatagramPacketizer, parse_datagram
from rendr.core.wire import FrameType, data_header, encode_frame, encode_u64
from rendr.errors import ProtocolError

Item = tuple[str, int, bytes]


def _parse(packet: bytes) -> list[Item]:
    got: list[Item] = []

    def on_data(offset: int, piece: memoryview, now: float) -> int:
        got.append(("data", offset, bytes(piece)))
        return 1

    def on_frame(ftype: int, body: memoryview, now: float) -> int:
        got.append(("frame", ftype, bytes(body)))
        return 2

    parse_datagram(packet, on_data, on_frame)
    return got


control = st.builds(lambda t, b: ("frame", encode_frame(t, b)),
                    st.sampled_from([int(FrameType.PING), int(FrameType.ACK), 0x90]),
                    st.binary(max_size=40))
data = st.builds(lambda b: ("data", b), st.binary(min_size=1, max_size=5000))


@settings(max_examples=200, deadline=None)
@given(mtu=st.integers(MIN_MTU, 1500), items=st.lists(st.one_of(control, data), max_size=20))
def test_every_packet_fits_and_parses_alone(mtu: int, items: list[tuple[str, bytes]]) -> None:
    p = DatagramPacketizer(mtu)
    offset = 0
    frames: list[bytes] = []
    stream = bytearray()
    for kind, item in items:
        if kind == "frame":
            p.push_frame(item)
            frames.append(item)
        else:
            p.push_data(offset, item)
            offset += len(item)
            stream += item
    packets = p.packets()
    assert all(0 < len(pk) <= mtu for pk in packets)
    got_frames: list[bytes] = []
    got_stream = bytearray(len(stream))
    covered = 0
    for pk in packets:
        for kind, a, b in _parse(pk):  # every packet parses on its own
            if kind == "frame":
                got_frames.append(encode_frame(a, b))
            else:
                got_stream[a : a + len(b)] = b
                covered += len(b)
    assert got_frames == frames  # in order, whole
    assert covered == len(stream) and got_stream == stream


def test_frame_order_is_kept_across_packets() -> None:
    p = DatagramPacketizer(100)
    ping = encode_u64(FrameType.PING, 7)
    p.push_frame(ping)
    p.push_data(0, b"x" * 150)
    p.push_frame(ping)
    out = [item for pk in p.packets() for item in _parse(pk)]
    assert out[0][0] == "frame" and out[-1][0] == "frame"
    assert b"".join(b for kind, _, b in out if kind == "data") == b"x" * 150


def test_refusals() -> None:
    with pytest.raises(ValueError):
        DatagramPacketizer(MIN_MTU - 1)
    p = DatagramPacketizer(MIN_MTU)
    with pytest.raises(ValueError):
        p.push_frame(encode_frame(0x90, b"z" * MIN_MTU))
    for bad in (b"\x00\x00", encode_frame(0x90, b"abc")[:-1], data_header(0, 0)):
        with pytest.raises(ProtocolError):
            _parse(bad)


def test_flags_are_ored() -> None:
    pk = encode_u64(FrameType.PING, 1) + data_header(5, 2) + b"ab"
    assert parse_datagram(pk, lambda o, p, n: 1, lambda t, b, n: 4) == 5
