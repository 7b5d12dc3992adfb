"""Opening paths, sans-I/O: what to send first, and whether to accept what came.

Every carrier opens with ``PREFACE + HELLO`` (a new flow) or ``PREFACE + JOIN``
(another path of a flow), written by the dialer; the listener answers with
``HELLO_ACK`` or ``JOIN_ACK`` carrying a :class:`~rendr.core.wire.Result`.  The
two classes here make every decision of that exchange and own the flow table;
the asyncio front-end only moves bytes and waits (websockets' ``ServerProtocol``
and ``ClientProtocol`` are the model).

- :class:`ListenerHandshake`: HELLO -> a new :class:`Flow` or a refusal; JOIN ->
  the flow to attach the path to, or a refusal (unknown flow, closed flow,
  duplicate path, too many paths).  Caps on flows and pending handshakes belong here.
- :class:`DialerHandshake`: path ids, the opening frames, and what each answer
  means (a refusal, a flow the listener forgot: :class:`ZombieFlow`).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

from ..config import FlowConfig
from ..errors import HandshakeError, ProtocolError, RendrError, ZombieFlow
from .flow import Flow
from .memory import MemoryBudget
from .types import Mode, Role, State
from .wire import (
    CAP_BUDGET,
    PREFACE,
    CloseCode,
    FrameType,
    Hello,
    Join,
    JoinAck,
    Kind,
    Result,
)

__all__ = ["Decision", "DialerHandshake", "ListenerHandshake", "result_name"]

logger = logging.getLogger("rendr.session")


def result_name(code: int) -> str:
    """The name of a :class:`Result` code (or its number, if unknown)."""
    try:
        return Result(code).name
    except ValueError:
        return f"result {code}"


@dataclass
class Decision:
    """The listener's answer to a carrier's first frame.

    Attributes:
        result: OK or why the carrier is refused.
        reply: the bytes to write back (always: a refused dialer learns why).
        flow: the flow the carrier becomes a path of (None when refused).
        path_id: the path id the dialer chose.
        new: the flow was created by this HELLO (queue it for ``accept()``).
    """

    result: Result
    reply: list[bytes] = field(default_factory=list)
    flow: Flow | None = None
    path_id: int = 0
    new: bool = False

    @property
    def ok(self) -> bool:
        """The carrier is accepted."""
        return self.result == Result.OK


class ListenerHandshake:
    """The listener's side of opening paths, and its table of flows by id.

    Args:
        config: the config of every flow it creates.
    """

    def __init__(self, config: FlowConfig) -> None:
        self.config = config
        self.flows: dict[bytes, Flow] = {}
        self.closed = False
        self.pending = 0
        self._pending_from: dict[str, int] = {}
        self.memory = MemoryBudget(config.listener_memory, config.recv_window_floor)

    def admit(self, source: str) -> bool:
        """A carrier from ``source`` (an IP address) starts its handshake: False if
        the listener-wide or per-source cap on pending handshakes refuses it (close
        it at once).  Call :meth:`handshake_done` when it ends either way."""
        cfg = self.config
        from_source = self._pending_from.get(source, 0)
        if self.pending >= cfg.max_pending or from_source >= cfg.max_pending_per_source:
            logger.info("refused a carrier from %s: %d handshakes pending (%d from it)",
                        source, self.pending, from_source)
            return False
        self.pending += 1
        self._pending_from[source] = from_source + 1
        return True

    def handshake_done(self, source: str) -> None:
        """An admitted carrier's handshake ended (accepted, refused or failed)."""
        self.pending -= 1
        left = self._pending_from.get(source, 1) - 1
        if left:
            self._pending_from[source] = left
        else:
            self._pending_from.pop(source, None)

    def decide(self, ftype: int, body: bytes, now: float, *, queue_full: bool = False
               ) -> Decision:
        """Answer a carrier's first frame (after its preface).

        Args:
            queue_full: the accept queue has no room for another new flow.

        Raises:
            ProtocolError: the first frame is neither HELLO nor JOIN, or is malformed
                (no answer is owed: drop the carrier).
        """
        if ftype == FrameType.HELLO:
            return self.on_hello(Hello.decode(body), now, queue_full=queue_full)
        if ftype == FrameType.JOIN:
            return self.on_join(Join.decode(body))
        raise ProtocolError(f"carrier opened with frame type 0x{ftype:02x}")

    def on_hello(self, hello: Hello, now: float, *, queue_full: bool = False) -> Decision:
        """A new flow: create it, or refuse."""
        cfg = self.config
        if self.closed:
            result = Result.BUSY
        elif hello.mode != Mode.PRIME:
            result = Result.BAD_MODE
        elif hello.kind != Kind.STREAM:
            result = Result.BAD_KIND
        elif hello.flow_id in self.flows:
            result = Result.DUPLICATE_PATH
        elif queue_full or len(self.flows) >= cfg.max_flows:
            result = Result.BUSY
        else:
            result = Result.OK
        # the migration budget: the smaller of the two ends' (both then use it)
        budget_ms = int(cfg.migration_budget * 1000)
        if hello.caps & CAP_BUDGET and hello.budget_ms:
            budget_ms = min(budget_ms, hello.budget_ms)
        flow: Flow | None = None
        window = cfg.recv_window
        if result == Result.OK:
            if budget_ms != int(cfg.migration_budget * 1000):
                cfg = cfg.replace(migration_budget=budget_ms / 1000)
            flow = Flow(role=Role.LISTENER, flow_id=hello.flow_id, mode=Mode(hello.mode),
                        config=cfg, now=now, peer_window=hello.recv_window,
                        memory=self.memory)
            window = flow.advertised_window  # what the memory budget granted
        ack = Hello(hello.flow_id, hello.path_id, hello.mode, hello.kind,
                    hello.caps & CAP_BUDGET, window, result, budget_ms)
        decision = Decision(result, [PREFACE, ack.encode(ack=True)], path_id=hello.path_id)
        if flow is None:
            logger.info("refused flow %s: %s", hello.flow_id.hex()[:8], result.name)
            return decision
        self.flows[hello.flow_id] = flow
        decision.flow = flow
        decision.new = True
        return decision

    def on_join(self, join: Join) -> Decision:
        """Another path for a known flow: accept it, or refuse."""
        flow = self.flows.get(join.flow_id)
        if flow is None:
            result = Result.UNKNOWN_FLOW
        elif flow.state is State.CLOSED:
            result = Result.FLOW_CLOSED
        elif flow.path_id_used(join.path_id):
            result = Result.DUPLICATE_PATH
        elif sum(p.alive for p in flow.paths.values()) >= self.config.max_paths:
            result = Result.TOO_MANY_PATHS
        else:
            result = Result.OK
        decision = Decision(result, [PREFACE, JoinAck(join.flow_id, join.path_id, result).encode()],
                            path_id=join.path_id)
        if result != Result.OK:
            logger.info("refused JOIN of path %d to flow %s: %s", join.path_id,
                        join.flow_id.hex()[:8], result.name)
            return decision
        decision.flow = flow
        return decision

    def knows(self, flow_id: bytes) -> bool:
        """Whether a flow with this id is in the table."""
        return flow_id in self.flows

    def forget(self, flow_id: bytes) -> None:
        """The flow ended: a later JOIN for it gets UNKNOWN_FLOW."""
        self.flows.pop(flow_id, None)


