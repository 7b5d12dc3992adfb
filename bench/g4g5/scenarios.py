"""The phases of a run: put both connections on one path, G4 (drop it under load),
G5 (undrop, re-dial, add_path + migrate, a migration under load)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING

import rendr

from .analysis import analyze_echo, first_migration_after, longest_stall
from .params import KIB
from .probes import describe, host_of, path_index, up_paths, wait_until

if TYPE_CHECKING:
    from .run import Run

log = logging.getLogger("g4g5")


async def align(run: Run, bulk: rendr.Conn, idx: int) -> None:
    """Put the bulk connection on topology path ``idx`` (where echo is active)."""
    if path_index(run.topo, bulk, bulk.active_path) == idx:
        return
    for ps in up_paths(bulk):
        if path_index(run.topo, bulk, ps.id) == idx:
            await bulk.migrate(ps.id)
            run.r.bulk.pre_migrated = True
            return
    raise RuntimeError(f"bulk connection has no path on topology path {idx}")


async def g4(run: Run, echo: rendr.Conn, bulk: rendr.Conn, block: bytes,
             expect_digest: bytes) -> None:
    """Start the echo loop and the bulk transfer, drop the active path, wait for the
    recovery and the end of the transfer, and record what happened."""
    p, r, topo = run.p, run.r, run.topo
    el, bt = run.echo_loop, run.transfer
    sampler = run.spawn("sampler", bt.sampler())
    sender = run.spawn("echo-sender", el.sender(echo))
    reader = run.spawn("echo-reader", el.reader(echo))
    bulk_task = run.spawn("bulk-client", bt.client(bulk, block))
    await asyncio.sleep(p.drop_after)
    if r.errors:
        return
    idx = path_index(topo, echo, echo.active_path)
    bidx = path_index(topo, bulk, bulk.active_path)
    if idx is None:
        raise RuntimeError("echo has no active path before the drop")
    if bidx != idx:
        r.notes.append(f"bulk active on topology path {bidx}, echo on {idx} at the drop")
    r.drop.index = idx
    r.drop.addr = topo.paths[idx].server_addr
    r.bulk.received_at_drop = bt.received
    r.bulk.unacked_at_drop = bulk.stats().unacked_bytes
    r.bulk.in_flight_at_drop = bt.received < p.bulk_bytes and bidx == idx
    t0 = run.t_drop = time.monotonic()
    await asyncio.to_thread(topo.drop, idx)
    t1 = time.monotonic()
    r.drop.cmd_s = t1 - t0
    log.info("dropped topology path %d (%s) in %.3fs", idx, r.drop.addr, t1 - t0)
    recovered = await wait_until(lambda: el.last_fresh(t1) or bool(r.errors),
                                 p.recovery_wait)
    if not recovered:
        run.error(f"hang: no echo answer within {p.recovery_wait:g}s after the drop")
        for conn, name in ((echo, "client echo"), (run.server_conns.get("E"), "server E")):
            r.diagnostics.append(describe(conn, name))
    t_rec = time.monotonic()
    # let the bulk transfer finish (and the echo loop run on for a while); after a
    # hang, only briefly: the run is failed already
    done = await wait_until(lambda: bulk_task.done(),
                            p.bulk_timeout if recovered else 2.0, step=0.02)
    if not done:
        run.error(f"hang: bulk transfer not finished "
                  f"{time.monotonic() - t_rec:.1f}s after the recovery "
                  f"({bt.received} of {p.bulk_bytes} bytes received)")
        for conn, name in ((bulk, "client bulk"), (run.server_conns.get("B"), "server B")):
            r.diagnostics.append(describe(conn, name))
    await asyncio.sleep(max(0.0, t_rec + p.settle_after_recovery - time.monotonic()))
    el.stop.set()
    await sender
    if not reader.done():
        if len(el.recv) and el.recv[-1] is not None:
            el.all_in.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(el.all_in.wait(), 10 if recovered else 1)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    sampler.cancel()
    _record_g4(run, echo, bulk, expect_digest, t0, t1)


def _record_g4(run: Run, echo: rendr.Conn, bulk: rendr.Conn, expect_digest: bytes,
               t0: float, t1: float) -> None:
    """What G4's traffic and connections recorded, into the run's result."""
    p, r, topo = run.p, run.r, run.topo
    el, bt = run.echo_loop, run.transfer
    er, br = r.echo, r.bulk
    er.sent = len(el.sent)
    er.received = sum(1 for x in el.recv if x is not None)
    er.ok = el.bad is None and er.received == er.sent and er.sent > 0
    if el.bad:
        r.notes.append(el.bad)
    er.timing = analyze_echo(el.sent, el.recv, t0, t1, p.window_before, p.window_after)
    # bulk
    br.received = bt.received
    if bt.t_start is not None and bt.t_done is not None:
        br.seconds = bt.t_done - bt.t_start
    res = bt.client_result
    br.sha_server = bt.server_digest.hex()
    br.sha_ok = (len(res) == 40 and res[:32] == expect_digest
                 and bt.server_digest == expect_digest
                 and int.from_bytes(res[32:], "big") == p.bulk_bytes
                 and bt.received == p.bulk_bytes)
    br.max_gap_s = longest_stall(bt.progress, p.bulk_bytes)
    # failover as seen by the engine (MIGRATION event after the drop)
    er.failover_event_s = first_migration_after(run.events, "echo", t0)
    br.failover_event_s = first_migration_after(run.events, "bulk", t0)
    er.active_after = echo.active_path
    er.active_index_after = path_index(topo, echo, echo.active_path)
    r.client_recv_dups_g4 = echo.recv_dups + bulk.recv_dups


async def g5(run: Run, echo: rendr.Conn, ports: dict[str, int]) -> None:
    """Undrop the dropped path; check the automatic re-dial, then ``add_path`` +
    ``migrate`` + an echo over the added path, then a migration under load."""
    p, r, topo = run.p, run.r, run.topo
    idx = r.drop.index
    assert idx is not None
    addr = topo.paths[idx].server_addr
    spec_addr = f"{addr}:{ports[addr]}"
    server = run.server_conns["E"]
    g = r.g5
    g.ran = True
    checks = g.checks
    before_ids = {ps.id for ps in echo.stats().paths}
    dups0 = (echo.recv_dups, server.recv_dups)
    hwm0 = (echo.recv_queue_hwm, server.recv_queue_hwm)
    t0 = time.monotonic()
    await asyncio.to_thread(topo.undrop, idx)
    g.undrop_cmd_s = time.monotonic() - t0

    def redialed() -> bool:
        for t, n, ev in run.events:
            if (n == "echo" and t >= t0 and ev.kind is rendr.EventKind.PATH_UP
                    and ev.path_id not in before_ids
                    and path_index(topo, echo, ev.path_id or 0) == idx):
                g.redial_s = t - t0
                g.redial_path_id = ev.path_id
                return True
        return False

    await wait_until(redialed, p.redial_limit, step=0.01)
    checks[f"automatic re-dial of the recovered path within {p.redial_limit:g}s"] = (
        g.redial_s is not None)
    # explicit add_path over the recovered address + migrate + 256 KiB echo
    ids_before_add = {ps.id for ps in echo.stats().paths}
    pid = await asyncio.wait_for(echo.add_path(rendr.PathSpec("tcp", spec_addr)), 10)
    g.added_path_id = pid
    added = next((ps for ps in echo.stats().paths if ps.id == pid), None)
    g.added_remote = added.remote_addr if added is not None else ""
    checks["add_path returned a new, live path id to the recovered address"] = (
        pid not in ids_before_add and added is not None and added.state == "up"
        and host_of(added.remote_addr) == addr)
    await wait_until(lambda: any(ps.id == pid for ps in server.stats().paths), 5)
    c_before = next(ps for ps in echo.stats().paths if ps.id == pid)
    s_before = next((ps for ps in server.stats().paths if ps.id == pid), None)
    await echo.migrate(pid)
    g.active_client = echo.active_path
    payload = os.urandom(p.g5_bytes)
    g.echo_size = len(payload)

    async def exchange() -> bytes:
        # reader and writer concurrently (the payload may exceed the windows)
        wtask = asyncio.ensure_future(echo.write(payload))
        try:
            got = await echo.readexactly(len(payload))
        finally:
            await wtask
        return got

    got = await asyncio.wait_for(exchange(), 20)
    g.echo_exact = got == payload
    g.active_server = server.active_path
    c_after = next(ps for ps in echo.stats().paths if ps.id == pid)
    s_after = next((ps for ps in server.stats().paths if ps.id == pid), None)
    g.path_sent = c_after.bytes_sent - c_before.bytes_sent
    g.path_received = c_after.bytes_received - c_before.bytes_received
    if s_before is not None and s_after is not None:
        g.server_path_received = s_after.bytes_received - s_before.bytes_received
    g.dups_client = (dups0[0], echo.recv_dups)
    g.dups_server = (dups0[1], server.recv_dups)
    g.hwm_client = (hwm0[0], echo.recv_queue_hwm)
    g.hwm_server = (hwm0[1], server.recv_queue_hwm)
    checks["migrate: client and server active on the added path"] = (
        g.active_client == pid and g.active_server == pid)
    checks[f"{p.g5_bytes // KIB} KiB echoed byte-exact"] = g.echo_exact
    checks["bytes flowed on the added path (both ways, stats)"] = (
        g.path_sent >= p.g5_bytes and g.path_received >= p.g5_bytes
        and g.server_path_received >= p.g5_bytes)
    checks["recv_dups unchanged in G5 (both ends)"] = (
        g.dups_client[0] == g.dups_client[1]
        and g.dups_server[0] == g.dups_server[1])
    checks["recv_queue_hwm did not grow in G5 (both ends)"] = (
        g.hwm_client[0] == g.hwm_client[1]
        and g.hwm_server[0] == g.hwm_server[1])
    await _migrate_under_load(run, echo, server)
    if not all(checks.values()):
        r.diagnostics.append(describe(echo, "client echo (G5)"))
        r.diagnostics.append(describe(server, "server E (G5)"))


async def _migrate_under_load(run: Run, echo: rendr.Conn, server: rendr.Conn) -> None:
    """Back to the automatically re-dialed path while the payload is in flight on the
    added one -- nothing may be sent twice."""
    p, g = run.p, run.r.g5
    checks, load = g.checks, g.load
    target = g.redial_path_id
    if target is None or not any(ps.id == target for ps in up_paths(echo)):
        checks["migration under load: re-dialed path available"] = False
        return
    payload = os.urandom(p.g5_bytes)
    dups0 = (echo.recv_dups, server.recv_dups)
    hwm0 = (echo.recv_queue_hwm, server.recv_queue_hwm)
    rtask = asyncio.ensure_future(echo.readexactly(len(payload)))
    try:
        await echo.write(payload)
        load.inflight = echo.stats().unacked_bytes
        await echo.migrate(target)
        got = await asyncio.wait_for(asyncio.shield(rtask), 20)
    finally:
        rtask.cancel()
    load.exact = got == payload
    load.dups = (echo.recv_dups - dups0[0], server.recv_dups - dups0[1])
    load.hwm = (echo.recv_queue_hwm - hwm0[0], server.recv_queue_hwm - hwm0[1])
    checks[f"migration under load ({load.inflight // KIB} KiB unacknowledged): "
           "byte-exact, recv_dups unchanged"] = (
        load.exact and load.dups == (0, 0) and echo.active_path == target)
