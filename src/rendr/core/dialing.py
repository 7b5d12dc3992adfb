"""The dialer's side of opening the paths of one flow: path ids, the opening frames
(HELLO, JOIN), and what each answer means (see :mod:`rendr.core.session`)."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..config import FlowConfig
from ..errors import HandshakeError, ProtocolError, RendrError, ZombieFlow
from . import crypto
from .flow import Flow
from .opening import MAX_RETRIES, bound, flagged, result_name, u32
from .records import RecordSealer
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
    CloseCode,
    FrameType,
    Hello,
    Join,
    JoinAck,
    Kind,
    Result,
)

__all__ = ["DialerHandshake"]

logger = logging.getLogger("rendr.session")


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
        self._bindings: dict[int, bytes] = {}  # per path: its carrier's channel binding
        self._verified: set[int] = set()  # paths whose carrier's certificate we checked
        self._join_flags: dict[int, int] = {}  # JOINs in flight: the flags they asked
        self.path_auth = False
        """The listener knows authentication-only paths (it echoed CAP_PATH_AUTH)."""

    def next_path_id(self) -> int:
        """A fresh path id (ids are never reused within a flow)."""
        return next(self._ids)

    def bind(self, path_id: int, binding: bytes, verified: bool = False) -> None:
        """The channel binding of path ``path_id``'s carrier (``Carrier.binding``):
        bound into the keys its HELLO_ACK proves, or into its JOIN's proofs;
        ``verified``: this end checked the certificate the binding names
        (``Carrier.verified``): the path may then ask for authentication-only records."""
        if binding:
            self._bindings[path_id] = binding
        else:
            self._bindings.pop(path_id, None)
        if binding and verified:
            self._verified.add(path_id)
        else:
            self._verified.discard(path_id)

    def _trusts(self, path_id: int) -> bool:
        """Whether path ``path_id`` asks for authentication-only records: its carrier
        encrypts, we verified its certificate, and the config lets us (records that
        would be encrypted otherwise)."""
        cfg = self.config
        return (path_id in self._verified and cfg.trust_carrier and cfg.encrypt
                and cfg.records)

    def hello(self, path_id: int, binding: bytes = b"", verified: bool = False
              ) -> list[bytes]:
        """The opening bytes of a carrier that asks for the flow (HELLO); ``binding``
        and ``verified``: see :meth:`bind`.

        Several carriers may each send one (each with its own path id and key share):
        the listener creates the flow for the first to arrive and refuses the others
        (``DUPLICATE_PATH``); the first accepted HELLO_ACK opens the flow here.
        """
        self.bind(path_id, binding, verified)
        cfg = self.config
        eph, share = crypto.ephemeral()
        flags = ((KEY_ENCRYPT if cfg.encrypt else 0) | (KEY_RECORDS if cfg.records else 0)
                 | (KEY_PSK if self.psk else 0)
                 | (KEY_STATIC if self.server_key else 0)
                 | (KEY_PATH_AUTH if self._trusts(path_id) else 0))
        caps = CAP_BUDGET | CAP_KEYS | (CAP_PATH_AUTH if cfg.trust_carrier else 0)
        hello = Hello(self.flow_id, path_id, self.mode, self.kind, caps,
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
        asked = bool(self._hellos[ack.path_id][1].key_flags & KEY_PATH_AUTH)
        keys, latest = self._keys_from(ack, bytes(body), ack.path_id)
        auth_only = bool(ack.key_flags & KEY_PATH_AUTH)
        if auth_only and not (asked and self._trusts(ack.path_id)):
            raise HandshakeError("listener agreed to authentication-only records the "
                                 "HELLO did not ask for")
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
        self.path_auth = bool(ack.caps & CAP_PATH_AUTH)
        if auth_only:
            self.flow.auth_only.add(ack.path_id)
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
        binding = bound(self._bindings.get(path_id, b""))
        for hello_body in reversed(bodies):
            transcript = crypto.transcript_hash(hello_body, body[:-AUTH_LEN], *binding)
            keys = crypto.derive(ee, es, self.psk, transcript)
            if crypto.verify_mac(keys.confirm, ack.auth, b"hello-ack", transcript):
                break
        else:
            raise HandshakeError("the listener could not prove the flow's keys (wrong psk "
                                 "or server key, or someone in the middle"
                                 + (": the QUIC certificate it holds is not the one this "
                                    "end saw" if binding else "") + ")")
        self._hellos.clear()  # forward secrecy: no ephemeral is needed any more
        return keys, hello_body is bodies[-1]

    def join(self, path_id: int, binding: bytes = b"", verified: bool = False
             ) -> list[bytes]:
        """The opening bytes of another carrier of the flow (a JOIN proving the keys);
        ``binding`` and ``verified``: see :meth:`bind`.

        Raises:
            RendrError: there is no flow (no HELLO_ACK yet).
        """
        keys = self._keys()
        self.bind(path_id, binding, verified)
        nonce = os.urandom(16)
        self._join_nonces[path_id] = nonce
        flags = PATH_AUTH_ONLY if self.path_auth and self._trusts(path_id) else 0
        self._join_flags[path_id] = flags
        tag = crypto.mac(keys.join, b"join", self.flow_id, u32(path_id), nonce,
                         *flagged(flags), *bound(binding))
        return [PREFACE, Join(self.flow_id, path_id, nonce, tag, flags).encode()]

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
        asked = self._join_flags.pop(path_id, 0)
        proven = bool(ack.nonce) and crypto.verify_mac(
            self._keys().join, ack.mac, b"join-ack", self.flow_id, u32(path_id),
            bytes([ack.result]), nonce, ack.nonce, *flagged(ack.flags),
            *bound(self._bindings.get(path_id, b"")))
        if (ack.nonce or ack.result == Result.OK) and not proven:
            raise HandshakeError("JOIN_ACK does not prove the flow's keys")
        if ack.flags & ~asked:
            raise HandshakeError(f"JOIN_ACK agreed to flags 0x{ack.flags:02x} the JOIN "
                                 "did not ask for")
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
        if ack.flags & PATH_AUTH_ONLY:
            flow.auth_only.add(path_id)

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
