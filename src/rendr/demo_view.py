"""What ``rendr demo`` shows: its event lines, the live progress display (an overall
bar and the throughput of every path, sampled on the dialer), and the final tables.

Only presentation lives here; :mod:`rendr.demo` runs the transfer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.progress_bar import ProgressBar
from rich.table import Table

import rendr

if TYPE_CHECKING:
    from rendr.demo import DemoResult

__all__ = ["KILL_HOW", "LiveView", "PathRate", "console", "fmt_event", "fmt_path",
           "report", "say"]

MIB = 1024 * 1024

console = Console(highlight=False)
"""Where the demo prints (stdout)."""

_SILENT = ("the relay blackholes its datagrams silently; rendr notices when PINGs "
           "go unanswered (suspect, then down after dead_timeout)")
KILL_HOW = {
    "tcp": "the relay resets both of its TCP connections, RST; the carrier sees it at once",
    "udpflow": _SILENT,
    "quic": _SILENT,
}
"""How the demo kills a path of each kind (its output says which)."""


def fmt_path(path_id: int | None) -> str:
    return "none" if path_id is None or path_id < 0 else f"#{path_id}"


def say(elapsed: float, side: str, text: str) -> None:
    """Print one timestamped line of the demo's log (rich markup); while the live
    display runs, rich prints it above the display."""
    console.print(f"[dim]{elapsed:8.3f}s[/dim] [bold]{side:<6}[/bold] {text}", soft_wrap=True)


def fmt_event(event: rendr.Event) -> str:
    """Rich markup describing ``event``."""
    kind = event.kind
    if kind is rendr.EventKind.PATH_UP:
        text = f"[green]path {fmt_path(event.path_id)} up[/green]"
    elif kind is rendr.EventKind.PATH_DOWN:
        text = f"[red]path {fmt_path(event.path_id)} down[/red] (cause: {event.cause})"
    elif kind is rendr.EventKind.PATH_SUSPECT:
        text = f"[yellow]path {fmt_path(event.path_id)} suspect[/yellow]"
    elif kind is rendr.EventKind.PATH_RESUMED:
        text = f"[green]path {fmt_path(event.path_id)} resumed[/green]"
    elif kind is rendr.EventKind.MIGRATION:
        text = (f"[yellow bold]migration {fmt_path(event.old_path)} -> "
                f"{fmt_path(event.new_path)}[/yellow bold] (cause: {event.cause})")
    elif kind is rendr.EventKind.MODE_CHANGE:
        text = f"mode -> {event.mode}"
    elif kind is rendr.EventKind.CLOSED:
        text = "closed" if event.error is None else f"[red]closed: {event.error!r}[/red]"
    else:  # pragma: no cover - future kinds
        text = str(kind)
    if event.detail:
        text += f" [dim]{escape(event.detail)}[/dim]"
    return text


# --------------------------------------------------------------------------- live view


@dataclass
class PathRate:
    """The dialer's view of one path between two samples."""

    id: int
    kind: str
    state: str
    carried: int = 0
    """Bytes sent plus received on the path so far."""
    rate: float = 0.0
    """Bytes per second over the last sample interval."""
    peak: float = 0.0


