"""``rendr demo``: a listener and a dialer in one process on loopback, a stream of
random data over paths of different kinds (by default one ``tcp``, one ``udpflow``
and one ``quic`` path), the active path killed half-way through, and the proof that
the stream survived (SHA-256 on both ends; in ``prime`` mode the connection
migrated, in ``race``/``bond`` mode the killed path went down and the others carried
on).

Each path goes through a relay in front of the listener, so the kill is an honest
external fault: a :class:`rendr.testing.relay.TcpRelay` resets both TCP connections
of its path (``SO_LINGER`` 0), as a middlebox or a dying interface would; a
:class:`rendr.testing.udprelay.UdpRelay` (``udpflow``, ``quic``) blackholes its
datagrams silently, as a lost radio link would, and rendr notices by its PINGs going
unanswered.  Only rendr's public API is used (plus the testing relays).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

import rendr
from rendr.aio.timeouts import wait_for
from rendr.demo_view import (
    KILL_HOW,
    LiveView,
    PathRate,
    console,
    fmt_event,
    report,
    say,
)
from rendr.testing.relay import TcpRelay
from rendr.testing.udprelay import UdpRelay

__all__ = ["DEFAULT_KINDS", "KINDS", "DemoResult", "console", "report", "result_json",
           "run_demo"]

logger = logging.getLogger("rendr.cli")

MIB = 1024 * 1024
CHUNK = 256 * 1024
"""Size of one ``write()`` of the demo sender."""
POOL = 4 * MIB + 4099
"""Size of the random pool the sender's chunks are cut from (at varying offsets)."""
STRIDE = 104_729
"""Offset step between consecutive chunks in the pool (a prime: no two neighbours match)."""
SAMPLE = 0.2
"""Seconds between two samples of the dialer's per-path counters."""
KINDS = ("tcp", "udpflow", "quic")
"""The carriers the demo can put a path on."""
DEFAULT_KINDS = KINDS
DOWN_WAIT = 3.0
"""Seconds the demo waits after the transfer for the killed path to be declared down."""
QUIC_OPTIONS = {"insecure": "1"}
"""The demo's QUIC paths trust the listener's development certificate (loopback)."""


# --------------------------------------------------------------------------- demo


@dataclass
class DemoResult:
    """What the demo measured."""

    sent_digest: str = ""
    received_digest: str = ""
    echoed_digest: str = ""
    size: int = 0
    elapsed: float = 0.0
    mode: rendr.Mode = rendr.Mode.PRIME
    kinds: list[str] = field(default_factory=list)
    killed_path: int | None = None
    killed_kind: str = ""
    kill_method: str = ""
    """``"reset"`` (a TCP relay's RST) or ``"blackhole"`` (a UDP relay going silent)."""
    killed_at_bytes: int = 0
    received: int = 0
    """Bytes the listener has received so far (the progress bar)."""
    client_stats: rendr.ConnStats | None = None
    server_stats: rendr.ConnStats | None = None
    client_migrations: int = 0
    server_migrations: int = 0
    client_dups: int = 0
    server_dups: int = 0
    error: str = ""
    notes: list[str] = field(default_factory=list)
    relays: dict[str, str] = field(default_factory=dict)
    """The dialer's path addresses (each a relay) -> the listener address behind it."""
    peaks: dict[int, tuple[str, float]] = field(default_factory=dict)
    """Path id -> (kind, highest bytes/s it carried over one sample on the dialer)."""

    @property
    def match(self) -> bool:
        """Whether the sender's, receiver's and echoed digests are all equal."""
        return bool(self.sent_digest) and (
            self.sent_digest == self.received_digest == self.echoed_digest)

    @property
    def migrated(self) -> bool:
        """Whether the dialer's connection changed its active path."""
        return self.client_migrations > 0

    @property
    def killed_down(self) -> bool:
        """Whether the dialer saw the killed path go down."""
        stats = self.client_stats
        return stats is not None and any(
            p.id == self.killed_path and p.state != "up" for p in stats.paths)

    @property
    def ok(self) -> bool:
        """The demo's verdict: no error, the digests match, and the kill was survived:
        in ``prime`` mode by a migration, in ``race``/``bond`` mode (every path carries
        data) by the killed path going down while the transfer completed."""
        if self.error or not self.match:
            return False
        if self.mode is rendr.Mode.PRIME:
            return self.migrated
        return self.killed_down


def _rates(stats: rendr.ConnStats, last: dict[int, int], dt: float,
           result: DemoResult) -> list[PathRate]:
    """Per-path throughput since the previous sample (``last``: bytes carried then)."""
    rows = []
    for p in stats.paths:
        carried = p.bytes_sent + p.bytes_received
        rate = (carried - last.get(p.id, carried)) / dt if dt > 0 else 0.0
        last[p.id] = carried
        peak = max(rate, result.peaks.get(p.id, ("", 0.0))[1])
        result.peaks[p.id] = (p.transport, peak)
        rows.append(PathRate(p.id, p.transport, p.state, carried, rate, peak))
    return rows


