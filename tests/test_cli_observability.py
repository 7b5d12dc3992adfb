"""Observability of ``rendr serve`` / ``rendr connect``: ``--json`` logs, the
``--metrics`` Prometheus endpoint, the ``--control`` socket and ``rendr stats``.

The end-to-end test runs the forwarder as a user would (two processes, a TCP echo
backend, TCP relays in front of the server's two ports so that a path can be killed)
and reads it the three ways; the others drive the pieces in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import socket
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import rendr
from rendr import control as ctl
from rendr.aio.monitor import FlowMonitor
from rendr.cli import main
from rendr.logfmt import JsonFormatter, json_handler
from rendr.metrics import metrics_registry, start_metrics_server
from rendr.testing.relay import TcpRelay

MIB = 1 << 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- helpers


class JsonLog:
    """The ``--json`` stderr of a subprocess: every line must be one JSON object."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        self.stream = proc.stderr
        self.records: list[dict[str, Any]] = []

    async def until(self, event: str, timeout: float = 15.0, **fields: Any) -> dict[str, Any]:
        """Read records until one with ``event`` (and ``fields``) arrives; return it."""
        def match(r: dict[str, Any]) -> bool:
            return r.get("event") == event and all(r.get(k) == v for k, v in fields.items())

        for r in self.records:
            if match(r):
                return r
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            line = await asyncio.wait_for(self.stream.readline(), deadline - loop.time())
            assert line, f"stderr ended before {event}: {self.records}"
            record = json.loads(line)  # not JSON: the test fails here
            assert isinstance(record, dict), line
            self.records.append(record)
            if match(record):
                return record


def _gone(path: str) -> bool:
    return not os.path.lexists(path)


async def _rendr(*args: str) -> asyncio.subprocess.Process:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rendr", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def _stats(*args: str) -> str:
    proc = await _rendr("stats", *args)
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode(errors="replace")
    return out.decode()


