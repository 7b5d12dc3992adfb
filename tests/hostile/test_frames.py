"""Issue 6: malformed ACKs and hostile CLOSE reasons."""

from __future__ import annotations

import pytest

from rendr.config import FlowConfig
from rendr.core.flow import Flow
from rendr.core.types import Role, State
from rendr.core.wire import _ACK_HEAD, _RANGE, FrameType, decode_close, encode_ack, encode_frame
from rendr.errors import ConnAborted, ProtocolError

MIB = 1 << 20


def _raw_ack(cum: int, ranges: list[tuple[int, int]]) -> bytes:
    body = _ACK_HEAD.pack(cum, 8 * MIB, 0, len(ranges)) + b"".join(
        _RANGE.pack(s, e) for s, e in ranges)
    return encode_frame(FrameType.ACK, body)


def _sender_with_data_in_flight() -> Flow:
    flow = Flow(role=Role.DIALER, flow_id=b"F" * 16, config=FlowConfig(), now=0.0,
                peer_window=8 * MIB)
    flow.add_path(1, now=0.0)
    flow.send(b"d" * 100_000, 0.0)
    flow.transmits(0.0)
    return flow


@pytest.mark.parametrize("ranges", [
    [(5000, 4000)],                      # empty / reversed
    [(3000, 4000), (1000, 2000)],        # descending
    [(1000, 3000), (2000, 4000)],        # overlapping
    [(1000, 2000), (2000, 3000)],        # adjacent (must have been one range)
    [(500, 2000)],                       # not above the cumulative ACK (cum 1000)
    [(2000, 200_000)],                   # beyond what was sent
])
def test_bogus_sack_ranges_are_a_protocol_error(ranges: list[tuple[int, int]]) -> None:
    flow = _sender_with_data_in_flight()
    flow.receive(1, _raw_ack(1000, ranges), 0.01)
    assert flow.state is State.CLOSED and isinstance(flow.error, ProtocolError)


def test_valid_sack_ranges_are_accepted() -> None:
    flow = _sender_with_data_in_flight()
    flow.receive(1, _raw_ack(1000, [(2000, 3000), (5000, 100_000)]), 0.01)
    assert flow.state is not State.CLOSED


def test_close_reason_is_capped_and_sanitised() -> None:
    evil = "\x1b]0;owned\x07\x1b[2J" + "A" * 5000
    body = encode_frame(FrameType.CLOSE, b"\x00\x05" + evil.encode())[4:]
    code, reason = decode_close(body)
    assert code == 5
    assert len(reason) <= 1024  # characters read from the first 1024 bytes
    assert all(ch.isprintable() for ch in reason)
    flow = _sender_with_data_in_flight()
    flow.receive(1, encode_frame(FrameType.CLOSE, b"\x00\x05" + evil.encode()), 0.01)
    assert isinstance(flow.error, ConnAborted) and "\x1b" not in str(flow.error)


def test_own_acks_stay_valid() -> None:
    ack = encode_ack(10, 20, 0, [(12, 14), (16, 18)])
    flow = _sender_with_data_in_flight()
    flow.receive(1, ack, 0.01)
    assert flow.state is not State.CLOSED


def test_bytes_before_the_handshake_answer_are_bounded() -> None:
    """A JOIN waiting for its flow's HELLO must not buffer what follows it without
    limit (it was `leftover += bytes`, quadratic and unbounded)."""
    import asyncio

    from rendr.aio.handshake import HandshakeCollector
    from rendr.core.handshake import HandshakeParser
    from rendr.core.wire import PREFACE, Join
    from rendr.errors import HandshakeError

    opening = PREFACE + Join(b"F" * 16, 2).encode()
    parser = HandshakeParser(max_leftover=64 * 1024)
    assert parser.feed(opening + b"x" * 1000) is not None
    with pytest.raises(HandshakeError):
        for _ in range(100):
            parser.feed(b"y" * 4096)
    assert len(parser.leftover) <= 64 * 1024

    class Sink:
        def __init__(self) -> None:
            self.data = 0
            self.lost: list[BaseException | None] = []

        def carrier_data(self, data: bytes | memoryview) -> None:
            self.data += len(data)

        def carrier_lost(self, exc: BaseException | None) -> None:
            self.lost.append(exc)

        def carrier_pause(self) -> None:
            pass

        def carrier_resume(self) -> None:
            pass

    class FakeCarrier:
        def set_sink(self, sink: Sink) -> None:
            self.sink = sink

    loop = asyncio.new_event_loop()
    try:
        collector = HandshakeCollector(loop, max_leftover=64 * 1024)
        collector.carrier_data(opening)
        for _ in range(8 * 1024):  # 32 MiB
            collector.carrier_data(b"z" * 4096)
        assert len(collector.parser.leftover) <= 64 * 1024
        sink = Sink()
        collector.handoff(FakeCarrier(), sink)  # type: ignore[arg-type]
        assert sink.data == 0 and isinstance(sink.lost[0], HandshakeError)
    finally:
        loop.close()


