"""``rendr demo``: a listener and a dialer in one process on loopback, a stream of
random data over several TCP paths, the active path killed abortively (TCP RST)
half-way through, and the proof that the stream survived (SHA-256 on both ends, the
connection migrated).

Each path goes through a :class:`rendr.testing.relay.TcpRelay` in front of the
listener, so the kill is an honest external fault: the relay resets both TCP
connections of the path (``SO_LINGER`` 0), exactly as a middlebox or a dying
interface would.  Only rendr's public API is used (plus the testing relay).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

import rendr
from rendr.aio.timeouts import wait_for
from rendr.testing.relay import TcpRelay

__all__ = ["DemoResult", "console", "report", "result_json", "run_demo"]

logger = logging.getLogger("rendr.cli")

MIB = 1024 * 1024
CHUNK = 256 * 1024
"""Size of one ``write()`` of the demo sender."""
POOL = 4 * MIB + 4099
"""Size of the random pool the sender's chunks are cut from (at varying offsets)."""
STRIDE = 104_729
"""Offset step between consecutive chunks in the pool (a prime: no two neighbours match)."""

console = Console(highlight=False)
"""Where the demo prints (stdout)."""


# --------------------------------------------------------------------------- helpers


def _fmt_path(path_id: int | None) -> str:
    return "none" if path_id is None or path_id < 0 else f"#{path_id}"


def _say(elapsed: float, side: str, text: str) -> None:
    """Print one timestamped line of the demo's log (rich markup)."""
    console.print(f"[dim]{elapsed:8.3f}s[/dim] [bold]{side:<6}[/bold] {text}", soft_wrap=True)


def _fmt_event(event: rendr.Event) -> str:
    """Rich markup describing ``event``."""
    kind = event.kind
    if kind is rendr.EventKind.PATH_UP:
        text = f"[green]path {_fmt_path(event.path_id)} up[/green]"
    elif kind is rendr.EventKind.PATH_DOWN:
        text = f"[red]path {_fmt_path(event.path_id)} down[/red] (cause: {event.cause})"
    elif kind is rendr.EventKind.MIGRATION:
        text = (f"[yellow bold]migration {_fmt_path(event.old_path)} -> "
                f"{_fmt_path(event.new_path)}[/yellow bold] (cause: {event.cause})")
    elif kind is rendr.EventKind.MODE_CHANGE:
        text = f"mode -> {event.mode}"
    elif kind is rendr.EventKind.CLOSED:
        text = "closed" if event.error is None else f"[red]closed: {event.error!r}[/red]"
    else:  # pragma: no cover - future kinds
        text = str(kind)
    if event.detail:
        text += f" [dim]{escape(event.detail)}[/dim]"
    return text


def _stats_table(title: str, stats: rendr.ConnStats) -> Table:
    """A table of the per-path counters of ``stats`` (``*`` marks the active path)."""
    table = Table(title=title, title_justify="left")
    table.add_column("path", justify="right")
    table.add_column("state")
    table.add_column("srtt ms", justify="right")
    table.add_column("bytes sent", justify="right")
    table.add_column("bytes recv", justify="right")
    table.add_column("retransmits", justify="right")
    table.add_column("down cause")
    for p in stats.paths:
        table.add_row(
            f"{p.id}{' *' if p.id == stats.active_path else ''}",
            p.state,
            "-" if p.srtt is None else f"{p.srtt * 1000:.2f}",
            f"{p.bytes_sent:,}",
            f"{p.bytes_received:,}",
            f"{p.retransmits:,}",
            p.down_cause or "",
        )
    return table


# --------------------------------------------------------------------------- demo


@dataclass
class DemoResult:
    """What the demo measured."""

    sent_digest: str = ""
    received_digest: str = ""
    echoed_digest: str = ""
    size: int = 0
    elapsed: float = 0.0
    killed_path: int | None = None
    killed_at_bytes: int = 0
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

    @property
    def match(self) -> bool:
        """Whether the sender's, receiver's and echoed digests are all equal."""
        return bool(self.sent_digest) and (
            self.sent_digest == self.received_digest == self.echoed_digest)

    @property
    def migrated(self) -> bool:
        """Whether the dialer's connection changed its active path."""
        return self.client_migrations > 0


