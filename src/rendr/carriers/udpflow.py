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
socket is empty (at most :data:`~rendr.carriers.udpbase.READ_BATCH` per wake-up;
while datagrams come one at a time, one per wake-up without the read that finds the
socket empty: :class:`~rendr.carriers.udpbase.ReadRun`): the default asyncio loop's
datagram transport reads one datagram per iteration (~28k datagrams/s here).
The engine is flushed once per such batch (:data:`~rendr.carriers.base.READ_BATCH`):
one ACK and one send pass answer every datagram read.  On Linux the socket reads
GRO trains (``UDP_GRO``: many datagrams of one sender per ``recvmsg``, split again
here) and a write of many equal-size datagrams goes out in GSO trains
(``UDP_SEGMENT``, up to 64 per ``sendmsg``); the datagrams on the wire are the same.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Sequence

from .address import format_address, parse_address
from .base import READ_BATCH as _BATCH
from .base import Buffer, Carrier, CarrierKind, register_transport
from .udpbase import (
    _GRO_CMSG,
    _RECV_SIZE,
    ANSWER,
    CHALLENGE,
    CLOSE_REPEATS,
    DATA,
    DEFAULT_MTU,
    DRAIN,
    DRAIN_ANSWERS,
    HEADER_LEN,
    MIN_OPEN,
    NONCE_LEN,
    OPEN,
    OPEN_RETRY,
    OPEN_TRIES,
    RESPONSE,
    TOKEN_LEN,
    ReadRun,
    _opening_len,
    _Sender,
    _tune,
    bound_socket,
    enable_gro,
    split_gro,
)
from .udplisten import UdpServer, UdpServerCarrier

__all__ = ["ANSWER", "CHALLENGE", "DATA", "DEFAULT_MTU", "OPEN", "RESPONSE",
           "UdpClientCarrier", "UdpServer", "UdpServerCarrier", "connect_udpflow",
           "listen_udpflow"]

logger = logging.getLogger("rendr.carriers.udpflow")


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
        self._gro = False  # on for a stream flow only (see prepare)
        self._run = ReadRun()
        self.local_addr = format_address(sock.getsockname())
        self.remote_addr = format_address(sock.getpeername())
        loop.add_reader(sock.fileno(), self._on_readable)

    def prepare(self, *, packets: bool) -> None:
        """GRO reads for a stream flow only: its full-size datagrams come in trains
        (goodput 66 vs 54 MB/s); a packet flow's small datagrams of mixed sizes gain
        nothing and fill the kernel's receive buffer sooner (G3u at 100k pps lost
        24k datagrams with GRO, none without)."""
        if not packets:
            self._gro = enable_gro(self._sock)

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
        if buffers:
            self._tx.send_each(self._hdr, buffers)
            self._last = buffers[-1]

    def _send_open(self, delay: float, tries: int) -> None:
        self._retry = None
        if self._done or self._cid is not None or self._opening is None:
            return
        self._tx.send([self._opening])
        if tries > 1:
            self._retry = self._loop.call_later(delay, self._send_open, delay * 2, tries - 1)

    def _on_readable(self) -> None:
        sock = self._sock
        run = self._run
        got = 0
        _BATCH.begin()  # the sink flushes once, after the last datagram
        try:
            for _ in range(run.limit()):
                try:
                    if self._gro:
                        data, anc, _, _ = sock.recvmsg(_RECV_SIZE, _GRO_CMSG)
                    else:
                        data = sock.recv(_RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    run.done(got, True)
                    return
                except OSError as exc:  # ICMP port unreachable etc.: not authenticated
                    logger.debug("udpflow %s: %s (ignored)", self.remote_addr, exc)
                    continue
                if self._done:
                    return
                if self._gro and anc:
                    for one in split_gro(data, anc):
                        got += 1
                        self._on_datagram(one)
                        if self._done:
                            return
                else:
                    got += 1
                    self._on_datagram(data)
            run.done(got, False)
        finally:
            _BATCH.end()

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
    sock = await bound_socket(address)
    loop = asyncio.get_running_loop()
    server = UdpServer(loop, sock, on_carrier, int(mtu))
    name = sock.getsockname()
    return server, (name[0], name[1])


register_transport("udpflow", connect_udpflow, listen=listen_udpflow,
                   kind=CarrierKind.DATAGRAM)
