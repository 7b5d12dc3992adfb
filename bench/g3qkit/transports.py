"""The QUIC datagram transports of gate G3, in the shape of ``bench/g3ukit/transports.py``
(:class:`~g3ukit.transports.PacketEnd`: send, recv, migrate, close, info).

- ``raw-qh3``: what a good qh3 application does: ``qh3.asyncio.serve`` /
  ``qh3.asyncio.connect`` (the client on qh3's recvmmsg/GSO transport), one DATAGRAM
  frame per ``send()``; ``transmit()`` once per loop iteration (``call_soon``) rather
  than per frame; received frames go to a deque that ``recv()`` pops.  qh3 queues
  frames its congestion window does not let out yet; the sender waits (transmitting
  and reading) while more than :data:`RAW_PENDING` frames are queued.
- ``rendr``: rendr's packet mode over the ``quic`` carrier: a listener with two UDP
  sockets on loopback and a dialer with a QUIC path to each, ``insecure`` (the
  certificate not checked: rendr encrypts its sealed datagrams itself);
  ``rendr-auth``: the same with the certificate pinned (``pin``), so the datagrams are
  authenticated only (QUIC encrypts them; issue 10).  ``migrate()``
  alternates between ``rebind_path()`` of the active path (QUIC connection migration
  to a new local socket, new connection ID) and ``migrate()`` to the other path; the
  time of each is kept (``info()["migrate_at"]``, ``time.perf_counter()``, which is
  CLOCK_MONOTONIC and so comparable across the two processes).

:class:`Binned` wraps the receiver's end to count arrivals per :data:`BIN_S` bin (the
recovery time after each migration is read from them).

Nothing here prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import ssl
import tempfile
import time
from typing import Any

from qh3.asyncio import connect, serve
from qh3.asyncio.protocol import QuicConnectionProtocol
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.events import DatagramFrameReceived, QuicEvent
from qh3.tls import load_pem_private_key, load_pem_x509_certificates

import rendr
from g3ukit.transports import PACKET_COUNTERS, Addr, PacketEnd, PacketTransport, _Queue
from rendr.carriers.quic import development_certificate

HOST = "127.0.0.1"
BIN_S = 0.010
RAW_PENDING = 4096  # raw-qh3 sender: frames queued in qh3 before send() waits

_cert: tuple[bytes, bytes] | None = None
CERT_ENV = "RENDR_BENCH_CERT_DIR"
"""Where the parent wrote the certificate every process of a run uses (cert.pem,
key.pem), so a dialer can pin the listener's."""


def share_certificate() -> str:
    """In the parent, before the workers start: one development certificate for every
    process of the run (they inherit the environment)."""
    where = tempfile.mkdtemp(prefix="rendr-bench-cert-")
    cert_pem, key_pem = development_certificate()
    for name, data in (("cert.pem", cert_pem), ("key.pem", key_pem)):
        with open(os.path.join(where, name), "wb") as f:
            f.write(data)
    os.environ[CERT_ENV] = where
    return where


def cert() -> tuple[bytes, bytes]:
    global _cert
    if _cert is None:
        where = os.environ.get(CERT_ENV)
        if where:
            with open(os.path.join(where, "cert.pem"), "rb") as f, \
                    open(os.path.join(where, "key.pem"), "rb") as g:
                _cert = f.read(), g.read()
        else:
            _cert = development_certificate()
    return _cert


def cert_files() -> tuple[str, str]:
    """The shared certificate and key as files (for ``tls=``)."""
    where = os.environ.get(CERT_ENV) or share_certificate()
    return os.path.join(where, "cert.pem"), os.path.join(where, "key.pem")


def pin() -> str:
    """The shared certificate's pin: SHA-256 of its DER, hex."""
    return hashlib.sha256(load_pem_x509_certificates(cert()[0])[0].public_bytes()).hexdigest()


def quic_options(auth: bool) -> dict[str, str]:
    """A dialer's QUIC path options: pinned (authentication-only records) or
    ``insecure`` (rendr encrypts)."""
    return {"pin": pin()} if auth else {"insecure": "1"}


# ---------------------------------------------------------------------------- raw-qh3


class _RawProtocol(QuicConnectionProtocol):
    end: _RawEnd | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        end = self.end
        if isinstance(event, DatagramFrameReceived) and end is not None:
            end.inq.q.append(event.data)
            end.received += 1
            if end.inq.waiter is not None:
                end.inq.wake()
        else:
            super().quic_event_received(event)

    def transmit(self) -> None:
        super().transmit()
        end = self.end
        if end is not None and end.can_send is not None and not end.can_send.done():
            end.can_send.set_result(None)


