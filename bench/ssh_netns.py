#!/usr/bin/env python3
"""OpenSSH over rendr on two real paths (Linux netns), next to Linux MPTCP (issue 11).

Usage::

    sudo python3 bench/ssh_netns.py --short          # CI: 120 lines, 64 MiB, ~20 s
    sudo python3 bench/ssh_netns.py                  # full: 600 lines, 64 MiB, 3 runs
    sudo python3 bench/ssh_netns.py --via stdio      # rendr as ssh's ProxyCommand
    sudo python3 bench/ssh_netns.py --no-mptcp --json out.json

Method, per stack, on a fresh pair of namespaces joined by two veth paths
(:class:`rendr.testing.netns.NetnsTopology`; nothing leaves the namespaces):

* **rendr**: the distribution's ``sshd -D -f <own config>`` listens on 127.0.0.1
  of the server namespace (host key, client key and ``authorized_keys`` generated
  in a temporary directory); ``python3 -m rendr serve --listen tcp://A:p
  --listen tcp://B:p --forward 127.0.0.1:<sshd>`` next to it; in the client
  namespace ``python3 -m rendr connect --path tcp://A:p --path tcp://B:p
  --local 127.0.0.1:2222`` (``--via local``, the default) and ``ssh -p 2222
  root@127.0.0.1``, or ``ssh -o ProxyCommand='python3 -m rendr connect ...
  --stdio'`` (``--via stdio``).  The host key is pinned in a known_hosts file.
* **mptcp**: the same sshd and ssh under ``mptcpize run``, straight to path A's
  server address; the in-kernel path manager has a ``subflow`` endpoint on path B
  in the client namespace and a ``signal`` endpoint on path B in the server one
  (``ip mptcp limits set subflow 2 add_addr_accepted 2`` on both), so every
  connection has a subflow on each path.

Traffic, the same for both stacks: (a) a session ``ssh ... 'for i in $(seq N);
do echo line $i; sleep 0.05; done'`` whose lines the gate timestamps as they
arrive; (b) once that session is running, ``ssh ... sha256sum`` fed 64 MiB of
random bytes by the gate.  When half of the 64 MiB has been written, path A (the
active path: rendr's first path, MPTCP's initial subflow) is silently DROPped in
both namespaces with nftables (``NetnsTopology.drop``), so the drop hits both
connections mid-way.  Checked: both ssh exit 0; every line, in order; the
SHA-256 printed by the far end equals the gate's; the drop landed while the
session was still printing and before the transfer was done.  Reported: the
longest gap between two lines over the whole session (lines are ~52 ms apart
otherwise), the longest gap at the drop (ending after it, starting less than 3 s
after it: the failover as a user sees it; the overall longest can be the shared
machine's noise), the transfer time including the outage.

Verdict: rendr must pass every check with its longest gap under ``--max-gap``
(default 2 s: a regression guard for a shared 2-core box; rendr's G4 failover
is ~0.25 s).  MPTCP is the reference: its figures and checks are printed next to
rendr's, and its failures fail the gate only with ``--require-mptcp``.

Exit status: 0 PASS, 1 FAIL, 77 skipped (not root, no ``ip netns``/nft, no
sshd/ssh; a missing ``mptcpize`` only skips the MPTCP column).  Cleans up the
namespaces, the sshd and rendr processes and the temporary keys on every exit,
SIGTERM included; after a SIGKILL the processes it started get SIGTERM from the
kernel (``setpriv --pdeathsig``), and the next run removes the namespaces
(``rssh-*``) and the temporary folder such a run left.  It creates sshd's empty
``/run/sshd`` when the machine has none, and leaves it (another run may use it).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import rendr
from rendr.testing.netns import NetnsTopology, Side, unavailable_reason

EXIT_SKIP = 77
MIB = 1 << 20
CHUNK = 1 << 20
SSHD_PORT = 2200
MPTCP_SSHD_PORT = 2201
RENDR_PORT = 7000
LOCAL_PORT = 2222
HOST_ALIAS = "rendr-ssh-gate"
LINE_INTERVAL = 0.05
SETPRIV = shutil.which("setpriv")  # util-linux
TMP_PREFIX = "rendr-ssh-gate-"
DROP_WINDOW = 3.0


def sshd_binary() -> str | None:
    return shutil.which("sshd") or next(
        (p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.access(p, os.X_OK)), None)


def unavailable() -> str | None:
    """Why this gate cannot run here (None: it can)."""
    reason = unavailable_reason()
    if reason is not None:
        return reason
    if sshd_binary() is None:
        return "sshd not found (install openssh-server)"
    for tool, pkg in (("ssh", "openssh-client"), ("ssh-keygen", "openssh-client")):
        if shutil.which(tool) is None:
            return f"{tool} not found (install {pkg})"
    if _root_locked():
        return "root's account is locked ('!' in /etc/shadow): sshd with UsePAM no refuses it"
    return None


def _root_locked() -> bool:
    """sshd (``UsePAM no``) refuses a key login to an account whose password field
    starts with ``!`` (locked); ``*`` (no password) is fine."""
    try:
        with open("/etc/shadow", encoding="utf-8") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name == "root":
                    return rest.startswith("!")
    except OSError:
        pass
    return False


def mptcp_unavailable() -> str | None:
    if shutil.which("mptcpize") is None:
        return "mptcpize not found (install mptcpize)"
    try:
        if Path("/proc/sys/net/mptcp/enabled").read_text().strip() != "1":
            return "net.mptcp.enabled is not 1"
    except OSError:
        return "the kernel has no MPTCP (no /proc/sys/net/mptcp)"
    return None


# --------------------------------------------------------------------------- processes


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            kids.append(int(entry.name))
    return kids


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        for kid in _children(todo.pop()):
            out.append(kid)
            todo.append(kid)
    return out


class Procs:
    """The processes this gate started; :meth:`stop_all` ends them and their children
    (sshd's per-connection children leave its process group), by pid."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        if SETPRIV is not None:  # a SIGKILLed gate leaves no sshd, rendr or ssh behind
            at = 4 if argv[:3] == ["ip", "netns", "exec"] else 0
            argv = [*argv[:at], SETPRIV, "--pdeathsig", "TERM", "--", *argv[at:]]
        proc = subprocess.Popen(argv, start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        pids = descendants(proc.pid) if proc.poll() is None else []
        for pid in [proc.pid, *pids]:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()


def wait_for_text(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = path.read_text(errors="replace") if path.exists() else ""
        if text in seen:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode}: {tail(path)}")
        time.sleep(0.05)
    raise RuntimeError(f"no {text!r} from {proc.args!r} in {timeout:.0f} s: {tail(path)}")


def tail(path: Path, n: int = 6) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return "(no log)"


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", HOST_ALIAS,
                    "-f", str(path)], check=True, capture_output=True, timeout=30)
    return path.with_suffix(".pub").read_text().strip()


