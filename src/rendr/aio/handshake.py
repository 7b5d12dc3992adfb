"""Carrier handshakes on the asyncio side: collect the first frame, then hand the carrier on."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ..carriers.base import Buffer, Carrier, CarrierSink
from ..core.handshake import HandshakeParser
from ..errors import HandshakeError

__all__ = ["HandshakeCollector", "exchange"]


class HandshakeCollector:
    """A carrier sink that parses the preface and first frame, then keeps buffering
    until :meth:`handoff` gives the carrier to its real sink."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_leftover: int = 0) -> None:
        self.parser = HandshakeParser(max_leftover)
        self.future: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self._lost: tuple[BaseException | None] | None = None
        self._paused = False

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


async def exchange(carrier: Carrier, opening: Sequence[Buffer], timeout: float
                   ) -> tuple[int, bytes, HandshakeCollector]:
    """Write ``opening`` and wait for the peer's preface and first frame.

    Raises:
        HandshakeError: wrong peer/version, carrier closed, or no answer within ``timeout``.
    """
    collector = HandshakeCollector(asyncio.get_running_loop())
    carrier.set_sink(collector)
    carrier.write(opening)
    try:
        ftype, body = await asyncio.wait_for(collector.future, timeout)
    except asyncio.TimeoutError:
        raise HandshakeError(f"no handshake answer within {timeout:g} s") from None
    return ftype, body, collector
