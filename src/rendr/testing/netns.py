"""Real-network test harness built on Linux network namespaces.

:class:`NetnsTopology` creates two fresh network namespaces, a *client* and a
*server*, joined by ``N`` independent veth pairs ("paths").  Every path lives
in its own ``/24`` (carved out of a configurable base network, by default
``10.231.0.0/16``: path ``k`` is ``10.231.k.0/24`` with the client at ``.1`` and
the server at ``.2``).  Because every address and interface lives inside the
two private namespaces, nothing touches the host's network configuration and
several topologies (e.g. parallel test workers) can coexist.

Impairments
-----------
* :meth:`NetnsTopology.drop` / :meth:`NetnsTopology.undrop` black-hole a path
  in both directions with nftables.  The drop is *silent*: no RST, no ICMP and
  no local error either -- packets are discarded by the *receiving* side's
  ``prerouting`` hook, so ``send()``/``sendto()`` succeed and the peer simply
  never hears anything, exactly like a dead wire.  (Dropping in the sender's
  ``output`` hook would make ``sendto()`` fail with ``EPERM``, which is not
  silent.)  Established connections are affected too.
* :meth:`NetnsTopology.rate_limit` shapes a path with a ``tc tbf`` qdisc.

Running code inside a namespace
-------------------------------
:meth:`NetnsTopology.enter` moves the **current thread** into a namespace with
``setns(2)`` and moves it back on exit.  A socket belongs to the namespace it
was *created* in, for its whole life, so a single (asyncio) process can own
sockets in both namespaces::

    with NetnsTopology(paths=2) as topo:
        with topo.enter("client"):          # whole test runs as the client...
            with topo.enter("server"):      # ...except the listener creation
                lsock = socket.create_server((topo.paths[0].server_addr, 0))
            server = await asyncio.start_server(handle, sock=lsock)
            port = lsock.getsockname()[1]
            reader, writer = await asyncio.open_connection(
                topo.paths[0].server_addr, port)   # client namespace

Caveats (threads and asyncio):

* ``setns`` is per *thread*.  An asyncio loop runs all of its tasks on one
  thread, so while any task is inside ``enter(...)`` *every* task of that loop
  creates its sockets in that namespace.  Prefer creating sockets
  synchronously inside the ``with`` block (``socket.create_server``,
  ``socket.create_connection``) and handing them to asyncio with ``sock=``
  afterwards, or make sure nothing else runs concurrently while awaiting
  inside the block.
* New threads (and subprocesses) inherit the namespace of the thread that
  creates them *at creation time*.  Executor worker threads started lazily
  while the loop thread is inside a namespace stay in that namespace forever.
* Leave ``enter()`` on the thread that entered it (it raises otherwise);
  keep ``with topo.enter(...)`` blocks properly nested.
* Sockets (and threads) still living in a namespace keep it alive after
  :meth:`NetnsTopology.close` removed its name; close them too.

Everything here needs root (``CAP_SYS_ADMIN`` + ``CAP_NET_ADMIN``),
iproute2 (``ip``, ``tc``) and nftables (``nft``).  Use
:func:`unavailable_reason` to skip tests when that is not the case.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
import subprocess
import threading
import weakref
from collections.abc import Iterator
from types import TracebackType
from typing import Literal

from .nsutil import (
    CLONE_NEWNET,
    CMD_TIMEOUT,
    MIN_BURST_BYTES,
    NFT_TABLE,
    Link,
    NetnsError,
    delete_namespaces,
    entered,
    finalize_namespaces,
    netns_file,
    parse_rate,
    run_cmd,
    setns,
    unavailable_reason,
)

__all__ = [
    "CLONE_NEWNET",
    "Link",
    "NetnsError",
    "NetnsTopology",
    "Side",
    "parse_rate",
    "setns",
    "unavailable_reason",
]

logger = logging.getLogger(__name__)

Side = Literal["client", "server"]
"""Which end of the topology: ``"client"`` or ``"server"``."""



class NetnsTopology:
    """Two network namespaces ("client", "server") joined by independent veth paths.

    Construction is cheap and creates nothing; :meth:`open` (or entering the
    object as a context manager) builds the topology and :meth:`close` tears it
    down.  If :meth:`open` fails half-way, whatever was created is removed
    before the exception propagates.  A finalizer also removes the namespaces
    if the object is garbage-collected (or the interpreter exits) unclosed.

    :param paths: number of veth pairs (paths), >= 1.
    :param base: network to carve the per-path ``/24`` subnets from; path ``k``
        uses the ``k``-th ``/24`` of it (client ``.1``, server ``.2``).
    :param name_prefix: prefix of the namespace names.
    """

    def __init__(
        self,
        paths: int = 2,
        *,
        base: str | ipaddress.IPv4Network = "10.231.0.0/16",
        name_prefix: str = "rendr",
    ) -> None:
        if paths < 1:
            raise ValueError(f"need at least one path, got {paths}")
        net = ipaddress.IPv4Network(base, strict=True)
        if net.prefixlen > 24:
            raise ValueError(f"base network {net} is smaller than a /24")
        n_subnets = 1 << (24 - net.prefixlen)
        if paths > n_subnets:
            raise ValueError(f"base network {net} only holds {n_subnets} /24 subnets")
        if paths > 9999:
            raise ValueError("too many paths")
        token = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.client_ns: str = f"{name_prefix}-c-{token}"
        """Name of the client namespace (as listed by ``ip netns list``)."""
        self.server_ns: str = f"{name_prefix}-s-{token}"
        """Name of the server namespace."""
        self.base: ipaddress.IPv4Network = net
        self.paths: list[Link] = []
        for k, subnet in zip(range(paths), net.subnets(new_prefix=24), strict=False):
            hosts = list(subnet.hosts())
            self.paths.append(
                Link(
                    index=k,
                    client_addr=str(hosts[0]),
                    server_addr=str(hosts[1]),
                    client_ifname=f"rc{k}",
                    server_ifname=f"rs{k}",
                    subnet=str(subnet),
                )
            )
        self._state: Literal["new", "open", "closed"] = "new"
        self._dropped: set[int] = set()
        self._shaped: set[int] = set()
        self._nft_ready = False
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(
            self, finalize_namespaces, [self.client_ns, self.server_ns]
        )
        self._finalizer.atexit = True

    # ------------------------------------------------------------------ lifecycle

    def __repr__(self) -> str:
        return (
            f"<NetnsTopology {self._state} client={self.client_ns!r} "
            f"server={self.server_ns!r} paths={len(self.paths)}>"
        )

    def __enter__(self) -> NetnsTopology:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        """True between a successful :meth:`open` and :meth:`close`."""
        return self._state == "open"

    def open(self) -> NetnsTopology:
        """Create the namespaces and paths.  Returns ``self``.

        On any failure everything created so far is deleted and the error
        (usually a :class:`NetnsError` carrying the command's stderr) re-raised.
        """
        if self._state != "new":
            raise RuntimeError(f"topology already {self._state}")
        try:
            self._create_namespaces()
            self._create_links()
        except BaseException:
            self._state = "closed"
            errors = self._cleanup()
            for err in errors:
                logger.warning("cleanup after failed setup: %s", err)
            raise
        self._state = "open"
        logger.info(
            "netns topology up: client=%s server=%s paths=%s",
            self.client_ns,
            self.server_ns,
            ", ".join(f"{p.client_addr}<->{p.server_addr}" for p in self.paths),
        )
        return self

    def close(self) -> None:
        """Delete both namespaces (which removes the veths).  Idempotent.

        Safe after a partial or failed :meth:`open`.  Raises
        :class:`NetnsError` if a namespace exists but cannot be deleted.
        """
        self._state = "closed"
        errors = self._cleanup()
        if errors:
            raise NetnsError("; ".join(errors))

    def _cleanup(self) -> list[str]:
        if self._finalizer.detach() is None:
            return []  # already cleaned up
        errors = delete_namespaces([self.client_ns, self.server_ns])
        if not errors:
            logger.info("netns topology removed: %s, %s", self.client_ns, self.server_ns)
        return errors

    def _create_namespaces(self) -> None:
        for name in (self.client_ns, self.server_ns):
            if netns_file(name) is not None:
                raise NetnsError(f"network namespace {name!r} already exists")
            run_cmd(["ip", "netns", "add", name])

    def _create_links(self) -> None:
        client = ["link set lo up"]
        server = ["link set lo up"]
        for p in self.paths:
            prefix = ipaddress.IPv4Network(p.subnet).prefixlen
            client += [
                f"link add {p.client_ifname} type veth peer name {p.server_ifname} "
                f"netns {self.server_ns}",
                f"addr add {p.client_addr}/{prefix} dev {p.client_ifname}",
                f"link set {p.client_ifname} up",
            ]
            server += [
                f"addr add {p.server_addr}/{prefix} dev {p.server_ifname}",
                f"link set {p.server_ifname} up",
            ]
        run_cmd(["ip", "-n", self.client_ns, "-batch", "-"], input="\n".join(client) + "\n")
        run_cmd(["ip", "-n", self.server_ns, "-batch", "-"], input="\n".join(server) + "\n")

    # ------------------------------------------------------------------ access

    def _require_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"topology is {self._state}, not open")

    def ns_name(self, which: Side) -> str:
        """The ``ip netns`` name of the ``"client"`` or ``"server"`` namespace."""
        if which == "client":
            return self.client_ns
        if which == "server":
            return self.server_ns
        raise ValueError(f"which must be 'client' or 'server', got {which!r}")

    def ns_path(self, which: Side) -> str:
        """Filesystem handle of the namespace (``/run/netns/<name>``)."""
        self._require_open()
        name = self.ns_name(which)
        path = netns_file(name)
        if path is None:
            raise NetnsError(f"network namespace {name!r} has disappeared")
        return path

    def _path(self, path_index: int) -> Link:
        if not 0 <= path_index < len(self.paths):
            raise IndexError(f"path index {path_index} out of range (0..{len(self.paths) - 1})")
        return self.paths[path_index]

    @contextlib.contextmanager
    def enter(self, which: Side) -> Iterator[None]:
        """Run the block with the **current thread** inside namespace *which*.

        Sockets created inside the block belong to that namespace for their
        whole life, also after the block ends.  The thread's previous
        namespace (saved as an fd before switching) is restored on exit.
        Blocks may be nested; they must be exited on the entering thread.
        See the module docstring for the asyncio pattern and caveats.
        """
        path = self.ns_path(which)
        with entered(path):
            yield

    def run(
        self,
        which: Side,
        *cmd: str,
        check: bool = True,
        input: str | None = None,
        timeout: float | None = CMD_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run *cmd* inside namespace *which* (``ip netns exec``), capturing output.

        With ``check=True`` a non-zero exit raises :class:`NetnsError` whose
        message contains the command's stderr.
        """
        self._require_open()
        if not cmd:
            raise ValueError("no command given")
        return run_cmd(
            ["ip", "netns", "exec", self.ns_name(which), *cmd],
            input=input,
            check=check,
            timeout=timeout,
        )

    # ------------------------------------------------------------------ impairments

    def _ensure_nft(self) -> None:
        if self._nft_ready:
            return
        sides: tuple[Side, ...] = ("client", "server")
        for which in sides:
            ruleset = (
                f"table inet {NFT_TABLE} {{\n"
                "  set dropped { type ifname; }\n"
                "  chain prerouting {\n"
                "    type filter hook prerouting priority -300; policy accept;\n"
                "    iifname @dropped drop\n"
                "  }\n"
                "}\n"
            )
            self.run(which, "nft", "-f", "-", input=ruleset)
        self._nft_ready = True

    def _set_dropped(self, link: Link, dropped: bool) -> None:
        verb = "add" if dropped else "delete"
        ends: list[tuple[Side, str]] = [
            ("client", link.client_ifname),
            ("server", link.server_ifname),
        ]
        for which, ifname in ends:
            self.run(
                which,
                "nft",
                verb,
                "element",
                "inet",
                NFT_TABLE,
                "dropped",
                f'{{ "{ifname}" }}',
            )

    def drop(self, path_index: int) -> None:
        """Silently black-hole path *path_index* in both directions (idempotent).

        Every packet arriving on the path's veth, in either namespace, is
        discarded by nftables before routing.  Senders see no error, receivers
        see nothing: no RST, no ICMP.  Existing connections are affected too.
        """
        self._require_open()
        link = self._path(path_index)
        with self._lock:
            if path_index in self._dropped:
                return
            self._ensure_nft()
            self._set_dropped(link, True)
            self._dropped.add(path_index)
        logger.info("path %d (%s) dropped", path_index, link.subnet)

    def undrop(self, path_index: int) -> None:
        """Undo :meth:`drop`: path *path_index* carries traffic again (idempotent)."""
        self._require_open()
        link = self._path(path_index)
        with self._lock:
            if path_index not in self._dropped:
                return
            self._set_dropped(link, False)
            self._dropped.discard(path_index)
        logger.info("path %d (%s) restored", path_index, link.subnet)

    def is_dropped(self, path_index: int) -> bool:
        """Whether path *path_index* is currently black-holed by :meth:`drop`."""
        self._path(path_index)
        return path_index in self._dropped

    def rate_limit(
        self,
        path_index: int,
        rate_bits: str | int,
        *,
        burst_bytes: int | None = None,
        latency: str = "50ms",
        both_directions: bool = True,
    ) -> None:
        """Shape path *path_index* to *rate_bits* (e.g. ``"50mbit"``) with ``tc tbf``.

        The qdisc is installed on the client-side veth (client -> server
        traffic) and, with ``both_directions=True`` (default), also on the
        server-side veth.  Calling again replaces the previous limit.
        *burst_bytes* defaults to 10 ms worth of data (at least 16 KiB);
        *latency* bounds the queueing delay (excess packets are dropped).
        """
        self._require_open()
        link = self._path(path_index)
        bits = parse_rate(rate_bits)
        burst = burst_bytes if burst_bytes is not None else max(MIN_BURST_BYTES, bits // 800)
        ends: list[tuple[Side, str]] = [("client", link.client_ifname)]
        if both_directions:
            ends.append(("server", link.server_ifname))
        else:
            self._clear_qdisc("server", link.server_ifname)
        for which, ifname in ends:
            self.run(
                which,
                "tc", "qdisc", "replace", "dev", ifname, "root", "tbf",
                "rate", f"{bits}bit", "burst", str(burst), "latency", latency,
            )  # fmt: skip
        self._shaped.add(path_index)
        logger.info("path %d rate-limited to %d bit/s (burst %d B)", path_index, bits, burst)

    def clear_rate_limit(self, path_index: int) -> None:
        """Remove any :meth:`rate_limit` shaping from path *path_index* (idempotent)."""
        self._require_open()
        link = self._path(path_index)
        self._clear_qdisc("client", link.client_ifname)
        self._clear_qdisc("server", link.server_ifname)
        self._shaped.discard(path_index)

    def _clear_qdisc(self, which: Side, ifname: str) -> None:
        shown = self.run(which, "tc", "qdisc", "show", "dev", ifname, "root").stdout
        if "tbf" in shown:
            self.run(which, "tc", "qdisc", "del", "dev", ifname, "root")
