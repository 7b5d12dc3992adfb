"""Per-path state kept by the engine: liveness, RTT estimate, counters, in-flight ranges."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final

from .crypto import FlowKeys
from .delivery import DeliveryRate
from .dgram import OVERHEAD, DatagramOpener, DatagramSealer, PlainPacker
from .framing import StreamDeframer
from .inflight import InflightIndex
from .packetizer import DatagramDeframer
from .records import RecordOpener, RecordSealer
from .stats import PathStats
from .types import PathStatus
from .wire import FrameType, encode_u64

if TYPE_CHECKING:
    from .pathreport import PathRates

__all__ = ["PathState", "RttEstimator"]

CONTROL_RATE: Final = 10_000.0
"""Control (non-DATA) frames per second a path may carry on average, in bursts of as
many (an honest peer sends an ACK per MiB or per ``ack_delay``, a PING every 50 ms)."""
PING_RATE: Final = 1_000.0
"""PINGs per second a path may carry on average, in bursts of as many: each one is
answered, so a flood of them costs the most."""

MAX_PINGS_OUTSTANDING: Final = 16
"""PINGs remembered per path; an answer to an older one yields no RTT sample."""

LOSS_WEIGHT: Final = 0.5
"""Seconds of RTT one unit of PING loss is worth in a path's score: a path losing
10 % of PINGs ranks like one 50 ms slower."""
LOSS_GAIN: Final = 1 / 8
"""The weight of each PING's outcome in the loss estimate (an EWMA)."""

# RFC 6298, 2.3
K_ALPHA: Final = 1 / 8
K_BETA: Final = 1 / 4

MAX_RTT_SAMPLE: Final = 3.0
"""Seconds: an RTT sample above this counts as this much.  A PONG cannot be forged
(it must echo an outstanding PING), but one held back by an attacker on the path
yields a long sample; the dead time grows with srtt, so unclamped samples let such an
attacker ratchet it, PONG by PONG, far past the migration budget.  Clamped, the dead
time stays under ``3 * (3 + 4) * MAX_RTT_SAMPLE`` (63 s, at 100 % PING loss)."""


class RttEstimator:
    """Smoothed RTT and RTT variation (RFC 6298) from PING/PONG samples."""

    __slots__ = ("_recent", "latest", "min_rtt", "rttvar", "samples", "srtt", "window")

    def __init__(self, window: float = 10.0) -> None:
        self.srtt: float | None = None
        self.min_rtt: float | None = None
        self.window = window
        self._recent: deque[tuple[float, float]] = deque()  # (time, sample), increasing
        self.rttvar = 0.0
        self.latest = 0.0
        self.samples = 0

    def recent_min(self) -> float | None:
        """The smallest sample of the last ``window`` seconds (None without samples)."""
        return self._recent[0][1] if self._recent else None

    def update(self, sample: float, now: float = 0.0) -> None:
        """Add one RTT sample (seconds) taken at ``now``."""
        sample = min(max(sample, 0.0), MAX_RTT_SAMPLE)
        recent = self._recent
        # monotonic deque: the front is the window's minimum
        while recent and recent[-1][1] >= sample:
            recent.pop()
        recent.append((now, sample))
        while recent[0][0] < now - self.window:
            recent.popleft()
        self.latest = sample
        self.samples += 1
        if self.min_rtt is None or sample < self.min_rtt:
            self.min_rtt = sample
        if self.srtt is None:
            self.srtt = sample
            self.rttvar = sample / 2
        else:
            self.rttvar = (1 - K_BETA) * self.rttvar + K_BETA * abs(self.srtt - sample)
            self.srtt = (1 - K_ALPHA) * self.srtt + K_ALPHA * sample


