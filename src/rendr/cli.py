"""The ``rendr`` command-line interface.

``rendr demo`` (:mod:`rendr.demo`, :mod:`rendr.demo_view`) kills the active path of a
loopback transfer over paths of different kinds and shows that the stream survives;
``rendr serve`` / ``rendr connect`` are a migrating
TCP port-forward (:mod:`rendr.aio.forward`), observable with ``--json`` logs,
``--metrics`` (:mod:`rendr.metrics`) and ``rendr stats`` over a local control socket
(:mod:`rendr.control`).  The CLI holds no protocol logic; it only uses rendr's
public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
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
from rendr.demo import DEFAULT_KINDS, KINDS, console, report, result_json, run_demo
from rendr.gates import gate_command
from rendr.logfmt import json_handler

__all__ = ["cli", "main"]

MIB = 1024 * 1024

T = TypeVar("T")

logger = logging.getLogger("rendr.cli")

log_console = Console(stderr=True)
"""Where ``-v`` logging goes (stderr)."""


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
@click.option("--kinds", default=",".join(DEFAULT_KINDS), show_default=True,
              metavar="KIND,KIND[,...]",
              help="The paths, one per kind, in order (tcp, udpflow, quic; repeats "
                   "allowed; at least two).")
@click.option("--paths", "n_paths", type=click.IntRange(2, 16), default=None,
              help="N TCP paths instead of --kinds (same as --kinds tcp,tcp,...).")
@click.option("--mode", type=click.Choice(["prime", "race", "bond"]), default="prime",
              show_default=True,
              help="prime: one active path, failover; race: every frame on every path; "
                   "bond: data striped over every path.")
@click.option("--kill-at", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.5,
              show_default=True,
              help="Fraction of the data received when the active path is killed.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=120.0, show_default=True,
              help="Give up (and fail) after this many seconds.")
@click.option("--uvloop/--no-uvloop", "use_uvloop", default=True, show_default=True,
              help="Use uvloop's event loop when it is installed.")
@click.option("--json", "as_json", is_flag=True,
              help="No progress or tables: print one JSON object on stdout at the end.")
@click.pass_context
def demo(ctx: click.Context, size_mib: int, kinds: str, n_paths: int | None, mode: str,
         kill_at: float, timeout: float, use_uvloop: bool, as_json: bool) -> int:
    """Send data over paths of different kinds on loopback and kill the active one.

    A listener and a dialer run in this process, by default with three paths: tcp,
    udpflow and quic, each behind a userspace relay.  At --kill-at of the transfer
    the active path is killed: a TCP relay resets both of its connections (RST), a
    UDP relay (udpflow, quic) blackholes the path silently.  A live display shows
    the progress and each path's throughput (on a terminal).  The receiver hashes
    what it got and sends the SHA-256 back.  Exits 0 only if the hashes match and
    the kill was survived: in prime mode the connection migrated, in race and bond
    mode the killed path went down and the transfer completed.
    """
    path_kinds = _demo_kinds(ctx, kinds, n_paths)
    rmode = rendr.Mode[mode.upper()]
    _, loop_name = loop_factory(use_uvloop)
    if not as_json:
        console.print(f"rendr {rendr.__version__} demo, event loop: {loop_name}, {_ENGINE}")
    try:
        result = run(run_demo(size_mib * MIB, path_kinds, kill_at, timeout, quiet=as_json,
                              mode=rmode),
                     use_uvloop=use_uvloop)
    except (OSError, rendr.RendrError) as exc:  # could not even set the demo up
        if as_json:
            click.echo(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        else:
            console.print(f"[red bold]demo failed:[/red bold] {type(exc).__name__}: "
                          f"{escape(str(exc))}")
        return 1
    if as_json:
        click.echo(json.dumps(result_json(result, loop_name), indent=2))
    else:
        report(result)
    return 0 if result.ok else 1


def _demo_kinds(ctx: click.Context, kinds: str, n_paths: int | None) -> list[str]:
    """The demo's path kinds from ``--kinds`` / ``--paths`` (a usage error if bad)."""
    if n_paths is not None:
        if ctx.get_parameter_source("kinds") is not click.core.ParameterSource.DEFAULT:
            raise click.UsageError("--paths and --kinds are exclusive", ctx)
        return ["tcp"] * n_paths
    out = [k.strip().lower() for k in kinds.split(",") if k.strip()]
    bad = sorted(set(out) - set(KINDS))
    if bad:
        raise click.BadParameter(f"unknown kind(s) {', '.join(bad)} "
                                 f"(choose from {', '.join(KINDS)})", ctx, param_hint="--kinds")
    if not 2 <= len(out) <= 16:
        raise click.BadParameter("give 2 to 16 paths", ctx, param_hint="--kinds")
    return out


# --------------------------------------------------------------------------- forwarding


def _split_url(url: str) -> tuple[str, str, dict[str, str | int]]:
    """``tcp://host:port`` (or ``host:port``: tcp) -> (transport, address, options);
    a query gives the transport's options: ``quic://h:5556?insecure=1``,
    ``quic://h:5556?ca=ca.pem&server_name=h``, ``quic://h:5556?pin=<sha256 hex>``,
    ``quic://0.0.0.0:5556?certfile=c.pem&keyfile=k.pem`` (listen), ``udpflow://h:p?mtu=1400``
    (digits become integers)."""
    transport, sep, address = url.partition("://")
    if not sep:
        transport, address = "tcp", url
    address, _, query = address.partition("?")
    if not address or ":" not in address:
        raise click.BadParameter(f"{url!r}: expected TRANSPORT://HOST:PORT[?OPTION=VALUE&...]")
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        pairs = [] if not query else [("", "")]
    options: dict[str, str | int] = {}
    for key, value in pairs:
        if not key.isidentifier():
            raise click.BadParameter(f"{url!r}: expected OPTION=VALUE pairs after '?'")
        options[key] = int(value) if value.isdigit() else value
    return transport, address, options


def _path_spec(url: str) -> rendr.PathSpec:
    transport, address, options = _split_url(url)
    return rendr.PathSpec(transport, address, options={k: str(v) for k, v in options.items()})


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
              help="Where to accept rendr paths (repeatable): tcp://HOST:PORT, "
                   "udpflow://HOST:PORT, quic://HOST:PORT[?certfile=C&keyfile=K] "
                   "(no certificate: a self-signed development one).")
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

        try:
            ln = await rendr.listen(*specs, psk=psk)
        except TypeError as exc:  # an option in a --listen URL the transport lacks
            raise rendr.RendrError(f"--listen: {exc}") from None
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
              help="A path to the server (repeatable): tcp://HOST:PORT, udpflow://HOST:PORT, "
                   "quic://HOST:PORT[?insecure=1 | ?ca=CA.pem&server_name=NAME | ?pin=SHA256].")
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
                          paths=[_path_spec(u) for u in paths],
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


cli.add_command(gate_command)  # ``rendr gate``: the bench/ gates (rendr/gates.py)


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