class _RawEnd(PacketEnd):
    def __init__(self, proto: _RawProtocol, stack: contextlib.AsyncExitStack | None,
                 server: Any = None) -> None:
        self.proto = proto
        self.quic: Any = proto._quic
        self.stack = stack
        self.server = server
        self.inq = _Queue()
        self.loop = asyncio.get_running_loop()
        self.scheduled = False
        self.queued = 0  # frames given to qh3 since the last transmit
        self.received = 0
        self.waits = 0
        self.can_send: asyncio.Future[None] | None = None
        proto.end = self

    def _transmit(self) -> None:
        self.scheduled = False
        self.queued = 0
        self.proto.transmit()

    async def send(self, data: bytes) -> None:
        self.quic.send_datagram_frame(data)
        self.queued += 1
        if self.queued >= RAW_PENDING:  # give the loop a turn: ACKs, transmit
            self.waits += 1
            self._transmit()
            await asyncio.sleep(0)
        elif not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._transmit)

    async def recv(self) -> bytes:
        return await self.inq.get()

    async def close(self) -> None:
        self.inq.closed = True
        self.inq.wake()
        if self.stack is not None:
            await self.stack.aclose()
        if self.server is not None:
            self.server.close()

    def info(self) -> dict[str, Any]:
        return {"waits": self.waits}


class RawQh3Transport(PacketTransport):
    name = "raw-qh3"

    def __init__(self) -> None:
        self._server: Any = None
        self._accepted: asyncio.Future[_RawEnd] | None = None

    async def open_server(self) -> list[Addr]:
        loop = asyncio.get_running_loop()
        accepted: asyncio.Future[_RawEnd] = loop.create_future()
        self._accepted = accepted
        cert_pem, key_pem = cert()
        config = QuicConfiguration(is_client=False, alpn_protocols=["bench"],
                                   max_datagram_frame_size=65536, idle_timeout=120.0)
        config.certificate = load_pem_x509_certificates(cert_pem)[0]
        config.private_key = load_pem_private_key(key_pem)

        def create(*args: Any, **kwargs: Any) -> _RawProtocol:
            proto = _RawProtocol(*args, **kwargs)
            end = _RawEnd(proto, None, self._server)
            if not accepted.done():
                accepted.set_result(end)
            return proto

        self._server = await serve(HOST, 0, configuration=config, create_protocol=create)
        return [(HOST, self._server._transport.get_extra_info("sockname")[1])]

    async def accept(self) -> PacketEnd:
        assert self._accepted is not None
        return await self._accepted

    async def open_client(self, addrs: list[Addr]) -> PacketEnd:
        config = QuicConfiguration(is_client=True, alpn_protocols=["bench"],
                                   max_datagram_frame_size=65536, idle_timeout=120.0)
        config.verify_mode = ssl.CERT_NONE
        stack = contextlib.AsyncExitStack()
        proto = await stack.enter_async_context(
            connect(addrs[0][0], addrs[0][1], configuration=config,
                    create_protocol=_RawProtocol))
        end = _RawEnd(proto, stack)  # type: ignore[arg-type]
        end.quic.send_datagram_frame(b"\x00" * 17)  # let the server make its end now
        end.proto.transmit()
        return end


# ---------------------------------------------------------------------------- rendr