async def run_demo(size: int, n_paths: int, kill_at: float, timeout: float,
                   quiet: bool = False) -> DemoResult:
    """Run the whole demo in the current event loop (``quiet``: print nothing, for
    ``rendr demo --json``; the result has it all)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result = DemoResult(size=size)

    def say(elapsed: float, side: str, text: str) -> None:
        if not quiet:
            _say(elapsed, side, text)

    def printer(side: str) -> Callable[[rendr.Event], None]:
        def on_event(event: rendr.Event) -> None:
            say(event.at - t0, side, _fmt_event(event))
        return on_event

    specs = [rendr.ListenSpec("tcp", "127.0.0.1:0") for _ in range(n_paths)]
    listener = await rendr.listen(*specs)
    relays: list[TcpRelay] = []
    client: rendr.Conn | None = None
    server: rendr.Conn | None = None
    try:
        for addr in listener.addrs:
            relay = TcpRelay(addr)
            await relay.start()
            relays.append(relay)
        by_addr = {f"{r.addr[0]}:{r.addr[1]}": r for r in relays}
        result.relays = {a: f"{r.upstream[0]}:{r.upstream[1]}" for a, r in by_addr.items()}
        table = Table(title="paths", title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("dialer connects to (relay)")
        table.add_column("listener address")
        for i, relay in enumerate(relays, 1):
            table.add_row(str(i), f"tcp {relay.addr[0]}:{relay.addr[1]}",
                          f"tcp {relay.upstream[0]}:{relay.upstream[1]}")
        if not quiet:
            console.print(table)
            console.print(f"sending {size / MIB:g} MiB; the active path is killed (RST) "
                          f"after {kill_at:.0%} of it has arrived\n")

        dialer = rendr.Dialer(mode=rendr.Mode.PRIME, paths=[
            rendr.PathSpec("tcp", addr) for addr in by_addr])
        client = await dialer.dial()
        client.on_event(printer("client"))
        server = await listener.accept()
        server.on_event(printer("server"))
        # Paths that came up before the callbacks were registered.
        for side, conn in (("client", client), ("server", server)):
            for p in conn.stats().paths:
                say(loop.time() - t0, side,
                     f"[green]path #{p.id} {p.state}[/green] [dim](already) {p.transport} "
                     f"{p.local_addr} -> {p.remote_addr}[/dim]")

        def kill_active() -> None:
            assert client is not None
            active = client.active_path
            stats = client.stats()
            for p in stats.paths:
                if p.id == active and p.remote_addr in by_addr:
                    say(loop.time() - t0, "demo",
                         f"[red bold]killing path #{active}[/red bold] "
                         f"(relay {p.remote_addr} resets both of its TCP connections)")
                    by_addr[p.remote_addr].kill()
                    result.killed_path = active
                    return
            result.notes.append(f"active path {active} not found among relays")

        async def serve(conn: rendr.Conn) -> None:
            digest = hashlib.sha256()
            received = 0
            threshold = int(size * kill_at)
            killed = False
            while True:
                data = await conn.read(1 << 20)
                if not data:
                    break
                digest.update(data)
                received += len(data)
                if not killed and received >= threshold:
                    killed = True
                    result.killed_at_bytes = received
                    kill_active()
            result.received_digest = digest.hexdigest()
            if received != size:
                result.notes.append(f"server received {received} bytes, expected {size}")
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

        start = time.perf_counter()
        try:
            await wait_for(asyncio.gather(serve(server), send(client)), timeout)
        except asyncio.TimeoutError:
            result.error = f"timed out after {timeout:g} s"
        except Exception as exc:  # a library failure: report it, do not hide it
            logger.error("demo transfer failed", exc_info=True)
            result.error = f"{type(exc).__name__}: {exc}"
        result.elapsed = time.perf_counter() - start
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
        for relay in relays:
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
    mbps = result.size / result.elapsed / 1e6 if result.elapsed > 0 else 0.0
    return {
        "ok": result.match and result.migrated and not result.error,
        "version": rendr.__version__,
        "compiled": rendr.__compiled__,
        "event_loop": event_loop,
        "mode": (stats.mode if stats is not None else rendr.Mode.PRIME).name.lower(),
        "size": result.size,
        "paths": paths,
        "killed_path": result.killed_path,
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


def report(result: DemoResult) -> None:
    """Print the demo's outcome."""
    console.print()
    if result.error:
        console.print(f"[red bold]error:[/red bold] {escape(result.error)}")
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    if result.client_stats is not None:
        console.print(_stats_table("client (dialer) paths", result.client_stats))
    if result.server_stats is not None:
        console.print(_stats_table("server (listener) paths", result.server_stats))
    mbps = result.size / result.elapsed / 1e6 if result.elapsed > 0 else 0.0
    console.print(f"transferred:     {result.size / MIB:g} MiB")
    console.print(f"elapsed:         {result.elapsed:.3f} s")
    console.print(f"throughput:      {mbps:.1f} MB/s")
    console.print(f"killed path:     {_fmt_path(result.killed_path)} "
                  f"(after {result.killed_at_bytes:,} bytes received)")
    console.print(f"migration_count: client {result.client_migrations}, "
                  f"server {result.server_migrations}")
    console.print(f"recv_dups:       client {result.client_dups}, server {result.server_dups}")
    console.print("SHA-256")
    console.print(f"  sent      {result.sent_digest or '-'}")
    console.print(f"  received  {result.received_digest or '-'}")
    console.print(f"  echoed    {result.echoed_digest or '-'}")
    verdict = "[green bold]yes[/green bold]" if result.match else "[red bold]no[/red bold]"
    console.print(f"SHA-256 match: {verdict}")
    if not result.migrated:
        console.print("[red bold]no migration happened[/red bold]")


# --------------------------------------------------------------------------- commands