def test_pings_to_a_peer_that_never_reads_queue_one_pong() -> None:
    """Control replies obey backpressure: while the carrier is blocked (the peer does
    not read), PINGs are answered once, with the latest, when it drains."""
    from rendr.core.wire import decode_u64, encode_u64

    flow = Flow(role=Role.LISTENER, flow_id=b"F" * 16, config=FlowConfig(), now=0.0,
                peer_window=8 * MIB)
    flow.add_path(1, now=0.0)
    flow.transmits(0.0)
    flow.set_path_blocked(1, True)
    # 900 at once: within the PING budget (a flood beyond it ends the flow, below)
    pings = b"".join(encode_u64(FrameType.PING, i) for i in range(900))
    flow.receive(1, pings, 0.01)
    queued = sum(len(b) for _, bufs in flow.transmits(0.01) for b in bufs)
    assert queued < 1024  # was one PONG per PING (100,000 PINGs: 1.2 MB)
    flow.set_path_blocked(1, False)
    from rendr.core.framing import StreamDeframer

    pongs: list[int] = []

    def on_frame(ftype: int, body: memoryview, now: float) -> int:
        if ftype == FrameType.PONG:
            pongs.append(decode_u64(body))
        return 0

    deframer = StreamDeframer(lambda o, p, n: 0, on_frame)
    for _, bufs in flow.transmits(0.02):
        deframer.feed(b"".join(bytes(b) for b in bufs))
    assert pongs == [899]


def test_forged_pong_takes_no_rtt_sample_and_pings_do_not_leak_the_clock() -> None:
    """A PONG must echo one of our outstanding PINGs: a forged token (it used to be
    read as our clock, so a peer could set a 500 s RTT and stretch the dead time to
    half an hour) yields no sample; PING tokens are opaque, not our clock."""
    from rendr.core.wire import decode_u64, encode_u64

    flow = _sender_with_data_in_flight()
    path = flow.paths[1]
    flow.handle_timer(0.06)
    out = b"".join(bytes(b) for b in dict(flow.transmits(0.06)).get(1, []))
    at = out.find(bytes([FrameType.PING, 0, 0, 8]))
    assert at >= 0, "a PING went out"
    token = decode_u64(out[at + 4 : at + 12])
    assert abs(token - 0.06 * 1e6) > 1e9  # not our clock in microseconds
    before = path.rtt.srtt
    flow.receive(1, encode_u64(FrameType.PONG, int((0.06 - 500) * 1e6) & (2**64 - 1)), 0.07)
    assert path.rtt.srtt == before  # forged: no sample
    flow.receive(1, encode_u64(FrameType.PONG, token), 0.08)
    assert path.rtt.srtt is not None and path.rtt.srtt < 0.1  # the real answer counts
    assert flow.state is not State.CLOSED


def test_ping_flood_ends_the_flow_but_an_honest_rate_does_not() -> None:
    """Each PING is answered, so a flood costs the listener most: past 1,000 PINGs/s
    (one-second bursts) on a path the flow ends with PROTOCOL_ERROR."""
    from rendr.core.wire import encode_u64

    honest = _sender_with_data_in_flight()
    for i in range(3000):  # 900 PINGs/s for 3.3 s
        honest.receive(1, encode_u64(FrameType.PING, i), 0.1 + i / 900)
    assert honest.state is not State.CLOSED
    flood = _sender_with_data_in_flight()
    flood.receive(1, b"".join(encode_u64(FrameType.PING, i) for i in range(1500)), 0.1)
    assert flood.state is State.CLOSED and isinstance(flood.error, ProtocolError)
    assert "flood" in str(flood.error)


def test_delayed_pongs_cannot_stretch_the_dead_time_without_bound() -> None:
    """An attacker on a path cannot forge a PONG, but it can hold each genuine one
    back until just before the path would be declared dead.  Every such sample raised
    srtt, and so the dead time (3 srtt + 4 rttvar), so the next PONG could be held
    longer: forty rounds took the dead time past the 90 s migration budget, and a
    blackholed path then stayed 'alive' for it.  RTT samples are clamped
    (``MAX_RTT_SAMPLE``), which bounds the dead time."""
    from rendr.core.path import MAX_RTT_SAMPLE
    from rendr.core.wire import encode_u64

    flow = _sender_with_data_in_flight()
    path = flow.paths[1]
    now = 0.05
    for _ in range(40):
        flow.handle_timer(now)
        flow.transmits(now)
        if not path.pings:
            now += 0.05
            continue
        token, sent_at = path.pings[-1]
        now = sent_at + 0.9 * flow._paths.dead_time(path)
        flow.receive(1, encode_u64(FrameType.PONG, token), now)
    assert path.rtt.srtt is not None and path.rtt.srtt <= MAX_RTT_SAMPLE
    assert flow._paths.dead_time(path) <= 3 * (3 * MAX_RTT_SAMPLE + 4 * MAX_RTT_SAMPLE)
    assert flow._paths.dead_time(path) < 90.0
