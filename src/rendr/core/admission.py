"""The listener's side of opening paths: HELLO -> a new flow or a refusal, JOIN -> the
flow to attach the path to or a refusal; the table of flows by id, the caps on flows and
pending handshakes, and the HELLO flood defence (see :mod:`rendr.core.session`)."""

from __future__ import annotations

import dataclasses
import logging
import os

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..config import FlowConfig
from ..errors import ProtocolError
from . import crypto
from .cookie import CookieJar
from .fairness import LoadMeter, SourceBuckets, source_key
from .flow import Flow
from .memory import MemoryBudget
from .opening import Decision, bound, flagged, u32
from .types import Mode, Role, State
from .wire import (
    AUTH_LEN,
    CAP_BUDGET,
    CAP_COOKIE,
    CAP_KEYS,
    CAP_PATH_AUTH,
    KEY_ENCRYPT,
    KEY_PATH_AUTH,
    KEY_PSK,
    KEY_RECORDS,
    KEY_STATIC,
    PATH_AUTH_ONLY,
    PREFACE,
    FrameType,
    Hello,
    Join,
    JoinAck,
    Kind,
    Result,
)

__all__ = ["ListenerHandshake"]

logger = logging.getLogger("rendr.session")


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
               source: str = "", binding: bytes = b"") -> Decision:
        """Answer a carrier's first frame (after its preface).

        Args:
            queue_full: the accept queue has no room for another new flow.
            source: where the carrier comes from (its IP address; a datagram carrier
                adds the port): what a cookie is bound to and limits count per.
            binding: the carrier's channel binding (``Carrier.binding``), bound into
                the HELLO's keys or the JOIN's proof (empty: none).

        Raises:
            ProtocolError: the first frame is neither HELLO nor JOIN, or is malformed
                (no answer is owed: drop the carrier).
        """
        if ftype == FrameType.HELLO:
            return self.on_hello(Hello.decode(body), now, queue_full=queue_full,
                                 body=bytes(body), source=source, binding=binding)
        if ftype == FrameType.JOIN:
            return self.on_join(Join.decode(body), binding, now)
        raise ProtocolError(f"carrier opened with frame type 0x{ftype:02x}")

    def on_hello(self, hello: Hello, now: float, *, queue_full: bool = False,
                 body: bytes | None = None, source: str = "",
                 binding: bytes = b"") -> Decision:
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
            ack = self._key_exchange(hello, body, ack, flow, *secrets, binding=binding)
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
                      ee: bytes, es: bytes | None, *, binding: bytes = b"") -> Hello:
        """Derive the flow's keys; the HELLO_ACK with our share and its confirmation."""
        encrypt = bool(hello.key_flags & KEY_ENCRYPT) or self.config.encrypt
        records = bool(hello.key_flags & KEY_RECORDS) or self.config.records
        path_auth = bool(hello.caps & CAP_PATH_AUTH) and self.config.trust_carrier
        # authentication-only records only where the carrier has a channel binding
        # (which the transcript then covers with the flag): never on TCP or udpflow
        auth_only = (path_auth and bool(hello.key_flags & KEY_PATH_AUTH) and bool(binding)
                     and encrypt and records)
        flags = ((KEY_ENCRYPT if encrypt else 0) | (KEY_RECORDS if records else 0)
                 | (hello.key_flags & (KEY_PSK | KEY_STATIC))
                 | (KEY_PATH_AUTH if auth_only else 0))
        caps = ack.caps | CAP_KEYS | (CAP_PATH_AUTH if path_auth else 0)
        ack = dataclasses.replace(ack, caps=caps, key_share=share, key_flags=flags)
        transcript = crypto.transcript_hash(body, ack.encode_body(ack=True)[:-AUTH_LEN],
                                            *bound(binding))
        keys = crypto.derive(ee, es, self.psk, transcript)
        flow.keys = keys
        flow.encrypt = encrypt
        flow.records = records
        if auth_only:
            flow.auth_only.add(hello.path_id)
        return dataclasses.replace(ack, auth=crypto.mac(keys.confirm, b"hello-ack",
                                                         transcript))

    def on_join(self, join: Join, binding: bytes = b"", now: float = 0.0) -> Decision:
        """Another path for a known flow: accept it, or refuse (``binding``: the
        carrier's channel binding, which the JOIN's proof must cover).  An accepted
        JOIN proved the dialer's keys: a flow still waiting for its first record is
        confirmed by it."""
        flow = self.flows.get(join.flow_id)
        keys = flow.keys if flow is not None else None
        if flow is None:
            result = Result.UNKNOWN_FLOW
        elif keys is None or not join.nonce or not crypto.verify_mac(
                keys.join, join.mac, b"join", join.flow_id, u32(join.path_id), join.nonce,
                *flagged(join.flags), *bound(binding)):
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
        # authentication-only records: asked for (and proven, above) on a carrier with a
        # channel binding, on a flow whose records would be encrypted otherwise
        agreed = (PATH_AUTH_ONLY if flow is not None and result == Result.OK
                  and join.flags & PATH_AUTH_ONLY and binding and flow.encrypt
                  and flow.records and self.config.trust_carrier else 0)
        if keys is not None and result != Result.AUTH_FAILED:
            nonce = os.urandom(16)
            ack = JoinAck(join.flow_id, join.path_id, result, nonce, crypto.mac(
                keys.join, b"join-ack", join.flow_id, u32(join.path_id), bytes([result]),
                join.nonce, nonce, *flagged(agreed), *bound(binding)), agreed)
        decision = Decision(result, [PREFACE, ack.encode()], path_id=join.path_id)
        if result != Result.OK:
            logger.info("refused JOIN of path %d to flow %s: %s", join.path_id,
                        join.flow_id.hex()[:8], result.name)
            return decision
        if flow is not None:
            if agreed:
                flow.auth_only.add(join.path_id)
            if not flow.confirmed:
                flow.proven(join.path_id, now)
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
