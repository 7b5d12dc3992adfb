"""Low-level helpers of the netns kit (:mod:`rendr.testing.netns`): entering a
namespace with ``setns(2)``, running ``ip``/``tc``/``nft`` with timeouts, parsing
rates, removing namespaces, and whether this machine can run the kit at all
(:func:`unavailable_reason`)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import ipaddress
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["CLONE_NEWNET", "CMD_TIMEOUT", "MIN_BURST_BYTES", "NFT_TABLE", "Link", "NetnsError",
           "delete_namespaces", "entered", "finalize_namespaces", "netns_file", "parse_rate",
           "run_cmd", "setns", "unavailable_reason"]

logger = logging.getLogger("rendr.testing.netns")

CLONE_NEWNET = 0x40000000
"""``CLONE_NEWNET`` from ``<sched.h>``: the namespace type for ``setns(2)``."""

NETNS_RUN_DIRS = ("/run/netns", "/var/run/netns")
NFT_TABLE = "rendr"
CMD_TIMEOUT = 30.0
MIN_BURST_BYTES = 16 * 1024


class NetnsError(RuntimeError):
    """A namespace operation (usually an external command) failed."""

    def __init__(
        self,
        message: str,
        *,
        cmd: Sequence[str] | None = None,
        returncode: int | None = None,
        stderr: str = "",
    ) -> None:
        super().__init__(message)
        self.cmd: list[str] | None = list(cmd) if cmd is not None else None
        self.returncode = returncode
        self.stderr = stderr


@dataclass(frozen=True)
class Link:
    """One path of a :class:`NetnsTopology`: a veth pair in its own subnet."""

    index: int
    """Position in :attr:`NetnsTopology.paths` (0-based)."""
    client_addr: str
    """IPv4 address of the client end (``.1`` of the subnet)."""
    server_addr: str
    """IPv4 address of the server end (``.2`` of the subnet)."""
    client_ifname: str
    """Interface name of the veth end inside the client namespace."""
    server_ifname: str
    """Interface name of the veth end inside the server namespace."""
    subnet: str
    """The path's subnet in CIDR notation, e.g. ``"10.231.0.0/24"``."""

    @property
    def prefixlen(self) -> int:
        """Prefix length of :attr:`subnet`."""
        return ipaddress.IPv4Network(self.subnet).prefixlen


# --------------------------------------------------------------------------- helpers


