"""The ``rendr`` command-line interface.

``rendr demo`` runs a listener and a dialer in one process on loopback, sends a
stream of random data over several TCP paths, kills the active path abortively
(TCP RST) half-way through and shows that the stream survives: the receiver's
SHA-256 matches the sender's, and the connection migrated to another path.

Each path goes through a :class:`rendr.testing.relay.TcpRelay` in front of the
listener, so the kill is an honest external fault: the relay resets both TCP
connections of the path (``SO_LINGER`` 0), exactly as a middlebox or a dying
interface would.  The CLI holds no protocol logic; it only uses rendr's public
API (plus the testing relay).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table
from rich.text import Text

import rendr
from rendr import control as ctl
from rendr.aio.monitor import FlowMonitor
from rendr.aio.runner import loop_factory, run
from rendr.aio.timeouts import wait_for
from rendr.logfmt import json_handler
from rendr.testing.relay import TcpRelay

__all__ = ["cli", "main"]

MIB = 1024 * 1024
CHUNK = 256 * 1024
"""Size of one ``write()`` of the demo sender."""
POOL = 4 * MIB + 4099
"""Size of the random pool the sender's chunks are cut from (at varying offsets)."""
STRIDE = 104_729
"""Offset step between consecutive chunks in the pool (a prime: no two neighbours match)."""

T = TypeVar("T")

logger = logging.getLogger("rendr.cli")

console = Console(highlight=False)
"""Where the demo prints (stdout)."""
log_console = Console(stderr=True)
"""Where ``-v`` logging goes (stderr)."""


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

    @property
    def match(self) -> bool:
        """Whether the sender's, receiver's and echoed digests are all equal."""
        return bool(self.sent_digest) and (
            self.sent_digest == self.received_digest == self.echoed_digest)

    @property
    def migrated(self) -> bool:
        """Whether the dialer's connection changed its active path."""
        return self.client_migrations > 0


