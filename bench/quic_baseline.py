"""Raw qh3 against rendr over the ``quic`` carrier, on loopback, in ONE process.

Two figures, each the median of ``--repeat`` runs:

- stream bulk: ``--size-mib`` MiB one way, raw qh3 (one QUIC stream, its send
  buffer kept under 1 MiB) against a rendr stream flow over one quic path
  (records on, the default);
- datagrams: ``--seconds`` of 200-byte datagrams as fast as the sender can queue
  them, raw qh3 DATAGRAM frames against a rendr packet flow over one quic path;
  the receiver's count gives pps and loss.

Both ends share one event loop (and so one core): the figures are lower than the
two-process baselines in ``../shared/reference/baselines.md`` and are meant only as
a same-run ratio.  Usage: ``python bench/quic_baseline.py [--uvloop]``.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import time
from typing import Any

from qh3.asyncio import connect, serve
from qh3.asyncio.protocol import QuicConnectionProtocol
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.events import DatagramFrameReceived, QuicEvent, StreamDataReceived
from qh3.tls import load_pem_private_key, load_pem_x509_certificates

import rendr
from rendr.carriers.quic import development_certificate

PSK = b"quic-baseline-bench-psk-01234567"
PAYLOAD = 200


class _Sink(QuicConnectionProtocol):
    """Counts what arrives (stream bytes or datagrams)."""

    received = 0
    datagrams = 0

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            _Sink.received += len(event.data)
        elif isinstance(event, DatagramFrameReceived):
            _Sink.datagrams += 1


def _configs() -> tuple[QuicConfiguration, QuicConfiguration]:
    cert, key = development_certificate()
    server = QuicConfiguration(is_client=False, alpn_protocols=["bench"],
                               max_datagram_frame_size=65536)
    server.certificate = load_pem_x509_certificates(cert)[0]
    server.private_key = load_pem_private_key(key)
    client = QuicConfiguration(is_client=True, alpn_protocols=["bench"],
                               max_datagram_frame_size=65536)
    client.verify_mode = ssl.CERT_NONE
    return server, client


async def raw_stream(size: int) -> float:
    server_cfg, client_cfg = _configs()
    _Sink.received = 0
    server = await serve("127.0.0.1", 0, configuration=server_cfg, create_protocol=_Sink)
    port = server._transport.get_extra_info("sockname")[1]
    async with connect("127.0.0.1", port, configuration=client_cfg) as client:
        quic: Any = client._quic
        chunk = bytes(65536)
        sent = 0
        t0 = time.perf_counter()
        while _Sink.received < size:
            while sent < size and quic.get_send_buffer_size(0) < (1 << 20):
                quic.send_stream_data(0, chunk)
                sent += len(chunk)
            client.transmit()
            await asyncio.sleep(0 if sent < size else 0.001)
        elapsed = time.perf_counter() - t0
    server.close()
    return size / elapsed / 1e6


async def rendr_stream(size: int) -> float:
    ln = await rendr.listen_quic("127.0.0.1:0", psk=PSK)
    spec = rendr.PathSpec("quic", f"127.0.0.1:{ln.addrs[0][1]}", options={"insecure": "1"})
    c = await rendr.Dialer(paths=[spec], psk=PSK).dial()
    s = await ln.accept()
    data = bytes(size)
    t0 = time.perf_counter()
    writer = asyncio.ensure_future(c.write(data))
    got = 0
    buf = bytearray(1 << 20)
    while got < size:
        got += await s.readinto(buf)
    elapsed = time.perf_counter() - t0
    await writer
    c.abort()
    await ln.close()
    return size / elapsed / 1e6


async def raw_datagrams(seconds: float) -> tuple[float, float]:
    server_cfg, client_cfg = _configs()
    _Sink.datagrams = 0
    server = await serve("127.0.0.1", 0, configuration=server_cfg, create_protocol=_Sink)
    port = server._transport.get_extra_info("sockname")[1]
    async with connect("127.0.0.1", port, configuration=client_cfg) as client:
        quic: Any = client._quic
        payload = bytes(PAYLOAD)
        sent = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(32):
                quic.send_datagram_frame(payload)
            sent += 32
            client.transmit()
            await asyncio.sleep(0)
        elapsed = time.perf_counter() - t0
        await asyncio.sleep(0.5)
    server.close()
    return _Sink.datagrams / elapsed, 1 - _Sink.datagrams / sent


async def rendr_datagrams(seconds: float) -> tuple[float, float]:
    pln = await rendr.listen_quic_packet("127.0.0.1:0", psk=PSK)
    spec = rendr.PathSpec("quic", f"127.0.0.1:{pln.addrs[0][1]}", options={"insecure": "1"})
    pc = await rendr.Dialer(paths=[spec], psk=PSK).dial_packet()
    spc = await pln.accept()
    received = 0

    async def count() -> None:
        nonlocal received
        async for _ in spc:
            received += 1

    counting = asyncio.ensure_future(count())
    payload = bytes(PAYLOAD)
    sent = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(32):
            await pc.send(payload)
        sent += 32
        await asyncio.sleep(0)
    elapsed = time.perf_counter() - t0
    await asyncio.sleep(0.5)
    counting.cancel()
    pc.abort()
    await pln.close()
    return received / elapsed, 1 - received / sent


async def main(args: argparse.Namespace) -> None:
    size = args.size_mib << 20
    rows: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        rows.setdefault("raw qh3 stream MB/s", []).append(await raw_stream(size))
        rows.setdefault("rendr quic stream MB/s", []).append(await rendr_stream(size))
        pps, loss = await raw_datagrams(args.seconds)
        rows.setdefault("raw qh3 DATAGRAM pps", []).append(pps)
        rows.setdefault("raw qh3 DATAGRAM loss %", []).append(100 * loss)
        pps, loss = await rendr_datagrams(args.seconds)
        rows.setdefault("rendr quic packet pps", []).append(pps)
        rows.setdefault("rendr quic packet loss %", []).append(100 * loss)
    loop = "uvloop" if args.uvloop else "asyncio"
    print(f"one process, loop={loop}, median of {args.repeat}")
    for name, values in rows.items():
        print(f"{name:26s} {statistics.median(values):10.1f}   "
              f"({', '.join(f'{v:.1f}' for v in values)})")
    raw_s, ren_s = (statistics.median(rows[k]) for k in
                    ("raw qh3 stream MB/s", "rendr quic stream MB/s"))
    raw_d, ren_d = (statistics.median(rows[k]) for k in
                    ("raw qh3 DATAGRAM pps", "rendr quic packet pps"))
    print(f"stream ratio {ren_s / raw_s:.2f}, datagram ratio {ren_d / raw_d:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--uvloop", action="store_true")
    options = parser.parse_args()
    if options.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(main(options))
