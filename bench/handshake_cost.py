#!/usr/bin/env python3
"""What a handshake costs the listener, and whether a legitimate dialer is still served
under a HELLO flood (issue 7).

Three measurements:

- **sans-I/O cost** (``sansio``): microseconds per accepted flow of
  ``ListenerHandshake.decide`` on a HELLO (one X25519 key generation and exchange,
  the key schedule, the new ``Flow``) and of the dialer's side (``hello`` +
  ``on_hello_ack``), plain, with a ``psk``, with a pinned ``server_key``; with the
  defence, also the listener's cost of a RETRY answer (no X25519, no state) and of a
  HELLO that carries a valid cookie.  Median of ``--repeats`` runs of ``--n`` flows.
- **loopback flows/s** (``e2e``): a listener process accepts flows that a dialer
  process opens (``--concurrency`` dials in flight; each is dial, accept, FIN both
  ways, close), on asyncio and on uvloop (both ends on the same loop kind).  The
  defence is off here (one source at this rate is a flood to it).
- **flood** (``flood``): a listener process; ``--attackers`` processes, each from its
  own loopback alias (127.0.0.2, .3, ...), send valid-looking HELLOs as fast as they
  can (``rendr.testing.flood``: fresh flow ids and X25519 shares, RETRYs followed,
  half-open flows); a legitimate dialer process from 127.0.0.1 dials every
  ``--interval`` s.  Reports the dialer's success rate and dial latency P50/P99, the
  listener's accepted flows/s and CPU (user + system, of its process), with the
  defence (``--defence on``: the defaults) and without (``off``: its knobs set to 0;
  ``none``: no knob passed at all, for builds that predate the defence).

Every process runs its own event loop (``--loop``); the parent only orchestrates.

Usage::

    python3 bench/handshake_cost.py [sansio|e2e|flood|all] [--json]
        [--n 400] [--repeats 5] [--flows 2000] [--concurrency 8]
        [--attackers 1] [--seconds 8] [--interval 0.05] [--defence on|off|none|both]
        [--loop asyncio|uvloop|both]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import resource
import statistics
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

import rendr
from rendr.aio.runner import run
from rendr.config import FlowConfig
from rendr.core.handshake import HandshakeParser
from rendr.core.session import DialerHandshake, ListenerHandshake
from rendr.core.types import Mode
from rendr.testing.flood import flood_process

logger = logging.getLogger("bench.handshake_cost")

OFF_KNOBS = {"hello_load_rate": 0, "hello_load_pending": 0, "source_hello_rate": 0,
             "confirm_timeout": 0, "max_flows_per_source": 0}
"""Every knob of the flood defence switched off."""

CTX = multiprocessing.get_context("fork")  # the parent never runs an event loop


# ------------------------------------------------------------------- sans-I/O cost


def _frame(opening: list[bytes]) -> tuple[int, bytes]:
    parser = HandshakeParser()
    frame = parser.feed(b"".join(opening))
    assert frame is not None
    return frame


def _sansio_run(n: int, variant: str) -> dict[str, float]:
    """µs per flow on each side, for ``n`` flows of ``variant``."""
    psk = os.urandom(32) if variant == "psk" else None
    priv, pub = None, None
    if variant == "server_key":
        raw, pub = rendr.generate_server_key()
        priv = X25519PrivateKey.from_private_bytes(raw)
    cfg = FlowConfig(max_flows=n + 1)
    listener = ListenerHandshake(cfg, psk=psk, static_key=priv)
    dial_s = listen_s = 0.0
    clock = time.perf_counter
    for i in range(n):
        now = i / 100  # 100 HELLOs/s of virtual time: below any load threshold
        dialer = DialerHandshake(os.urandom(16), Mode.PRIME, cfg, psk=psk, server_key=pub)
        t0 = clock()
        opening = dialer.hello(1)
        dial_s += clock() - t0
        ftype, body = _frame(opening)
        t0 = clock()
        decision = listener.decide(ftype, body, now)
        listen_s += clock() - t0
        assert decision.ok, decision.result
        aftype, abody = _frame(decision.reply)
        t0 = clock()
        dialer.on_hello_ack(aftype, abody, 1, now)
        dial_s += clock() - t0
        listener.forget(dialer.flow_id)
    return {"listener_us": listen_s / n * 1e6, "dialer_us": dial_s / n * 1e6}


def _retry_run(n: int) -> dict[str, float] | None:
    """µs of a RETRY answer, and of a HELLO with a valid cookie, under load; None if
    this build has no RETRY."""
    cfg = FlowConfig(max_flows=n + 1)
    listener = ListenerHandshake(cfg)
    if not hasattr(listener, "under_load"):
        return None
    retry_s = cookie_s = 0.0
    clock = time.perf_counter
    for _ in range(n):
        listener.under_load = lambda now: True  # type: ignore[method-assign]
        dialer = DialerHandshake(os.urandom(16), Mode.PRIME, cfg)
        ftype, body = _frame(dialer.hello(1))
        t0 = clock()
        decision = listener.decide(ftype, body, 0.0, source="198.51.100.7")
        retry_s += clock() - t0
        aftype, abody = _frame(decision.reply)
        again = dialer.retry_hello(aftype, abody, 1)
        assert again is not None
        ftype, body = _frame(again)
        t0 = clock()
        decision = listener.decide(ftype, body, 0.0, source="198.51.100.7")
        cookie_s += clock() - t0
        assert decision.ok, decision.result
        listener.forget(dialer.flow_id)
        listener.buckets.clear()
    return {"retry_answer_us": retry_s / n * 1e6, "cookie_hello_us": cookie_s / n * 1e6}


def sansio(n: int, repeats: int) -> dict[str, Any]:
    """Medians over ``repeats`` runs of every variant."""
    out: dict[str, Any] = {}
    for variant in ("plain", "psk", "server_key"):
        runs = [_sansio_run(n, variant) for _ in range(repeats)]
        out[variant] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    retry_runs = [_retry_run(n) for _ in range(repeats)]
    if retry_runs[0] is not None:
        out["retry"] = {k: statistics.median(r[k] for r in retry_runs if r)
                        for k in retry_runs[0]}
    return out


# ------------------------------------------------------------------- processes


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _listener_proc(pipe: Connection, uvloop: bool, knobs: dict[str, Any]) -> None:
    """Accepts and serves flows; commands on ``pipe``: mark, report, exit."""
    logging.disable(logging.WARNING)

    async def main() -> None:
        lst = await rendr.listen_tcp("127.0.0.1:0", **knobs)
        pipe.send(lst.addrs[0][1])
        counts = {"accepted": 0}
        tasks: set[asyncio.Task[None]] = set()

        async def handle(conn: rendr.Conn) -> None:
            with contextlib.suppress(rendr.RendrError):
                while await conn.read(65536):
                    pass
                await conn.close()
            conn.abort()

        async def accept() -> None:
            async for conn in lst:
                counts["accepted"] += 1
                task = asyncio.create_task(handle(conn))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        acceptor = asyncio.create_task(accept())
        loop = asyncio.get_running_loop()
        mark = (0, time.monotonic(), _cpu())
        while True:
            cmd = await loop.run_in_executor(None, pipe.recv)
            if cmd == "mark":
                mark = (counts["accepted"], time.monotonic(), _cpu())
            elif cmd == "report":
                pipe.send({"accepted": counts["accepted"] - mark[0],
                           "seconds": time.monotonic() - mark[1],
                           "cpu_s": _cpu() - mark[2],
                           "flows_open": len(tasks)})
            else:
                break
        acceptor.cancel()
        await lst.close()

    run(main(), use_uvloop=uvloop)


def _start_listener(uvloop: bool, knobs: dict[str, Any]
                    ) -> tuple[multiprocessing.process.BaseProcess, Connection, int]:
    parent, child = CTX.Pipe()
    proc = CTX.Process(target=_listener_proc, args=(child, uvloop, knobs), daemon=True)
    proc.start()
    port = parent.recv()
    return proc, parent, port


def _stop_listener(proc: multiprocessing.process.BaseProcess, pipe: Connection) -> None:
    pipe.send("exit")
    proc.join(10)
    if proc.is_alive():
        proc.kill()


def _dialer_proc(pipe: Connection, port: int, uvloop: bool, flows: int,
                 concurrency: int) -> None:
    """Opens ``flows`` flows (``concurrency`` at once), each dial + close."""
    logging.disable(logging.WARNING)
    spec = [rendr.PathSpec("tcp", f"127.0.0.1:{port}")]

    async def main() -> dict[str, Any]:
        left = flows
        errors = 0

        async def worker() -> None:
            nonlocal left, errors
            while left > 0:
                left -= 1
                try:
                    conn = await rendr.Dialer(paths=spec).dial()
                    await conn.close()
                except (rendr.RendrError, OSError):
                    errors += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return {"flows": flows, "errors": errors, "seconds": time.monotonic() - t0}

    pipe.send(run(main(), use_uvloop=uvloop))


def e2e(uvloop: bool, flows: int, concurrency: int, repeats: int, defence: str
        ) -> dict[str, Any]:
    """Flows per second a listener accepts on loopback (median of ``repeats``).  With
    the defence on, one source dialing faster than ``hello_load_rate`` is itself the
    load (RETRY, then 20 flows/s): capacity is measured with it off."""
    knobs = {"max_flows": 4 * flows, **(OFF_KNOBS if defence != "none" else {})}
    rates, cpus = [], []
    for _ in range(repeats):
        proc, pipe, port = _start_listener(uvloop, knobs)
        pipe.send("mark")
        parent, child = CTX.Pipe()
        dialer = CTX.Process(target=_dialer_proc,
                             args=(child, port, uvloop, flows, concurrency))
        dialer.start()
        result = parent.recv()
        dialer.join(10)
        pipe.send("report")
        report = pipe.recv()
        _stop_listener(proc, pipe)
        rates.append((flows - result["errors"]) / result["seconds"])
        cpus.append(report["cpu_s"] / max(report["accepted"], 1) * 1e6)
    return {"flows_per_s": statistics.median(rates), "runs": [round(r) for r in rates],
            "listener_cpu_us_per_flow": statistics.median(cpus)}


def _legit_proc(pipe: Connection, port: int, uvloop: bool, seconds: float,
                interval: float, timeout: float) -> None:
    """Dials every ``interval`` s from 127.0.0.1 for ``seconds``; reports each dial."""
    logging.disable(logging.WARNING)
    spec = [rendr.PathSpec("tcp", f"127.0.0.1:{port}")]

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        latencies: list[float] = []
        failures: dict[str, int] = {}
        while loop.time() < end:
            t0 = loop.time()
            try:
                conn = await asyncio.wait_for(rendr.Dialer(paths=spec).dial(), timeout)
                latencies.append(loop.time() - t0)
                conn.abort()
            except (rendr.RendrError, OSError, asyncio.TimeoutError) as exc:
                why = type(exc).__name__ + (": " + str(exc).rsplit(": ", 1)[-1]
                                            if str(exc) else "")
                failures[why] = failures.get(why, 0) + 1
            await asyncio.sleep(max(0.0, interval - (loop.time() - t0)))
        return {"latencies": latencies, "failures": failures}

    pipe.send(run(main(), use_uvloop=uvloop))


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def flood(uvloop: bool, defence: str, attackers: int, seconds: float, interval: float,
          warmup: float = 2.0) -> dict[str, Any]:
    """One flood run: the legitimate dialer's view and the listener's."""
    knobs = dict(OFF_KNOBS) if defence == "off" else {}
    proc, pipe, port = _start_listener(uvloop, knobs)
    out = CTX.Queue()
    floods = [CTX.Process(target=flood_process, daemon=True,
                          args=(("127.0.0.1", port), f"127.0.0.{2 + i}", seconds + warmup,
                                16, False, out)) for i in range(attackers)]
    for f in floods:
        f.start()
    time.sleep(warmup)  # the flood is in full swing
    pipe.send("mark")
    parent, child = CTX.Pipe()
    legit = CTX.Process(target=_legit_proc,
                        args=(child, port, uvloop, seconds, interval, 5.0))
    legit.start()
    dials = parent.recv()
    legit.join(10)
    pipe.send("report")
    report = pipe.recv()
    attack = [out.get(timeout=30) for _ in floods]
    for f in floods:
        f.join(10)
    _stop_listener(proc, pipe)
    lat = dials["latencies"]
    total = len(lat) + sum(dials["failures"].values())
    answers: dict[str, int] = {}
    for a in attack:
        for k, v in a["answers"].items():
            answers[k] = answers.get(k, 0) + v
    return {
        "defence": defence,
        "legit_dials": total,
        "legit_success": len(lat) / total if total else 0.0,
        "legit_p50_ms": None if not lat else _pct(lat, 0.5) * 1e3,  # type: ignore[operator]
        "legit_p99_ms": None if not lat else _pct(lat, 0.99) * 1e3,  # type: ignore[operator]
        "legit_failures": dials["failures"],
        "listener_flows_per_s": report["accepted"] / report["seconds"],
        "listener_cpu": report["cpu_s"] / report["seconds"],
        "attack_hellos_per_s": sum(a["sent"] for a in attack) / (seconds + warmup),
        "attack_answers": answers,
    }


# ------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", nargs="?", default="all", choices=["sansio", "e2e", "flood", "all"])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--n", type=int, default=400, help="flows per sans-I/O run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--flows", type=int, default=2000, help="flows per e2e run")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--attackers", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--defence", default="both", choices=["on", "off", "none", "both"])
    ap.add_argument("--loop", default="both", choices=["asyncio", "uvloop", "both"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    loops = {"asyncio": [False], "uvloop": [True], "both": [False, True]}[args.loop]
    defences = ["on", "off"] if args.defence == "both" else [args.defence]
    result: dict[str, Any] = {"rendr": rendr.__file__, "compiled": rendr.__compiled__,
                              "python": sys.version.split()[0], "cores": os.cpu_count()}
    if args.what in ("sansio", "all"):
        result["sansio"] = sansio(args.n, args.repeats)
    if args.what in ("e2e", "all"):
        result["e2e"] = {("uvloop" if u else "asyncio"): e2e(
            u, args.flows, args.concurrency, args.repeats, args.defence) for u in loops}
    if args.what in ("flood", "all"):
        result["flood"] = [dict(flood(u, d, args.attackers, args.seconds, args.interval),
                                loop="uvloop" if u else "asyncio")
                           for u in loops for d in defences]
    if args.json:
        print(json.dumps(result, indent=1))
        return
    _print(result)


def _print(result: dict[str, Any]) -> None:
    out = sys.stdout.write
    out(f"rendr {result['rendr']} compiled={result['compiled']} "
        f"python {result['python']}, {result['cores']} cores\n")
    for variant, r in result.get("sansio", {}).items():
        out(f"sans-I/O {variant:10s} " + "  ".join(f"{k} {v:7.1f}" for k, v in r.items())
            + "\n")
    for loop, r in result.get("e2e", {}).items():
        out(f"e2e {loop:8s} {r['flows_per_s']:7.0f} flows/s (runs {r['runs']}), listener "
            f"{r['listener_cpu_us_per_flow']:.0f} µs CPU/flow\n")
    for r in result.get("flood", []):
        p50, p99 = r["legit_p50_ms"], r["legit_p99_ms"]
        out(f"flood {r['loop']:8s} defence {r['defence']:4s}: legit {r['legit_success']:.0%} "
            f"of {r['legit_dials']} dials, P50 {p50 if p50 is None else round(p50, 1)} ms "
            f"P99 {p99 if p99 is None else round(p99, 1)} ms; listener "
            f"{r['listener_flows_per_s']:.0f} flows/s, CPU {r['listener_cpu']:.0%}; attack "
            f"{r['attack_hellos_per_s']:.0f} HELLOs/s {r['attack_answers']}; "
            f"failures {r['legit_failures']}\n")


if __name__ == "__main__":
    main()