async def _demo(size: int, n_paths: int, kill_at: float, timeout: float) -> DemoResult:
    """Run the whole demo in the current event loop."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result = DemoResult(size=size)

    def printer(side: str) -> Callable[[rendr.Event], None]:
        def on_event(event: rendr.Event) -> None:
            _say(event.at - t0, side, _fmt_event(event))
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
        table = Table(title="paths", title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("dialer connects to (relay)")
        table.add_column("listener address")
        for i, relay in enumerate(relays, 1):
            table.add_row(str(i), f"tcp {relay.addr[0]}:{relay.addr[1]}",
                          f"tcp {relay.upstream[0]}:{relay.upstream[1]}")
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
                _say(loop.time() - t0, side,
                     f"[green]path #{p.id} {p.state}[/green] [dim](already) {p.transport} "
                     f"{p.local_addr} -> {p.remote_addr}[/dim]")

        def kill_active() -> None:
            assert client is not None
            active = client.active_path
            stats = client.stats()
            for p in stats.paths:
                if p.id == active and p.remote_addr in by_addr:
                    _say(loop.time() - t0, "demo",
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


def _report(result: DemoResult) -> None:
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

_ENGINE = "compiled engine" if rendr.__compiled__ else "pure-Python engine"


@click.group(name="rendr", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(rendr.__version__, "--version", prog_name="rendr",
                      message=f"%(prog)s, version %(version)s ({_ENGINE})")
@click.option("-v", "--verbose", count=True,
              help="Log rendr's internals (-v: info, -vv: debug).")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """rendr: one stable connection over swappable network paths."""
    ctx.obj = {"verbose": verbose}
    _setup_logging(verbose, json_logs=False)


def _setup_logging(verbose: int, json_logs: bool, static: dict[str, Any] | None = None
                   ) -> None:
    """Human logs through rich (warnings; -v info; -vv debug), or with ``json_logs`` one
    JSON object per record on stderr (info and up: the flows' events; -vv debug)."""
    if json_logs:
        level = logging.DEBUG if verbose >= 2 else logging.INFO
        handler = json_handler(sys.stderr, static)
    else:
        level = (logging.WARNING if verbose == 0 else
                 logging.INFO if verbose == 1 else logging.DEBUG)
        handler = RichHandler(console=log_console, show_path=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s", datefmt="[%X]"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


@cli.command()
@click.option("--size-mib", type=click.IntRange(min=1), default=64, show_default=True,
              help="MiB of random data to send.")
@click.option("--paths", "n_paths", type=click.IntRange(2, 16), default=2, show_default=True,
              help="Number of TCP paths (each behind its own relay).")
@click.option("--kill-at", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.5,
              show_default=True,
              help="Fraction of the data received when the active path is killed.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=120.0, show_default=True,
              help="Give up (and fail) after this many seconds.")
@click.option("--uvloop/--no-uvloop", "use_uvloop", default=True, show_default=True,
              help="Use uvloop's event loop when it is installed.")
def demo(size_mib: int, n_paths: int, kill_at: float, timeout: float, use_uvloop: bool) -> int:
    """Send data over several loopback paths and kill the active one half-way.

    A listener and a dialer run in this process.  Every path goes through a
    userspace TCP relay; at --kill-at of the transfer the relay of the active
    path resets both of its TCP connections (RST).  The receiver hashes what it
    got and sends the SHA-256 back.  Exits 0 only if the hashes match and the
    connection migrated.
    """
    _, loop_name = loop_factory(use_uvloop)
    console.print(f"rendr {rendr.__version__} demo, event loop: {loop_name}, {_ENGINE}")
    try:
        result = run(_demo(size_mib * MIB, n_paths, kill_at, timeout), use_uvloop=use_uvloop)
    except (OSError, rendr.RendrError) as exc:  # could not even set the demo up
        console.print(f"[red bold]demo failed:[/red bold] {type(exc).__name__}: {escape(str(exc))}")
        return 1
    _report(result)
    return 0 if result.match and result.migrated and not result.error else 1


# --------------------------------------------------------------------------- forwarding


def _split_url(url: str) -> tuple[str, str]:
    """``tcp://host:port`` (or ``host:port``: tcp) -> (transport, address)."""
    transport, sep, address = url.partition("://")
    if not sep:
        transport, address = "tcp", url
    if not address or ":" not in address:
        raise click.BadParameter(f"{url!r}: expected TRANSPORT://HOST:PORT")
    return transport, address


def _host_port(value: str, any_port: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); port 0 (pick a free one) only if ``any_port``."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 if any_port else 1) <= int(port) < 65536:
        raise click.BadParameter(f"{value!r}: expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def _fmt_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _read_psk(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        psk = f.read().strip()
    if len(psk) < 16:
        raise click.BadParameter(f"{path}: a pre-shared key needs at least 16 bytes")
    return psk


_PSK = click.option("--psk-file", type=click.Path(exists=True, dir_okay=False),
                    help="File holding a pre-shared key (both ends, >= 16 bytes).")
_UVLOOP = click.option("--uvloop/--no-uvloop", "use_uvloop", default=True, show_default=True,
                       help="Use uvloop's event loop when it is installed.")
_JSON_LOGS = click.option("--json", "json_logs", is_flag=True,
                          help="Log one JSON object per record on stderr (time, level, "
                               "logger, message, flow_id, path_id, event, ...).")
_METRICS = click.option("--metrics", metavar="HOST:PORT",
                        help="Serve Prometheus metrics at http://HOST:PORT/metrics "
                             "(needs prometheus_client: pip install 'rendr[metrics]').")
_CONTROL = click.option(
    "--control", is_flag=False, flag_value="auto", default=None, metavar="[PATH|HOST:PORT]",
    help="Serve live stats for 'rendr stats' on a unix socket (mode 0600; alone: "
         "$XDG_RUNTIME_DIR/rendr/ROLE-PID.sock) or a loopback HOST:PORT.")


@dataclass
class _Observe:
    """How a forwarder reports: log format, metrics address, control socket."""

    json_logs: bool
    metrics: tuple[str, int] | None
    control: ctl.ControlAddress | None  # "auto": the default path

    def say(self, message: str, **fields: Any) -> None:
        """Announce something to the user: a rich line, or an info record in JSON."""
        if self.json_logs:
            logger.info(message, extra=fields)
        else:
            log_console.print(message, markup=False, highlight=False)

    @contextlib.asynccontextmanager
    async def serving(self, monitor: FlowMonitor) -> AsyncIterator[None]:
        """The metrics endpoint and the control socket, while the forwarder runs."""
        async with contextlib.AsyncExitStack() as stack:
            if self.metrics is not None:
                from rendr.metrics import start_metrics_server

                server = await start_metrics_server(monitor, *self.metrics)
                stack.push_async_callback(server.wait_closed)
                stack.callback(server.close)
                port = server.sockets[0].getsockname()[1]
                self.say(f"rendr {monitor.role}: metrics on "
                         f"http://{self.metrics[0]}:{port}/metrics",
                         event="metrics_listening", metrics=f"{self.metrics[0]}:{port}")
            if self.control is not None:
                if self.control == "auto":
                    control = await ctl.start_default_control_server(monitor)
                else:
                    control = await ctl.start_control_server(monitor, self.control)
                await stack.enter_async_context(control)
                where = ctl._fmt(control.address)
                self.say(f"rendr {monitor.role}: control socket {where}",
                         event="control_listening", control=where)
            yield


def _observe(ctx: click.Context, role: str, json_logs: bool, metrics: str | None,
             control: str | None) -> _Observe:
    """Check the observability options (bad ones are usage errors) and set logging up."""
    if json_logs:
        _setup_logging(ctx.obj["verbose"] if ctx.obj else 0, json_logs=True,
                       static={"role": role})
    metrics_at = None
    if metrics is not None:
        metrics_at = _host_port(metrics, any_port=True)
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise click.UsageError("--metrics needs the prometheus_client package: "
                                   "pip install 'rendr[metrics]'") from None
    control_at: ctl.ControlAddress | None = None
    if control is not None:
        try:
            control_at = control if control == "auto" else ctl.parse_control_address(control)
        except ctl.ControlError as exc:
            raise click.BadParameter(str(exc), param_hint="--control") from None
    return _Observe(json_logs, metrics_at, control_at)


@cli.command()
@click.option("--listen", "listens", multiple=True, required=True, metavar="URL",
              help="Where to accept rendr paths: tcp://HOST:PORT (repeatable).")
@click.option("--forward", "target", required=True, metavar="HOST:PORT",
              help="TCP address every flow is forwarded to (e.g. 127.0.0.1:22).")
@_PSK
@_UVLOOP
@_JSON_LOGS
@_METRICS
@_CONTROL
@click.pass_context
def serve(ctx: click.Context, listens: tuple[str, ...], target: str, psk_file: str | None,
          use_uvloop: bool, json_logs: bool, metrics: str | None, control: str | None) -> int:
    """Accept rendr flows and forward each to a TCP service (e.g. sshd)."""
    obs = _observe(ctx, "serve", json_logs, metrics, control)
    specs = [rendr.ListenSpec(*_split_url(u)) for u in listens]
    to = _host_port(target)
    psk = _read_psk(psk_file)

    async def main() -> None:
        from rendr.aio.forward import forward_flows

        ln = await rendr.listen(*specs, psk=psk)
        addrs = [f"{s.transport}://{_fmt_host_port(h, p)}"
                 for s, (h, p, *_) in zip(specs, ln.addrs, strict=False)]
        monitor = FlowMonitor("serve", {"listen": addrs, "forward": f"{to[0]}:{to[1]}"})
        async with ln, obs.serving(monitor):
            obs.say(f"rendr serve: listening on {', '.join(a.split('://')[1] for a in addrs)}"
                    f", forwarding to {to[0]}:{to[1]}",
                    event="listening", listen=addrs, forward=f"{to[0]}:{to[1]}")
            await forward_flows(ln, to, monitor)

    return _run_forever(main(), use_uvloop, obs.json_logs)


@cli.command()
@click.option("--path", "paths", multiple=True, required=True, metavar="URL",
              help="A path to the server: tcp://HOST:PORT (repeatable).")
@click.option("--mode", type=click.Choice([m.name.lower() for m in rendr.Mode]),
              default="prime", show_default=True, help="How the flow uses its paths.")
@click.option("--local", metavar="HOST:PORT",
              help="Accept TCP here; each connection gets a flow of its own.")
@click.option("--stdio", is_flag=True,
              help="One flow on stdin/stdout (netcat-style, for ssh's ProxyCommand).")
@_PSK
@_UVLOOP
@_JSON_LOGS
@_METRICS
@_CONTROL
@click.pass_context
def connect(ctx: click.Context, paths: tuple[str, ...], mode: str, local: str | None,
            stdio: bool, psk_file: str | None, use_uvloop: bool, json_logs: bool,
            metrics: str | None, control: str | None) -> int:
    """Forward a local TCP port (or stdin/stdout) over a migrating rendr flow."""
    if (local is None) == (not stdio):
        raise click.UsageError("give exactly one of --local HOST:PORT and --stdio")
    obs = _observe(ctx, "connect", json_logs, metrics, control)
    dialer = rendr.Dialer(mode=rendr.Mode[mode.upper()],
                          paths=[rendr.PathSpec(*_split_url(u)) for u in paths],
                          psk=_read_psk(psk_file))
    info: dict[str, Any] = {"path_urls": list(paths), "mode": mode,
                            "local": "stdio" if stdio else local}

    async def main() -> None:
        from rendr.aio.forward import forward_local, forward_stdio

        monitor = FlowMonitor("connect", info)
        async with obs.serving(monitor):
            if stdio:
                await forward_stdio(dialer, monitor)
                return
            assert local is not None
            server = await forward_local(dialer, _host_port(local, any_port=True), monitor)
            host, port = server.sockets[0].getsockname()[:2]
            monitor.info["local"] = f"{host}:{port}"
            obs.say(f"rendr connect: forwarding {host}:{port} over {len(paths)} path(s)",
                    event="listening", local=f"{host}:{port}", path_urls=list(paths))
            async with server:
                await server.serve_forever()

    return _run_forever(main(), use_uvloop, obs.json_logs)


def _run_forever(coro: Coroutine[Any, Any, None], use_uvloop: bool,
                 json_logs: bool = False) -> int:
    """Run a forwarder until it ends, Ctrl-C or SIGTERM (both end it cleanly: the
    control socket's file is removed); bad addresses and the like are one line and
    exit status 1 (a traceback only with -vv)."""
    terminated = False

    async def guarded() -> None:
        nonlocal terminated
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_term() -> None:
            nonlocal terminated
            terminated = True
            task.cancel()

        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, on_term)
        try:
            await coro
        except asyncio.CancelledError:
            if not terminated:
                raise

    try:
        run(guarded(), use_uvloop=use_uvloop)
    except KeyboardInterrupt:
        return 0
    except (OSError, rendr.RendrError, ctl.ControlError) as exc:
        logger.debug("forwarder failed", exc_info=True)
        if json_logs:
            logger.error("%s: %s", type(exc).__name__, exc, extra={"event": "failed"})
        else:
            log_console.print(f"[red bold]rendr:[/red bold] {type(exc).__name__}: "
                              f"{escape(str(exc))}")
        return 1
    return 0


# --------------------------------------------------------------------------- stats


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns


def _fmt_secs(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def _fmt_ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1000:.2f}"


def _render_stats(doc: dict[str, Any]) -> RenderableType:
    """The snapshot of a control socket as rich tables: a header, the flows, the paths."""
    totals = doc.get("totals", {})
    flows: list[dict[str, Any]] = doc.get("flows", [])
    where = (f"listening on {', '.join(doc.get('listen', []))} -> {doc.get('forward')}"
             if doc.get("role") == "serve" else
             f"{doc.get('local')} over {', '.join(doc.get('path_urls', []))}")
    header = Text(f"rendr {doc.get('role')} (pid {doc.get('pid')}), up "
                  f"{_fmt_secs(float(doc.get('uptime', 0)))}, {where}\n"
                  f"{len(flows)} flow(s) open, {totals.get('flows_opened', 0)} opened, "
                  f"{totals.get('flows_closed', 0)} closed, "
                  f"{totals.get('flows_failed', 0)} failed")
    compact: dict[str, Any] = {"box": box.SIMPLE_HEAD, "pad_edge": False, "show_edge": False,
                               "collapse_padding": True, "title_justify": "left"}
    many = len(flows) > 1  # the paths' flow column only when there is a choice
    ft = Table(title="flows", **compact)
    ft.add_column("flow", no_wrap=True, min_width=8)
    for col in ("peer", "state", "mode", "active", "migr", "age", "in/s", "out/s", "read",
                "written"):
        ft.add_column(col, justify="left" if col in ("peer", "state", "mode") else "right")
    pt = Table(title="paths (* active)", **compact)
    if many:
        pt.add_column("flow", no_wrap=True, min_width=8)
    for col in ("path", "remote", "state", "rtt ms", "send/s", "recv/s", "sent", "recv",
                "retx", "cause"):
        pt.add_column(col, justify="left" if col in ("remote", "state", "cause") else "right")
    for f in flows:
        short = str(f["flow_id"])[:8]
        active = f.get("active_path")
        ft.add_row(short, f.get("peer") or "-", f["state"], f["mode"],
                   "-" if active is None else f"#{active}", str(f["migrations"]),
                   _fmt_secs(float(f["age"])), _fmt_bytes(f["read_rate"]),
                   _fmt_bytes(f["write_rate"]), _fmt_bytes(f["bytes_read"]),
                   _fmt_bytes(f["bytes_written"]))
        for p in f["paths"]:
            state = p["state"] + (" (suspect)" if p.get("suspect") else "")
            rtt = _fmt_ms(p["srtt"]) + ("" if p["rttvar"] is None
                                        else f"±{_fmt_ms(p['rttvar'])}")
            pt.add_row(*([short] if many else []), f"{p['id']}{'*' if p['active'] else ''}",
                       f"{p['transport']}://{p['remote_addr']}", state, rtt,
                       _fmt_bytes(p["send_rate"]), _fmt_bytes(p["recv_rate"]),
                       _fmt_bytes(p["bytes_sent"]), _fmt_bytes(p["bytes_received"]),
                       _fmt_bytes(p["retransmits"]), p.get("down_cause") or "")
    return Group(header, ft, pt) if flows else Group(header)


def _control_address(control: str | None) -> ctl.ControlAddress:
    if control is not None:
        try:
            return ctl.parse_control_address(control)
        except ctl.ControlError as exc:
            raise click.BadParameter(str(exc), param_hint="--control") from None
    found = ctl.find_control_sockets()
    if len(found) == 1:
        return found[0]
    if not found:
        raise click.UsageError(
            f"no running 'rendr serve/connect --control' in {ctl.default_control_dir()}; "
            "give --control PATH|HOST:PORT")
    raise click.UsageError("several forwarders are running; choose one with --control: "
                           + ", ".join(found))


@cli.command()
@click.option("--control", metavar="PATH|HOST:PORT",
              help="The forwarder's control socket (default: the only one running under "
                   "$XDG_RUNTIME_DIR/rendr or /tmp/rendr-UID).")
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between refreshes with --watch.")
@click.option("--count", type=click.IntRange(min=1),
              help="With --watch: stop after this many refreshes.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the raw JSON (with --watch: one document per line).")
def stats(control: str | None, watch: bool, interval: float, count: int | None,
          as_json: bool) -> int:
    """Show the flows and paths of a running 'rendr serve/connect --control'.

    Per flow: state, mode, active path, migrations, throughput in and out; per path:
    state, RTT, throughput, bytes, retransmitted bytes.  Throughputs are averaged since
    the previous look (since the flow began on the first).
    """
    address = _control_address(control)

    def fetch() -> dict[str, Any]:
        try:
            return ctl.fetch_stats(address)
        except (OSError, ValueError) as exc:
            raise click.ClickException(
                f"control socket {ctl._fmt(address)}: {type(exc).__name__}: {exc}") from None

    # piped or redirected: wide enough not to fold the tables (unless $COLUMNS says)
    wide = not console.is_terminal and "COLUMNS" not in os.environ
    out = Console(highlight=False, width=160) if wide else console
    if not watch:
        doc = fetch()
        if as_json:
            click.echo(json.dumps(doc, indent=2))
        else:
            out.print(_render_stats(doc))
        return 0
    n = 0
    try:
        if as_json or not console.is_terminal:  # one document / table after another
            while True:
                doc = fetch()
                if as_json:
                    click.echo(json.dumps(doc))
                else:
                    out.print(_render_stats(doc), "")
                n += 1
                if count is not None and n >= count:
                    break
                time.sleep(interval)
        else:
            with Live(console=console, auto_refresh=False) as live:
                while True:
                    live.update(_render_stats(fetch()), refresh=True)
                    n += 1
                    if count is not None and n >= count:
                        break
                    time.sleep(interval)
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    try:
        rv = cli.main(args=argv, prog_name="rendr", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        return 1
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return rv if isinstance(rv, int) else 0
