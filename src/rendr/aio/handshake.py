"""Carrier handshakes on the asyncio side: collect the first frame, then hand the carrier on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence

from ..carriers.base import Buffer, Carrier, CarrierSink
from ..core.handshake import HandshakeParser
from ..errors import HandshakeError
from .timeouts import wait_for

__all__ = ["HandshakeCollector", "exchange", "named"]


@contextlib.contextmanager
def named(label: str) -> Iterator[None]:
    """Prefix a :class:`HandshakeError` raised inside with ``label`` (which path, which
    addresses, which step); its subclasses and other errors pass unchanged."""
    try:
        yield
    except HandshakeError as exc:
        if type(exc) is not HandshakeError:
            raise
        named_exc = HandshakeError(f"{label}: {exc}")
        named_exc.peer_version = exc.peer_version
        raise named_exc from exc


class HandshakeCollector:
    """A carrier sink that parses the preface and first frame, then keeps buffering
    until :meth:`handoff` gives the carrier to its real sink."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_leftover: int = 0) -> None:
        self.parser = HandshakeParser(max_leftover)
        self.future: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self._lost: tuple[BaseException | None] | None = None
        self._paused = False
        self.rtt: float | None = None  # the dialer's opening frame -> the answer

    def carrier_data(self, data: Buffer) -> None:
        if self._lost is not None:
            return  # overflowed (or ended): keep nothing more
        if self.future.done():
            try:
                self.parser.feed(data)
            except HandshakeError as exc:
                self._lost = (exc,)  # the carrier fails at handoff
            return
        try:
            frame = self.parser.feed(data)
        except HandshakeError as exc:
            self.future.set_exception(exc)
            return
        if frame is not None:
            self.future.set_result(frame)

    def carrier_lost(self, exc: BaseException | None) -> None:
        self._lost = (exc,)
        if not self.future.done():
            why = "EOF" if exc is None else repr(exc)
            self.future.set_exception(HandshakeError(f"carrier closed during handshake ({why})"))

    def carrier_pause(self) -> None:
        self._paused = True

    def carrier_resume(self) -> None:
        self._paused = False

    def handoff(self, carrier: Carrier, sink: CarrierSink) -> None:
        """Route the carrier to ``sink``, replaying leftover bytes, pause state and loss."""
        carrier.set_sink(sink)
        if self.parser.leftover and self._lost is None:
            sink.carrier_data(self.parser.leftover)
        if self._paused:
            sink.carrier_pause()
        if self._lost is not None:
            sink.carrier_lost(self._lost[0])


async def exchange(carrier: Carrier, opening: Sequence[Buffer], timeout: float,
                   label: str = "handshake") -> tuple[int, bytes, HandshakeCollector]:
    """Write ``opening`` and wait for the peer's preface and first frame; the
    collector's ``rtt`` is the time that took.

    Raises:
        HandshakeError: wrong peer/version, carrier closed, or no answer within
            ``timeout``; the message starts with ``label``.
    """
    loop = asyncio.get_running_loop()
    collector = HandshakeCollector(loop)
    carrier.set_sink(collector)
    t0 = loop.time()
    carrier.write(opening)
    with named(label):
        try:
            ftype, body = await wait_for(collector.future, timeout)
        except asyncio.TimeoutError:
            raise HandshakeError(f"no answer within {timeout:g} s") from None
    collector.rtt = loop.time() - t0
    return ftype, body, collector