async def _wait_down(conn: rendr.Conn, path_id: int | None, limit: float) -> None:
    """Wait up to ``limit`` seconds for ``path_id`` to leave the "up" state (a
    blackholed path is declared down only after ``dead_timeout`` of silence, which
    a short transfer may finish before)."""
    deadline = asyncio.get_running_loop().time() + limit
    while path_id is not None and asyncio.get_running_loop().time() < deadline:
        if any(p.id == path_id and p.state != "up" for p in conn.stats().paths):
            return
        await asyncio.sleep(0.05)


async def run_demo(size: int, kinds: Sequence[str], kill_at: float, timeout: float,
                   quiet: bool = False, mode: rendr.Mode = rendr.Mode.PRIME) -> DemoResult:
    """Run the whole demo in the current event loop: one path of each of ``kinds``
    (``"tcp"``, ``"udpflow"``, ``"quic"``; repeats allowed), a dialer in ``mode``.
    ``quiet``: print nothing, for ``rendr demo --json``; the result has it all."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result = DemoResult(size=size, mode=mode, kinds=list(kinds))
    psk = os.urandom(32)  # both ends are here: authenticated and encrypted, no warning

    def log(elapsed: float, side: str, text: str) -> None:
        if not quiet:
            say(elapsed, side, text)

    def printer(side: str) -> Callable[[rendr.Event], None]:
        def on_event(event: rendr.Event) -> None:
            log(event.at - t0, side, fmt_event(event))
        return on_event

    # The QUIC listener warns that its certificate is a development one: true, and
    # what a loopback demo wants (the dialer passes insecure=1); said in the paths table.
    quic_log = logging.getLogger("rendr.carriers.quic")
    level = quic_log.level
    if not quic_log.isEnabledFor(logging.INFO):
        quic_log.setLevel(logging.ERROR)
    try:
        listener = await rendr.listen(
            *(rendr.ListenSpec(k, "127.0.0.1:0") for k in kinds), psk=psk)
    finally:
        quic_log.setLevel(level)
    relays: dict[str, TcpRelay | UdpRelay] = {}
    client: rendr.Conn | None = None
    server: rendr.Conn | None = None
    view = LiveView(size, mode, enabled=not quiet)
    try:
        specs = []
        for kind, addr in zip(kinds, listener.addrs, strict=True):
            relay: TcpRelay | UdpRelay
            if kind == "tcp":
                relay = TcpRelay(addr)
                await relay.start()
                upstream = relay.upstream
            else:
                relay = UdpRelay(addr)
                await relay.start()
                upstream = addr
            front = f"{relay.addr[0]}:{relay.addr[1]}"
            relays[front] = relay
            result.relays[front] = f"{upstream[0]}:{upstream[1]}"
            specs.append(rendr.PathSpec(kind, front, options=(
                dict(QUIC_OPTIONS) if kind == "quic" else {})))
        table = Table(title="paths", title_justify="left")
        table.add_column("kind")
        table.add_column("dialer connects to (relay)")
        table.add_column("listener address")
        table.add_column("killed by; note")
        for spec in specs:
            how = "RST" if spec.transport == "tcp" else "blackhole"
            if spec.transport == "quic":
                how += " (self-signed cert)"
            table.add_row(spec.transport, spec.address, result.relays[spec.address],
                          how)
        if not quiet:
            console.print(table)
            console.print(f"mode {mode}: sending {size / MIB:g} MiB; the active path is "
                          f"killed after {kill_at:.0%} of it has arrived\n")

        dialer = rendr.Dialer(mode=mode, paths=specs, psk=psk)
        client = await dialer.dial()
        client.on_event(printer("client"))
        server = await wait_for(listener.accept(), 10.0)
        server.on_event(printer("server"))
        # Paths that came up before the callbacks were registered.
        for side, conn in (("client", client), ("server", server)):
            for p in conn.stats().paths:
                log(loop.time() - t0, side,
                    f"[green]path #{p.id} {p.state}[/green] [dim](already) {p.transport} "
                    f"{p.local_addr} -> {p.remote_addr}[/dim]")

        def kill_active() -> None:
            assert client is not None
            active = client.active_path
            for p in client.stats().paths:
                if p.id == active and p.remote_addr in relays:
                    relay = relays[p.remote_addr]
                    result.killed_path, result.killed_kind = active, p.transport
                    if isinstance(relay, TcpRelay):
                        result.kill_method = "reset"
                        relay.kill()
                    else:
                        result.kill_method = "blackhole"
                        relay.blackhole()
                    log(loop.time() - t0, "demo",
                        f"[red bold]killing path #{active}[/red bold] ({p.transport}: "
                        f"{KILL_HOW.get(p.transport, result.kill_method)})")
                    return
            result.notes.append(f"active path {active} not found among relays")

        async def serve(conn: rendr.Conn) -> None:
            digest = hashlib.sha256()
            threshold = int(size * kill_at)
            killed = False
            while True:
                data = await conn.read(1 << 20)
                if not data:
                    break
                digest.update(data)
                result.received += len(data)
                if not killed and result.received >= threshold:
                    killed = True
                    result.killed_at_bytes = result.received
                    kill_active()
            result.received_digest = digest.hexdigest()
            if result.received != size:
                result.notes.append(
                    f"server received {result.received} bytes, expected {size}")
            await conn.write(result.received_digest.encode())
            await conn.write_eof()

        async def send(conn: rendr.Conn) -> None:
            pool = os.urandom(POOL)
            digest = hashlib.sha256()
            sent = 0
            i = 0
            while sent < size:
                n = min(CHUNK, size - sent)
                off = (i * STRIDE) % (POOL - CHUNK)
                chunk = pool[off:off + n]
                digest.update(chunk)
                await conn.write(chunk)
                sent += n
                i += 1
            result.sent_digest = digest.hexdigest()
            await conn.write_eof()
            result.echoed_digest = (await conn.readexactly(64)).decode()
            if await conn.read() != b"":
                result.notes.append("unexpected bytes after the echoed digest")

        async def sample(conn: rendr.Conn) -> None:
            last: dict[int, int] = {}
            then = loop.time()
            _rates(conn.stats(), last, 0.0, result)
            while True:
                await asyncio.sleep(SAMPLE)
                now = loop.time()
                rows = _rates(conn.stats(), last, now - then, result)
                then = now
                view.update(result.received, rows, conn.active_path, result.killed_path)

        sampler = asyncio.ensure_future(sample(client))
        view.start()
        start = time.perf_counter()
        try:
            await wait_for(asyncio.gather(serve(server), send(client)), timeout)
            result.elapsed = time.perf_counter() - start  # the transfer, not the wait
            await _wait_down(client, result.killed_path, DOWN_WAIT)
        except asyncio.TimeoutError:
            result.error = f"timed out after {timeout:g} s"
        except Exception as exc:  # a library failure: report it, do not hide it
            logger.error("demo transfer failed", exc_info=True)
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            result.elapsed = result.elapsed or time.perf_counter() - start
            sampler.cancel()
            view.update(result.received, _rates(client.stats(), {}, 0.0, result),
                        client.active_path, result.killed_path)
            view.stop()
        result.client_stats = client.stats()
        result.server_stats = server.stats()
        result.client_migrations = client.migration_count
        result.server_migrations = server.migration_count
        result.client_dups = client.recv_dups
        result.server_dups = server.recv_dups
    finally:
        for end in (client, server):
            if end is not None:
                try:
                    await wait_for(end.close(), 5.0)
                except (asyncio.TimeoutError, rendr.RendrError) as exc:
                    result.notes.append(f"close: {type(exc).__name__}: {exc}")
                    end.abort()
        for relay in relays.values():
            await relay.close()
        await listener.close()
    return result


def result_json(result: DemoResult, event_loop: str) -> dict[str, Any]:
    """The outcome as one JSON-ready object (``rendr demo --json``)."""
    stats = result.client_stats
    paths = [] if stats is None else [
        {"id": p.id, "kind": p.transport, "dialer_address": p.remote_addr,
         "listener_address": result.relays.get(p.remote_addr), "state": p.state,
         "down_cause": p.down_cause, "bytes_sent": p.bytes_sent,
         "bytes_received": p.bytes_received}
        for p in stats.paths]
    mbps = result.received / result.elapsed / 1e6 if result.elapsed > 0 else 0.0
    return {
        "ok": result.ok,
        "version": rendr.__version__,
        "compiled": rendr.__compiled__,
        "event_loop": event_loop,
        "mode": str(result.mode),
        "kinds": result.kinds,
        "size": result.size,
        "received": result.received,
        "paths": paths,
        "killed_path": result.killed_path,
        "killed_kind": result.killed_kind or None,
        "kill_method": result.kill_method or None,
        "killed_path_down": result.killed_down,
        "killed_at_bytes": result.killed_at_bytes,
        "migrations": {"client": result.client_migrations,
                       "server": result.server_migrations},
        "recv_dups": {"client": result.client_dups, "server": result.server_dups},
        "elapsed_s": round(result.elapsed, 6),
        "mb_per_s": round(mbps, 3),
        "sha256": {"sent": result.sent_digest, "received": result.received_digest,
                   "echoed": result.echoed_digest, "match": result.match},
        "error": result.error or None,
        "notes": result.notes,
    }
