#!/usr/bin/env python3
"""G1 gate: a large transfer through a rendr Conn with forced migrations, two processes.

Sender and receiver run in separate processes (as on two machines), each pinned to
its own core when there are two, both on the same kind of loop (uvloop unless
``--no-uvloop``). In one run:

- **integrity run** (rendr): the receiver SHA-256-hashes every byte; the digest must
  equal the sender's. Not part of the throughput figures (hashing bounds the rate).
- **throughput runs**: ``--repeat`` pairs, a raw ``asyncio.Protocol`` TCP transfer then
  a rendr transfer of the same size (interleaved); both receivers count and discard
  (rendr takes uncopied views of up to 1 MiB with ``Conn.read_view`` when the build has
  it, else reads into one reused 1 MiB buffer with ``readinto``, else ``read(1 MiB)``;
  ``--reader`` picks one). Elapsed = the sender's first write -> the receiver's 4-byte
  answer after the last byte. Verdict: the median of the paired ratios rendr/raw must
  reach ``--min-ratio``.
- every rendr run: a listener with two loopback addresses, the dialer opens two paths
  and forces ``migrate()`` at 30 %, 50 % and 70 %; all 3 must be counted; the receiver
  samples its progress every 100 ms and no gap without progress may exceed 0.5 s.
- per process, ``getrusage`` deltas around each transfer: CPU seconds (user + system)
  per GiB and minor page faults per MiB, sender and receiver, raw and rendr.
  Informational targets: receiver CPU-s/GiB rendr/raw <= 1.5, receiver page faults
  per MiB rendr/raw <= 10.
- secondary: the old single-process figure (both ends on one loop, one pair).
- ``--tls``: every pair also times the raw ``Protocol`` transfer over asyncio's own TLS
  (``ssl``, TLS 1.3, AES-256-GCM, the same loop) and reports rendr/TLS; compare with
  ``--knob records=True`` (encrypted records) for issue 7's bar: encrypted rendr at
  least as fast as asyncio TLS (``--min-tls-ratio 1`` gates it).

``--strace-receiver LOG`` runs the receiver under ``strace --seccomp-bpf`` (only the
calls in ``--strace-calls`` stop the process) and prints those calls per transfer;
``--wrap-receiver CMD`` runs it under any other tool (``perf record ... --``),
``--wrap-sender CMD`` the sender;
``--knob NAME=VALUE`` overrides a ``FlowConfig`` field on both ends (A/B runs);
``--json PATH`` keeps every measurement (``bench/summarize_runs.py`` reads them).

Usage::

    python bench/g1_migration_throughput.py                  # 1 GiB, 3 pairs, uvloop
    python bench/g1_migration_throughput.py --no-uvloop      # the default loop
    python bench/g1_migration_throughput.py --size-mib 256 --repeat 3 --min-ratio 0.5  # CI
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import hashlib
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import _twoproc as tp
import rendr
from rendr.aio import runner
from rendr.testing.payload import repeated_digest

MIB = 1 << 20
GIB = 1 << 30
CHUNK = 256 * 1024  # raw sender: transport.write() size
READ_SIZE = MIB  # rendr receiver: read size / reused buffer
MARKS = [0.3, 0.5, 0.7]  # forced migrations, fraction of the transfer
SAMPLE_S = 0.1  # receiver progress sampling
MAX_GAP_S = 0.5


# ---------------------------------------------------------------------------- raw TCP


class _RawSink(asyncio.Protocol):
    """Counts and discards; answers ``done`` once ``total`` bytes have arrived."""

    def __init__(self, total: int, loop: asyncio.AbstractEventLoop) -> None:
        self.total = total
        self.got = 0
        self.usage0: tp.Usage | None = None
        self.done: asyncio.Future[tp.Usage] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.usage0 = tp.Usage.now()

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got >= self.total and not self.done.done():
            self.done.set_result(tp.Usage.now())
            self.transport.write(b"done")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class _RawSource(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.answer: asyncio.Future[None] = loop.create_future()

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        if not self.answer.done():
            self.answer.set_result(None)


async def raw_recv(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    """A raw ``asyncio.Protocol`` receiver (``msg["tls"]``: behind asyncio's TLS)."""
    loop = asyncio.get_running_loop()
    sink = _RawSink(msg["size"], loop)
    tls = tp.tls_context(True, "") if msg.get("tls") else None
    server = await loop.create_server(lambda: sink, "127.0.0.1", 0, ssl=tls)
    say({"ports": [server.sockets[0].getsockname()[1]],
         "cert": tp.self_signed()[0] if tls else None})
    usage1 = await sink.done
    assert sink.usage0 is not None
    await sink.lost
    server.close()
    await server.wait_closed()
    return {"received": sink.got, "usage": usage1.since(sink.usage0)}


async def raw_send(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    """256 KiB ``transport.write()``s, at most 1 MiB per callback, honouring pause_writing."""
    loop = asyncio.get_running_loop()
    size = msg["size"]
    block = tp.payload_block()
    tls = tp.tls_context(False, msg["cert"]) if msg.get("tls") else None
    transport, proto = await loop.create_connection(
        lambda: _RawSource(loop), "127.0.0.1", msg["ports"][0], ssl=tls,
        server_hostname="localhost" if tls else None)
    mv = memoryview(block)
    usage0 = tp.Usage.now()
    start = time.perf_counter()
    sent = 0
    while sent < size:
        burst = 0
        while burst < MIB and sent < size:
            off = sent % len(block)
            n = min(CHUNK, size - sent, len(block) - off)
            transport.write(mv[off : off + n])
            sent += n
            burst += n
        if not proto.can_write.is_set():
            await proto.can_write.wait()
        else:
            await asyncio.sleep(0)
    await proto.answer
    end = time.perf_counter()
    usage = tp.Usage.now().since(usage0)
    transport.close()
    return {"elapsed": end - start, "usage": usage}


# ---------------------------------------------------------------------------- rendr


async def rendr_recv(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    """Accept one Conn, read everything (hashing only with ``verify``), answer ``done``."""
    verify = msg["verify"]
    ln = await rendr.listen(rendr.ListenSpec("tcp", "127.0.0.1:0"),
                            rendr.ListenSpec("tcp", "127.0.0.1:0"),
                            config=rendr.FlowConfig().replace(**msg.get("knobs", {})))
    say({"ports": [p for _, p in ln.addrs]})
    conn = await ln.accept()
    usage0 = tp.Usage.now()
    digest = hashlib.sha256()
    buf = bytearray(READ_SIZE)
    view = memoryview(buf)
    reader = tp.bulk_reader(msg.get("reader"))
    readinto = getattr(conn, "readinto", None) if reader == "readinto" else None
    read_view = getattr(conn, "read_view", None) if reader == "read_view" else None
    received = 0
    samples: list[tuple[float, int]] = []
    sampler: asyncio.Task[None] | None = None

    async def sample() -> None:
        while True:
            samples.append((time.perf_counter(), received))
            await asyncio.sleep(SAMPLE_S)

    while True:
        if read_view is not None:
            got = await read_view(READ_SIZE)
            n = len(got)
            if verify:
                digest.update(got)
            del got  # held views pin receive buffers
        elif readinto is not None:
            n = await readinto(buf)
            if verify:
                digest.update(view[:n])
        else:
            data = await conn.read(READ_SIZE)
            n = len(data)
            if verify:
                digest.update(data)
        if not n:
            break
        received += n
        if sampler is None:  # progress counts from the first byte
            sampler = asyncio.create_task(sample())
    end = time.perf_counter()
    usage = tp.Usage.now().since(usage0)
    if sampler is not None:
        sampler.cancel()
    await conn.write(b"done")
    stats = conn.stats()
    await conn.close()
    await ln.close()
    samples.append((end, received))
    return {"received": received, "usage": usage, "max_gap": max_gap(samples),
            "digest": digest.hexdigest() if verify else None,
            "migration_count": stats.migration_count}


def max_gap(samples: list[tuple[float, int]]) -> float:
    """Longest time between two samples that showed progress (or since the last one)."""
    if not samples:
        return 0.0
    gap = 0.0
    last_t, last_b = samples[0]
    for t, b in samples[1:]:
        if b > last_b:
            gap = max(gap, t - last_t)
            last_t, last_b = t, b
    return max(gap, samples[-1][0] - last_t)


async def rendr_send(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    """1 MiB writes over two paths, ``migrate()`` at the marks, ``write_eof``, wait for done."""
    size, verify = msg["size"], msg["verify"]
    block = tp.payload_block()
    # before dialing: hashing 1 GiB blocks this loop for ~0.7 s, longer than the peer's
    # dead-path timeout, and the peer would rightly reset both paths
    expect = repeated_digest(block, size).hex() if verify else None
    dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{p}") for p in msg["ports"]],
                          **msg.get("knobs", {}))
    conn = await dialer.dial()
    t0 = time.perf_counter()
    events: list[str] = []  # migrations and path losses, with their cause

    def on_event(ev: rendr.Event) -> None:
        if ev.kind in (rendr.EventKind.MIGRATION, rendr.EventKind.PATH_DOWN):
            events.append(f"{ev.kind}:{ev.cause}@{time.perf_counter() - t0:.2f}s")

    conn.on_event(on_event)
    for _ in range(200):
        if sum(p.state == "up" for p in conn.stats().paths) >= 2:
            break
        await asyncio.sleep(0.01)
    mv = memoryview(block)
    marks = [int(size * f) for f in MARKS]
    migrations = 0
    usage0 = tp.Usage.now()
    start = time.perf_counter()
    sent = 0
    while sent < size:
        off = sent % len(block)
        n = min(MIB, size - sent, len(block) - off)
        await conn.write(mv[off : off + n])
        sent += n
        while marks and sent >= marks[0]:
            marks.pop(0)
            others = [p.id for p in conn.stats().paths
                      if p.state == "up" and p.id != conn.active_path]
            if others:
                await conn.migrate(others[0])
                migrations += 1
    await conn.write_eof()
    answer = await conn.readexactly(4)
    end = time.perf_counter()
    usage = tp.Usage.now().since(usage0)
    stats = conn.stats()
    await conn.close()
    return {"elapsed": end - start, "usage": usage, "answer_ok": answer == b"done",
            "migrations": migrations, "migration_count": stats.migration_count,
            "recv_dups": stats.recv_dups, "expect": expect, "events": events}


HANDLERS: dict[str, tp.Handler] = {"raw_recv": raw_recv, "raw_send": raw_send,
                                   "rendr_recv": rendr_recv, "rendr_send": rendr_send}


# ---------------------------------------------------------------------------- one transfer


@dataclass
class Rep:
    kind: str
    size: int
    send: tp.Msg
    recv: tp.Msg
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.size / float(self.send["elapsed"])

    def cpu_per_gib(self, end: str) -> float:
        return float(getattr(self, end)["usage"]["cpu_s"]) * GIB / self.size

    def split_per_gib(self, end: str) -> tuple[float, float]:
        """(user, system) CPU seconds per GiB of one end."""
        usage = getattr(self, end)["usage"]
        return (float(usage.get("user_s", 0.0)) * GIB / self.size,
                float(usage.get("sys_s", 0.0)) * GIB / self.size)

    def faults_per_mib(self, end: str) -> float:
        return float(getattr(self, end)["usage"]["minflt"]) * MIB / self.size

    @property
    def migrations_ok(self) -> bool:
        return self.kind in ("raw", "tls") or (
            self.send["migrations"] == len(MARKS) and self.send["migration_count"] == len(MARKS))

    def ok_basic(self) -> bool:
        return bool(self.recv["received"] == self.size and self.send.get("answer_ok", True))


def transfer(recv: tp.Worker, send: tp.Worker, kind: str, size: int, verify: bool = False,
             knobs: dict[str, Any] | None = None, reader: str | None = None) -> Rep:
    """One transfer: ``kind`` is ``raw``, ``tls`` (raw over asyncio's TLS) or ``rendr``;
    ``reader``: the rendr receiver's read call (None: :func:`_twoproc.bulk_reader`)."""
    knobs = knobs or {}
    tls = kind == "tls"
    cmd = "raw" if tls else kind
    ready = recv.call(cmd=f"{cmd}_recv", size=size, verify=verify, knobs=knobs, tls=tls,
                      reader=reader)
    send.send(cmd=f"{cmd}_send", size=size, ports=ready["ports"], verify=verify, knobs=knobs,
              tls=tls, cert=ready.get("cert"))
    s = send.recv()
    r = recv.recv()
    return Rep(kind, size, s, r)


async def one_process_pair(size: int, knobs: dict[str, Any],
                           reader: str | None) -> tuple[Rep, Rep]:
    """The old method: both ends on one loop in this process (one raw, one rendr)."""
    out = []
    for kind in ("raw", "rendr"):
        ready: asyncio.Future[tp.Msg] = asyncio.get_running_loop().create_future()
        msg = {"size": size, "verify": False, "knobs": knobs, "reader": reader}
        recv_task = asyncio.create_task(HANDLERS[f"{kind}_recv"](msg, ready.set_result))
        ports = (await ready)["ports"]
        s = await HANDLERS[f"{kind}_send"]({**msg, "ports": ports}, print)
        r = await recv_task
        assert s is not None and r is not None
        out.append(Rep(kind, size, s, r))
    return out[0], out[1]


# ---------------------------------------------------------------------------- report


def med(xs: list[float]) -> str:
    """``median (min-max)``, in a width that suits the magnitude."""
    m = statistics.median(xs)
    fmt = "{:.0f}" if m >= 100 else "{:.2f}" if m < 10 else "{:.1f}"
    if len(xs) == 1:
        return fmt.format(m)
    return f"{fmt.format(m)} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


def run_two_process(args: argparse.Namespace) -> int:
    size = args.size_mib * MIB
    cpu_send, cpu_recv = (None, None) if args.no_pin else tp.core_plan()
    common = ["--no-uvloop"] if args.no_uvloop else []
    wrap = tp.split_wrap(args.wrap_receiver)
    if args.strace_receiver:
        wrap = [*tp.strace_prefix(args.strace_receiver, args.strace_calls), *(wrap or [])]
    head = tp.header(not args.no_uvloop, f", receiver uses Conn.{tp.bulk_reader(args.reader)}")
    print(head)
    print(f"two processes: sender on CPU {cpu_send}, receiver on CPU {cpu_recv}; "
          f"{args.size_mib} MiB per transfer; {args.repeat} interleaved pairs"
          + (f"; FlowConfig overrides {args.knob}" if args.knob else ""), flush=True)
    recv = tp.Worker(__file__, "recv", common, cpu=cpu_recv, wrap=wrap)
    send = tp.Worker(__file__, "send", common, cpu=cpu_send,
                     wrap=tp.split_wrap(args.wrap_sender))
    try:
        check = transfer(recv, send, "rendr", size, verify=True, knobs=args.knob,
                         reader=args.reader)
        sha_ok = (check.ok_basic() and check.recv["digest"] is not None
                  and check.recv["digest"] == check.send["expect"])
        print(f"  integrity run: rendr {check.rate / 1e6:8.1f} MB/s with SHA-256 on the "
              f"receiver, migrations {check.send['migrations']}, max gap "
              f"{check.recv['max_gap']:.3f}s, sha {'identical' if sha_ok else 'MISMATCH'}",
              flush=True)
        pairs: list[tuple[Rep, Rep]] = []
        tlss: list[Rep] = []
        for i in range(args.repeat):
            raw = transfer(recv, send, "raw", size)
            if args.tls:
                tlss.append(transfer(recv, send, "tls", size))
                print(f"  pair {i + 1}: asyncio TLS {tlss[-1].rate / 1e6:7.1f} MB/s, receiver "
                      f"CPU-s/GiB {tlss[-1].cpu_per_gib('recv'):.2f}, sender "
                      f"{tlss[-1].cpu_per_gib('send'):.2f}", flush=True)
            ren = transfer(recv, send, "rendr", size, knobs=args.knob, reader=args.reader)
            pairs.append((raw, ren))
            print(f"  pair {i + 1}: raw {raw.rate / 1e6:7.1f} MB/s  rendr {ren.rate / 1e6:7.1f} "
                  f"MB/s  ratio {ren.rate / raw.rate:.3f} | receiver CPU-s/GiB raw "
                  f"{raw.cpu_per_gib('recv'):.2f} rendr {ren.cpu_per_gib('recv'):.2f}, faults/MiB "
                  f"raw {raw.faults_per_mib('recv'):.1f} rendr {ren.faults_per_mib('recv'):.1f} "
                  f"| migrations {ren.send['migrations']} gap {ren.recv['max_gap']:.3f}s",
                  flush=True)
    finally:
        send.close()
        recv.close()

    loop = tp.loop_label(not args.no_uvloop)
    raws = [p[0] for p in pairs]
    rens = [p[1] for p in pairs]
    ratios = [ren.rate / raw.rate for raw, ren in pairs]
    cpu_ratios = [ratio(ren.cpu_per_gib("recv"), raw.cpu_per_gib("recv")) for raw, ren in pairs]
    # a raw receiver faults almost never (0 to a few dozen times per transfer), so the
    # paired ratio is noise: compare medians, counting at least one fault per transfer
    flt_ratio = ratio(statistics.median(r.faults_per_mib("recv") for r in rens),
                      max(statistics.median(r.faults_per_mib("recv") for r in raws), MIB / size))
    rendr_runs = [check, *rens]
    mig_ok = all(r.migrations_ok and r.recv["migration_count"] == len(MARKS) for r in rendr_runs)
    for r in rendr_runs:
        if not (r.migrations_ok and r.recv["migration_count"] == len(MARKS)):
            print(f"  migrations other than the {len(MARKS)} forced ones (sender's events): "
                  f"{' '.join(r.send['events'])}")
    gap = max(float(r.recv["max_gap"]) for r in rendr_runs)
    basic_ok = all(r.ok_basic() for r in [check, *raws, *rens, *tlss])
    ratio_med = statistics.median(ratios)

    print(f"\nmedians (min-max) over {args.repeat} pairs, {args.size_mib} MiB, loop={loop}:")
    print(f"  {'':14}{'MB/s':>20}{'send CPU-s/GiB':>20}{'recv CPU-s/GiB':>20}"
          f"{'send faults/MiB':>20}{'recv faults/MiB':>20}")
    rows = [("raw Protocol", raws), ("asyncio TLS", tlss), ("rendr", rens)]
    for name, reps in (row for row in rows if row[1]):
        print(f"  {name:14}{med([r.rate / 1e6 for r in reps]):>20}"
              f"{med([r.cpu_per_gib('send') for r in reps]):>20}"
              f"{med([r.cpu_per_gib('recv') for r in reps]):>20}"
              f"{med([r.faults_per_mib('send') for r in reps]):>20}"
              f"{med([r.faults_per_mib('recv') for r in reps]):>20}")
    print("  CPU-s/GiB user + system (medians), send | recv:")
    for name, reps in (row for row in rows if row[1]):
        print(f"  {name:14}" + " | ".join(
            f"{statistics.median(r.split_per_gib(end)[0] for r in reps):.2f} + "
            f"{statistics.median(r.split_per_gib(end)[1] for r in reps):.2f}"
            for end in ("send", "recv")))
    print(f"  receiver CPU-s/GiB rendr/raw, median paired: {med(cpu_ratios)} (target <= 1.5, "
          f"informational)")
    print(f"  receiver page faults/MiB rendr/raw, ratio of medians: {flt_ratio:.1f} (target <= 10, "
          f"informational)")

    tls_ratio = 0.0
    if tlss:
        tls_ratios = [ren.rate / t.rate for ren, t in zip(rens, tlss, strict=True)]
        tls_ratio = statistics.median(tls_ratios)
        print(f"  rendr/asyncio TLS, median paired: {med(tls_ratios)} (goal >= 1 with "
              f"records encrypted)")

    single: tuple[Rep, Rep] | None = None
    if not args.no_single:
        single = runner.run(one_process_pair(size, args.knob, args.reader),
                            use_uvloop=not args.no_uvloop)
        s_raw, s_ren = single
        print(f"  secondary, one process (both ends on one loop, 1 pair): raw "
              f"{s_raw.rate / 1e6:.1f} MB/s, rendr {s_ren.rate / 1e6:.1f} MB/s, ratio "
              f"{s_ren.rate / s_raw.rate:.3f}; CPU-s/GiB (both ends) raw "
              f"{s_raw.cpu_per_gib('send'):.2f} rendr {s_ren.cpu_per_gib('send'):.2f}")

    strace: dict[str, list[dict[str, int]]] = {}
    if args.strace_receiver:
        for name, reps in (("raw", raws), ("rendr", rens)):
            strace[name] = [tp.strace_counts(args.strace_receiver, r.recv["usage"]["wall0"],
                                             r.recv["usage"]["wall1"]) for r in reps]
        calls = sorted({c for per in strace.values() for counts in per for c in counts})
        for name, per in strace.items():
            scaled = {c: [counts.get(c, 0) * 256 * MIB / size for counts in per] for c in calls}
            print(f"  receiver syscalls per 256 MiB, {name} (strace, median (min-max)): "
                  + ", ".join(f"{c} {med(v)}" for c, v in scaled.items()))

    print(f"G1 two-process ({args.size_mib} MiB, {args.repeat} interleaved pairs, loop={loop}): "
          f"raw Protocol TCP {statistics.median(r.rate for r in raws) / 1e6:.1f} MB/s, rendr "
          f"{statistics.median(r.rate for r in rens) / 1e6:.1f} MB/s (medians), median paired "
          f"ratio {ratio_med:.3f} (min {args.min_ratio}); sha256 "
          f"{'identical' if sha_ok else 'MISMATCH'} (own run); migrations "
          f"{'3/3 every run' if mig_ok else 'MISSING'}; max zero-throughput gap {gap:.3f}s "
          f"(limit {MAX_GAP_S}s)")
    if args.json:
        record = {
            "header": head, "loop": loop, "size": size, "knobs": args.knob,
            "integrity": vars(check), "pairs": [[vars(a), vars(b)] for a, b in pairs],
            "tls": [vars(t) for t in tlss],
            "single": [vars(r) for r in single] if single else None, "strace": strace,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
    if tlss:
        print(f"G1 against asyncio TLS: {statistics.median(t.rate for t in tlss) / 1e6:.1f} MB/s, "
              f"rendr/TLS median paired {tls_ratio:.3f} (min {args.min_tls_ratio})")
    ok = (sha_ok and mig_ok and basic_ok and gap <= MAX_GAP_S and ratio_med >= args.min_ratio
          and (not tlss or tls_ratio >= args.min_tls_ratio))
    print("G1 PASS" if ok else "G1 FAIL")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--min-ratio", type=float, default=0.95)
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--tls", action="store_true",
                        help="also time a raw Protocol over asyncio's TLS (ssl) in every pair")
    parser.add_argument("--min-tls-ratio", type=float, default=0.0,
                        help="with --tls: the least median rendr/TLS ratio that passes")
    parser.add_argument("--no-single", action="store_true",
                        help="skip the secondary single-process pair")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the two processes")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement here")
    parser.add_argument("--strace-receiver", metavar="LOG",
                        help="run the receiver under strace, log to LOG, count per transfer")
    parser.add_argument("--strace-calls", default="brk,mmap,munmap,mremap,madvise",
                        help="syscalls strace stops on (default: %(default)s)")
    parser.add_argument("--wrap-receiver", metavar="CMD",
                        help='run the receiver under CMD, e.g. "perf record -e minor-faults -g --"')
    parser.add_argument("--wrap-sender", metavar="CMD", help="run the sender under CMD")
    parser.add_argument("--reader", choices=["read_view", "readinto", "read"],
                        help="how the rendr receiver reads (default: read_view, uncopied, "
                             "where the build has it)")
    parser.add_argument("--knob", metavar="NAME=VALUE", action="append", default=[],
                        help="override a FlowConfig field on both ends (A/B experiments)")
    parser.add_argument("--role", choices=["recv", "send"], help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    try:
        args.knob = {k: ast.literal_eval(v) for k, v in (kv.split("=", 1) for kv in args.knob)}
    except (ValueError, SyntaxError):
        parser.error("--knob takes NAME=VALUE with a Python literal value")
    if args.role:
        return tp.serve(HANDLERS, use_uvloop=not args.no_uvloop, cpu=args.cpu)
    return run_two_process(args)


if __name__ == "__main__":
    sys.exit(main())
