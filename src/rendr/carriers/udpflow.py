"""The ``udpflow`` carrier: rendr paths over plain UDP.

A dialer opens one UDP socket per path; a listener has ONE socket per listen
address for every flow and path, and tells them apart by a connection id it picks
for each path (8 random bytes), not by source address, so a path survives its
client's address changing (NAT rebinding).  Every datagram starts with a type byte:

======  ==========================  ====================================================
type    direction                   layout
======  ==========================  ====================================================
0x01    dialer -> listener          OPEN: nonce (8) + the carrier's opening (preface +
                                    HELLO/JOIN), zero-padded to :data:`MIN_OPEN` bytes
0x02    listener -> dialer          ANSWER: connection id (8) + the OPEN's nonce (8) +
                                    the answer (preface + HELLO_ACK/JOIN_ACK)
0x03    both                        DATA: connection id (8) + one engine datagram
0x04    listener -> dialer          CHALLENGE: connection id (8) + token (16)
0x05    dialer -> listener          RESPONSE: connection id (8) + the token (16)
======  ==========================  ====================================================

- **Handshake.**  UDP loses datagrams, so the dialer re-sends its OPEN (after
  :data:`OPEN_RETRY`, doubling) until an answer comes; the listener answers a
  repeated OPEN with its first answer (kept per source address and opening, for
  :data:`PENDING_TTL`), so the engine sees each opening once.  The answer echoes
  the OPEN's random nonce: a late answer to a closed socket whose port the kernel
  gave to a new one is not taken for the new one's.  An OPEN is padded to
  :data:`MIN_OPEN` bytes and the answer is smaller: the listener never sends more
  than it received to an address it has not heard from (no amplification).
- **Data.**  What the engine writes is already packed and sealed per datagram
  (:mod:`rendr.core.dgram`: authenticated, encrypted, replay-protected), so the
  carrier only adds its 9-byte header.  Forged or replayed datagrams are dropped by
  the engine and counted; nothing an off-path sender does ends a path.
- **New client address.**  DATA for a known connection id from another address is
  delivered to the engine, which authenticates it; only if it passed (the sink's
  ``carrier_authentic`` count grew) does the listener send a CHALLENGE there (a
  fresh 16-byte token, at most one every :data:`CHALLENGE_INTERVAL` per address),
  and it keeps sending to the address it knows until the new one answers with a
  RESPONSE; then it moves there.  Junk with a seen connection id draws nothing; a
  path moves only to an address that sent an authentic datagram and received the
  token (the QUIC path-validation rule).
- **Anti-amplification.**  Until the dialer's first DATA proves it received the
  ANSWER (its address is then validated), the listener sends that address at most
  three times the bytes it received from it.
- **Liveness** is the engine's PING/PONG: UDP gives no loss signal, and ICMP
  errors (unauthenticated) are ignored.
- **Sizes.**  Datagrams are at most ``mtu`` bytes (:data:`DEFAULT_MTU`, safe on
  every path; never IP-fragmented); socket buffers are asked for
  :data:`SOCKET_BUFFER` bytes (the kernel caps them at ``net.core.rmem_max`` /
  ``wmem_max``: raise those sysctls for high packet rates).

Reading uses the loop's ``add_reader`` with its own loop of ``recvfrom`` until the
socket is empty (at most :data:`READ_BATCH` per wake-up): the default asyncio
loop's datagram transport reads one datagram per iteration (~28k datagrams/s here).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final

from ..core.wire import HEADER, PREFACE_STRUCT
from .address import format_address, parse_address
from .base import Buffer, Carrier, CarrierKind, register_transport

__all__ = ["DEFAULT_MTU", "UdpClientCarrier", "UdpServer", "UdpServerCarrier",
           "connect_udpflow", "listen_udpflow"]

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

Address = tuple[Any, ...]
"""A socket address as ``recvfrom`` gives it."""


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
        self.closed = False
        self.dropped = 0

    def send(self, parts: list[Buffer], addr: Address | None = None) -> None:
        if self.closed:
            return
        if self._queue:
            self._enqueue(parts, addr)
            return
        try:
            if addr is None:
                self._sock.sendmsg(parts)
            else:
                self._sock.sendmsg(parts, (), 0, addr)
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


class UdpClientCarrier(Carrier):
    """The dialer's end of one udpflow path: one connected UDP socket."""

    transport = "udpflow"

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, mtu: int) -> None:
        super().__init__()
        self._loop = loop
        self._sock = sock
        self.mtu = mtu - HEADER_LEN
        self._cid: bytes | None = None
        self._hdr = b""
        self._opening: bytes | None = None
        self._nonce = b""
        self._last: Buffer = b""
        self._closing = -1  # draining after close(): answers left (see DRAIN); -1: open
        self._retry: asyncio.TimerHandle | None = None
        self._done = False
        self._tx = _Sender(loop, sock, self._pause, self._resume)
        self.local_addr = format_address(sock.getsockname())
        self.remote_addr = format_address(sock.getpeername())
        loop.add_reader(sock.fileno(), self._on_readable)

    def _pause(self) -> None:
        self._sink.carrier_pause()

    def _resume(self) -> None:
        self._sink.carrier_resume()

    def write(self, buffers: Sequence[Buffer]) -> None:
        if self._done or self._closing >= 0:
            return
        if self._cid is None:  # the opening: re-sent until the listener answers
            if self._opening is None:
                opening = b"".join(buffers)
                self._nonce = os.urandom(NONCE_LEN)
                pad = max(0, MIN_OPEN - 1 - NONCE_LEN - len(opening))
                self._opening = bytes([OPEN]) + self._nonce + opening + bytes(pad)
                self._send_open(OPEN_RETRY, OPEN_TRIES)
            return
        send = self._tx.send
        hdr = self._hdr
        for buf in buffers:
            send([hdr, buf])
            self._last = buf

    def _send_open(self, delay: float, tries: int) -> None:
        self._retry = None
        if self._done or self._cid is not None or self._opening is None:
            return
        self._tx.send([self._opening])
        if tries > 1:
            self._retry = self._loop.call_later(delay, self._send_open, delay * 2, tries - 1)

    def _on_readable(self) -> None:
        sock = self._sock
        for _ in range(READ_BATCH):
            try:
                data = sock.recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP port unreachable etc.: not authenticated
                logger.debug("udpflow %s: %s (ignored)", self.remote_addr, exc)
                continue
            if self._done:
                return
            self._on_datagram(data)

    def _on_datagram(self, data: bytes) -> None:
        if len(data) < HEADER_LEN:
            return
        kind = data[0]
        cid = data[1:HEADER_LEN]
        if self._closing >= 0:  # the peer still sends: it missed our CLOSE
            if kind == DATA and cid == self._cid and self._closing > 0:
                self._closing -= 1
                self._tx.send([self._hdr, self._last])
            return
        if kind == DATA:
            if cid == self._cid:
                self._sink.carrier_data(memoryview(data)[HEADER_LEN:])
        elif kind == ANSWER:
            answer = data[HEADER_LEN + NONCE_LEN :]
            if (self._cid is None and data[HEADER_LEN : HEADER_LEN + NONCE_LEN] == self._nonce
                    and _opening_len(answer)):
                self._cid = cid
                self._hdr = bytes([DATA]) + cid
                if self._retry is not None:
                    self._retry.cancel()
                    self._retry = None
                self._sink.carrier_data(answer)
        elif kind == CHALLENGE and cid == self._cid and len(data) == HEADER_LEN + TOKEN_LEN:
            self._tx.send([bytes([RESPONSE]) + data[1:]])

    def close(self) -> None:
        if self._done or self._closing >= 0:
            return
        if not self._last:
            self._finish()
            return
        for _ in range(CLOSE_REPEATS):  # see CLOSE_REPEATS
            self._tx.send([self._hdr, self._last])
        self._closing = DRAIN_ANSWERS
        self._loop.call_later(DRAIN, self._finish)

    def abort(self) -> None:
        self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        if self._retry is not None:
            self._retry.cancel()
        self._tx.close()
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