class DialerHandshake:
    """The dialer's side of opening the paths of one flow.

    Args:
        flow_id: the new flow's id (16 random bytes).
        mode: the mode asked for.
        config: the flow's config.
    """

    def __init__(self, flow_id: bytes, mode: Mode, config: FlowConfig) -> None:
        self.flow_id = flow_id
        self.mode = mode
        self.config = config
        self.flow: Flow | None = None
        self._ids = itertools.count(1)

    def next_path_id(self) -> int:
        """A fresh path id (ids are never reused within a flow)."""
        return next(self._ids)

    def hello(self, path_id: int) -> list[bytes]:
        """The opening bytes of the flow's first carrier."""
        cfg = self.config
        hello = Hello(self.flow_id, path_id, self.mode, Kind.STREAM, CAP_BUDGET, cfg.recv_window,
                      budget_ms=int(cfg.migration_budget * 1000))
        return [PREFACE, hello.encode()]

    def on_hello_ack(self, ftype: int, body: bytes, path_id: int, now: float) -> Flow:
        """The listener's answer to HELLO: the new flow (with no path attached yet).

        Raises:
            HandshakeError: refused, or not an answer to this HELLO.
        """
        if ftype != FrameType.HELLO_ACK:
            raise HandshakeError(f"expected HELLO_ACK, got frame type 0x{ftype:02x}")
        ack = Hello.decode(body, ack=True)
        if ack.result != Result.OK:
            raise HandshakeError(f"listener refused the flow: {result_name(ack.result)}")
        if ack.flow_id != self.flow_id or ack.path_id != path_id:
            raise HandshakeError("HELLO_ACK for another flow or path")
        cfg = self.config
        if ack.caps & CAP_BUDGET and ack.budget_ms:  # the agreed budget (an older
            cfg = cfg.replace(migration_budget=ack.budget_ms / 1000)  # listener: ours)
        self.flow = Flow(role=Role.DIALER, flow_id=self.flow_id, mode=Mode(ack.mode),
                         config=cfg, now=now, peer_window=ack.recv_window)
        return self.flow

    def join(self, path_id: int) -> list[bytes]:
        """The opening bytes of another carrier of the flow."""
        return [PREFACE, Join(self.flow_id, path_id).encode()]

    def on_join_ack(self, ftype: int, body: bytes, path_id: int, now: float, *,
                    fatal_if_unknown: bool = True) -> None:
        """The listener's answer to JOIN; returns when the path may be attached.

        A listener that no longer knows the flow (it restarted) while the flow has no
        live path left means the flow is lost: it fails at once with
        :class:`ZombieFlow` instead of waiting out the migration budget.

        Raises:
            HandshakeError: refused (the flow may have failed, see above), or the flow
                ended meanwhile.
        """
        flow = self.flow
        if ftype != FrameType.JOIN_ACK:
            raise HandshakeError(f"expected JOIN_ACK, got frame type 0x{ftype:02x}")
        ack = JoinAck.decode(body)
        if ack.flow_id != self.flow_id or ack.path_id != path_id:
            raise HandshakeError("JOIN_ACK for another flow or path")
        if ack.result == Result.UNKNOWN_FLOW:
            if fatal_if_unknown and flow is not None and not any(
                    p.alive for p in flow.paths.values()):
                flow.fail(ZombieFlow("the listener no longer knows this flow"), now,
                          CloseCode.ZOMBIE)
            raise HandshakeError("listener does not know the flow (UNKNOWN_FLOW)")
        if ack.result != Result.OK:
            raise HandshakeError(f"listener refused the path: {result_name(ack.result)}")
        if flow is None or flow.state is State.CLOSED:
            raise HandshakeError("flow closed")

    def check_room(self) -> None:
        """Before dialing another path on request.

        Raises:
            RendrError: the flow ended, or already has ``max_paths`` live paths.
        """
        flow = self.flow
        if flow is None or flow.state is State.CLOSED:
            raise RendrError("flow is closed")
        live = sum(p.alive for p in flow.paths.values())
        if live >= self.config.max_paths:
            raise RendrError(f"flow already has {live} paths (max_paths)")
