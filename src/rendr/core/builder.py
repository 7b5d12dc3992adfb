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
        budget = config.write_burst
        if limit is not None and limit < budget:
            budget = limit
        if reliability is not None:
            budget = min(budget, reliability.budget(now))
        max_frame = config.max_frame
        if path.max_frame is not None:  # a datagram path: every frame fits a datagram
            max_frame = min(max_frame, path.max_frame - DATA_HEADER.size)
        outbox = path.outbox
        while budget > 0:
            s, e, resend = sender.next_range(max_frame if max_frame < budget else budget,
                                             with_retx)
            if s == e:
                break
            outbox.append(data_header(s, e - s))
            outbox.extend(sender.view(s, e))
            Recovery.on_sent(path, s, e, resend, now)
            if reliability is not None:
                reliability.on_sent(s, e, now, resend)
            budget -= e - s
    if sender.fin_pending and sender.fin_ready():
        path.outbox.append(encode_u64(FrameType.FIN, sender.eof_offset or 0))
        path.fin_sent = True
        sender.fin_pending = False
        if reliability is not None:
            reliability.on_fin_sent(now)


def fill_race(paths: list[PathState], sender: StreamSender, with_retx: bool,
              config: FlowConfig, reliable: dict[int, PathReliability],
              now: float) -> None:
    """RACE: queue every DATA range (and the FIN) on every path of ``paths`` that can
    take it now: each path up to ``write_burst`` and, on a datagram path, its
    congestion window and pacer; a path out of room misses the rest of this round
    (the others carry it).  Frames fit the smallest datagram among the paths."""
    budgets: list[int] = []
    max_frame = config.max_frame
    for path in paths:
        budget = config.write_burst
        rel = reliable.get(path.id) if reliable else None
        if rel is not None:
            budget = min(budget, rel.budget(now))
        budgets.append(budget)
        if path.max_frame is not None:
            max_frame = min(max_frame, path.max_frame - DATA_HEADER.size)
    while sender.has_data(with_retx):
        most = max(budgets, default=0)
        if most <= 0:
            break
        s, e, resend = sender.next_range(max_frame if max_frame < most else most, with_retx)
        if s == e:
            break
        header = data_header(s, e - s)
        views = sender.view(s, e)
        for i, path in enumerate(paths):
            if budgets[i] <= 0:
                continue
            path.outbox.append(header)
            path.outbox.extend(views)
            Recovery.on_sent(path, s, e, resend, now)
            rel = reliable.get(path.id) if reliable else None
            if rel is not None:
                rel.on_sent(s, e, now, resend)
            budgets[i] -= e - s
    if paths and sender.fin_pending and sender.fin_ready():
        fin = encode_u64(FrameType.FIN, sender.eof_offset or 0)
        for path in paths:
            path.outbox.append(fin)
            path.fin_sent = True
            rel = reliable.get(path.id) if reliable else None
            if rel is not None:
                rel.on_fin_sent(now)
        sender.fin_pending = False
