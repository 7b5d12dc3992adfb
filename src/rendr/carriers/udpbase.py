"""The udpflow carrier's shared parts: datagram types, sizes and limits, socket tuning
and non-blocking sends (see :mod:`rendr.carriers.udpflow` for the protocol)."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final

from ..core.wire import HEADER, PREFACE_STRUCT
from .address import parse_address
from .base import Buffer

logger = logging.getLogger("rendr.carriers.udpflow")

OPEN: Final = 0x01
ANSWER: Final = 0x02
DATA: Final = 0x03
CHALLENGE: Final = 0x04
RESPONSE: Final = 0x05

DEFAULT_MTU: Final = 1200
"""Largest datagram (UDP payload) sent by default: fits every IPv4/IPv6 path."""
MIN_OPEN: Final = 1200
"""OPEN datagrams are padded to this size (the listener's answers are smaller)."""
CID_LEN: Final = 8
HEADER_LEN: Final = 1 + CID_LEN
TOKEN_LEN: Final = 16
NONCE_LEN: Final = 8
OPEN_RETRY: Final = 0.25
"""Seconds before the first OPEN is re-sent (doubling each time)."""
OPEN_TRIES: Final = 6
CHALLENGE_INTERVAL: Final = 0.2
PENDING_TTL: Final = 10.0
"""Seconds a listener remembers an opening it answered (for repeated OPENs)."""
MAX_PENDING: Final = 4096
"""Openings a listener socket answers at once (beyond: OPENs are dropped)."""
MAX_CARRIERS: Final = 65536
"""Paths one listener socket carries."""
SOCKET_BUFFER: Final = 4 * 1024 * 1024
READ_BATCH: Final = 256
"""Most datagrams one readiness callback reads (until the socket is empty)."""
SINGLE_AFTER: Final = 2
"""Callbacks in a row that found one datagram before the empty socket after which
reads go one datagram per callback (see :class:`ReadRun`)."""
PROBE_EVERY: Final = 16
"""While reading one datagram per callback, every this many-th callback reads a batch."""
WRITE_HIGH: Final = 1024
"""Datagrams queued (socket full) before the carrier reports backpressure."""
WRITE_LOW: Final = 256
CLOSE_REPEATS: Final = 2
"""A carrier closed gracefully sends its last datagram (the flow's CLOSE, or a path's
PATH_CLOSE) this many times more: nothing re-sends a CLOSE, and a peer that missed
it would wait out its migration budget.  The peer opens one copy; the others are
replays, dropped."""
DRAIN: Final = 2.0
"""Seconds a gracefully closed carrier lingers (QUIC's closing state): each DATA that
still comes for it is answered with its last datagram again (the CLOSE the peer
missed), at most :data:`DRAIN_ANSWERS` times; nothing reaches the engine."""
DRAIN_ANSWERS: Final = 8
_RECV_SIZE: Final = 65535
"""Bytes asked of each ``recv``: the largest UDP payload (a datagram over a peer's MTU
is still whole; CPython allocates this much and shrinks it to what came)."""
_OPENING_MIN: Final = PREFACE_STRUCT.size + HEADER.size

UDP_SEGMENT: Final = getattr(socket, "UDP_SEGMENT", 103)
"""Linux UDP GSO (4.18+): one ``sendmsg`` carries many equal-size datagrams (the last
may be shorter), split by the kernel (or the NIC) on the way out."""
UDP_GRO: Final = getattr(socket, "UDP_GRO", 104)
"""Linux UDP GRO (5.0+): one ``recvmsg`` may return a train of equal-size datagrams
from one sender, their size in a control message."""
GSO_SEGMENTS: Final = 64
"""Most datagrams per GSO send (the kernel's limit: UDP_MAX_SEGMENTS)."""
GSO_BYTES: Final = 65000
"""Most bytes per GSO send (a UDP payload is at most 65507 bytes)."""
_GSO_OK: Final = sys.platform.startswith("linux")
_GSO_OFF: Final = frozenset((errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP,
                             errno.EMSGSIZE))
"""Errors of a GSO send that mean the path cannot segment: sent one by one from then on
(EIO: no checksum offload on the device; the others: no or limited support)."""
_GRO_CMSG: Final = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0
_SEG: Final = struct.Struct("=H")

Address = tuple[Any, ...]
"""A socket address as ``recvfrom`` gives it."""


def enable_gro(sock: socket.socket) -> bool:
    """Ask for GRO on ``sock`` (Linux); whether it is on.  The reader must then use
    :func:`recv_batch`."""
    if not _GSO_OK or not _GRO_CMSG:
        return False
    try:
        sock.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def split_gro(data: bytes, ancdata: list[tuple[int, int, bytes]]) -> list[bytes]:
    """The datagrams of one ``recvmsg`` on a GRO socket: ``data`` cut at the segment
    size its control message gives (one datagram without one)."""
    for level, kind, cdata in ancdata:
        if level == socket.SOL_UDP and kind == UDP_GRO and len(cdata) >= 4:
            seg = int.from_bytes(cdata[:4], sys.byteorder)
            if 0 < seg < len(data):
                return [data[k : k + seg] for k in range(0, len(data), seg)]
    return [data]


def _opening_len(data: bytes) -> int:
    """Bytes of the opening (preface + first frame) at the start of ``data`` (0: not
    a whole one)."""
    if len(data) < _OPENING_MIN:
        return 0
    (word,) = HEADER.unpack_from(data, PREFACE_STRUCT.size)
    n = _OPENING_MIN + (word & 0xFFFFFF)
    return n if n <= len(data) else 0


_FORCE: Final = {socket.SO_RCVBUF: getattr(socket, "SO_RCVBUFFORCE", None),
                 socket.SO_SNDBUF: getattr(socket, "SO_SNDBUFFORCE", None)}


async def bound_socket(address: str) -> socket.socket:
    """A non-blocking UDP socket bound to ``"host:port"`` (port 0: any free port; no
    host: every address), its buffers raised (:func:`_tune`): what a listener
    serves every flow from (udpflow, quic)."""
    host, port = parse_address(address)
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_DGRAM,
                                   flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        _tune(sock)
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def _tune(sock: socket.socket) -> None:
    """Ask for :data:`SOCKET_BUFFER`-byte socket buffers: beyond the sysctl caps
    where allowed (Linux, CAP_NET_ADMIN, as quic-go does), else up to the caps."""
    for opt, force in _FORCE.items():
        if force is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
                continue
            except OSError:
                pass
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        except OSError:  # pragma: no cover - a platform without it
            pass
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if got < SOCKET_BUFFER:
        logger.debug("udpflow: receive buffer %d B (asked %d; raise net.core.rmem_max)",
                     got, SOCKET_BUFFER)


class ReadRun:
    """How many datagrams a socket's readiness callback reads.

    In bursts, up to :data:`READ_BATCH`, until the socket is empty: one callback per
    loop iteration takes what queued.  But a batch always ends with a read that finds
    the socket empty, and that ``recv`` with its ``BlockingIOError`` costs ~1.8 µs, as
    much again as the read that got the datagram: for one datagram at a time (an echo,
    a control channel) that is a fixed cost per packet.  So after
    :data:`SINGLE_AFTER` callbacks in a row that found a single datagram, a callback
    reads one and returns: the loop's readiness is level-triggered, so a datagram left
    in the socket calls it again in the next iteration.  Every :data:`PROBE_EVERY`-th
    callback still reads a whole batch, and one that finds two datagrams or more
    switches back to batches.
    """

    __slots__ = ("_calls", "_single")

    def __init__(self) -> None:
        self._single = 0  # callbacks in a row that found one datagram, then nothing
        self._calls = 0

    def limit(self) -> int:
        """How many datagrams the callback starting now may read."""
        if self._single < SINGLE_AFTER:
            return READ_BATCH
        self._calls += 1
        if self._calls >= PROBE_EVERY:
            self._calls = 0
            return READ_BATCH
        return 1

    def done(self, got: int, emptied: bool) -> None:
        """The callback read ``got`` datagrams (``emptied``: then found the socket empty)."""
        if got > 1:
            self._single = 0
        elif emptied:
            self._single += 1


class _Sender:
    """Non-blocking sends with a bounded queue when the socket is full."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 on_pause: Callable[[], None], on_resume: Callable[[], None]) -> None:
        self._loop = loop
        self._sock = sock
        self._queue: deque[tuple[list[Buffer], Address | None]] = deque()
        self._on_pause = on_pause
        self._on_resume = on_resume
        self._paused = False
        self._gso = _GSO_OK and sock.type == socket.SOCK_DGRAM
        self.closed = False
        self.dropped = 0
        self.trains = 0
        """GSO sends (each several datagrams)."""

    def send_each(self, hdr: bytes, bufs: Sequence[Buffer], addr: Address | None = None
                  ) -> None:
        """Send each of ``bufs`` as one datagram, ``hdr`` before it: runs of equal
        size go out in one GSO ``sendmsg`` each where the kernel can (Linux), so a
        flush of many datagrams costs a few system calls, not one per datagram."""
        n = len(bufs)
        if not self._gso or n < 2 or self._queue or self.closed:
            for buf in bufs:
                self.send([hdr, buf], addr)
            return
        h = len(hdr)
        i = 0
        while i < n:
            size = len(bufs[i])
            seg = h + size
            most = min(n, i + GSO_SEGMENTS, i + GSO_BYTES // seg)
            j = i + 1
            while j < most and len(bufs[j]) == size:
                j += 1
            if j < most and len(bufs[j]) < size:  # a shorter one may end the train
                j += 1
            if j - i < 2 or self._queue or not self._gso:
                for k in range(i, j):
                    self.send([hdr, bufs[k]], addr)
            else:
                self._send_train(hdr, bufs, i, j, seg, addr)
            i = j

    def _send_train(self, hdr: bytes, bufs: Sequence[Buffer], i: int, j: int, seg: int,
                    addr: Address | None) -> None:
        parts: list[Buffer] = []
        for k in range(i, j):
            parts.append(hdr)
            parts.append(bufs[k])
        data = b"".join(parts)
        anc = [(socket.SOL_UDP, UDP_SEGMENT, _SEG.pack(seg))]
        try:
            if addr is None:
                self._sock.sendmsg([data], anc)
            else:
                self._sock.sendmsg([data], anc, 0, addr)
            self.trains += 1
        except (BlockingIOError, InterruptedError):
            for k in range(i, j):
                self._enqueue([hdr, bufs[k]], addr)
            self._loop.add_writer(self._sock.fileno(), self._drain)
        except OSError as exc:
            if exc.errno in _GSO_OFF:  # this path cannot segment: one by one from now on
                logger.debug("udpflow: GSO off (%s)", exc)
                self._gso = False
                for k in range(i, j):
                    self.send([hdr, bufs[k]], addr)
            else:  # ICMP errors, no route: UDP loses them, liveness decides
                self.dropped += j - i
                logger.debug("udpflow send failed: %s", exc)

    def send(self, parts: list[Buffer], addr: Address | None = None) -> None:
        if self.closed:
            return
        if self._queue:
            self._enqueue(parts, addr)
            return
        try:
            # one joined buffer: send/sendto cost less than a gathering sendmsg for
            # datagrams this small (measured: 5.2 vs 5.9 us)
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            if addr is None:
                self._sock.send(data)
            else:
                self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._enqueue(parts, addr)
            self._loop.add_writer(self._sock.fileno(), self._drain)
        except OSError as exc:  # ICMP errors, no route: UDP loses it, liveness decides
            self.dropped += 1
            logger.debug("udpflow send failed: %s", exc)

    def _enqueue(self, parts: list[Buffer], addr: Address | None) -> None:
        self._queue.append(([bytes(p) for p in parts], addr))  # the caller may reuse
        if not self._paused and len(self._queue) >= WRITE_HIGH:
            self._paused = True
            self._on_pause()

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            parts, addr = queue[0]
            try:
                if addr is None:
                    self._sock.sendmsg(parts)
                else:
                    self._sock.sendmsg(parts, (), 0, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.dropped += 1
                logger.debug("udpflow send failed: %s", exc)
            queue.popleft()
        self._loop.remove_writer(self._sock.fileno())
        if self._paused and len(queue) <= WRITE_LOW:
            self._paused = False
            self._on_resume()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._queue:
                self._queue.clear()
                self._loop.remove_writer(self._sock.fileno())


def _nothing() -> None:
    pass
