"""A simulated datagram link for the loss-recovery and congestion-control tests: a
sender (StreamSender + LossDetector + a congestion controller + Pacer) and a receiver
joined by a link that drops, delays and reorders both ways, optionally through a
bottleneck of fixed rate with a drop-tail buffer; a virtual clock."""

from __future__ import annotations

import heapq
import random

from rendr.config import FlowConfig
from rendr.core.bbr import Bbr
from rendr.core.congestion import CongestionController, NewReno, Pacer
from rendr.core.loss import LossDetector, LossReport
from rendr.core.path import RttEstimator
from rendr.core.rangeset import RangeSet
from rendr.core.sender import StreamSender

MSS = 1150
OVERHEAD = 50  # wire bytes per datagram besides the DATA payload: MSS + 50 = the mds
ACK_DELAY = 0.01
DATA, ACK, ACK_TIMER = 0, 1, 2


class Sim:
    """A sender (StreamSender + LossDetector + NewReno + Pacer) and a receiver joined by
    a link that drops, delays and reorders datagrams both ways; a virtual clock."""

    def __init__(self, seed: int, total: int, loss: float, ack_loss: float, reorder: float,
                 delay: float, ack_every: int, cc: str = "newreno",
                 rate: float | None = None, queue: int = 64 * 1024) -> None:
        self.rng = random.Random(seed)
        self.rate, self.queue = rate, queue  # a bottleneck: bytes/s, its buffer
        self.link_free = 0.0  # when the bottleneck has sent what it holds
        self.queue_drops = 0
        self.total, self.loss, self.ack_loss, self.reorder = total, loss, ack_loss, reorder
        self.delay, self.ack_every = delay, ack_every
        self.now = 0.0
        self.events: list[tuple[float, int, int, int, int, list[tuple[int, int]]]] = []
        self.seq = 0
        self.rtt = RttEstimator()
        self.det = LossDetector(self.rtt, max_ack_delay=ACK_DELAY)
        self.cc: CongestionController = (
            NewReno(MSS + OVERHEAD) if cc == "newreno" else Bbr(self.rtt, MSS + OVERHEAD))
        self.pacer = Pacer(self.cc, self.rtt)
        self.snd = StreamSender(FlowConfig(), 1 << 62, 0.0)
        self.data = bytes(total)
        self.written = 0
        self.pace_at: float | None = None
        # the receiver
        self.got = RangeSet()
        self.unacked = 0
        self.ack_timer = False
        # checks: what the sender learnt from ACKs; a naive model of the segments
        self.known = RangeSet()
        self.model: list[tuple[int, int, int]] = []  # (start, end, wire) in flight
        self.lost_reports = 0
        self.probes = 0

    def push(self, at: float, kind: int, a: int, b: int,
             sack: list[tuple[int, int]] | None = None) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, a, b, sack or []))

    def hop(self) -> float:
        """One trip's delay: small jitter, or (with probability ``reorder``) up to 3x."""
        extra = self.rng.random() * (2.0 if self.rng.random() < self.reorder else 0.1)
        return self.delay * (1.0 + extra)

    # ---------------------------------------------------------------- sender

    def transmit(self, s: int, e: int, resend: bool) -> None:
        wire = e - s + OVERHEAD
        self.det.on_sent(s, e, self.now, wire, resend)
        self.cc.on_sent(wire)
        self.pacer.on_sent(self.now, wire)
        self.model.append((s, e, wire))
        at = self.now
        if self.rate is not None:  # wait for the bottleneck; drop if its buffer is full
            free = max(self.now, self.link_free)
            if (free - self.now) * self.rate + wire > self.queue:
                self.queue_drops += 1
                return
            self.link_free = at = free + wire / self.rate
        if self.rng.random() >= self.loss:
            self.push(at + self.hop(), DATA, s, e)

    def pump(self) -> None:
        snd = self.snd
        while True:
            if self.written < self.total:
                self.written += snd.send(self.data[self.written:])
            if not snd.has_data(True):
                return
            if self.cc.room(self.det.bytes_in_flight) <= 0:
                self.cc.on_limited()  # as PathReliability.budget does
                return
            at = self.pacer.next_send_time(self.now)
            if at is not None:
                self.cc.on_limited()
                self.pace_at = at
                return
            s, e, resend = snd.next_range(MSS, True)
            assert e <= self.total
            self.transmit(s, e, resend)

    def on_lost(self, out: LossReport) -> None:
        for s, e in out.lost:
            # nothing the sender knows to be acknowledged is ever reported lost
            assert self.known.missing(s, e), (s, e)
            i = next(i for i, m in enumerate(self.model) if m[:2] == (s, e))
            del self.model[i]  # it was in flight
            self.snd.on_lost(s, e)
            self.lost_reports += 1
        if out.lost:
            assert out.lost_largest_sent_at is not None
            self.cc.on_lost(out.lost_bytes, out.lost_largest_sent_at, self.now)
        if out.persistent_congestion:
            self.cc.on_persistent_congestion()

    def on_ack(self, cum: int, sack: list[tuple[int, int]]) -> None:
        app_limited = not self.snd.has_data(True)
        self.snd.on_ack(cum, 1 << 62, sack, False)
        out = self.det.on_ack(cum, sack, self.now)
        # the naive model: a segment is acknowledged when inside [0, cum) or one range
        newly = [m for m in self.model
                 if m[1] <= cum or any(s <= m[0] and m[1] <= e for s, e in sack)]
        assert out.acked_bytes == sum(m[2] for m in newly)
        self.model = [m for m in self.model if m not in newly]
        if cum:
            self.known.add(0, cum)
        for s, e in sack:
            self.known.add(s, e)
        if out.rtt_sample is not None:
            self.rtt.update(out.rtt_sample, self.now)
        if out.acked_bytes:
            assert out.largest_acked_sent_at is not None
            self.cc.on_acked(out.acked_bytes, out.largest_acked_sent_at, self.now, app_limited)
        self.on_lost(out)

    def on_timer(self) -> None:
        out = self.det.on_timer(self.now)
        self.on_lost(out)
        if out.probe:
            self.probes += 1
            for _ in range(out.probes):  # new data or re-sends first, else a copy
                s, e, resend = self.snd.next_range(MSS, True)
                if s < e:
                    self.transmit(s, e, resend)
            if not self.snd.has_data(True):
                for s, e in self.det.oldest(out.probes):
                    self.transmit(s, e, True)

    # ---------------------------------------------------------------- receiver

    def send_ack(self) -> None:
        self.unacked = 0
        ranges = self.got.as_list()
        cum = ranges[0][1] if ranges and ranges[0][0] == 0 else 0
        sack = [r for r in ranges if r[0] > cum][:16]
        if self.rng.random() >= self.ack_loss:
            self.push(self.now + self.hop(), ACK, cum, 0, sack)

    def on_data(self, s: int, e: int) -> None:
        self.got.add(s, e)
        self.unacked += 1
        if self.unacked >= self.ack_every:
            self.send_ack()
        elif not self.ack_timer:
            self.ack_timer = True
            self.push(self.now + ACK_DELAY, ACK_TIMER, 0, 0)

    # ---------------------------------------------------------------- the clock

    def run(self) -> None:
        self.pump()
        inf = float("inf")
        for _ in range(1_000_000):
            t_event = self.events[0][0] if self.events else inf
            deadline = self.det.deadline()
            t_timer = inf if deadline is None else deadline
            t_pace = inf if self.pace_at is None else self.pace_at
            t = min(t_event, t_timer, t_pace)
            if t == inf:
                return
            assert t >= self.now
            self.now = t
            if t == t_event:
                _, _, kind, a, b, sack = heapq.heappop(self.events)
                if kind == DATA:
                    self.on_data(a, b)
                elif kind == ACK:
                    self.on_ack(a, sack)
                else:
                    self.ack_timer = False
                    if self.unacked:
                        self.send_ack()
            elif t == t_timer:
                self.on_timer()
            else:
                self.pace_at = None
            self.pump()
            assert self.det.bytes_in_flight == sum(m[2] for m in self.model) >= 0
            assert self.cc.cwnd >= 2 * (MSS + OVERHEAD)
            assert self.now < 3600, "no progress"
        raise AssertionError("the simulation did not end")
