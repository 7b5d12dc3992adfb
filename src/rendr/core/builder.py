"""Building what a path sends: DATA frames from the stream sender, then the FIN.

The stream-carrier counterpart of aioquic's ``packet_builder``: one call fills one
path's outbox with at most ``write_burst`` bytes of DATA in frames of at most
``max_frame`` (ranges queued for re-sending first, unless the replay is held), and
the FIN once every byte before it went out.  On a datagram path every DATA frame
fits one datagram (:mod:`.dgram` packs them).
"""

from __future__ import annotations

from ..config import FlowConfig
from .path import PathState
from .recovery import Recovery
from .reliability import PathReliability
from .sender import StreamSender
from .wire import DATA_HEADER, FrameType, data_header, encode_u64

__all__ = ["fill_race", "fill_stream"]


def fill_stream(path: PathState, sender: StreamSender, with_retx: bool,
                config: FlowConfig, reliability: PathReliability | None = None,
                now: float = 0.0, limit: int | None = None) -> None:
    """Queue DATA frames (and the FIN, if due) on ``path``'s outbox; on a datagram
    path, no more than its congestion window and pacer allow (``reliability``); no
    more than ``limit`` bytes if given (BOND's allowance)."""
    if sender.has_data(with_retx):
        budget = sender.write_burst  # config.write_burst, read natively
        if limit is not None and limit < budget:
            budget = limit
        if reliability is not None:
            budget = min(budget, reliability.budget(now))
        max_frame = sender.max_frame
        if path.max_frame is not None:  # a datagram path: every frame fits a datagram
            max_frame = min(max_frame, path.max_frame - DATA_HEADER.size)
        while budget > 0:
            s, e, resend = sender.next_range(max_frame if max_frame < budget else budget,
                                             with_retx)
            if s == e:
                break
            _queue_data(path, sender, s, e, resend, reliability, now)
            budget -= e - s
    if sender.fin_pending and sender.fin_ready():
        path.outbox.append(encode_u64(FrameType.FIN, sender.eof_offset or 0))
        path.fin_sent = True
        sender.fin_pending = False
        if reliability is not None:
            reliability.on_fin_sent(now)


def _queue_data(path: PathState, sender: StreamSender, s: int, e: int, resend: bool,
                reliability: PathReliability | None, now: float, copy: bool = False) -> None:
    """One DATA frame of ``[s, e)`` on ``path``'s outbox, recorded as sent (``copy``:
    RACE's copy of a range another path sent first)."""
    path.outbox.append(data_header(s, e - s))
    path.outbox.extend(sender.view(s, e))
    Recovery.on_sent(path, s, e, resend, now)
    if reliability is not None:
        reliability.on_sent(s, e, now, resend, copy)


def fill_race(paths: list[PathState], sender: StreamSender, with_retx: bool,
              config: FlowConfig, reliable: dict[int, PathReliability],
              now: float) -> None:
    """RACE: every path carries the whole stream, each at its own pace.  A path first
    catches up from where it stopped (``PathState.race_next``) to what the others
    already sent, skipping what the peer acknowledged meanwhile; once level, it takes
    new ranges (which the others then catch up on).  A blocked or slow path never
    holds the others back, and every byte still goes on every path that can carry it
    in time: the first copy wins at the receiver."""
    for path in paths:
        rel = reliable.get(path.id) if reliable else None
        budget = config.write_burst
        if rel is not None:
            budget = min(budget, rel.budget(now))
        if budget <= 0:
            continue
        max_frame = config.max_frame
        if path.max_frame is not None:
            max_frame = min(max_frame, path.max_frame - DATA_HEADER.size)
        s = max(path.race_next, sender.acked)
        end = sender.next_new
        while budget > 0 and s < end:
            e = min(s + min(max_frame, budget), end)
            _queue_data(path, sender, s, e, False, rel, now, True)
            budget -= e - s
            s = e
        path.race_next = s
        if s >= end and budget > 0:  # level with the others: new ranges (and the FIN)
            fill_stream(path, sender, with_retx, config, rel, now, budget)
            path.race_next = sender.next_new