async def _scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """GET /metrics; {sample name: [(labels, value), ...]} (the text must parse)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"text/plain; version=0.0.4" in head, head
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def _one(samples: dict[str, list[tuple[dict[str, str], float]]], name: str,
         **labels: str) -> float:
    found = [v for lab, v in samples.get(name, [])
             if all(lab.get(k) == x for k, x in labels.items())]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


@contextlib.asynccontextmanager
async def _echo_backend() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
    await asyncio.wait_for(proc.wait(), 10)


# --------------------------------------------------------------------------- end to end


@pytest.mark.timeout(60)
async def test_forwarder_json_logs_metrics_and_stats(tmp_path: Path) -> None:
    """serve and connect with --json, --metrics and --control; a flow through them,
    its active path killed: every view shows the flow, its paths and the migration."""
    async with _echo_backend() as back_port:
        s1, s2, m_serve, m_conn = (_free_port() for _ in range(4))
        serve_sock = str(tmp_path / "serve.sock")
        serve = await _rendr("serve", "--json", "--listen", f"tcp://127.0.0.1:{s1}",
                             "--listen", f"tcp://127.0.0.1:{s2}",
                             "--forward", f"127.0.0.1:{back_port}",
                             "--metrics", f"127.0.0.1:{m_serve}", "--control", serve_sock)
        relays = [TcpRelay(("127.0.0.1", s1)), TcpRelay(("127.0.0.1", s2))]
        connect: asyncio.subprocess.Process | None = None
        try:
            slog = JsonLog(serve)
            listening = await slog.until("listening")
            assert listening["listen"] == [f"tcp://127.0.0.1:{s1}", f"tcp://127.0.0.1:{s2}"]
            for r in relays:
                await r.start()
            by_addr = {f"{r.addr[0]}:{r.addr[1]}": r for r in relays}
            conn_sock = str(tmp_path / "connect.sock")
            connect = await _rendr("connect", "--json", *[
                a for r in relays for a in ("--path", f"tcp://{r.addr[0]}:{r.addr[1]}")],
                "--local", "127.0.0.1:0", "--metrics", f"127.0.0.1:{m_conn}",
                "--control", conn_sock)
            clog = JsonLog(connect)
            local = (await clog.until("listening"))["local"]
            host, port = local.rsplit(":", 1)

            # every record carries the basic fields; the control socket is private
            for rec in slog.records + clog.records:
                assert {"time", "level", "logger", "message", "role"} <= rec.keys(), rec
            assert stat.S_IMODE(os.stat(serve_sock).st_mode) == 0o600

            before = await _scrape(m_serve)
            assert _one(before, "rendr_flows_active") == 0
            assert _one(before, "rendr_bytes_read_total") == 0
            assert "process_cpu_seconds_total" in before

            # traffic: 1 MiB echoed, the TCP connection kept open
            reader, writer = await asyncio.open_connection(host, int(port))
            payload = os.urandom(MIB)
            writer.write(payload)
            assert await asyncio.wait_for(reader.readexactly(MIB), 15) == payload

            opened = await slog.until("flow_opened")
            flow_id = opened["flow_id"]
            assert len(flow_id) == 32 and opened["logger"] == "rendr.flow"
            assert opened["level"] == "info" and isinstance(opened["path_id"], int)
            copened = await clog.until("flow_opened")
            assert copened["flow_id"] == flow_id  # the same flow, named alike on both ends
            assert copened["peer"].startswith("127.0.0.1:")

            after = await _scrape(m_serve)
            assert _one(after, "rendr_flows_active") == 1
            assert _one(after, "rendr_flows_opened_total") == 1
            assert _one(after, "rendr_flow_bytes_read_total", flow_id=flow_id) == MIB
            assert _one(after, "rendr_flow_bytes_written_total", flow_id=flow_id) == MIB
            assert _one(after, "rendr_bytes_read_total") == MIB
            ups = [lab["path_id"] for lab, v in after["rendr_path_up"]
                   if lab["flow_id"] == flow_id and v == 1]
            assert sorted(ups) == ["1", "2"]
            active = [lab["path_id"] for lab, v in after["rendr_path_active"] if v == 1]
            assert len(active) == 1
            assert _one(after, "rendr_path_bytes_received_total", flow_id=flow_id,
                        path_id=active[0]) > MIB  # payload plus framing
            assert _one(after, "rendr_path_state", flow_id=flow_id, path_id=active[0],
                        state="up") == 1

            # rendr stats --json on the dialer's side: the flow, both paths, one active
            doc = json.loads(await _stats("--control", conn_sock, "--json"))
            assert doc["role"] == "connect" and doc["pid"] == connect.pid
            [flow] = doc["flows"]
            assert flow["flow_id"] == flow_id and flow["migrations"] == 0
            assert flow["state"] == "active" and flow["mode"] == "prime"
            assert flow["bytes_written"] == MIB and flow["bytes_read"] == MIB
            assert flow["write_rate"] > 0
            paths = {p["id"]: p for p in flow["paths"]}
            assert sorted(paths) == [1, 2]
            assert all(p["state"] == "up" for p in paths.values())
            [old] = [p for p in paths.values() if p["active"]]
            assert old["id"] == flow["active_path"]
            assert old["bytes_sent"] >= MIB

            # kill the active path (both TCP connections reset at the relay)
            by_addr[old["remote_addr"]].kill()
            migration = await clog.until("migration")
            assert migration["flow_id"] == flow_id and migration["old_path"] == old["id"]
            assert migration["new_path"] != old["id"] and migration["cause"]
            down = await clog.until("path_down", path_id=old["id"])
            assert down["cause"] == "reset"
            writer.write(payload)
            assert await asyncio.wait_for(reader.readexactly(MIB), 15) == payload

            doc = json.loads(await _stats("--control", conn_sock, "--json"))
            [flow] = doc["flows"]
            assert flow["migrations"] == 1 and flow["bytes_written"] == 2 * MIB
            paths = {p["id"]: p for p in flow["paths"]}
            assert paths[old["id"]]["state"] != "up" and not paths[old["id"]]["active"]
            assert paths[old["id"]]["down_cause"] == "reset"
            assert paths[flow["active_path"]]["state"] == "up"
            cmet = await _scrape(m_conn)
            assert _one(cmet, "rendr_migrations_total") == 1
            assert _one(cmet, "rendr_flow_migrations_total", flow_id=flow_id) == 1
            assert _one(cmet, "rendr_flow_active_path", flow_id=flow_id) \
                == flow["active_path"]
            assert _one(cmet, "rendr_path_up", flow_id=flow_id, path_id=str(old["id"])) == 0

            # the human view: the same flow and paths as a table
            table = await _stats("--control", serve_sock)
            assert "rendr serve" in table and flow_id[:8] in table
            assert "1 flow(s) open" in table and "paths" in table
            tables = await _stats("--control", serve_sock, "--watch", "--count", "2",
                                  "--interval", "0.2")
            assert tables.count("rendr serve (pid") == 2 and tables.count(flow_id[:8]) == 2
            watch = await _stats("--control", serve_sock, "--json", "--watch",
                                 "--count", "2", "--interval", "0.3")
            docs = [json.loads(line) for line in watch.splitlines()]
            assert len(docs) == 2 and all(d["flows"][0]["flow_id"] == flow_id for d in docs)

            # the flow ends: logged with its counters, the totals keep them
            writer.close()
            closed = await slog.until("flow_closed")
            assert closed["flow_id"] == flow_id and closed["bytes_read"] == 2 * MIB
            end = await _scrape(m_serve)
            assert _one(end, "rendr_flows_active") == 0
            assert _one(end, "rendr_flows_closed_total") == 1
            assert _one(end, "rendr_bytes_read_total") == 2 * MIB
            assert "rendr_flow_bytes_read_total" not in end
        finally:
            for proc in (connect, serve):
                if proc is not None:
                    await _stop(proc)
            for r in relays:
                await r.close()
        assert serve.returncode == 0  # SIGTERM ends it cleanly...
        assert _gone(serve_sock)  # ...and removes its control socket


# --------------------------------------------------------------------------- in-process


def test_json_formatter_fields_and_extras() -> None:
    stream = io.StringIO()
    log = logging.getLogger("rendr.test_json")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    handler = json_handler(stream, {"role": "serve", "flow_id": "static"})
    log.addHandler(handler)
    try:
        log.warning("path %d down", 3, extra={
            "flow_id": b"\x01\xab", "path_id": 3, "event": rendr.EventKind.PATH_DOWN,
            "mode": rendr.Mode.BOND, "paths": (1, 2), "where": Path("/x")})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it failed")
    finally:
        log.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "path 3 down" and first["level"] == "warning"
    assert first["logger"] == "rendr.test_json" and first["time"].endswith("Z")
    assert first["flow_id"] == "01ab"  # the record's own field wins over the static one
    assert first["role"] == "serve" and first["path_id"] == 3
    assert first["event"] == "path_down" and first["mode"] == "bond"
    assert first["paths"] == [1, 2] and first["where"] == "/x"
    assert "args" not in first and "msg" not in first and "exc_info" not in first
    assert second["level"] == "error" and "ValueError: boom" in second["exc_info"]
    assert JsonFormatter().format(logging.makeLogRecord({"msg": "x\ny"})).count("\n") == 0


@contextlib.asynccontextmanager
async def _flow() -> AsyncIterator[tuple[rendr.Conn, rendr.Conn]]:
    """A loopback flow over two TCP paths: (dialer's conn, listener's conn)."""
    listener = await rendr.listen(rendr.ListenSpec("tcp", "127.0.0.1:0"),
                                  rendr.ListenSpec("tcp", "127.0.0.1:0"))
    try:
        dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"{h}:{p}")
                                     for h, p, *_ in listener.addrs])
        client = await dialer.dial()
        server = await listener.accept()
        try:
            yield client, server
        finally:
            client.abort()
            server.abort()
    finally:
        await listener.close()


async def test_metrics_collector_reads_live_stats_at_scrape_time(
        caplog: pytest.LogCaptureFixture) -> None:
    monitor = FlowMonitor("connect")
    server = await start_metrics_server(monitor, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with _flow() as (client, peer):
            with caplog.at_level(logging.INFO, "rendr.flow"), \
                    monitor.tracking(client, "test"):
                fid = client.flow_id.hex()
                first = await _scrape(port)
                assert _one(first, "rendr_flow_bytes_written_total", flow_id=fid) == 0
                await client.write(b"x" * 100_000)
                assert len(await peer.readexactly(100_000)) == 100_000
                second = await _scrape(port)  # no sampling in between: read now
                assert _one(second, "rendr_flow_bytes_written_total", flow_id=fid) \
                    == 100_000
                sent = sum(v for lab, v in second["rendr_path_bytes_sent_total"])
                assert sent >= 100_000
                assert _one(second, "rendr_info", role="connect") == 1
            assert monitor.totals.bytes_written == 100_000 and not monitor.flows
            records = [r for r in caplog.records if r.name == "rendr.flow"]
            assert getattr(records[0], "event", None) == "flow_opened"
            assert getattr(records[-1], "event", None) == "flow_closed"
            assert all(getattr(r, "flow_id", None) == fid for r in records)
        # other requests: 404 and 405, and a registry the exporter can be given
        for request, status in ((b"GET /nope HTTP/1.1\r\n\r\n", b"404"),
                                (b"POST /metrics HTTP/1.1\r\n\r\n", b"405")):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            assert (await reader.read()).split(b" ")[1] == status
            writer.close()
        names = {m.name for m in metrics_registry(monitor, process=False).collect()}
        assert "rendr_flows_active" in names and "process_cpu_seconds" not in names
    finally:
        server.close()
        await server.wait_closed()


async def test_control_socket_is_private_and_serves_snapshots(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monitor = FlowMonitor("serve", {"listen": ["tcp://127.0.0.1:1"], "forward": "x:1"})
    async with _flow() as (client, _peer), await ctl.start_default_control_server(monitor) \
            as control:
        path = control.address
        assert isinstance(path, str) and path == ctl.default_control_path("serve")
        assert Path(path).parent == tmp_path / "rendr"
        assert stat.S_IMODE(os.stat(Path(path).parent).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert ctl.find_control_sockets() == [path]
        with monitor.tracking(client, "peer-x"):
            doc = await asyncio.to_thread(ctl.fetch_stats, path)
            [flow] = doc["flows"]
            assert flow["flow_id"] == client.flow_id.hex() and flow["peer"] == "peer-x"
            assert [p["id"] for p in flow["paths"]] == [1, 2]
            # 'rendr stats' finds the only running one by itself
            assert await asyncio.to_thread(main, ["stats", "--json"]) == 0
            assert json.loads(capsys.readouterr().out)["flows"][0]["flow_id"] == \
                client.flow_id.hex()
            assert await asyncio.to_thread(main, ["stats"]) == 0
            out = capsys.readouterr().out
            assert client.flow_id.hex()[:8] in out and "peer-x" in out
        # a second program cannot take a live socket; an unknown command is an error
        with pytest.raises(OSError, match="another program"):
            await ctl.start_control_server(monitor, path)
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"shutdown\n")
        reply = json.loads(await reader.read())
        writer.close()
        assert reply == {"error": "unknown command 'shutdown' (try 'stats')"}
    assert _gone(path)
    assert ctl.find_control_sockets() == []


async def test_control_socket_refuses_non_loopback(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("0.0.0.0:9999", "192.0.2.7:9999", "[::]:9999", "[2001:db8::1]:1"):
        with pytest.raises(ctl.ControlError, match="not loopback"):
            ctl.parse_control_address(bad)
    monitor = FlowMonitor("serve")
    with pytest.raises(ctl.ControlError, match="not loopback"):
        await ctl.start_control_server(monitor, ("0.0.0.0", 0))
    assert ctl.parse_control_address("127.0.0.1:5") == ("127.0.0.1", 5)
    assert ctl.parse_control_address("[::1]:5") == ("::1", 5)
    assert ctl.parse_control_address("rel.sock") == "rel.sock"
    async with await ctl.start_control_server(monitor, ("127.0.0.1", 0)) as tcp:
        assert isinstance(tcp.address, tuple) and tcp.address[0] == "127.0.0.1"
        doc = await asyncio.to_thread(ctl.fetch_stats, tcp.address)
        assert doc["role"] == "serve" and doc["flows"] == []
    # a file that is not a socket is left alone; a stale socket is replaced
    regular = tmp_path / "file.sock"
    regular.write_text("keep")
    with pytest.raises(ctl.ControlError, match="not a socket"):
        await ctl.start_control_server(monitor, str(regular))
    assert regular.read_text() == "keep"
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))
    async with await ctl.start_control_server(monitor, str(stale)):
        assert (await asyncio.to_thread(ctl.fetch_stats, str(stale)))["flows"] == []
    # the CLI: one line, usage error, no traceback
    assert main(["serve", "--listen", "tcp://127.0.0.1:0", "--forward", "127.0.0.1:1",
                 "--control", "0.0.0.0:7000"]) == 2
    assert main(["stats", "--control", "10.1.2.3:7000"]) == 2
    err = capsys.readouterr().err
    assert err.count("not loopback") == 2 and "Traceback" not in err
    assert main(["stats", "--control", str(tmp_path / "none.sock")]) == 1
    assert "control socket" in capsys.readouterr().err


def test_metrics_without_prometheus_client_is_a_clear_error(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    assert main(["connect", "--path", "tcp://127.0.0.1:1", "--stdio",
                 "--metrics", "127.0.0.1:9464"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'rendr[metrics]'" in err and "Traceback" not in err
