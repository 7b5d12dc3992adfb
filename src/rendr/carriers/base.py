"""The carrier interface: one connected byte stream that carries one path.

A carrier moves bytes; it knows nothing of frames or flows.  It reports what
happens to a *sink* (the flow driver, or a handshake collector before that):
bytes received, write backpressure, and loss.  Loss is only ever reported —
never raised — and the engine decides what it means (a dead path, not an EOF).

Built-in carriers: ``"tcp"`` (:mod:`rendr.carriers.tcp`), for dialing and listening.
One registry holds, per transport name, its dial factory, its listen factory (if
it can listen) and its kind (stream or datagram).  Any connected asyncio
stream pair can be a carrier through :class:`~rendr.carriers.streams.StreamsCarrier`,
so an embedder can run paths over TLS, an SSH channel or a relay by registering a
factory with :func:`register_transport`.
"""

from __future__ import annotations

import abc
import asyncio
import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, Union

__all__ = [
    "READ_BATCH",
    "Carrier",
    "CarrierKind",
    "CarrierServer",
    "CarrierSink",
    "ListenFactory",
    "Transport",
    "TransportFactory",
    "get_listen_factory",
    "get_transport",
    "register_transport",
    "registered_transports",
    "transport_kind",
]

Buffer = bytes | memoryview


class ReadBatch:
    """Work deferred to the end of a datagram carrier's read batch.

    A datagram carrier reads every datagram waiting on its socket in one wake-up
    (:meth:`begin` ... :meth:`end`).  A sink that would flush after each one (send
    an ACK, re-arm its timer, send what the window allows now) :meth:`defer` (delays) the
    flush instead: it runs once, when the batch ends, and acknowledges and answers
    everything read (QUIC stacks do the same with each ``recvmmsg`` or GRO batch).
    Outside a batch (a stream carrier, a test feeding a sink) :meth:`defer` says
    no and the sink flushes at once.
    """

    __slots__ = ("_pending", "depth")

    def __init__(self) -> None:
        self.depth = 0
        """Batches open now (0: none; a sink may test it before calling :meth:`defer`)."""
        self._pending: dict[Callable[[], object], None] = {}

    def begin(self) -> None:
        self.depth += 1

    def defer(self, flush: Callable[[], object]) -> bool:
        """Run ``flush`` at the end of the batch (once, however often deferred);
        False: no batch is open, the caller runs it now."""
        if not self.depth:
            return False
        self._pending[flush] = None
        return True

    def end(self) -> None:
        """Close the batch; the outermost one runs what was deferred, in order."""
        self.depth -= 1
        if self.depth:
            return
        pending = self._pending
        while pending:
            flush = next(iter(pending))
            del pending[flush]
            flush()


READ_BATCH = ReadBatch()
"""The process's read batch (one event loop runs at a time per thread; carriers and
sinks of every loop share it, which costs nothing: a batch ends before its
callback returns)."""


class CarrierSink(Protocol):
    """What a carrier reports to."""

    def carrier_data(self, data: Buffer) -> None:
        """Bytes arrived (never empty): ``bytes`` or a read-only view of a buffer the
        carrier reuses only once nothing refers to it any more, so the sink may keep
        the view (or slices of it) as long as it needs the bytes."""

    def carrier_lost(self, exc: BaseException | None) -> None:
        """The carrier ended: ``None`` for an EOF, else the error (reset, timeout...)."""

    # optional: ``carrier_authentic() -> int``, how many receives passed the engine's
    # authentication so far (a datagram carrier validates a new peer address only
    # after an authentic datagram came from it); sinks before the flow lack it

    def carrier_pause(self) -> None:
        """The carrier's write buffer is above its high-water mark."""

    def carrier_resume(self) -> None:
        """The carrier's write buffer drained below its low-water mark."""


class _Buffering:
    """Sink used until the real one is set: remembers everything for replay."""

    def __init__(self) -> None:
        self.data: list[Buffer] = []
        self.lost: tuple[BaseException | None] | None = None
        self.paused = False

    def carrier_data(self, data: Buffer) -> None:
        self.data.append(data)

    def carrier_lost(self, exc: BaseException | None) -> None:
        self.lost = (exc,)

    def carrier_pause(self) -> None:
        self.paused = True

    def carrier_resume(self) -> None:
        self.paused = False