def sweep_leftovers() -> list[str]:
    """Remove what a SIGKILLed run of this gate left: its namespaces and temporary
    folder (both carry the dead run's pid in their names)."""
    removed: list[str] = []

    def dead(pid: str) -> bool:
        return int(pid) != os.getpid() and not os.path.exists(f"/proc/{pid}")

    for folder in ("/run/netns", "/var/run/netns"):
        names = os.listdir(folder) if os.path.isdir(folder) else []
        for name in names:
            m = re.fullmatch(r"rssh-[cs]-(\d+)-[0-9a-f]{6}", name)
            if m and dead(m.group(1)):
                subprocess.run(["ip", "netns", "delete", name], capture_output=True,
                               check=False, timeout=30)
                removed.append(name)
    tmp = Path(tempfile.gettempdir())
    for path in tmp.glob(f"{TMP_PREFIX}*"):
        m = re.fullmatch(rf"{TMP_PREFIX}(\d+)-.*", path.name)
        if m and dead(m.group(1)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed


# --------------------------------------------------------------------------- results


@dataclass
class Run:
    stack: str
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    session_exit: int | None = None
    transfer_exit: int | None = None
    lines_expected: int = 0
    lines_received: int = 0
    lines_in_order: bool = False
    longest_gap: float | None = None
    longest_gap_after_line: int | None = None
    drop_gap: float | None = None
    drop_to_gap_end: float | None = None
    median_gap: float | None = None
    drop_at_line: int | None = None
    transfer_mib: int = 0
    sha_ok: bool = False
    sha256: str = ""
    transfer_seconds: float | None = None
    write_stall_after_drop: float | None = None
    written_at_drop_mib: float | None = None
    subflows_before_drop: int | None = None
    note: str = ""


# --------------------------------------------------------------------------- one run


class Stack:
    """One run of the session + transfer + DROP on a fresh topology."""

    def __init__(self, name: str, args: argparse.Namespace, tmp: Path, run: int) -> None:
        self.name = name
        self.args = args
        self.tmp = tmp  # the keys
        self.logs = tmp / f"run{run}-{name}"  # this run's config, logs and pid file
        self.logs.mkdir()
        self.procs = Procs()
        self.topo = NetnsTopology(paths=2, name_prefix="rssh")
        self.env = dict(os.environ)
        src = str(Path(rendr.__file__).resolve().parent.parent)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [src, *filter(None, [os.environ.get("PYTHONPATH")])])
        self.ssh_target: list[str] = []

    # -- setup

    def ns(self, which: Side, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.topo.ns_name(which), *argv]

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def start_sshd(self, listen: str, port: int, wrap: list[str]) -> None:
        cfg = self.logs / "sshd.conf"
        cfg.write_text(
            f"Port {port}\nListenAddress {listen}\nHostKey {self.tmp / 'host_key'}\n"
            f"PidFile {self.logs / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.tmp / 'authorized_keys'}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\nPermitRootLogin prohibit-password\nUseDNS no\nPrintMotd no\n"
            "PrintLastLog no\nLogLevel INFO\n")
        sshd = sshd_binary()
        assert sshd is not None
        subprocess.run([sshd, "-t", "-f", str(cfg)], check=True, capture_output=True,
                       timeout=30)
        log = self.log("sshd")
        proc = self.procs.start(self.ns("server", *wrap, sshd, "-D", "-e", "-E", str(log),
                                        "-f", str(cfg)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_text(log, "Server listening", proc, 15)

    def rendr_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "rendr", *args]

    def setup(self) -> None:
        a, b = self.topo.paths
        ssh = ["ssh", "-F", "/dev/null", "-T", "-i", str(self.tmp / "client_key"),
               "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
               "-o", f"UserKnownHostsFile={self.tmp / 'known_hosts'}",
               "-o", "StrictHostKeyChecking=yes", "-o", f"HostKeyAlias={HOST_ALIAS}",
               "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=15"]
        if self.name == "rendr":
            self.start_sshd("127.0.0.1", SSHD_PORT, [])
            listens = [x for p in (a, b)
                       for x in ("--listen", f"tcp://{p.server_addr}:{RENDR_PORT}")]
            paths = [x for p in (a, b) for x in ("--path", f"tcp://{p.server_addr}:{RENDR_PORT}")]
            log = self.log("serve")
            serve = self.procs.start(
                self.ns("server", *self.rendr_argv("serve", *listens, "--forward",
                                                    f"127.0.0.1:{SSHD_PORT}")),
                env=self.env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
            wait_for_text(log, "listening on", serve, 30)
            if self.args.via == "local":
                log = self.log("connect")
                connect = self.procs.start(
                    self.ns("client", *self.rendr_argv("connect", *paths, "--local",
                                                        f"127.0.0.1:{LOCAL_PORT}")),
                    env=self.env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
                wait_for_text(log, "forwarding", connect, 30)
                self.ssh_target = [*ssh, "-p", str(LOCAL_PORT), "root@127.0.0.1"]
            else:
                proxy = shlex.join([*self.rendr_argv("connect", *paths, "--stdio")])
                proxy += f" 2>>{shlex.quote(str(self.log('proxy')))}"
                self.ssh_target = [*ssh, "-o", f"ProxyCommand={proxy}", "root@rendr"]
        else:
            ends: list[tuple[Side, str]] = [("client", "subflow"), ("server", "signal")]
            for which, kind in ends:
                addr = b.client_addr if which == "client" else b.server_addr
                dev = b.client_ifname if which == "client" else b.server_ifname
                self.topo.run(which, "ip", "mptcp", "limits", "set", "subflow", "2",
                              "add_addr_accepted", "2")
                self.topo.run(which, "ip", "mptcp", "endpoint", "add", addr, "dev", dev, kind)
            self.start_sshd("0.0.0.0", MPTCP_SSHD_PORT, ["mptcpize", "run"])
            self.ssh_target = ["mptcpize", "run", *ssh, "-p", str(MPTCP_SSHD_PORT),
                               f"root@{a.server_addr}"]

    def count_subflows(self) -> int:
        port = MPTCP_SSHD_PORT
        out = self.topo.run("client", "ss", "-tnH", "state", "established",
                            f"( dport = :{port} )", check=False).stdout
        return len([ln for ln in out.splitlines() if ln.strip()])

    # -- traffic

    def run(self) -> Run:
        args = self.args
        res = Run(stack=self.name, lines_expected=args.lines, transfer_mib=args.mib)
        self.topo.open()
        try:
            self.setup()
            self.traffic(res)
        finally:
            self.procs.stop_all()
            self.topo.close()
        return res

    def traffic(self, res: Run) -> None:
        args = self.args
        n = args.lines
        times: list[float] = []
        lines: list[str] = []
        remote = f"for i in $(seq {n}); do echo line $i; sleep {LINE_INTERVAL}; done"
        session = self.procs.start(self.ns("client", *self.ssh_target, remote), env=self.env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=self.log("session").open("wb"))
        assert session.stdout is not None
        out = session.stdout

        def read_lines() -> None:
            for raw in out:
                times.append(time.monotonic())
                lines.append(raw.decode(errors="replace").rstrip("\n"))

        reader = threading.Thread(target=read_lines, daemon=True)
        reader.start()
        deadline = time.monotonic() + 30
        while len(lines) < args.lines_before and time.monotonic() < deadline:
            if session.poll() is not None and not reader.is_alive():
                break
            time.sleep(0.01)
        if len(lines) < args.lines_before:
            res.problems.append(f"session printed {len(lines)} lines (30 s at most) "
                                f"(exit {session.poll()}): {tail(self.log('session'))}")
            return

        transfer = self.procs.start(self.ns("client", *self.ssh_target, "sha256sum"),
                                    env=self.env, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE,
                                    stderr=self.log("transfer").open("wb"))
        assert transfer.stdin is not None and transfer.stdout is not None
        digest = hashlib.sha256()
        half = threading.Event()
        written = [0]
        stalls: list[float] = []
        write_error: list[str] = []
        t_start = time.monotonic()
        stdin = transfer.stdin

        def write() -> None:
            try:
                for _ in range(args.mib * MIB // CHUNK):
                    chunk = os.urandom(CHUNK)
                    digest.update(chunk)
                    t = time.monotonic()
                    stdin.write(chunk)
                    stalls.append(time.monotonic() - t)
                    written[0] += CHUNK
                    if written[0] >= args.mib * MIB // 2:
                        half.set()
                stdin.close()
            except (OSError, ValueError) as exc:
                write_error.append(str(exc))
            finally:
                half.set()

        sha_out: list[bytes] = []
        stdout = transfer.stdout
        threading.Thread(target=lambda: sha_out.append(stdout.read()), daemon=True).start()
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        half.wait(args.timeout)
        if self.name == "mptcp":
            res.subflows_before_drop = self.count_subflows()
        t_drop = time.monotonic()
        res.drop_at_line = len(lines)
        res.written_at_drop_mib = written[0] / MIB
        self.topo.drop(0)

        n_before = len(stalls)
        try:
            res.transfer_exit = transfer.wait(args.timeout)
        except subprocess.TimeoutExpired:
            res.problems.append(f"transfer not done {args.timeout:.0f} s after the drop")
            self.procs.stop(transfer)
        res.transfer_seconds = time.monotonic() - t_start
        writer.join(5)
        if stalls[n_before:]:
            res.write_stall_after_drop = max(stalls[n_before:])
        try:
            res.session_exit = session.wait(max(5.0, n * LINE_INTERVAL * 3))
        except subprocess.TimeoutExpired:
            res.problems.append("session did not end in time")
            self.procs.stop(session)
        reader.join(5)

        res.sha256 = digest.hexdigest()
        got = b"".join(sha_out).decode(errors="replace").split()
        res.sha_ok = bool(got) and got[0] == res.sha256 and not write_error
        res.lines_received = len(lines)
        res.lines_in_order = lines == [f"line {i}" for i in range(1, n + 1)]
        if len(times) > 1:
            gaps = [b - a for a, b in itertools.pairwise(times)]
            k = max(range(len(gaps)), key=gaps.__getitem__)
            res.longest_gap, res.longest_gap_after_line = gaps[k], k + 1
            res.median_gap = statistics.median(gaps)
            # the failover: the longest gap ending after the drop and starting within
            # DROP_WINDOW of it (the overall longest can be the shared machine's noise)
            near = [i for i in range(len(gaps))
                    if times[i + 1] > t_drop and times[i] < t_drop + DROP_WINDOW]
            if near:
                j = max(near, key=gaps.__getitem__)
                res.drop_gap, res.drop_to_gap_end = gaps[j], times[j + 1] - t_drop
        # verdict
        if res.session_exit != 0:
            res.problems.append(f"session ssh exit {res.session_exit}: "
                                f"{tail(self.log('session'))} {tail(self.log('proxy'))}")
        if res.transfer_exit != 0:
            res.problems.append(f"transfer ssh exit {res.transfer_exit}: "
                                f"{tail(self.log('transfer'))} {write_error}")
        if not res.lines_in_order:
            res.problems.append(f"lines: {res.lines_received}/{n}, in order: "
                                f"{res.lines_in_order}")
        if not res.sha_ok:
            res.problems.append(f"SHA-256 differs: far end printed {got[:1]}")
        if not (0 < (res.drop_at_line or 0) < n):
            res.problems.append(f"the drop did not land mid-session (after line "
                                f"{res.drop_at_line} of {n}): make --lines longer")
        if res.written_at_drop_mib is not None and res.written_at_drop_mib >= args.mib:
            res.problems.append("the transfer was fully written before the drop")
        if (self.name == "rendr" and res.longest_gap is not None
                and res.longest_gap > args.max_gap):
            res.problems.append(f"longest gap {res.longest_gap:.3f} s > {args.max_gap} s")
        if self.name == "mptcp" and (res.subflows_before_drop or 0) < 4:
            res.note = (f"{res.subflows_before_drop} TCP subflows to sshd before the "
                        "drop (2 connections x 2 paths expected)")
        res.ok = not res.problems


# --------------------------------------------------------------------------- report


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f} ms"


def report(runs: list[Run], skipped_mptcp: str | None, args: argparse.Namespace) -> None:
    stacks = ["rendr"] + ([] if skipped_mptcp else ["mptcp"])
    by = {s: [r for r in runs if r.stack == s] for s in stacks}
    title = {"rendr": f"rendr ({args.via})", "mptcp": "Linux MPTCP (mptcpize)"}

    def col(s: str, f: Any) -> str:
        return ", ".join(f(r) for r in by[s]) or "-"

    rows: list[tuple[str, Any]] = [
        ("verdict", lambda r: "ok" if r.ok else "FAIL"),
        ("ssh exit (session, transfer)", lambda r: f"{r.session_exit}/{r.transfer_exit}"),
        ("lines received in order", lambda r: f"{r.lines_received}/{r.lines_expected}"
         + ("" if r.lines_in_order else " (NOT in order)")),
        ("longest gap between lines", lambda r: f"{_ms(r.longest_gap)} (after line "
         f"{r.longest_gap_after_line})"),
        (f"longest gap at the drop (< {DROP_WINDOW:g} s)", lambda r: _ms(r.drop_gap)),
        ("drop -> the line ending it", lambda r: _ms(r.drop_to_gap_end)),
        ("median gap", lambda r: _ms(r.median_gap)),
        ("drop after line / MiB written", lambda r: f"{r.drop_at_line} / "
         f"{r.written_at_drop_mib or 0:.0f}"),
        (f"{args.mib} MiB SHA-256 intact", lambda r: "yes" if r.sha_ok else "NO"),
        ("transfer time (incl. outage)", lambda r: f"{r.transfer_seconds or 0:.2f} s"),
        ("longest 1 MiB write into ssh after", lambda r: _ms(r.write_stall_after_drop)),
    ]
    if "mptcp" in stacks:
        rows.append(("MPTCP subflows before drop",
                     lambda r: "-" if r.subflows_before_drop is None
                     else str(r.subflows_before_drop)))
    width = max(len(label) for label, _ in rows) + 2
    cols = [max(28, *(len(col(s, f)) for _, f in rows)) + 2 for s in stacks]
    print(f"{'':{width}}" + "".join(f"{title[s]:<{w}}" for s, w in zip(stacks, cols,
                                                                       strict=True)))
    for label, f in rows:
        print(f"{label:{width}}" + "".join(f"{col(s, f):<{w}}" for s, w in zip(stacks, cols,
                                                                             strict=True)))
    for s in stacks:
        for what, attr in (("longest gap", "longest_gap"), ("gap at the drop", "drop_gap")):
            xs = sorted(getattr(r, attr) for r in by[s] if getattr(r, attr) is not None)
            if xs:
                print(f"{title[s]}: {what}, median {_ms(statistics.median(xs))} "
                      f"({_ms(xs[0])} - {_ms(xs[-1])}) over {len(xs)} run(s)")
        print(f"{title[s]}: {sum(r.ok for r in by[s])}/{len(by[s])} runs passed every check")
    if skipped_mptcp:
        print(f"MPTCP column SKIPPED: {skipped_mptcp}")
    for r in runs:
        for p in r.problems:
            print(f"  {r.stack}: {p}")
        if r.note:
            print(f"  {r.stack}: note: {r.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true",
                        help="CI mode: one run per stack, 120 lines (~20 s in all)")
    parser.add_argument("--repeat", type=int, help="runs per stack (default 3; --short 1)")
    parser.add_argument("--lines", type=int, help="session lines (default 600; --short 120)")
    parser.add_argument("--lines-before", type=int, default=10,
                        help="session lines seen before the transfer starts")
    parser.add_argument("--mib", type=int, default=64, help="transfer size, MiB")
    parser.add_argument("--via", choices=["local", "stdio"], default="local",
                        help="rendr connect --local (ssh to 127.0.0.1:2222) or --stdio "
                             "(ssh's ProxyCommand)")
    parser.add_argument("--max-gap", type=float, default=2.0,
                        help="rendr's longest gap between lines must stay under this, s")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="per ssh command, s")
    parser.add_argument("--no-mptcp", action="store_true", help="skip the MPTCP column")
    parser.add_argument("--require-mptcp", action="store_true",
                        help="MPTCP failing its checks (or missing) fails the gate")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    args.repeat = args.repeat or (1 if args.short else 3)
    args.lines = args.lines or (120 if args.short else 600)
    if args.lines <= args.lines_before + 1 or args.mib < 2 or args.repeat < 1:
        parser.error("need --lines > --lines-before + 1, --mib >= 2, --repeat >= 1")

    def terminated(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # the finally blocks clean up

    signal.signal(signal.SIGTERM, terminated)
    reason = unavailable()
    if reason is not None:
        print(f"ssh gate SKIPPED: {reason}")
        return EXIT_SKIP
    skipped_mptcp = "--no-mptcp" if args.no_mptcp else mptcp_unavailable()
    if skipped_mptcp and args.require_mptcp:
        print(f"ssh gate FAIL: MPTCP required but {skipped_mptcp}")
        return 1
    print(f"ssh gate: OpenSSH {ssh_version()}, rendr {rendr.__version__} "
          f"(compiled={rendr.__compiled__}), {args.repeat} run(s) per stack, {args.lines} "
          f"lines every {LINE_INTERVAL * 1000:.0f} ms + {args.mib} MiB, DROP of path A "
          "once half is written", flush=True)

    runs: list[Run] = []
    for gone in sweep_leftovers():
        print(f"removed {gone}, left by a killed run")
    # sshd's privilege separation directory (systemd's tmpfiles make it at boot; a
    # container may have none).  Left in place: another run may be using it.
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{TMP_PREFIX}{os.getpid()}-") as tmpdir:
        tmp = Path(tmpdir)
        host_pub = keygen(tmp / "host_key")
        (tmp / "authorized_keys").write_text(keygen(tmp / "client_key") + "\n")
        (tmp / "known_hosts").write_text(f"{HOST_ALIAS} {' '.join(host_pub.split()[:2])}\n")
        for i in range(args.repeat):
            for name in ["rendr"] + ([] if skipped_mptcp else ["mptcp"]):
                t0 = time.monotonic()
                try:
                    res = Stack(name, args, tmp, i + 1).run()
                except Exception as exc:  # reported as the run's failure
                    res = Run(stack=name, problems=[f"{type(exc).__name__}: {exc}"])
                runs.append(res)
                print(f"  run {i + 1} {name}: {'ok' if res.ok else 'FAIL'}, longest gap "
                      f"{_ms(res.longest_gap)} ({time.monotonic() - t0:.1f} s)", flush=True)
    report(runs, skipped_mptcp, args)
    passed = all(r.ok for r in runs if r.stack == "rendr")
    if args.require_mptcp:
        passed = passed and all(r.ok for r in runs if r.stack == "mptcp")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "passed": passed, "via": args.via, "lines": args.lines, "mib": args.mib,
            "mptcp_skipped": skipped_mptcp, "runs": [asdict(r) for r in runs]}, indent=2))
    print(f"ssh gate {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


def ssh_version() -> str:
    proc = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
    return (proc.stderr or proc.stdout).strip().split(",")[0]


if __name__ == "__main__":
    sys.exit(main())
