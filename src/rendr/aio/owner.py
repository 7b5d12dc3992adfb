"""What the flow driver (:mod:`rendr.aio.driver`) needs from whoever opened its paths.

Kept apart from the driver, which a compiled build compiles with mypyc: these are
structural interfaces (``typing.Protocol``) that interpreted classes implement (the
dialer's session, the listener, a carrier's handshake sink).
"""

from __future__ import annotations

from typing import Protocol

from ..carriers.base import Carrier, CarrierSink
from ..core.events import Event
from ..spec import PathSpec

__all__ = ["HandshakeHandoff", "PathOwner"]


class PathOwner(Protocol):
    """What a connection needs from whoever opens its paths (dialer or listener)."""

    def on_event(self, event: Event) -> None:
        """Every engine event (a path went down, the flow closed...)."""

    async def add_path(self, spec: PathSpec) -> int:
        """Open another path now; return its id (only a dialer can)."""

    def forget(self, path_id: int) -> None:
        """The path was removed on purpose: do not open it again."""

    def stop(self) -> None:
        """The connection is done: stop opening paths."""


class HandshakeHandoff(Protocol):
    """A carrier's handshake sink, which gives the carrier on to its path's sink."""

    rtt: float | None
    """A round trip measured during the handshake (None where there was none)."""

    def handoff(self, carrier: Carrier, sink: CarrierSink) -> None:
        """Route the carrier to ``sink``, replaying what arrived meanwhile."""
