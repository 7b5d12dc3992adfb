"""A dialer's side of the wire protocol without asyncio, for tests and benchmarks that
speak it over raw sockets (attacks, fuzzing): the keyed HELLO and JOIN, and sealing
and opening the records of each path.  The crypto is the engine's own
(:class:`~rendr.core.session.DialerHandshake`, :mod:`rendr.core.records`)."""

from __future__ import annotations

import os

from ..config import FlowConfig
from ..core.records import RecordOpener, RecordSealer
from ..core.session import DialerHandshake
from ..core.types import Mode
from ..core.wire import FrameType

__all__ = ["RawDialer"]


class RawDialer:
    """One flow's dialer end as bytes in, bytes out.

    Usage: send :meth:`hello`; give the HELLO_ACK body to :meth:`on_hello_ack`; then
    :meth:`seal` frames to send on a path and :meth:`open` what arrives on it;
    :meth:`join` opens another path.
    """

    def __init__(self, flow_id: bytes | None = None, config: FlowConfig | None = None, *,
                 psk: bytes | None = None, server_key: bytes | None = None) -> None:
        self.flow_id = flow_id or os.urandom(16)
        self.config = config or FlowConfig()
        self.handshake = DialerHandshake(self.flow_id, Mode.PRIME, self.config, psk=psk,
                                         server_key=server_key)
        self._sealers: dict[int, RecordSealer] = {}
        self._openers: dict[int, RecordOpener] = {}

    def hello(self, path_id: int = 1, binding: bytes = b"", verified: bool = False
              ) -> bytes:
        """PREFACE + HELLO (with a fresh key share; ``binding`` and ``verified``: the
        carrier's, see :meth:`DialerHandshake.bind`)."""
        return b"".join(self.handshake.hello(path_id, binding, verified))

    def on_hello_ack(self, body: bytes, path_id: int = 1) -> None:
        """The listener's HELLO_ACK body: derive the keys (HandshakeError if refused)."""
        self.handshake.on_hello_ack(FrameType.HELLO_ACK, body, path_id, 0.0)

    def join(self, path_id: int, binding: bytes = b"", verified: bool = False) -> bytes:
        """PREFACE + a keyed JOIN for ``path_id`` (``binding``, ``verified``: as
        :meth:`hello`)."""
        return b"".join(self.handshake.join(path_id, binding, verified))

    def seal(self, frames: bytes, path_id: int = 1) -> bytes:
        """``frames`` as the next records of ``path_id`` (as they are, if the flow
        does not use records)."""
        if not self._records():
            return frames
        sealer = self._sealers.get(path_id)
        if sealer is None:
            sealer = self._sealers[path_id] = RecordSealer(*self._key(path_id, send=True))
        return b"".join(bytes(b) for b in sealer.seal([frames]))

    def open(self, data: bytes, path_id: int = 1) -> bytes:
        """The plaintext of the records completed by ``data`` on ``path_id``
        (RecordError if one fails authentication; ``data`` itself without records)."""
        if not self._records():
            return data
        opener = self._openers.get(path_id)
        if opener is None:
            opener = self._openers[path_id] = RecordOpener(*self._key(path_id, send=False))
        return b"".join(bytes(p) for p in opener.feed(data))

    def _records(self) -> bool:
        flow = self.handshake.flow
        return flow is not None and flow.records

    def _key(self, path_id: int, send: bool) -> tuple[bytes, int, bool]:
        flow = self.handshake.flow
        if flow is None or flow.keys is None:
            raise RuntimeError("no HELLO_ACK yet")
        encrypt = flow.encrypt and path_id not in flow.auth_only
        return (flow.keys.d2l if send else flow.keys.l2d), path_id, encrypt
