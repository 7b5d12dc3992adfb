"""Opening paths, sans-I/O: what to send first, and whether to accept what came.

Every carrier opens with ``PREFACE + HELLO`` (a new flow) or ``PREFACE + JOIN``
(another path of a flow), written by the dialer; the listener answers with
``HELLO_ACK`` or ``JOIN_ACK`` carrying a :class:`~rendr.core.wire.Result`.  The
two classes here make every decision of that exchange and own the flow table;
the asyncio front-end only moves bytes and waits (websockets' ``ServerProtocol``
and ``ClientProtocol`` are the model).

- :class:`ListenerHandshake`: HELLO -> a new :class:`Flow` or a refusal; JOIN ->
  the flow to attach the path to, or a refusal (unknown flow, closed flow,
  duplicate path, too many paths).  Caps on flows and pending handshakes belong here,
  and the HELLO flood defence: under load a stateless RETRY cookie
  (:mod:`rendr.core.cookie`) and key exchanges rationed per source
  (:mod:`rendr.core.fairness`).
- :class:`DialerHandshake`: path ids, the opening frames, and what each answer
  means (a refusal, a flow the listener forgot: :class:`ZombieFlow`).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..config import FlowConfig
from ..errors import HandshakeError, ProtocolError, RendrError, ZombieFlow
from . import crypto
from .cookie import CookieJar
from .fairness import LoadMeter, SourceBuckets, source_key
from .flow import Flow
from .memory import MemoryBudget
from .records import RecordSealer
from .types import Mode, Role, State
from .wire import (
    AUTH_LEN,
    CAP_BUDGET,
    CAP_COOKIE,
    CAP_KEYS,
    KEY_ENCRYPT,
    KEY_PSK,
    KEY_RECORDS,
    KEY_STATIC,
    PREFACE,
    CloseCode,
    FrameType,
    Hello,
    Join,
    JoinAck,
    Kind,
    Result,
)

__all__ = ["MAX_RETRIES", "Decision", "DialerHandshake", "ListenerHandshake", "result_name"]

MAX_RETRIES = 2
"""RETRY answers a dialer follows for one HELLO (a cookie can expire in transit)."""

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
        psk: a pre-shared key every dialer must hold (its HELLO carries a MAC).
        static_key: the listener's static X25519 key, for dialers that pin its
            public half (``server_key=``).

    Attributes:
        auth_failures: HELLOs and JOINs refused AUTH_FAILED.
        retries: HELLOs answered RETRY (under load, without a valid cookie).
        rationed: HELLOs answered BUSY because their source had no token left.
    """

    def __init__(self, config: FlowConfig, *, psk: bytes | None = None,
                 static_key: X25519PrivateKey | None = None) -> None:
        self.config = config
        self.psk = psk
        self.static_key = static_key
        self.auth_failures = 0
        self.flows: dict[bytes, Flow] = {}
        self.closed = False
        self.pending = 0
        self._pending_from: dict[str, int] = {}
        self.memory = MemoryBudget(config.listener_memory, config.recv_window_floor)
        self.retries = 0
        self.rationed = 0
        self.meter = LoadMeter()
        self.cookies = CookieJar(config.cookie_lifetime)
        self.buckets = SourceBuckets(config.source_hello_rate, config.source_hello_burst)
        self._hello_key = crypto.hello_key(psk) if psk is not None else None
        self._flows_from: dict[str, int] = {}
        self._source_of: dict[bytes, str] = {}
        # the HELLO_ACK of each flow whose dialer has not confirmed it yet (see on_hello)
        self._answers: dict[bytes, bytes] = {}

    def under_load(self, now: float) -> bool:
        """Whether HELLOs need a cookie and key exchanges are rationed per source:
        HELLOs per second at or above ``hello_load_rate``, or pending handshakes or
        flows at ``hello_load_pending`` of their caps."""
        cfg = self.config
        if cfg.hello_load_rate and self.meter.rate(now) >= cfg.hello_load_rate:
            return True
        frac = cfg.hello_load_pending
        return bool(frac) and (self.pending >= frac * cfg.max_pending
                               or len(self.flows) >= frac * cfg.max_flows)

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

    def decide(self, ftype: int, body: bytes, now: float, *, queue_full: bool = False,
               source: str = "") -> Decision:
        """Answer a carrier's first frame (after its preface).

        Args:
            queue_full: the accept queue has no room for another new flow.
            source: where the carrier comes from (its IP address; a datagram carrier
                adds the port): what a cookie is bound to and limits count per.

        Raises:
            ProtocolError: the first frame is neither HELLO nor JOIN, or is malformed
                (no answer is owed: drop the carrier).
        """
        if ftype == FrameType.HELLO:
            return self.on_hello(Hello.decode(body), now, queue_full=queue_full,
                                 body=bytes(body), source=source)
        if ftype == FrameType.JOIN:
            return self.on_join(Join.decode(body))
        raise ProtocolError(f"carrier opened with frame type 0x{ftype:02x}")

    def on_hello(self, hello: Hello, now: float, *, queue_full: bool = False,
                 body: bytes | None = None, source: str = "") -> Decision:
        """A new flow: create it, or refuse (or, under load, ask for a cookie).
        ``body`` is the HELLO as received (its transcript; re-encoded from ``hello``
        when None); ``source`` as for :meth:`decide`."""
        cfg = self.config
        if body is None:
            body = hello.encode_body()
        self.meter.hit(now)
        loaded = self.under_load(now)
        key = source_key(source, cfg.source_prefix_v4, cfg.source_prefix_v6)
        if not self._hello_authentic(hello, body):
            self.auth_failures += 1
            result = Result.AUTH_FAILED
        elif self.closed:
            result = Result.BUSY
        elif hello.mode not in (Mode.PRIME, Mode.RACE, Mode.BOND):
            result = Result.BAD_MODE
        elif hello.kind not in (Kind.STREAM, Kind.PACKET):
            result = Result.BAD_KIND
        elif hello.flow_id in self.flows:
            answered = self._answers.get(hello.flow_id)
            if answered is not None and not self.flows[hello.flow_id].confirmed:
                # the dialer sent HELLO on several carriers and our answer to the one
                # that created the flow may be lost: give this carrier that same
                # answer (public bytes: no state, no crypto), then close it
                return Decision(Result.DUPLICATE_PATH, [PREFACE, answered],
                                path_id=hello.path_id)
            result = Result.DUPLICATE_PATH
        elif (queue_full or len(self.flows) >= cfg.max_flows
              or 0 < cfg.max_flows_per_source <= self._flows_from.get(key, 0)):
            result = Result.BUSY
        elif loaded and not self.cookies.verify(hello.cookie, source.encode(), hello.flow_id,
                                                hello.key_share, now):
            return self._retry(hello, source, now)  # the cheap refusals came first
        elif loaded and cfg.source_hello_rate and not self.buckets.take(key, now):
            self.rationed += 1
            result = Result.BUSY
        else:
            result = Result.OK
        secrets = self._exchange(hello) if result == Result.OK else None
        if result == Result.OK and secrets is None:
            self.auth_failures += 1  # a low-order share: no shared secret
            result = Result.AUTH_FAILED
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
                        memory=self.memory, kind=Kind(hello.kind))
            window = flow.advertised_window  # what the memory budget granted
        ack = Hello(hello.flow_id, hello.path_id, hello.mode, hello.kind,
                    hello.caps & CAP_BUDGET, window, result, budget_ms)
        if flow is not None and secrets is not None:
            ack = self._key_exchange(hello, body, ack, flow, *secrets)
        decision = Decision(result, [PREFACE, ack.encode(ack=True)], path_id=hello.path_id)
        if flow is None:
            logger.info("refused flow %s: %s", hello.flow_id.hex()[:8], result.name)
            return decision
        self.flows[hello.flow_id] = flow
        self._answers[hello.flow_id] = decision.reply[1]
        self._source_of[hello.flow_id] = key
        self._flows_from[key] = self._flows_from.get(key, 0) + 1
        decision.flow = flow
        decision.new = True
        return decision

    def _hello_authentic(self, hello: Hello, body: bytes) -> bool:
        """A v1 HELLO carries a key share, the PSK's MAC if this listener has one, and
        asks for the static key only if there is one."""
        if not hello.caps & CAP_KEYS or len(hello.key_share) != 32:
            return False
        if hello.key_flags & KEY_STATIC and self.static_key is None:
            return False
        if self._hello_key is None:
            return not hello.key_flags & KEY_PSK
        return bool(hello.key_flags & KEY_PSK) and crypto.verify_mac(
            self._hello_key, hello.auth, body[:-AUTH_LEN])

    def _retry(self, hello: Hello, source: str, now: float) -> Decision:
        """Under load: RETRY with a cookie; no key exchange, nothing kept."""
        self.retries += 1
        cookie = self.cookies.make(source.encode(), hello.flow_id, hello.key_share, now)
        ack = Hello(hello.flow_id, hello.path_id, hello.mode, hello.kind, CAP_COOKIE, 0,
                    Result.RETRY, cookie=cookie)
        return Decision(Result.RETRY, [PREFACE, ack.encode(ack=True)], path_id=hello.path_id)

    def _exchange(self, hello: Hello) -> tuple[bytes, bytes, bytes | None] | None:
        """Our ephemeral share and the shared secrets (ee, es), or None when the
        dialer's share is a low-order point (X25519 refuses it: no shared secret)."""
        priv, share = crypto.ephemeral()
        try:
            ee = crypto.dh(priv, hello.key_share)
            es = (crypto.dh(self.static_key, hello.key_share)
                  if hello.key_flags & KEY_STATIC and self.static_key is not None else None)
        except ValueError:
            return None
        return share, ee, es

    def _key_exchange(self, hello: Hello, body: bytes, ack: Hello, flow: Flow, share: bytes,
                      ee: bytes, es: bytes | None) -> Hello:
        """Derive the flow's keys; the HELLO_ACK with our share and its confirmation."""
        encrypt = bool(hello.key_flags & KEY_ENCRYPT) or self.config.encrypt
        records = bool(hello.key_flags & KEY_RECORDS) or self.config.records
        flags = ((KEY_ENCRYPT if encrypt else 0) | (KEY_RECORDS if records else 0)
                 | (hello.key_flags & (KEY_PSK | KEY_STATIC)))
        ack = dataclasses.replace(ack, caps=ack.caps | CAP_KEYS, key_share=share,
                                  key_flags=flags)
        transcript = crypto.transcript_hash(body, ack.encode_body(ack=True)[:-AUTH_LEN])
        keys = crypto.derive(ee, es, self.psk, transcript)
        flow.keys = keys
        flow.encrypt = encrypt
        flow.records = records
        return dataclasses.replace(ack, auth=crypto.mac(keys.confirm, b"hello-ack",
                                                         transcript))

    def on_join(self, join: Join) -> Decision:
        """Another path for a known flow: accept it, or refuse."""
        flow = self.flows.get(join.flow_id)
        keys = flow.keys if flow is not None else None
        if flow is None:
            result = Result.UNKNOWN_FLOW
        elif keys is None or not join.nonce or not crypto.verify_mac(
                keys.join, join.mac, b"join", join.flow_id, _u32(join.path_id), join.nonce):
            self.auth_failures += 1
            result = Result.AUTH_FAILED
        elif flow.state is State.CLOSED:
            result = Result.FLOW_CLOSED
        elif flow.path_id_used(join.path_id):
            result = Result.DUPLICATE_PATH
        elif sum(p.alive for p in flow.paths.values()) >= self.config.max_paths:
            result = Result.TOO_MANY_PATHS
        else:
            result = Result.OK
        ack = JoinAck(join.flow_id, join.path_id, result)
        if keys is not None and result != Result.AUTH_FAILED:
            nonce = os.urandom(16)
            ack = JoinAck(join.flow_id, join.path_id, result, nonce, crypto.mac(
                keys.join, b"join-ack", join.flow_id, _u32(join.path_id), bytes([result]),
                join.nonce, nonce))
        decision = Decision(result, [PREFACE, ack.encode()], path_id=join.path_id)
        if result != Result.OK:
            logger.info("refused JOIN of path %d to flow %s: %s", join.path_id,
                        join.flow_id.hex()[:8], result.name)
            return decision
        decision.flow = flow
        return decision

    def knows(self, flow_id: bytes) -> bool:
        """Whether a flow with this id is in the table."""
        return flow_id in self.flows

    def confirmed(self, flow_id: bytes) -> None:
        """The flow's dialer proved its keys: its HELLO_ACK is not needed again."""
        self._answers.pop(flow_id, None)

    def forget(self, flow_id: bytes) -> None:
        """The flow ended: a later JOIN for it gets UNKNOWN_FLOW."""
        self.flows.pop(flow_id, None)
        self._answers.pop(flow_id, None)
        key = self._source_of.pop(flow_id, None)
        if key is not None:
            left = self._flows_from.get(key, 1) - 1
            if left:
                self._flows_from[key] = left
            else:
                self._flows_from.pop(key, None)


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


