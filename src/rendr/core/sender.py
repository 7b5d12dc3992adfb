"""The sending half of the stream: what to send next, what the peer has, what to re-send.

A :class:`StreamSender` knows stream offsets only, never paths.  It keeps every
byte written in a :class:`SendBuffer` until the peer's cumulative ACK covers it,
hands out the next range to put in a DATA frame (ranges queued for re-sending
first, then new bytes up to the peer's flow-control limit), and takes back the
ranges a dead path carried (:meth:`on_lost`), minus what the peer selectively
acknowledged.  Which path a range goes on, and when ranges count as lost, is
decided elsewhere (:mod:`.scheduler`, :mod:`.recovery`).

Sizing: the buffer holds at most :attr:`limit` bytes, about four bandwidth-delay
products of the active path (:meth:`autotune`), and grows when only ACKs can make
room (:meth:`send`).
"""

from __future__ import annotations

from ..config import FlowConfig
from ..errors import ProtocolError
from .rangeset import RangeSet
from .sendbuf import SendBuffer

__all__ = ["StreamSender"]

Buffer = bytes | memoryview


class StreamSender:
    """Send side of one stream direction.

    Attributes:
        next_new: the first offset never sent.
        peer_max: the peer's flow-control limit (never send at or beyond it).
        limit: the send buffer's current size bound.
        eof_offset: the final offset once ``send_eof()`` was called, else None.
        fin_pending: the FIN frame still has to be sent (again, after a path death).
        fin_acked: the peer acknowledged the FIN.
    """

    __slots__ = ("_ack_limited", "_buf", "_peer_sacked", "_rate_acked0", "_rate_t0", "_retx",
                 "config", "eof_offset", "fin_acked", "fin_pending", "limit", "max_frame",
                 "next_new", "peer_max", "write_burst")

    def __init__(self, config: FlowConfig, peer_window: int, now: float) -> None:
        self.config = config
        # native copies of the knobs the per-message path reads (FlowConfig is interpreted)
        self.write_burst = config.write_burst
        self.max_frame = config.max_frame
        self._buf = SendBuffer()
        self._retx = RangeSet()
        self._peer_sacked = RangeSet()
        self.next_new = 0
        self.peer_max = peer_window
        self.limit = config.send_buffer_min
        self._rate_t0 = now
        self._rate_acked0 = 0
        self._ack_limited = False
        self.eof_offset: int | None = None
        self.fin_pending = False
        self.fin_acked = False

    # ------------------------------------------------------------ application side

    @property
    def space(self) -> int:
        """Bytes :meth:`send` would accept now."""
        return max(0, self.limit - len(self._buf))

    @property
    def unacked(self) -> int:
        """Bytes written and not yet cumulatively acknowledged."""
        return len(self._buf)

    @property
    def written(self) -> int:
        """Bytes accepted so far (the end offset)."""
        return self._buf.end

    @property
    def flushed(self) -> bool:
        """Everything written (and the FIN, if any) was acknowledged."""
        return not self._buf and (self.eof_offset is None or self.fin_acked)

    @property
    def idle(self) -> bool:
        """Nothing is waiting for an acknowledgement."""
        return not self._buf

    def send(self, data: Buffer) -> int:
        """Accept as much of ``data`` as there is room for; return how many bytes.

        The one copy decision of a write: bytes, and views of bytes, are kept as they
        are (immutable); a view of anything else (a bytearray the caller may reuse) is
        copied, only as far as it is taken.
        """
        n = len(data)
        take = min(self.space, n)
        buf = self._buf
        if take < n and buf and self.next_new >= buf.end:
            self._ack_clock_limited()
            take = min(self.space, n)
        if take <= 0:
            return 0
        chunk = data[:take] if take < n else data
        # bytes first: a native test when compiled (memoryview is looked up by name)
        if (not isinstance(chunk, bytes) and isinstance(chunk, memoryview)
                and not (chunk.readonly and isinstance(chunk.obj, bytes))):
            chunk = chunk.tobytes()
        buf.append(chunk)
        return take

    def send_eof(self) -> bool:
        """Mark the end of the stream; False if it was already marked."""
        if self.eof_offset is not None:
            return False
        self.eof_offset = self._buf.end
        self.fin_pending = True
        return True

    def _ack_clock_limited(self) -> None:
        """The application wants to write more, the send buffer is full, and all of it
        is already in flight: only ACKs can make room, so the buffer (not the path, not
        the peer's window) limits the rate.  The minimum RTT underestimates the time an
        ACK takes under load (it includes the peer's processing and socket queues), so
        grow the buffer (twice as large, up to ``send_buffer``)."""
        self._ack_limited = True
        cap = self.config.send_buffer
        if self.limit < cap:
            self.limit = min(cap, 2 * self.limit)

    # ----------------------------------------------------------------- packet side

    def has_data(self, with_retx: bool) -> bool:
        """Whether :meth:`next_range` would return a range."""
        if with_retx and self._retx:
            return True
        buf_end = self._buf.end
        return self.next_new < (buf_end if buf_end < self.peer_max else self.peer_max)

    @property
    def retx_bytes(self) -> int:
        """Bytes queued for re-sending."""
        return self._retx.total()

    @property
    def retx_queued(self) -> bool:
        """Ranges are queued for re-sending."""
        return bool(self._retx)

    def next_range(self, most: int, with_retx: bool) -> tuple[int, int, bool]:
        """The next range to send, at most ``most`` bytes: ``(start, end, is_resend)``;
        ``start == end`` when there is nothing to send.  Re-sends come first (unless
        ``with_retx`` is False: a replay hold)."""
        base = self._buf.base
        if with_retx:
            retx = self._retx
            while retx:
                s, e = retx.pop_first(most)
                if e <= base:
                    continue
                return (base if s < base else s), e, True
        s = self.next_new
        end = self._buf.end
        limit = end if end < self.peer_max else self.peer_max
        if s >= limit:
            return s, s, False
        e = s + most
        if e > limit:
            e = limit
        self.next_new = e
        return s, e, False

    def view(self, start: int, end: int) -> list[Buffer]:
        """Buffers holding ``[start, end)`` (which must still be unacknowledged)."""
        return self._buf.view(start, end)

    def fin_ready(self) -> bool:
        """The FIN can go now: every byte up to it was sent and nothing waits to be re-sent."""
        eof = self.eof_offset
        return (self.fin_pending and eof is not None and self.next_new >= eof
                and not self._retx)

    # ----------------------------------------------------------------- peer's news

    def on_ack(self, cum: int, max_offset: int, ranges: list[tuple[int, int]],
               fin: bool) -> bool:
        """The peer's ACK; return True if it acknowledged new bytes cumulatively.

        Raises:
            ProtocolError: it acknowledged bytes never sent.
        """
        if cum > self.next_new or (ranges and ranges[-1][1] > self.next_new):
            raise ProtocolError("peer acknowledged bytes never sent")
        buf = self._buf
        progressed = cum > buf.base
        if progressed:
            buf.ack(cum)
            self._retx.remove_below(cum)
        self._peer_sacked = RangeSet.from_sorted(ranges)  # validated by decode_ack
        if self._retx:
            for s, e in ranges:
                self._retx.subtract(s, e)
        if max_offset > self.peer_max:
            self.peer_max = max_offset
        if fin and self.eof_offset is not None and cum == self.eof_offset:
            self.fin_acked = True
        return progressed

    @property
    def acked(self) -> int:
        """Every byte below this offset is acknowledged."""
        return self._buf.base

    def on_lost(self, start: int, end: int) -> int:
        """``[start, end)`` was sent on a path that died: queue what the peer has not
        acknowledged (cumulatively or selectively) for re-sending; return how many bytes."""
        base = self._buf.base
        if end <= base:
            return 0
        if start < base:
            start = base
        queued = 0
        for ms, me in self._peer_sacked.missing(start, end):
            self._retx.add(ms, me)
            queued += me - ms
        return queued

    def fin_lost(self) -> None:
        """The FIN went out on a path that died: send it again (unless acknowledged)."""
        if not self.fin_acked:
            self.fin_pending = True

    def autotune(self, now: float, min_rtt: float | None) -> None:
        """Size the buffer to ~4 bandwidth-delay products of the active path (delivery
        rate over the last interval times its minimum RTT), but not below what the ACK
        clock needed lately (see :meth:`send`)."""
        if min_rtt is None:
            return
        elapsed = now - self._rate_t0
        if elapsed < max(2 * min_rtt, 0.02):
            return
        acked = self._buf.base
        rate = (acked - self._rate_acked0) / elapsed
        self._rate_t0 = now
        self._rate_acked0 = acked
        cfg = self.config
        target = int(4 * rate * min_rtt)
        # keep a size the ACK clock needed lately; otherwise decay towards the BDP
        floor = self.limit if self._ack_limited else self.limit * 3 // 4
        target = max(target, floor)
        self._ack_limited = False
        self.limit = max(cfg.send_buffer_min, min(cfg.send_buffer, target))