class UdpServerCarrier(Carrier):
    """The listener's end of one udpflow path (a connection id on a shared socket)."""

    transport = "udpflow"

    def __init__(self, server: UdpServer, cid: bytes, addr: Address,
                 opening_key: tuple[Address, bytes], nonce: bytes) -> None:
        super().__init__()
        self._server = server
        self.cid = cid
        self.addr: Address = addr
        self.mtu = server.mtu - HEADER_LEN
        self._hdr = bytes([DATA]) + cid
        self._nonce = nonce
        self._answer: bytes | None = None
        self._opening_key: tuple[Address, bytes] | None = opening_key
        self._candidate: Address | None = None
        self._token = b""
        self._challenged_at = -1e9
        self._allowance = 3 * MIN_OPEN  # bytes we may send before the address is validated
        self.unsent = 0
        """Datagrams not sent to an unvalidated address (anti-amplification)."""
        self._last: Buffer = b""
        self._closing = -1  # draining after close(): answers left (see DRAIN); -1: open
        self._done = False
        self.local_addr = server.local_addr
        self.remote_addr = format_address(addr)

    def write(self, buffers: Sequence[Buffer]) -> None:
        if self._done or self._closing >= 0:
            return
        send = self._server.tx.send
        if self._answer is None:  # the handshake's answer: kept for repeated OPENs
            self._answer = b"".join((bytes([ANSWER]), self.cid, self._nonce, *buffers))
            send([self._answer], self.addr)
            self._allowance = max(0, self._allowance - len(self._answer))
            return
        hdr = self._hdr
        addr = self.addr
        for buf in buffers:
            if self._allowance >= 0:  # not validated yet: three times what came
                size = HEADER_LEN + len(buf)
                if size > self._allowance:
                    self.unsent += 1
                    continue
                self._allowance -= size
            send([hdr, buf], addr)
            self._last = buf

    def resend_answer(self) -> None:
        if self._answer is not None and not self._done:
            if self._allowance >= 0:  # the repeated OPEN brought MIN_OPEN bytes more
                self._allowance += 3 * MIN_OPEN - len(self._answer)
            self._server.tx.send([self._answer], self.addr)

    def on_data(self, payload: memoryview, addr: Address, now: float) -> None:
        if self._closing >= 0:  # the peer still sends: it missed our CLOSE (see DRAIN)
            if self._closing > 0 and addr == self.addr:
                self._closing -= 1
                self._server.tx.send([self._hdr, self._last], self.addr)
            return
        if addr == self.addr:
            if self._opening_key is not None:  # the dialer got our answer
                self._server.forget_opening(self._opening_key)
                self._opening_key = None
            self._allowance = -1  # its address is validated
            self._sink.carrier_data(payload)
            return
        count = getattr(self._sink, "carrier_authentic", None)
        before = count() if count is not None else 0
        self._sink.carrier_data(payload)
        if count is not None and count() > before:  # the peer's, from a new address
            self._challenge(addr, now)

    def _challenge(self, addr: Address, now: float) -> None:
        if addr == self._candidate and now - self._challenged_at < CHALLENGE_INTERVAL:
            return
        self._candidate = addr
        self._token = os.urandom(TOKEN_LEN)
        self._challenged_at = now
        self._server.tx.send([bytes([CHALLENGE]), self.cid, self._token], addr)

    def on_response(self, token: bytes, addr: Address) -> None:
        if self._token and addr == self._candidate and token == self._token:
            logger.info("udpflow path %s moved from %s to %s (validated)", self.cid.hex(),
                        format_address(self.addr), format_address(addr))
            self.addr = addr
            self.remote_addr = format_address(addr)
            self._candidate = None
            self._token = b""

    def close(self) -> None:
        if self._done or self._closing >= 0:
            return
        if not self._last or self._allowance >= 0:
            self._finish()
            return
        for _ in range(CLOSE_REPEATS):  # see CLOSE_REPEATS
            self._server.tx.send([self._hdr, self._last], self.addr)
        self._closing = DRAIN_ANSWERS
        self._server.loop.call_later(DRAIN, self._finish)

    def abort(self) -> None:
        self._finish()

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._server.unregister(self)