def run_cmd(
    cmd: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float | None = CMD_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run *cmd*, capturing output; raise :class:`NetnsError` (with stderr) on failure."""
    argv = [str(a) for a in cmd]
    logger.debug("run: %s", " ".join(argv))
    try:
        proc = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )
    except subprocess.CalledProcessError as exc:
        stderr = (exc.stderr or "").strip()
        stdout = (exc.stdout or "").strip()
        detail = stderr or stdout or "(no output)"
        raise NetnsError(
            f"command failed (exit {exc.returncode}): {' '.join(argv)}: {detail}",
            cmd=argv,
            returncode=exc.returncode,
            stderr=stderr,
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"command timed out after {timeout}s: {' '.join(argv)}", cmd=argv) from exc
    except OSError as exc:
        raise NetnsError(f"cannot execute {argv[0]!r}: {exc}", cmd=argv) from exc
    return proc


@functools.lru_cache(maxsize=1)
def libc() -> ctypes.CDLL:
    """The C library, loaded with ``use_errno=True`` and ``setns`` declared."""
    last_error: Exception | None = None
    # None = the symbols already loaded into the process (glibc or musl).
    for name in (None, "libc.so.6", "<find_library>"):
        if name == "<find_library>":
            name = ctypes.util.find_library("c")
            if name is None:
                continue
        try:
            lib = ctypes.CDLL(name, use_errno=True)
            fn = lib.setns
        except (OSError, AttributeError) as exc:
            last_error = exc
            continue
        fn.argtypes = [ctypes.c_int, ctypes.c_int]
        fn.restype = ctypes.c_int
        return lib
    raise NetnsError(f"cannot find setns() in the C library: {last_error}")


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread into the namespace referred to by *fd* (``setns(2)``).

    Uses :func:`os.setns` on Python >= 3.12, otherwise ``setns`` from libc via
    :mod:`ctypes`.  Raises :class:`OSError` on failure.
    """
    if sys.version_info >= (3, 12):
        os.setns(fd, nstype)
        return
    lib = libc()
    if lib.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def thread_netns_path() -> str:
    """Path of the calling thread's network-namespace handle in /proc."""
    if os.path.exists("/proc/thread-self/ns/net"):
        return "/proc/thread-self/ns/net"
    return f"/proc/self/task/{threading.get_native_id()}/ns/net"


def netns_file(name: str) -> str | None:
    """The bind-mount file of the named namespace, or ``None`` if it does not exist."""
    for d in NETNS_RUN_DIRS:
        path = os.path.join(d, name)
        if os.path.exists(path):
            return path
    return None


@contextlib.contextmanager
def entered(ns_path: str) -> Iterator[None]:
    """Move the current thread into the namespace file *ns_path* for the block."""
    tid = threading.get_ident()
    orig = os.open(thread_netns_path(), os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(target, CLONE_NEWNET)
        finally:
            os.close(target)
        try:
            yield
        finally:
            if threading.get_ident() != tid:
                # Restoring here would move the *wrong* thread.
                raise RuntimeError(
                    "netns enter()/exit on different threads; the entering thread "
                    "was left inside the namespace"
                )
            setns(orig, CLONE_NEWNET)
    finally:
        os.close(orig)


def delete_namespaces(names: Sequence[str]) -> list[str]:
    """Delete the named namespaces; return error messages (missing ones are fine)."""
    errors: list[str] = []
    for name in names:
        if netns_file(name) is None:
            continue
        try:
            run_cmd(["ip", "netns", "delete", name])
        except NetnsError as exc:
            if netns_file(name) is not None:
                errors.append(str(exc))
        else:
            logger.debug("deleted netns %s", name)
    return errors


def finalize_namespaces(names: list[str]) -> None:
    """Finalizer for topologies that were never closed: best effort, log only."""
    errors = delete_namespaces(names)
    for err in errors:
        logger.warning("leaked netns could not be removed: %s", err)


_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(bit|bps)?\s*$", re.IGNORECASE)
_RATE_MULT = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_rate(rate: str | int) -> int:
    """Parse a tc-style rate (``"50mbit"``, ``"2mbps"``, ``"800kbit"``, ``1000000``).

    Returns bits per second.  Units follow tc(8): ``bit`` (or a bare number) is
    bits per second, ``bps`` is *bytes* per second; ``k``/``m``/``g``/``t`` are
    decimal multipliers.
    """
    if isinstance(rate, int):
        bits = rate
    else:
        m = _RATE_RE.match(rate)
        if m is None:
            raise ValueError(f"unrecognised rate {rate!r} (expected e.g. '50mbit')")
        value = float(m.group(1)) * _RATE_MULT[m.group(2).lower()]
        if (m.group(3) or "bit").lower() == "bps":
            value *= 8
        bits = int(value)
    if bits <= 0:
        raise ValueError(f"rate must be positive, got {rate!r}")
    return bits


# --------------------------------------------------------------------------- availability


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """Why :class:`NetnsTopology` cannot work here, or ``None`` if it can.

    Checks for Linux, root, the ``ip``/``tc``/``nft`` tools, and then probes by
    actually creating a throw-away namespace, entering it with ``setns`` and
    creating an nftables table in it.  The result is cached.
    """
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux (platform is {sys.platform})"
    if os.geteuid() != 0:
        return "network-namespace tests need root (CAP_SYS_ADMIN/CAP_NET_ADMIN)"
    for tool, pkg in (("ip", "iproute2"), ("tc", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"{tool!r} not found on PATH (install {pkg})"
    name = f"rendr-probe-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        run_cmd(["ip", "netns", "add", name])
    except NetnsError as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        path = netns_file(name)
        if path is None:
            return f"'ip netns add {name}' succeeded but no file appeared in {NETNS_RUN_DIRS}"
        try:
            with entered(path):
                pass
        except (OSError, NetnsError) as exc:
            return f"cannot setns() into a network namespace: {exc}"
        try:
            run_cmd(["ip", "netns", "exec", name, "nft", "add", "table", "inet", "probe"])
        except NetnsError as exc:
            return f"nftables does not work inside a network namespace: {exc}"
    finally:
        for err in delete_namespaces([name]):
            logger.warning("probe netns cleanup failed: %s", err)
    return None


# --------------------------------------------------------------------------- topology