class DialerHandshake:
    """The dialer's side of opening the paths of one flow.

    Args:
        flow_id: the new flow's id (16 random bytes).
        mode: the mode asked for.
        config: the flow's config.
        psk: a pre-shared key the listener also holds.
        server_key: the listener's pinned static public key (32 bytes).
        kind: a byte stream (``Kind.STREAM``) or datagrams (``Kind.PACKET``).
    """

    def __init__(self, flow_id: bytes, mode: Mode, config: FlowConfig, *,
                 psk: bytes | None = None, server_key: bytes | None = None,
                 kind: Kind = Kind.STREAM) -> None:
        self.flow_id = flow_id
        self.mode = mode
        self.kind = kind
        self.config = config
        self.psk = psk
        self.server_key = server_key
        self.flow: Flow | None = None
        self._ids = itertools.count(1)
        # the HELLOs in flight, by path id: their ephemeral key, the HELLO and its body
        # (dial() may send HELLO on several carriers; the first HELLO_ACK decides)
        # per path: the ephemeral, the last HELLO, and the bodies of every HELLO sent
        # (the first and its cookie re-send: the answer may be to either, see _keys_from)
        self._hellos: dict[int, tuple[X25519PrivateKey, Hello, list[bytes]]] = {}
        self._retries = 0
        self.opened_by = 0
        """The path id of the HELLO whose answer opened the flow over the carrier that
        HELLO went on (0: not open, or the listener attached a carrier we left)."""
        self._join_nonces: dict[int, bytes] = {}

    def next_path_id(self) -> int:
        """A fresh path id (ids are never reused within a flow)."""
        return next(self._ids)

    def hello(self, path_id: int) -> list[bytes]:
        """The opening bytes of a carrier that asks for the flow (HELLO).

        Several carriers may each send one (each with its own path id and key share):
        the listener creates the flow for the first to arrive and refuses the others
        (``DUPLICATE_PATH``); the first accepted HELLO_ACK opens the flow here.
        """
        cfg = self.config
        eph, share = crypto.ephemeral()
        flags = ((KEY_ENCRYPT if cfg.encrypt else 0) | (KEY_RECORDS if cfg.records else 0)
                 | (KEY_PSK if self.psk else 0)
                 | (KEY_STATIC if self.server_key else 0))
        hello = Hello(self.flow_id, path_id, self.mode, self.kind, CAP_BUDGET | CAP_KEYS,
                      cfg.recv_window, budget_ms=int(cfg.migration_budget * 1000),
                      key_share=share, key_flags=flags)
        return self._send_hello(eph, hello)

    def _send_hello(self, eph: X25519PrivateKey, hello: Hello) -> list[bytes]:
        if self.psk:
            hello = dataclasses.replace(hello, auth=crypto.mac(
                crypto.hello_key(self.psk), hello.encode_body()[:-AUTH_LEN]))
        sent = self._hellos.get(hello.path_id)
        bodies = sent[2] if sent is not None else []
        self._hellos[hello.path_id] = (eph, hello, [*bodies, hello.encode_body()])
        return [PREFACE, hello.encode()]

    def retry_hello(self, ftype: int, body: bytes, path_id: int) -> list[bytes] | None:
        """If the listener's answer is a RETRY (it is under load), the opening bytes
        to send on a fresh carrier: the same HELLO (flow id, key share) with the
        cookie.  None for any other answer (give it to :meth:`on_hello_ack`).

        Raises:
            HandshakeError: a RETRY for another flow or path, without a cookie, or
                more than :data:`MAX_RETRIES` in a row.
        """
        if ftype != FrameType.HELLO_ACK:
            return None
        try:
            ack = Hello.decode(body, ack=True)
        except ProtocolError:
            return None
        if ack.result != Result.RETRY:
            return None
        if ack.flow_id != self.flow_id or ack.path_id != path_id or not ack.cookie:
            raise HandshakeError("malformed RETRY (another flow or path, or no cookie)")
        sent = self._hellos.get(path_id)
        if sent is None or self.flow is not None:
            raise HandshakeError(f"RETRY for path {path_id}, which has no HELLO in flight")
        if self._retries >= MAX_RETRIES:
            raise HandshakeError(f"listener asked to retry {self._retries + 1} times")
        self._retries += 1
        eph, hello, _ = sent
        return self._send_hello(eph, dataclasses.replace(
            hello, caps=hello.caps | CAP_COOKIE, cookie=ack.cookie, auth=bytes(AUTH_LEN)))

    def on_hello_ack(self, ftype: int, body: bytes, path_id: int, now: float) -> Flow:
        """The listener's answer to HELLO: the new flow (with no path attached yet).

        Raises:
            HandshakeError: refused, or not an answer to this HELLO, or the flow is
                already open (another HELLO_ACK came first).
        """
        if self.flow is not None:
            raise HandshakeError("the flow is already open (another HELLO_ACK came first)")
        if ftype != FrameType.HELLO_ACK:
            raise HandshakeError(f"expected HELLO_ACK, got frame type 0x{ftype:02x}")
        try:
            ack = Hello.decode(body, ack=True)
        except ProtocolError as exc:
            raise HandshakeError(f"malformed HELLO_ACK: {exc}") from None
        if ack.result != Result.OK:
            self._hellos.pop(path_id, None)
            raise HandshakeError(f"listener refused the flow: {result_name(ack.result)}")
        if ack.flow_id != self.flow_id or ack.path_id not in self._hellos:
            raise HandshakeError("HELLO_ACK for another flow or path")
        # (a HELLO_ACK for another of our HELLOs in flight: the listener's answer to
        # that one, repeated on this carrier because the first may have been lost)
        if ack.kind != self.kind:
            raise HandshakeError(f"listener granted kind {ack.kind}, we asked for "
                                 f"{int(self.kind)}")
        if ack.mode != self.mode:
            raise HandshakeError(f"listener granted mode {ack.mode}, we asked for "
                                 f"{int(self.mode)}")
        keys, latest = self._keys_from(ack, bytes(body), ack.path_id)
        # an answer to an earlier HELLO of the path (before a RETRY) attached the
        # carrier that HELLO went on, which we left: none of ours is attached
        self.opened_by = ack.path_id if latest else 0
        cfg = self.config
        if ack.caps & CAP_BUDGET and ack.budget_ms:  # the agreed budget: never more than
            budget = min(ack.budget_ms / 1000, cfg.migration_budget)  # ours
            if budget != cfg.migration_budget:
                cfg = cfg.replace(migration_budget=budget)
        self.flow = Flow(role=Role.DIALER, flow_id=self.flow_id, mode=Mode(ack.mode),
                         config=cfg, now=now, peer_window=ack.recv_window, keys=keys,
                         encrypt=bool(ack.key_flags & KEY_ENCRYPT),
                         records=bool(ack.key_flags & KEY_RECORDS), kind=self.kind)
        return self.flow

    def _keys_from(self, ack: Hello, body: bytes,
                   path_id: int) -> tuple[crypto.FlowKeys, bool]:
        """The flow's keys, once the HELLO_ACK proved the listener derived them too,
        and whether it answers the path's latest HELLO (not one before a RETRY).

        Raises:
            HandshakeError: no key share, or its confirmation does not check out
                (wrong psk or server key, or someone in the middle).
        """
        sent = self._hellos.get(path_id)
        if sent is None:
            raise HandshakeError(f"HELLO_ACK for path {path_id}, which sent no HELLO")
        eph, _, bodies = sent
        if not ack.caps & CAP_KEYS or len(ack.key_share) != 32:
            raise HandshakeError("HELLO_ACK without a key share")
        try:
            ee = crypto.dh(eph, ack.key_share)
            es = crypto.dh(eph, self.server_key) if self.server_key else None
        except ValueError as exc:
            raise HandshakeError(f"bad key share: {exc}") from None
        # The answer may be to the first HELLO although its cookie re-send came last:
        # a late copy of the first can open the flow once the listener's load has
        # passed, and the listener then gives the re-send that same stored answer.
        # Both HELLOs are ours and carry our ephemeral; either transcript proves keys.
        for hello_body in reversed(bodies):
            transcript = crypto.transcript_hash(hello_body, body[:-AUTH_LEN])
            keys = crypto.derive(ee, es, self.psk, transcript)
            if crypto.verify_mac(keys.confirm, ack.auth, b"hello-ack", transcript):
                break
        else:
            raise HandshakeError("the listener could not prove the flow's keys (wrong psk "
                                 "or server key, or someone in the middle)")
        self._hellos.clear()  # forward secrecy: no ephemeral is needed any more
        return keys, hello_body is bodies[-1]

    def join(self, path_id: int) -> list[bytes]:
        """The opening bytes of another carrier of the flow (a JOIN proving the keys).

        Raises:
            RendrError: there is no flow (no HELLO_ACK yet).
        """
        keys = self._keys()
        nonce = os.urandom(16)
        self._join_nonces[path_id] = nonce
        tag = crypto.mac(keys.join, b"join", self.flow_id, _u32(path_id), nonce)
        return [PREFACE, Join(self.flow_id, path_id, nonce, tag).encode()]

    def _keys(self) -> crypto.FlowKeys:
        flow = self.flow
        if flow is None or flow.keys is None:
            raise RendrError("no flow keys yet")
        return flow.keys

    def seal(self, path_id: int, frames: list[bytes]) -> list[bytes | memoryview]:
        """``frames`` as the first bytes of path ``path_id`` (the farewell CLOSE): in
        records if the flow uses them."""
        flow = self.flow
        if flow is None or not flow.records:
            return list(frames)
        return RecordSealer(self._keys().d2l, path_id, flow.encrypt).seal(frames)

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
        try:
            ack = JoinAck.decode(body)
        except ProtocolError as exc:
            raise HandshakeError(f"malformed JOIN_ACK: {exc}") from None
        if ack.flow_id != self.flow_id or ack.path_id != path_id:
            raise HandshakeError("JOIN_ACK for another flow or path")
        nonce = self._join_nonces.pop(path_id, b"")
        proven = bool(ack.nonce) and crypto.verify_mac(
            self._keys().join, ack.mac, b"join-ack", self.flow_id, _u32(path_id),
            bytes([ack.result]), nonce, ack.nonce)
        if (ack.nonce or ack.result == Result.OK) and not proven:
            raise HandshakeError("JOIN_ACK does not prove the flow's keys")
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
