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

__all__ = ["fill_stream"]


def fill_stream(path: PathState, sender: StreamSender, with_retx: bool,
                config: FlowConfig, reliability: PathReliability | None = None,
                now: float = 0.0) -> None:
    """Queue DATA frames (and the FIN, if due) on ``path``'s outbox; on a datagram
    path, no more than its congestion window and pacer allow (``reliability``)."""
    if sender.has_data(with_retx):
        budget = config.write_burst
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
            Recovery.on_sent(path, s, e, resend)
            if reliability is not None:
                reliability.on_sent(s, e, now, resend)
            budget -= e - s
    if sender.fin_pending and sender.fin_ready():
        path.outbox.append(encode_u64(FrameType.FIN, sender.eof_offset or 0))
        path.fin_sent = True
        sender.fin_pending = False
        if reliability is not None:
            reliability.on_fin_sent(now)