class LiveView:
    """The live display: an overall progress bar (bytes the listener received of the
    total, MB/s) and one row per path (its kind, state, throughput now, bytes carried);
    ``*`` marks the active path.  Does nothing unless ``enabled`` and stdout is a
    terminal (no live output into pipes, files or ``--json``)."""

    def __init__(self, total: int, mode: rendr.Mode, enabled: bool = True) -> None:
        self.enabled = enabled and console.is_terminal and not console.is_dumb_terminal
        self.mode = mode
        self.progress = Progress(
            TextColumn("[bold]received"), BarColumn(bar_width=40),
            DownloadColumn(binary_units=True), TransferSpeedColumn(), TimeElapsedColumn(),
            console=console, auto_refresh=False, speed_estimate_period=2.0)
        self.task = self.progress.add_task("transfer", total=total)
        self.paths: list[PathRate] = []
        self.active: int | None = None
        self.killed: int | None = None
        self._live = Live(self, console=console, refresh_per_second=8, transient=False)

    def start(self) -> None:
        if self.enabled:
            self._live.start()

    def stop(self) -> None:
        if self.enabled:
            self._live.refresh()
            self._live.stop()

    def update(self, received: int, paths: list[PathRate], active: int | None,
               killed: int | None) -> None:
        self.progress.update(self.task, completed=received)
        self.paths, self.active, self.killed = paths, active, killed

    def _path_table(self) -> Table:
        table = Table(box=None, padding=(0, 1), show_edge=False, caption_justify="left",
                      caption=f"mode {self.mode}; * active; MB/s sent+received (dialer)")
        table.add_column("path", justify="right")
        table.add_column("kind")
        table.add_column("state")
        table.add_column("MB/s", justify="right")
        table.add_column("", width=30)
        table.add_column("carried", justify="right")
        top = max([p.peak for p in self.paths] + [1.0])
        for p in self.paths:
            marker = " *" if p.id == self.active else ""
            state = "[green]up[/green]" if p.state == "up" else f"[red bold]{p.state}[/red bold]"
            if p.id == self.killed:
                state += " [red](killed)[/red]"
            table.add_row(f"#{p.id}{marker}", p.kind, state, f"{p.rate / 1e6:7.1f}",
                          ProgressBar(total=top, completed=p.rate, width=30),
                          f"{p.carried / MIB:,.1f} MiB")
        return table

    def __rich__(self) -> RenderableType:
        return Group(self.progress, self._path_table())


# --------------------------------------------------------------------------- report


def _stats_table(title: str, stats: rendr.ConnStats) -> Table:
    """A table of the per-path counters of ``stats`` (``*`` marks the active path)."""
    table = Table(title=title, title_justify="left")
    table.add_column("path", justify="right")
    table.add_column("kind")
    table.add_column("state")
    table.add_column("srtt ms", justify="right")
    table.add_column("bytes sent", justify="right")
    table.add_column("bytes recv", justify="right")
    table.add_column("retransmits", justify="right")
    table.add_column("down cause")
    for p in stats.paths:
        table.add_row(
            f"{p.id}{' *' if p.id == stats.active_path else ''}",
            p.transport,
            p.state,
            "-" if p.srtt is None else f"{p.srtt * 1000:.2f}",
            f"{p.bytes_sent:,}",
            f"{p.bytes_received:,}",
            f"{p.retransmits:,}",
            p.down_cause or "",
        )
    return table


def _peaks_line(result: DemoResult) -> str:
    return ", ".join(f"#{i} {kind} {peak / 1e6:.1f}"
                     for i, (kind, peak) in sorted(result.peaks.items()))


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
    mbps = result.received / result.elapsed / 1e6 if result.elapsed > 0 else 0.0
    console.print(f"mode:            {result.mode}")
    done = f"{result.size / MIB:g} MiB"
    if result.received != result.size:
        done = f"[red]{result.received / MIB:.1f} of {done}[/red]"
    console.print(f"transferred:     {done}")
    console.print(f"elapsed:         {result.elapsed:.3f} s")
    console.print(f"throughput:      {mbps:.1f} MB/s")
    if result.peaks:
        console.print(f"peak MB/s:       {_peaks_line(result)}")
    killed = fmt_path(result.killed_path)
    if result.killed_kind:
        killed += f" {result.killed_kind} ({result.kill_method})"
    console.print(f"killed path:     {killed} "
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
    if result.mode is rendr.Mode.PRIME and not result.migrated:
        console.print("[red bold]no migration happened[/red bold]")
    if result.killed_path is not None and not result.killed_down:
        console.print(f"[red bold]the killed path {fmt_path(result.killed_path)} "
                      "never went down[/red bold]")