class Carrier(abc.ABC):
    """One connected byte stream.

    Subclasses call ``self._sink.carrier_*`` and implement the abstract methods.

    Attributes:
        transport: registry name ("tcp", ...).
        local_addr / remote_addr: addresses as text, for statistics.
    """

    transport: str = "?"
    mtu: int | None = None
    """A datagram carrier: the most bytes of one datagram it takes (each buffer given
    to :meth:`write` is one datagram, each ``carrier_data`` one datagram); None for a
    byte stream."""

    binding: bytes = b""
    """Channel binding: what the carrier's own security layer authenticated, the same
    on both ends (QUIC: SHA-256 of the server's leaf certificate, DER), mixed into the
    handshake of the path it carries (a HELLO's keys, a JOIN's proof), so a party in
    the middle that terminates the carrier with another certificate cannot complete
    rendr's handshake.  Empty: none (TCP, udpflow)."""

    verified: bool = False
    """Dialer: this end checked the certificate :attr:`binding` names (QUIC: against
    a CA or a pin, not ``insecure``), so the carrier's own encryption keeps out an
    attacker in the middle too: the path may carry authentication-only records
    (``FlowConfig.trust_carrier``).  Always False on a listener's carriers."""

    def __init__(self) -> None:
        self._sink: CarrierSink = _Buffering()
        self.local_addr = ""
        self.remote_addr = ""

    def set_sink(self, sink: CarrierSink) -> None:
        """Route future reports to ``sink``, first replaying what arrived meanwhile."""
        old = self._sink
        self._sink = sink
        if isinstance(old, _Buffering):
            for chunk in old.data:
                sink.carrier_data(chunk)
            if old.paused:
                sink.carrier_pause()
            if old.lost is not None:
                sink.carrier_lost(old.lost[0])

    def prepare(self, *, packets: bool) -> None:
        """Called once, after the carrier's handshake and just before it becomes a path
        of a flow (before :attr:`mtu` is read): ``packets`` says whether the flow
        carries the application's datagrams.  A carrier that can carry either kind
        natively (QUIC: a stream, or DATAGRAM frames) picks its framing here and sets
        :attr:`mtu`; others ignore it."""
        return None

    @abc.abstractmethod
    def write(self, buffers: Sequence[Buffer]) -> None:
        """Queue ``buffers`` for sending, in order, as one write."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush what is queued, then close (FIN). Reports nothing further."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Close at once, discarding what is queued (RST for TCP)."""


TransportFactory = Callable[
    ..., Awaitable[Union[Carrier, "tuple[asyncio.StreamReader, asyncio.StreamWriter]"]]
]
"""``async factory(address, **options) -> Carrier | (reader, writer)``: open one
carrier (``options``: the :class:`~rendr.PathSpec`'s, passed only when it has some)."""


class CarrierKind(enum.Enum):
    """What a carrier moves: a byte stream (TCP, TLS...) or datagrams (UDP, later)."""

    STREAM = "stream"
    DATAGRAM = "datagram"


class CarrierServer(Protocol):
    """What a listen factory returns: something that accepts carriers until closed."""

    def close(self) -> None:
        """Stop accepting."""

    async def wait_closed(self) -> None:
        """Wait until it stopped."""


ListenFactory = Callable[..., Awaitable["tuple[CarrierServer, tuple[str, int]]"]]
"""``async listen(address, on_carrier, backlog, **options) -> (server, bound_address)``
(``options``: the :class:`~rendr.ListenSpec`'s): accept
carriers on ``address`` (at most ``backlog`` waiting in the kernel), calling
``on_carrier(carrier)`` for each (its handshake not done yet)."""


@dataclass(frozen=True)
class Transport:
    """One registry entry: how to dial (and, optionally, listen) with a carrier kind."""

    name: str
    dial: TransportFactory
    listen: ListenFactory | None = None
    kind: CarrierKind = CarrierKind.STREAM


_REGISTRY: dict[str, Transport] = {}


def register_transport(name: str, factory: TransportFactory, *,
                       listen: ListenFactory | None = None,
                       kind: CarrierKind = CarrierKind.STREAM) -> None:
    """Make ``PathSpec(name, address)`` open carriers with ``factory(address)`` and,
    with ``listen``, ``ListenSpec(name, address)`` accept them.

    The factory may return a :class:`Carrier` or a connected asyncio
    ``(StreamReader, StreamWriter)`` pair (TLS, an SSH channel, a relay...).
    Registering an existing name replaces it.
    """
    _REGISTRY[name] = Transport(name, factory, listen, kind)


def get_transport(name: str, overrides: dict[str, TransportFactory] | None = None
                  ) -> TransportFactory:
    """The dial factory for ``name``: ``overrides`` first, then the registry.

    Raises:
        KeyError: unknown transport name.
    """
    if overrides and name in overrides:
        return overrides[name]
    return _entry(name).dial


def get_listen_factory(name: str) -> ListenFactory:
    """The listen factory for ``name``.

    Raises:
        KeyError: unknown transport name.
        ValueError: the transport can only dial.
    """
    entry = _entry(name)
    if entry.listen is None:
        raise ValueError(f"transport {name!r} cannot listen (only dial); hand its "
                         "carriers in with Listener.handle_stream() instead")
    return entry.listen


def transport_kind(name: str) -> CarrierKind:
    """Whether ``name``'s carriers are streams or datagrams.

    Raises:
        KeyError: unknown transport name.
    """
    return _entry(name).kind


def _entry(name: str) -> Transport:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise KeyError(f"unknown transport {name!r} (registered: {known})") from None


def registered_transports() -> list[str]:
    """Names of the registered transports."""
    return sorted(_REGISTRY)
