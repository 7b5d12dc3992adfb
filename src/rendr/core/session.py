"""Opening paths, sans-I/O: what to send first, and whether to accept what came.

Every carrier opens with ``PREFACE + HELLO`` (a new flow) or ``PREFACE + JOIN``
(another path of a flow), written by the dialer; the listener answers with
``HELLO_ACK`` or ``JOIN_ACK`` carrying a :class:`~rendr.core.wire.Result`.  Two
classes make every decision of that exchange and own the flow table;
the asyncio front-end only moves bytes and waits (websockets' ``ServerProtocol``
and ``ClientProtocol`` are the model).

- :class:`ListenerHandshake` (:mod:`rendr.core.admission`): HELLO -> a new :class:`Flow`
  or a refusal; JOIN -> the flow to attach the path to, or a refusal (unknown flow,
  closed flow, duplicate path, too many paths).  Caps on flows and pending handshakes
  belong here, and the HELLO flood defence: under load a stateless RETRY cookie
  (:mod:`rendr.core.cookie`) and key exchanges rationed per source
  (:mod:`rendr.core.fairness`).
- :class:`DialerHandshake` (:mod:`rendr.core.dialing`): path ids, the opening frames,
  and what each answer means (a refusal, a flow the listener forgot:
  :class:`ZombieFlow`).

This module gathers them (and :mod:`rendr.core.opening`, what both share).
"""

from __future__ import annotations

from .admission import ListenerHandshake
from .dialing import DialerHandshake
from .opening import MAX_RETRIES, Decision, result_name

__all__ = ["MAX_RETRIES", "Decision", "DialerHandshake", "ListenerHandshake", "result_name"]