class UdpServer:
    """One listening UDP socket: demultiplexes every path by connection id."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 on_carrier: Callable[[Carrier], None], mtu: int) -> None:
        self._loop = loop
        self.loop = loop
        self._sock = sock
        self._on_carrier = on_carrier
        self.mtu = mtu
        self.tx = _Sender(loop, sock, _nothing, _nothing)
        self.local_addr = format_address(sock.getsockname())
        self._carriers: dict[bytes, UdpServerCarrier] = {}
        self._openings: dict[tuple[Address, bytes], tuple[UdpServerCarrier, float]] = {}
        self._closed = False
        self._waiter: asyncio.Future[None] = loop.create_future()
        self.dropped = 0
        """Datagrams dropped before the engine: unknown id, malformed, over a cap."""
        loop.add_reader(sock.fileno(), self._on_readable)

    @property
    def carriers(self) -> int:
        """Paths this socket carries now."""
        return len(self._carriers)

    def _on_readable(self) -> None:
        sock = self._sock
        now = self._loop.time()
        for _ in range(READ_BATCH):
            try:
                data, addr = sock.recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.debug("udpflow listener %s: %s (ignored)", self.local_addr, exc)
                continue
            self._on_datagram(data, addr, now)
            if self._sock.fileno() < 0:
                return

    def _on_datagram(self, data: bytes, addr: Address, now: float) -> None:
        n = len(data)
        if n < HEADER_LEN:
            self.dropped += 1
            return
        kind = data[0]
        if kind == DATA:
            carrier = self._carriers.get(data[1:HEADER_LEN])
            if carrier is None:
                self.dropped += 1
                return
            carrier.on_data(memoryview(data)[HEADER_LEN:], addr, now)
        elif kind == OPEN:
            if self._closed:
                self.dropped += 1
            else:
                self._on_open(data, addr, now)
        elif kind == RESPONSE and n == HEADER_LEN + TOKEN_LEN:
            carrier = self._carriers.get(data[1:HEADER_LEN])
            if carrier is not None:
                carrier.on_response(data[HEADER_LEN:], addr)
        else:
            self.dropped += 1

    def _on_open(self, data: bytes, addr: Address, now: float) -> None:
        start = 1 + NONCE_LEN
        size = _opening_len(data[start:])
        if len(data) < MIN_OPEN or not size:
            self.dropped += 1  # unpadded: answering could amplify a spoofed source
            return
        opening = data[start : start + size]
        key = (addr, data[:start + size])
        known = self._openings.get(key)
        if known is not None:
            known[0].resend_answer()
            return
        self._expire(now)
        if len(self._openings) >= MAX_PENDING or len(self._carriers) >= MAX_CARRIERS:
            self.dropped += 1
            return
        cid = os.urandom(CID_LEN)
        while cid in self._carriers:  # pragma: no cover - 2^-64
            cid = os.urandom(CID_LEN)
        carrier = UdpServerCarrier(self, cid, addr, key, data[1:start])
        self._carriers[cid] = carrier
        self._openings[key] = (carrier, now)
        self._on_carrier(carrier)
        carrier._sink.carrier_data(opening)

    def _expire(self, now: float) -> None:
        openings = self._openings
        while openings:
            key, (carrier, at) = next(iter(openings.items()))
            if now - at < PENDING_TTL:
                return
            del openings[key]
            carrier._opening_key = None

    def forget_opening(self, key: tuple[Address, bytes]) -> None:
        self._openings.pop(key, None)

    def unregister(self, carrier: UdpServerCarrier) -> None:
        if self._carriers.get(carrier.cid) is carrier:
            del self._carriers[carrier.cid]
        if carrier._opening_key is not None:
            self._openings.pop(carrier._opening_key, None)
        if self._closed and not self._carriers:
            self._shut()

    def close(self) -> None:
        """Stop accepting new paths.  Paths already attached go on until their flows
        end (the socket closes with the last of them)."""
        if self._closed:
            return
        self._closed = True
        if not self._waiter.done():
            self._waiter.set_result(None)
        if not self._carriers:
            self._shut()

    def _shut(self) -> None:
        if self._sock.fileno() >= 0:
            self.tx.close()
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()

    async def wait_closed(self) -> None:
        await self._waiter


def _nothing() -> None:
    pass


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


async def connect_udpflow(address: str, local: str | None = None,
                          mtu: int | str = DEFAULT_MTU) -> UdpClientCarrier:
    """Open a udpflow carrier to ``"host:port"`` (``local``: the source
    ``"host:port"`` to bind, pinning the path to an interface; ``mtu``: the largest
    datagram sent)."""
    host, port = parse_address(address)
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host or "127.0.0.1", port, type=socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        _tune(sock)
        if local:
            lhost, lport = parse_address(local)
            sock.bind((lhost, lport))
        sock.connect(sockaddr)
        return UdpClientCarrier(loop, sock, int(mtu))
    except BaseException:
        sock.close()
        raise


async def listen_udpflow(address: str, on_carrier: Callable[[Carrier], None],
                         backlog: int = 128, mtu: int | str = DEFAULT_MTU
                         ) -> tuple[UdpServer, tuple[str, int]]:
    """Accept udpflow paths on ``"host:port"`` (port 0: any free port)."""
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
    server = UdpServer(loop, sock, on_carrier, int(mtu))
    name = sock.getsockname()
    return server, (name[0], name[1])


register_transport("udpflow", connect_udpflow, listen=listen_udpflow,
                   kind=CarrierKind.DATAGRAM)
