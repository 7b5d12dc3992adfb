"""A loopback UDP relay with the faults this kernel's missing netem would give.

:class:`UdpRelay` listens on one UDP socket and forwards every datagram to an
upstream address, and the answers back, like a NAT: each client source address gets
its own upstream socket (its own source port as the upstream sees it).  Faults apply
per direction (``"up"``: client -> upstream, ``"down"``: upstream -> client, or
``"both"``) and are drawn from one seeded :class:`random.Random`, so a run with the
same seed and the same traffic makes the same decisions:

* ``delay`` + ``jitter``: each datagram leaves after ``delay`` plus a uniform draw in
  ``[0, jitter]`` (later datagrams may overtake earlier ones when jitter is large);
* ``loss``: the probability a datagram is dropped;
* ``duplicate``: the probability a datagram is sent twice (the copy after
  ``dup_gap`` more seconds);
* ``reorder``: the probability a datagram is held back ``reorder_gap`` seconds more
  than the others, so those sent after it arrive first;
* ``rate``: bytes per second (a shaper: a datagram leaves when the link is free; one
  that would wait more than ``max_queue_delay`` is dropped, as a full router queue
  drops);
* :meth:`UdpRelay.blackhole` / :meth:`UdpRelay.forward`: drop everything silently, or
  forward again;
* :meth:`UdpRelay.rebind`: give every mapping a fresh upstream socket (a NAT
  rebinding: the upstream sees the same client from a new source port);
* :meth:`UdpRelay.kill`: forget every mapping (their upstream sockets close).

Counters (:attr:`UdpRelay.stats`) say what each direction forwarded, dropped,
duplicated and held back.  Used by tests and gates for what netns + nftables cannot do.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["DirectionStats", "Faults", "UdpRelay"]

log = logging.getLogger("rendr.testing.udprelay")

Direction = Literal["up", "down", "both"]
Address = tuple[str, int]
_Send = Callable[[bytes], None]


@dataclass
class Faults:
    """The faults of one direction (see the module docstring); all off by default."""

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    dup_gap: float = 0.001
    reorder: float = 0.0
    reorder_gap: float = 0.005
    rate: float | None = None
    max_queue_delay: float = 0.05

    def validate(self) -> None:
        """Raise ValueError for values outside their ranges."""
        for name in ("loss", "duplicate", "reorder"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability, got {p}")
        for name in ("delay", "jitter", "dup_gap", "reorder_gap", "max_queue_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive (or None: unlimited)")


@dataclass
class DirectionStats:
    """What one direction did with the datagrams it got."""

    received: int = 0
    forwarded: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    queue_drops: int = 0
    blackholed: int = 0
    bytes_forwarded: int = 0


class _Shaper:
    """One direction's faults and link clock."""

    def __init__(self, rng: random.Random) -> None:
        self.faults = Faults()
        self.stats = DirectionStats()
        self.rng = rng
        self.link_free_at = 0.0

    def schedule(self, size: int, now: float) -> list[float]:
        """When to send a datagram of ``size`` bytes that arrived at ``now``: no times
        (dropped), one, or two (duplicated)."""
        f, st, rng = self.faults, self.stats, self.rng
        st.received += 1
        if f.loss and rng.random() < f.loss:
            st.lost += 1
            return []
        at = now
        if f.rate is not None:
            start = max(now, self.link_free_at)
            if start - now > f.max_queue_delay:
                st.queue_drops += 1
                return []
            self.link_free_at = start + size / f.rate
            at = self.link_free_at
        at += f.delay + (rng.uniform(0.0, f.jitter) if f.jitter else 0.0)
        if f.reorder and rng.random() < f.reorder:
            st.reordered += 1
            at += f.reorder_gap
        times = [at]
        if f.duplicate and rng.random() < f.duplicate:
            st.duplicated += 1
            times.append(at + f.dup_gap)
        return times


class _Upstream(asyncio.DatagramProtocol):
    """The upstream socket of one client mapping."""

    def __init__(self, relay: UdpRelay, client: Address) -> None:
        self.relay = relay
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.relay._from_upstream(self, data)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp relay: upstream error for %s: %r", self.client, exc)


