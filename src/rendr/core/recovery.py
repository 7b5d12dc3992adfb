"""Loss recovery for stream carriers: what a dead path carried, and when to re-send it.

A stream carrier (TCP) delivers every byte in order or dies, so nothing is lost
on a live path; bytes are lost only with a path.  Each path records the ranges
it carried (``PathState.inflight``, in offset order) until the peer's cumulative
ACK covers them.  :meth:`Recovery.on_path_lost` hands the uncovered ones back to
the :class:`StreamSender` (minus what the peer acknowledged selectively).

After a death-driven failover the re-sending waits briefly (:meth:`hold`): for
the peer's next ACK (asked for with ACK_PROBE) or about two RTTs of the new path,
so what the dead path delivered but whose ACK was lost with it is not sent twice.

Per-path loss detection for datagram carriers (UDP, later) belongs here too.
"""

from __future__ import annotations

from bisect import bisect_left

from .path import PathState
from .paths import PathSet
from .sender import StreamSender

__all__ = ["Recovery"]


_HOLD_MIN = 0.01
_HOLD_MAX = 0.25
_HOLD_UNKNOWN_RTT = 0.1


class Recovery:
    """In-flight bookkeeping and the replay hold of one flow."""

    __slots__ = ("hold_until",)

    def __init__(self) -> None:
        self.hold_until: float | None = None

    @staticmethod
    def on_sent(path: PathState, start: int, end: int, resend: bool, now: float) -> None:
        """``[start, end)`` went out on ``path`` at ``now``."""
        inflight = path.inflight
        if not inflight:
            path.delivery.idle(now)
            inflight.append((start, end))
            path.inflight_index.append(start, end)
        elif start >= inflight[-1][0]:
            inflight.append((start, end))
            path.inflight_index.append(start, end)
        else:  # a re-send below what the path carried since: keep the ranges in offset
            # order, so the cumulative ACK releases them from the front (in send order
            # an old range would sit behind newer ones, counted in flight for ever)
            i = bisect_left(inflight, (start, end))
            inflight.insert(i, (start, end))
            path.inflight_index.insert(start, end)
        path.inflight_bytes += end - start
        path.frames_sent += 1
        path.bytes_sent += end - start
        if resend:
            path.retransmits += end - start

    @staticmethod
    def on_acked(paths: PathSet, acked: int, ranges: list[tuple[int, int]],
               now: float) -> None:
        """The peer has every byte below ``acked`` (no path needs to remember them)
        and the selectively acknowledged ``ranges`` (sorted, above ``acked``).  Each
        path counts what it carried that arrived (``PathState.sacked`` and its
        delivery rate), so BOND knows what each path really has in flight even while
        another path's slower bytes hold the cumulative ACK back."""
        for p in paths:
            inflight = p.inflight
            if not inflight:
                if p.sacked:
                    p.sacked = 0
                continue
            index = p.inflight_index
            done = 0
            while inflight and inflight[0][1] <= acked:
                s, e = inflight.popleft()
                index.popleft(s, e)
                done += e - s
            p.inflight_bytes -= done
            sacked = index.covered(ranges) if ranges and inflight else 0
            gained = done + sacked - p.sacked
            p.sacked = sacked
            if gained > 0:
                p.delivery.on_delivered(gained, now, p.rtt.min_rtt)

    @staticmethod
    def on_path_lost(path: PathState, sender: StreamSender) -> int:
        """``path`` is gone with what it carried: queue the unacknowledged ranges (and
        the FIN) for re-sending; return how many bytes."""
        queued = 0
        for s, e in path.inflight:
            queued += sender.on_lost(s, e)
        path.inflight.clear()
        path.inflight_index.clear()
        path.inflight_bytes = 0
        path.sacked = 0
        if path.fin_sent:
            path.fin_sent = False
            sender.fin_lost()
        return queued

    # ------------------------------------------------------------- replay hold

    def hold(self, now: float, srtt: float | None, ack_delay: float) -> None:
        """Hold re-sending until the peer's next ACK, or about two RTTs of the new path."""
        hold = _HOLD_UNKNOWN_RTT if srtt is None else 2 * srtt + ack_delay
        self.hold_until = now + min(max(hold, _HOLD_MIN), _HOLD_MAX)

    @property
    def held(self) -> bool:
        """Re-sending waits (until :meth:`on_ack` or the hold's deadline)."""
        return self.hold_until is not None

    def on_ack(self) -> None:
        """Fresh news of what the peer has: re-send the rest now."""
        self.hold_until = None

    def on_timer(self, now: float) -> None:
        """Run the hold's deadline."""
        if self.hold_until is not None and now >= self.hold_until:
            self.hold_until = None