class _RendrQuicEnd(PacketEnd):
    def __init__(self, pc: Any, listener: Any = None) -> None:
        self.pc = pc
        self.listener = listener
        self.migrate_at: list[float] = []
        self.migrate_kind: list[str] = []
        self.failures: list[str] = []

    async def send(self, data: bytes) -> None:
        await self.pc.send(data)

    async def recv(self) -> bytes:
        data: bytes = await self.pc.recv()
        return data

    async def migrate(self) -> bool:
        """Even calls: ``rebind_path`` of the active path; odd: ``migrate()`` to the
        other QUIC path that is up."""
        t = time.perf_counter()
        try:
            if len(self.migrate_at) % 2 == 0:
                await self.pc.rebind_path(self.pc.active_path)
                kind = "rebind"
            else:
                others: list[int] = []
                for _ in range(100):  # up to 1 s for the other path to be up (again)
                    others = [p.id for p in self.pc.stats().paths
                              if p.state == "up" and p.id != self.pc.active_path]
                    if others:
                        break
                    await asyncio.sleep(0.01)
                if not others:
                    self.failures.append("no other path up: " + ", ".join(
                        f"{p.id} {p.transport} {p.state}" for p in self.pc.stats().paths))
                    return False
                await self.pc.migrate(others[0])
                kind = "migrate"
        except (rendr.RendrError, OSError) as exc:
            self.failures.append(repr(exc))
            return False
        self.migrate_at.append(t)
        self.migrate_kind.append(kind)
        return True

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.pc.close(), 5.0)
        except (asyncio.TimeoutError, OSError, rendr.RendrError):
            self.pc.abort()
        if self.listener is not None:
            await self.listener.close()

    def info(self) -> dict[str, Any]:
        st = self.pc.stats()
        ps = self.pc.packet_stats()
        return {"migration_count": st.migration_count, "quic_rebinds": st.quic_rebinds,
                "paths": len(st.paths), "migrate_at": self.migrate_at,
                "migrate_kind": self.migrate_kind, "migrate_failures": self.failures,
                "packet_stats": {k: getattr(ps, k) for k in PACKET_COUNTERS}}


class RendrQuicTransport(PacketTransport):
    """rendr packet mode over two QUIC paths (two listener sockets on loopback)."""

    name = "rendr"

    def __init__(self, knobs: dict[str, Any] | None = None, auth: bool = False) -> None:
        self.knobs = knobs or {}
        self.auth = auth
        self._pln: Any = None

    async def open_server(self) -> list[Addr]:
        self._pln = await rendr.listen_quic_packet(f"{HOST}:0", f"{HOST}:0",
                                                   tls=cert_files(), **self.knobs)
        return [(str(h), int(p)) for h, p in self._pln.addrs]

    async def accept(self) -> PacketEnd:
        pc = await self._pln.accept()
        return _RendrQuicEnd(pc, self._pln)

    async def open_client(self, addrs: list[Addr]) -> PacketEnd:
        specs = [rendr.PathSpec("quic", f"{HOST}:{p}", options=quic_options(self.auth))
                 for _, p in addrs]
        pc = await rendr.Dialer(paths=specs, **self.knobs).dial_packet()
        want = min(2, len(addrs))
        for _ in range(300):  # up to 3 s for every path to come up
            if sum(p.state == "up" for p in pc.stats().paths) >= want:
                break
            await asyncio.sleep(0.01)
        return _RendrQuicEnd(pc)


def make(name: str, knobs: dict[str, Any] | None = None) -> PacketTransport:
    if name in ("rendr", "rendr-auth"):
        return RendrQuicTransport(knobs, auth=name == "rendr-auth")
    if name == "raw-qh3":
        return RawQh3Transport()
    raise KeyError(name)


# ---------------------------------------------------------------------------- arrivals


class Binned(PacketEnd):
    """The receiver's end, counting data arrivals per :data:`BIN_S` bin."""

    def __init__(self, end: PacketEnd) -> None:
        self.end = end
        self.t0 = 0.0
        self.bins: list[int] = []

    async def send(self, data: bytes) -> None:
        await self.end.send(data)

    async def recv(self) -> bytes:
        data = await self.end.recv()
        now = time.perf_counter()
        if not self.t0:
            self.t0 = now
        i = int((now - self.t0) / BIN_S)
        bins = self.bins
        if i >= len(bins):
            bins.extend([0] * (i + 1 - len(bins)))
        bins[i] += 1
        return data

    async def close(self) -> None:
        await self.end.close()

    def info(self) -> dict[str, Any]:
        return self.end.info()


def recovery_times(t0: float, bins: list[int], marks: list[float], pps: float,
                   window: int = 5, level: float = 0.9, horizon: float = 2.0) -> list[float]:
    """Seconds from each migration (``marks``, perf_counter) until the receiver's rate
    over ``window`` bins is back to ``level`` x ``pps``: 0 when the window starting at
    the migration already is; ``horizon`` when it never is within ``horizon`` s."""
    need = level * pps * BIN_S * window
    out = []
    for m in marks:
        first = int((m - t0) / BIN_S)
        result = horizon
        for i in range(max(0, first), min(len(bins) - window, first + int(horizon / BIN_S))):
            if sum(bins[i:i + window]) >= need:
                result = max(0.0, t0 + i * BIN_S - m)
                break
        out.append(result)
    return out