class _Front(asyncio.DatagramProtocol):
    def __init__(self, relay: UdpRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.relay._from_client(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp relay: front error: %r", exc)


@dataclass
class _Mapping:
    upstream: _Upstream
    pending: list[bytes] = field(default_factory=list)  # until the socket exists


class UdpRelay:
    """Forward UDP between clients and ``upstream`` with injectable faults.

    Args:
        upstream: ``(host, port)`` every datagram is forwarded to.
        host: address to listen on (port chosen by the OS; see :attr:`addr`).
        seed: seed of the fault draws (None: from the OS).
        max_mappings: most client mappings kept (the oldest is dropped beyond).
    """

    def __init__(self, upstream: Address, *, host: str = "127.0.0.1", seed: int | None = None,
                 max_mappings: int = 4096) -> None:
        self._upstream = upstream
        self._host = host
        self._rng = random.Random(seed)
        self._up = _Shaper(self._rng)
        self._down = _Shaper(self._rng)
        self._front: asyncio.DatagramTransport | None = None
        self._mappings: dict[Address, _Mapping] = {}
        self._max_mappings = max_mappings
        self._blackholed = False
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> Address:
        """Bind the listening socket; returns :attr:`addr`."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Front(self),
                                                           local_addr=(self._host, 0))
        self._front = transport
        return self.addr

    @property
    def addr(self) -> Address:
        """Where clients send (host, port)."""
        assert self._front is not None, "start() first"
        host, port = self._front.get_extra_info("sockname")[:2]
        return host, port

    async def close(self) -> None:
        """Stop: close every socket and drop whatever is scheduled."""
        self._closed = True  # scheduled datagrams find it and are dropped
        for task in list(self._tasks):
            task.cancel()
        self.kill()
        if self._front is not None:
            self._front.close()

    async def __aenter__(self) -> UdpRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------ faults

    def set_faults(self, direction: Direction = "both", **faults: float | None) -> None:
        """Set fault parameters (names of :class:`Faults`) for ``direction``; the
        others keep their values.  E.g. ``set_faults(loss=0.05, jitter=0.002)``."""
        for shaper in self._shapers(direction):
            new = Faults(**{**vars(shaper.faults), **faults})
            new.validate()
            shaper.faults = new

    def clear_faults(self) -> None:
        """Every fault off (blackhole too)."""
        self._up.faults = Faults()
        self._down.faults = Faults()
        self._blackholed = False

    def blackhole(self) -> None:
        """Drop every datagram, both ways, silently."""
        self._blackholed = True

    def forward(self) -> None:
        """Forward again after :meth:`blackhole`."""
        self._blackholed = False

    def rebind(self) -> None:
        """NAT rebinding: every client mapping gets a new upstream socket (source
        port); datagrams in flight on the old one are lost."""
        for client, mapping in list(self._mappings.items()):
            if mapping.upstream.transport is not None:
                mapping.upstream.transport.close()
            self._mappings[client] = self._new_mapping(client)

    def kill(self) -> None:
        """Forget every mapping (their upstream sockets close)."""
        for mapping in self._mappings.values():
            if mapping.upstream.transport is not None:
                mapping.upstream.transport.close()
        self._mappings.clear()

    @property
    def stats(self) -> dict[str, DirectionStats]:
        """Counters per direction: ``{"up": ..., "down": ...}``."""
        return {"up": self._up.stats, "down": self._down.stats}

    @property
    def mappings(self) -> int:
        """Client mappings alive."""
        return len(self._mappings)

    def _shapers(self, direction: Direction) -> list[_Shaper]:
        if direction == "up":
            return [self._up]
        if direction == "down":
            return [self._down]
        if direction == "both":
            return [self._up, self._down]
        raise ValueError(f"direction must be 'up', 'down' or 'both', not {direction!r}")

    # ------------------------------------------------------------ forwarding

    def _new_mapping(self, client: Address) -> _Mapping:
        proto = _Upstream(self, client)
        mapping = _Mapping(proto)
        loop = asyncio.get_running_loop()

        async def connect() -> None:
            try:
                await loop.create_datagram_endpoint(lambda: proto, remote_addr=self._upstream)
            except OSError as exc:
                log.debug("udp relay: upstream socket for %s: %r", client, exc)
                return
            assert proto.transport is not None
            for data in mapping.pending:
                proto.transport.sendto(data)
            mapping.pending.clear()

        task = loop.create_task(connect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return mapping

    def _from_client(self, data: bytes, client: Address) -> None:
        if self._closed:
            return
        mapping = self._mappings.get(client)
        if mapping is None:
            if len(self._mappings) >= self._max_mappings:
                oldest = next(iter(self._mappings))
                old = self._mappings.pop(oldest)
                if old.upstream.transport is not None:
                    old.upstream.transport.close()
            mapping = self._mappings[client] = self._new_mapping(client)
        self._pass(self._up, data, lambda d: self._send_up(mapping, d))

    def _from_upstream(self, proto: _Upstream, data: bytes) -> None:
        if self._closed:
            return
        mapping = self._mappings.get(proto.client)
        if mapping is None or mapping.upstream is not proto:
            return  # an answer to a socket that was rebound or killed
        self._pass(self._down, data, lambda d: self._send_down(proto.client, d))

    def _pass(self, shaper: _Shaper, data: bytes, send: _Send) -> None:
        if self._blackholed:
            shaper.stats.received += 1
            shaper.stats.blackholed += 1
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for at in shaper.schedule(len(data), now):
            if at <= now:
                self._deliver(shaper, data, send)
            else:
                loop.call_at(at, self._timed, shaper, data, send)

    def _timed(self, shaper: _Shaper, data: bytes, send: _Send) -> None:
        if self._closed:
            return
        if self._blackholed:
            shaper.stats.blackholed += 1
            return
        self._deliver(shaper, data, send)

    @staticmethod
    def _deliver(shaper: _Shaper, data: bytes, send: _Send) -> None:
        shaper.stats.forwarded += 1
        shaper.stats.bytes_forwarded += len(data)
        send(data)

    def _send_up(self, mapping: _Mapping, data: bytes) -> None:
        transport = mapping.upstream.transport
        if transport is None or mapping.pending:  # (in order, behind what waits)
            mapping.pending.append(data)
        elif not transport.is_closing():
            transport.sendto(data)

    def _send_down(self, client: Address, data: bytes) -> None:
        if self._front is not None and not self._front.is_closing():
            self._front.sendto(data, client)