class PathState:
    """Everything the engine knows about one path.

    ``inflight`` lists the ``(start, end)`` stream ranges sent on this path and not
    yet known to be acknowledged, in offset order; on the path's death the
    unacknowledged ones are re-sent elsewhere.
    """

    def __init__(self, path_id: int, *, transport: str, local_addr: str, remote_addr: str,
                 now: float, deframer: StreamDeframer | DatagramDeframer,
                 rtt_window: float = 10.0, mtu: int | None = None) -> None:
        self.id = path_id
        self.mtu = mtu
        """The most bytes of one datagram (a datagram carrier), None on a stream."""
        self.max_frame: int | None = mtu
        """The largest frame one datagram holds (None: any size, a stream carrier)."""
        self.transport = transport
        self.local_addr = local_addr
        self.remote_addr = remote_addr
        self.status = PathStatus.UP
        self.added_at = now
        self.down_cause: str | None = None
        self.deframer = deframer
        self.rtt = RttEstimator(rtt_window)
        self.inflight: deque[tuple[int, int]] = deque()
        self.inflight_bytes = 0  # the sum of ``inflight``
        self.inflight_index = InflightIndex()  # ``inflight`` indexed for SACK accounting
        self.sacked = 0  # bytes of ``inflight`` the peer acknowledged selectively
        self.weight = 1.0  # PathSpec.weight: BOND's prior for sharing packets
        # packets (DGRAM frames) and their payload bytes, per direction: what BOND's
        # delivery reports compare (core/pathreport.py)
        self.pkts_out = self.pkt_bytes_out = self.pkts_in = self.pkt_bytes_in = 0
        self.race_next = 0  # RACE: the stream offset this path sends next
        self.delivery = DeliveryRate(now)
        self.outbox: list[bytes | memoryview] = []
        self.blocked = False
        # authenticated records or datagrams (keyed flows); datagram paths of an
        # unkeyed flow pack their frames without sealing
        self.sealer: RecordSealer | DatagramSealer | PlainPacker | None = (
            None if mtu is None else PlainPacker(mtu))
        self.opener: RecordOpener | DatagramOpener | None = None
        self.encrypted: bool | None = None  # records (datagrams) encrypted; None: none
        self.pong_owed: int | None = None  # a PING to answer once the carrier drains
        self._ctl_credit = CONTROL_RATE  # token buckets of control frames and PINGs
        self._ping_credit = PING_RATE
        self._credit_at = now
        # our PINGs not answered yet, oldest first: (opaque token, time sent); a PONG
        # must echo one of them (an RTT sample is never taken from the peer's word)
        self.pings: deque[tuple[int, float]] = deque(maxlen=MAX_PINGS_OUTSTANDING)
        self.last_recv_at = now
        self.next_ping_at = now
        self.unanswered_since: float | None = None
        self.ping_loss = 0.0  # the fraction of PINGs never answered (an EWMA)
        self.suspect = False  # unanswered for its suspect time; see FlowConfig
        self.fin_sent = False
        self.bytes_sent = 0
        self.bytes_received = 0
        self.frames_sent = 0
        self.frames_received = 0
        self.retransmits = 0
        self.authentic = 0  # receives that passed authentication (or all, unkeyed)
        self.close_requested: str | None = None  # "graceful" | "abort"
        self.retire_by = 0.0  # RETIRING: deadline for the peer's PATH_CLOSE answer
        self.path_close_sent = False

    @property
    def alive(self) -> bool:
        """Whether the path can carry new data."""
        return self.status is PathStatus.UP

    def protect(self, keys: FlowKeys, dialer: bool, encrypt: bool) -> None:
        """Carry this path's frames in authenticated records (sealed datagrams on a
        datagram carrier) under the flow's keys."""
        out, into = (keys.d2l, keys.l2d) if dialer else (keys.l2d, keys.d2l)
        self.encrypted = encrypt
        if self.mtu is None:
            self.sealer = RecordSealer(out, self.id, encrypt)
            self.opener = RecordOpener(into, self.id, encrypt)
        else:
            self.sealer = DatagramSealer(out, self.id, self.mtu, encrypt)
            self.opener = DatagramOpener(into, self.id, encrypt)
            self.max_frame = self.mtu - OVERHEAD

    def set_blocked(self, blocked: bool) -> None:
        """The carrier's write buffer is full (True) or drained again (False): then
        answer the PING that came meanwhile."""
        self.blocked = blocked
        if not blocked and self.pong_owed is not None:
            self.outbox.append(encode_u64(FrameType.PONG, self.pong_owed))
            self.pong_owed = None

    def spend_control(self, is_ping: bool, now: float) -> bool:
        """Count one control frame received at ``now``; False when the peer sends
        them faster than :data:`CONTROL_RATE` (or PINGs faster than :data:`PING_RATE`)
        for longer than a one-second burst: a flood, not a protocol."""
        elapsed = now - self._credit_at
        if elapsed > 0:
            self._credit_at = now
            self._ctl_credit = min(CONTROL_RATE, self._ctl_credit + elapsed * CONTROL_RATE)
            self._ping_credit = min(PING_RATE, self._ping_credit + elapsed * PING_RATE)
        self._ctl_credit -= 1
        if is_ping:
            self._ping_credit -= 1
        return self._ctl_credit >= 0 and self._ping_credit >= 0

    def on_pong(self, token: int, now: float) -> bool:
        """The peer echoed ``token``: take an RTT sample if it is one of our PINGs
        (that one and every older one are then answered).  False for a token we never
        sent (forged or stale): no sample."""
        pings = self.pings
        for i, (t, sent_at) in enumerate(pings):
            if t == token:
                for _ in range(i + 1):
                    pings.popleft()
                self.rtt.update(now - sent_at, now)
                # the older PINGs were never answered: lost (on a datagram path), or
                # skipped by a peer too busy to answer each (a congested stream)
                loss = self.ping_loss
                for _ in range(i):
                    loss += LOSS_GAIN * (1.0 - loss)
                self.ping_loss = loss * (1.0 - LOSS_GAIN)
                return True
        return False

    def quality(self) -> float | None:
        """Lower is better: the recent minimum RTT, plus jitter (RTT variation), plus
        :data:`LOSS_WEIGHT` per unit of PING loss, all measured by rendr itself
        (never from the application's traffic).  None before any RTT sample."""
        r = self.rtt.recent_min()
        if r is None:
            return None
        return r + self.rtt.rttvar + LOSS_WEIGHT * self.ping_loss

    def score(self) -> float:
        """Lower is better: smoothed RTT plus jitter plus loss (see :meth:`quality`;
        unknown RTT ranks after known ones, suspect paths last)."""
        srtt = self.rtt.srtt
        penalty = 1e12 if self.suspect else 0.0
        if srtt is None:
            return penalty + 1e9 + self.id
        return penalty + srtt + self.rtt.rttvar + LOSS_WEIGHT * self.ping_loss

    def stats(self, now: float, rates: PathRates | None = None) -> PathStats:
        """A snapshot of the path's counters (``rates``: a packet flow's delivery
        reports, for BOND's view of the path)."""
        rtt = self.rtt
        measured = rates is not None and rates.measured(self.id)
        return PathStats(
            id=self.id, transport=self.transport, local_addr=self.local_addr,
            remote_addr=self.remote_addr, state=str(self.status), srtt=rtt.srtt,
            rttvar=rtt.rttvar if rtt.srtt is not None else None,
            bytes_sent=self.bytes_sent, bytes_received=self.bytes_received,
            frames_sent=self.frames_sent, frames_received=self.frames_received,
            retransmits=self.retransmits, last_recv_age=now - self.last_recv_at,
            down_cause=self.down_cause, suspect=self.suspect,
            dropped=(self.opener.failures + self.opener.replays
                     if isinstance(self.opener, DatagramOpener) else 0),
            mtu=self.mtu, ping_loss=self.ping_loss, encrypted=self.encrypted,
            packets_sent=self.pkts_out, packets_received=self.pkts_in,
            delivery_rate=rates.rate(self.id) if rates is not None and measured else None,
            delivery_loss=rates.loss(self.id) if rates is not None and measured else None,
        )
