"""The listener side of udpflow: one UDP socket for every path, demultiplexed by
connection id (see :mod:`rendr.carriers.udpflow` for the protocol)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Sequence

from .address import format_address
from .base import READ_BATCH as _BATCH
from .base import Buffer, Carrier
from .udpbase import (
    _GRO_CMSG,
    _RECV_SIZE,
    ANSWER,
    CHALLENGE,
    CHALLENGE_INTERVAL,
    CID_LEN,
    CLOSE_REPEATS,
    DATA,
    DRAIN,
    DRAIN_ANSWERS,
    HEADER_LEN,
    MAX_CARRIERS,
    MAX_PENDING,
    MIN_OPEN,
    NONCE_LEN,
    OPEN,
    PENDING_TTL,
    RESPONSE,
    TOKEN_LEN,
    Address,
    ReadRun,
    _nothing,
    _opening_len,
    _Sender,
    enable_gro,
    split_gro,
)

__all__ = ["UdpServer", "UdpServerCarrier"]

logger = logging.getLogger("rendr.carriers.udpflow")


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

    def prepare(self, *, packets: bool) -> None:
        """A stream flow's path: the listening socket reads with GRO."""
        if not packets:
            self._server.stream_flow()

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
        if self._allowance < 0 and buffers:  # validated: no limit
            send_each = self._server.tx.send_each
            send_each(hdr, buffers, addr)
            self._last = buffers[-1]
            return
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
        self._gro = False  # on once a stream flow has a path here (see stream_flow)
        self._run = ReadRun()
        self.local_addr = format_address(sock.getsockname())
        self._carriers: dict[bytes, UdpServerCarrier] = {}
        self._openings: dict[tuple[Address, bytes], tuple[UdpServerCarrier, float]] = {}
        self._closed = False
        self._waiter: asyncio.Future[None] = loop.create_future()
        self.dropped = 0
        """Datagrams dropped before the engine: unknown id, malformed, over a cap."""
        loop.add_reader(sock.fileno(), self._on_readable)

    def stream_flow(self) -> None:
        """A path of a stream flow is attached: read with GRO from now on (a socket
        that serves packet flows only never does; see
        :meth:`~rendr.carriers.udpflow.UdpClientCarrier.prepare`)."""
        if not self._gro:
            self._gro = enable_gro(self._sock)

    @property
    def carriers(self) -> int:
        """Paths this socket carries now."""
        return len(self._carriers)

    def _on_readable(self) -> None:
        sock = self._sock
        now = self._loop.time()
        run = self._run
        got = 0
        _BATCH.begin()  # each flow's sink flushes once, after the last datagram
        try:
            for _ in range(run.limit()):
                try:
                    if self._gro:
                        data, anc, _, addr = sock.recvmsg(_RECV_SIZE, _GRO_CMSG)
                    else:
                        data, addr = sock.recvfrom(_RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    run.done(got, True)
                    return
                except OSError as exc:
                    logger.debug("udpflow listener %s: %s (ignored)", self.local_addr, exc)
                    continue
                if self._gro and anc:
                    for one in split_gro(data, anc):
                        got += 1
                        self._on_datagram(one, addr, now)
                        if self._sock.fileno() < 0:
                            return
                else:
                    got += 1
                    self._on_datagram(data, addr, now)
                    if self._sock.fileno() < 0:
                        return
            run.done(got, False)
        finally:
            _BATCH.end()

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
            if carrier is None:
                self.dropped += 1
            else:
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
