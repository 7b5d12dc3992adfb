"""Plumbing for benchmarks whose two ends run in separate processes, as deployments do.

The parent starts the calling script again with ``--role NAME`` (one child per end),
each child pinned to its own core when the machine has two or more, and talks to it
with JSON lines over the child's stdin/stdout. A child runs one asyncio loop (uvloop
or the default loop, through :mod:`rendr.aio.runner`) and serves commands until told
to exit; a command may answer with several lines (e.g. the port it listens on, later
its measurements).

Also here: a throw-away TLS certificate and contexts (the TLS baselines), ``getrusage``
snapshots (CPU seconds and minor page faults of one process), a header line naming the
build under test, and counting syscalls from an ``strace`` log per measurement window.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import resource
import select
import shlex
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import rendr
from rendr.aio import runner

Msg = dict[str, Any]
Say = Callable[[Msg], None]
Handler = Callable[[Msg, Say], Coroutine[Any, Any, Msg | None]]


# ---------------------------------------------------------------------------- cores


_block: bytes | None = None


def payload_block() -> bytes:
    """A 4 MiB random block, made once per process, repeated to a transfer's size."""
    global _block
    if _block is None:
        _block = os.urandom(4 << 20)
    return _block

def core_plan() -> tuple[int | None, int | None]:
    """Two distinct cores for the two ends (``None`` when fewer than two are usable)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


# ---------------------------------------------------------------------------- usage


@dataclass(frozen=True)
class Usage:
    """CPU seconds (user + system) and minor page faults of this process so far."""

    user: float  # CPU seconds in user space
    system: float  # and in the kernel
    minflt: int
    wall: float  # time.time(), to find the window in an strace log

    @property
    def cpu(self) -> float:
        return self.user + self.system

    @staticmethod
    def now() -> Usage:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return Usage(ru.ru_utime, ru.ru_stime, ru.ru_minflt, time.time())

    def since(self, start: Usage) -> Msg:
        return {"cpu_s": self.cpu - start.cpu, "minflt": self.minflt - start.minflt,
                "wall0": start.wall, "wall1": self.wall, "user_s": self.user - start.user,
                "sys_s": self.system - start.system}


# ---------------------------------------------------------------------------- header


def loop_label(use_uvloop: bool) -> str:
    return runner.loop_factory(use_uvloop)[1]


def bulk_reader(choice: str | None = None) -> str:
    """How a bulk receiver reads from this build: ``choice`` if given, else the
    uncopied ``read_view`` where it exists (the raw baseline copies nothing either),
    else ``readinto``, else ``read``."""
    if choice:
        return choice
    for name in ("read_view", "readinto"):
        if hasattr(rendr.Conn, name):
            return name
    return "read"


def header(use_uvloop: bool, note: str = "") -> str:
    """Which build and loop are measured: printed first by every gate."""
    where = os.path.dirname(os.path.dirname(os.path.abspath(rendr.__file__)))
    compiled = getattr(rendr, "__compiled__", False)
    try:  # which AES-GCM seals small records and datagrams (builds before 2026-12-03: none)
        from rendr.core.aead import backend

        note = f", aead={backend()}{note}"
    except ImportError:
        pass
    return (f"rendr {rendr.__version__} from {where} (compiled={compiled}{note}); "
            f"Python {platform.python_version()}; loop {loop_label(use_uvloop)}; "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")


# ---------------------------------------------------------------------------- parent side


class Worker:
    """A child process running ``script --role ROLE`` and answering JSON lines."""

    def __init__(self, script: str, role: str, args: list[str], *, cpu: int | None,
                 wrap: list[str] | None = None, timeout: float = 120.0) -> None:
        cmd = [*(wrap or []), sys.executable, os.path.abspath(script), "--role", role, *args]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        self.role = role
        self.timeout = timeout
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     bufsize=0)
        self._buf = b""
        hello = self.recv()  # the child says hello once its loop runs
        self.pid = int(hello["pid"])

    def send(self, **msg: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")

    def recv(self) -> Msg:
        """The next line from the child; raises if it exits or stays silent too long."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.role}: no answer within {self.timeout:.0f} s")
            if not select.select([fd], [], [], left)[0]:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"{self.role} exited (rc {self.proc.wait()})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg: Msg = json.loads(line)
        if "error" in msg:
            raise RuntimeError(f"{self.role}: {msg['error']}")
        return msg

    def call(self, **msg: Any) -> Msg:
        self.send(**msg)
        return self.recv()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(cmd="exit")
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------------------- child side


def serve(handlers: dict[str, Handler], *, use_uvloop: bool, cpu: int | None) -> int:
    """Run in the child: answer commands from stdin until ``exit`` or EOF."""
    pin(cpu)
    out = sys.stdout.buffer

    def say(msg: Msg) -> None:
        out.write(json.dumps(msg).encode() + b"\n")
        out.flush()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        say({"pid": os.getpid()})
        while True:
            line = await loop.run_in_executor(None, sys.stdin.buffer.readline)
            if not line:
                return
            msg = json.loads(line)
            if msg["cmd"] == "exit":
                return
            try:
                reply = await handlers[msg["cmd"]](msg, say)
            except Exception as exc:  # report, so the parent fails with the reason
                say({"error": f"{type(exc).__name__}: {exc}"})
                raise
            if reply is not None:
                say(reply)

    runner.run(main(), use_uvloop=use_uvloop)
    return 0


# ---------------------------------------------------------------------------- strace


def strace_prefix(log: str, calls: str) -> list[str]:
    """Run a child under strace, stopping only on ``calls`` (seccomp-bpf: cheap)."""
    return ["strace", "-f", "--seccomp-bpf", "-ttt", "-qq", "-e", f"trace={calls}",
            "-o", log]


def strace_counts(log: str, wall0: float, wall1: float) -> dict[str, int]:
    """Syscalls per name entered between two ``time.time()`` stamps in an strace log."""
    counts: dict[str, int] = {}
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split(None, 2)  # pid, timestamp, call(...
            if len(parts) < 3 or parts[2].startswith("<..."):
                continue
            try:
                t = float(parts[1])
            except ValueError:
                continue
            if wall0 <= t <= wall1:
                name = parts[2].split("(", 1)[0]
                counts[name] = counts.get(name, 0) + 1
    return counts


def split_wrap(wrap: str | None) -> list[str] | None:
    return shlex.split(wrap) if wrap else None


_cert: tuple[str, str] | None = None


def self_signed() -> tuple[str, str]:
    """A throw-away certificate and key for the TLS comparison (PEM files in a temp dir)."""
    global _cert
    if _cert is None:
        import datetime
        import tempfile

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .sign(key, hashes.SHA256()))
        folder = tempfile.mkdtemp(prefix="g1-tls-")
        cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        _cert = cert_path, key_path
    return _cert


def tls_context(server: bool, cert: str) -> ssl.SSLContext:
    """TLS 1.3 (AES-256-GCM is what OpenSSL picks first, as rendr's records use)."""
    if server:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*self_signed())
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cert)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx
