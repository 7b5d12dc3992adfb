"""A HELLO flood, for tests and benchmarks of the listener's defences (issue 7).

An attacker that speaks the handshake well: every carrier is a fresh TCP connection
from ``source`` (a loopback alias such as ``127.0.0.2`` is a distinct source address)
carrying ``PREFACE + HELLO`` with a fresh flow id and a valid X25519 share, so the
listener cannot tell it from a real dialer before doing the key exchange.  When the
listener answers RETRY, the attacker follows it (fresh carrier, same HELLO with the
cookie), as a determined attacker would; then it resets the carrier without ever
sending a frame of the flow (half-open flows), unless ``confirm`` is set.

Run it in its own process (``multiprocessing``) so the listener's CPU is its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.queues import Queue

from ..core.handshake import HandshakeParser
from ..core.session import result_name
from ..core.wire import FrameType, Hello, Result, encode_u64
from ..errors import HandshakeError
from .rawpeer import RawDialer

__all__ = ["FloodStats", "flood"]


@dataclass
class FloodStats:
    """What the listener answered to the flood's HELLOs.

    Attributes:
        sent: HELLOs sent (a retried HELLO counts again).
        answers: count per answer: a :class:`~rendr.core.wire.Result` name, ``closed``
            (the carrier was closed without an answer: a pending-handshake cap) or
            ``error`` (connect failed, timeout).
        seconds: how long the flood ran.
    """

    sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return {"sent": self.sent, "answers": dict(self.answers), "seconds": self.seconds}


def _reset(sock: socket.socket) -> None:
    """Close with a RST: the attacker keeps no TIME_WAIT and frees its port at once."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def _ask(target: tuple[str, int], source: str, opening: bytes, timeout: float
               ) -> tuple[socket.socket, tuple[int, bytes] | None]:
    """One carrier: connect from ``source``, send ``opening``; the socket (still open:
    the caller resets it) and the first frame (None if the listener closed the carrier
    without one)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.bind((source, 0))
        await asyncio.wait_for(loop.sock_connect(sock, target), timeout)
        await loop.sock_sendall(sock, opening)
        parser = HandshakeParser()
        while data := await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout):
            frame = parser.feed(data)
            if frame is not None:
                return sock, frame
        return sock, None
    except BaseException:
        _reset(sock)
        raise


async def _one(target: tuple[str, int], source: str, stats: FloodStats, confirm: bool,
               timeout: float) -> None:
    """One flow's HELLO (again with the cookie after a RETRY).  An accepted flow is left
    half-open, or with ``confirm`` completed by one authenticated PING."""
    loop = asyncio.get_running_loop()
    dialer = RawDialer()
    opening = dialer.hello()
    for _ in range(3):
        stats.sent += 1
        try:
            sock, frame = await _ask(target, source, opening, timeout)
        except (OSError, asyncio.TimeoutError):
            stats.answers["error"] += 1
            return
        try:
            if frame is None:
                stats.answers["closed"] += 1
                return
            ftype, body = frame
            if ftype != FrameType.HELLO_ACK:
                stats.answers[f"frame 0x{ftype:02x}"] += 1
                return
            result = Hello.decode(body, ack=True).result
            if confirm and result == Result.OK:
                dialer.on_hello_ack(body)
                await loop.sock_sendall(sock, dialer.seal(encode_u64(FrameType.PING, 1)))
                stats.answers["OK"] += 1
                await asyncio.sleep(0.05)
                return
            name = result_name(result)
            stats.answers[name] += 1
            retry = getattr(dialer.handshake, "retry_hello", None)
            if name != "RETRY" or retry is None:
                return
            opening = b"".join(retry(ftype, body, 1))
        except (OSError, asyncio.TimeoutError, HandshakeError):
            stats.answers["error"] += 1
            return
        finally:
            _reset(sock)


async def flood(target: tuple[str, int], source: str, duration: float, *,
                concurrency: int = 16, confirm: bool = False,
                timeout: float = 5.0) -> FloodStats:
    """Send HELLOs to ``target`` from ``source`` for ``duration`` seconds, with
    ``concurrency`` carriers in flight; ``confirm``: complete each accepted flow with
    one PING (the flow is then no longer half-open)."""
    stats = FloodStats()
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    end = loop.time() + duration

    async def worker() -> None:
        while loop.time() < end:
            await _one(target, source, stats, confirm, timeout)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    stats.seconds = time.monotonic() - t0
    return stats


def flood_process(target: tuple[str, int], source: str, duration: float,
                  concurrency: int, confirm: bool, out: Queue[dict[str, object]]) -> None:
    """Entry point of a flooding process (``multiprocessing``, any start method): runs
    :func:`flood` on a fresh event loop and puts its :meth:`FloodStats.as_dict` in
    ``out``."""
    stats = asyncio.run(flood(target, source, duration, concurrency=concurrency,
                              confirm=confirm))
    out.put(stats.as_dict())
