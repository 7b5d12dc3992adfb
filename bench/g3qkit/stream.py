"""G3's stream part: bulk bytes over raw qh3 (one QUIC stream) and over a rendr stream
flow, SHA-256 checked by the receiver.  rendr transports:

- ``rendr`` / ``rendr-auth``: a flow with a QUIC path and a TCP path (the sender
  migrates between them); ``rendr-quic`` / ``rendr-quic-auth``: a flow with one QUIC
  path, nothing else (like for like with raw qh3);
- ``-auth``: the QUIC path pins the listener's certificate, so its records are
  authenticated only (QUIC encrypts them); without: ``insecure``, rendr encrypts.

- receiver (``s_recv``): opens the server end, answers its address(es), reads to the
  end hashing every byte, writes ``done``; answers the digest and its byte count;
- sender (``s_send``): writes ``size`` bytes (a random 4 MiB block repeated, from
  ``_twoproc.payload_block``), then waits for ``done``; elapsed = first write ->
  ``done``.  The rendr sender calls ``migrate()`` to the other path each time another
  ``1 / (migrations + 1)`` of the bytes was written.

:func:`run` runs one transfer from the parent.  Nothing here prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import ssl
import time
from typing import Any

from qh3.asyncio import connect, serve
from qh3.asyncio.protocol import QuicConnectionProtocol
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.events import QuicEvent, StreamDataReceived
from qh3.tls import load_pem_private_key, load_pem_x509_certificates

import _twoproc as tp
import rendr
from g3qkit.transports import HOST, cert, cert_files, quic_options
from rendr.carriers.udpbase import _tune
from rendr.testing.payload import repeated_digest

MIB = 1 << 20
RAW_BUFFER = 1 << 20  # raw sender: bytes kept queued in qh3's stream send buffer
_state: dict[str, Any] = {}


def _send_chunks(size: int) -> Any:
    mv = memoryview(tp.payload_block())
    sent = 0
    while sent < size:
        off = sent % len(mv)
        n = min(MIB, size - sent, len(mv) - off)
        yield mv[off:off + n]
        sent += n


# ---------------------------------------------------------------------------- raw qh3


RAW_FIXES = os.environ.get("G3_RAW_FIXES", "buffers,batch").split(",")
"""What the raw qh3 receiver does as rendr's QUIC carrier does (the baseline used to
do neither): ``buffers``: 4 MiB socket buffers on both ends (rendr's ``_tune``);
``batch``: one ``transmit()`` per loop iteration, not one per datagram received
(qh3's server socket hands datagrams over one at a time)."""


class _RawSink(QuicConnectionProtocol):
    """Hashes stream 0 to its FIN, then answers ``done`` on it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.digest = hashlib.sha256()
        self.got = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tx_soon = False

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if "batch" not in RAW_FIXES:
            super().datagram_received(data, addr)
            return
        self._quic.receive_datagram(bytes(data), addr, now=self._loop.time())
        self._process_events()
        if not self._tx_soon:
            self._tx_soon = True
            self._loop.call_soon(self._tx)

    def _tx(self) -> None:
        self._tx_soon = False
        self.transmit()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            if event.stream_id == 0:
                self.digest.update(event.data)
                self.got += len(event.data)
                if event.end_stream:
                    self._quic.send_stream_data(0, b"done", end_stream=True)
                    self.transmit()
                    if not self.done.done():
                        self.done.set_result(None)
            else:  # the client's answer wait
                pass
        super().quic_event_received(event) if not isinstance(event, StreamDataReceived) \
            else None


class _RawClient(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answer = b""
        self.answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.drained: asyncio.Future[None] | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived) and event.stream_id == 0:
            self.answer += event.data
            if event.end_stream and not self.answered.done():
                self.answered.set_result(None)
        elif not isinstance(event, StreamDataReceived):
            super().quic_event_received(event)

    def transmit(self) -> None:
        super().transmit()
        if self.drained is not None and not self.drained.done() \
                and self._quic.get_send_buffer_size(0) < RAW_BUFFER // 2:
            self.drained.set_result(None)


def _qh3_server_config() -> QuicConfiguration:
    cert_pem, key_pem = cert()
    config = QuicConfiguration(is_client=False, alpn_protocols=["bench"], idle_timeout=120.0)
    config.certificate = load_pem_x509_certificates(cert_pem)[0]
    config.private_key = load_pem_private_key(key_pem)
    return config


# ---------------------------------------------------------------------------- handlers


async def s_recv(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    loop = asyncio.get_running_loop()
    if msg["transport"] == "raw-qh3":
        accepted: asyncio.Future[_RawSink] = loop.create_future()

        def create(*args: Any, **kwargs: Any) -> _RawSink:
            proto = _RawSink(*args, **kwargs)
            if not accepted.done():
                accepted.set_result(proto)
            return proto

        server = await serve(HOST, 0, configuration=_qh3_server_config(),
                             create_protocol=create)
        if "buffers" in RAW_FIXES:
            _tune(server._transport.get_extra_info("socket"))
        say({"addrs": [[HOST, server._transport.get_extra_info("sockname")[1]]]})
        proto = await asyncio.wait_for(accepted, 30.0)
        await asyncio.wait_for(proto.done, 600.0)
        await asyncio.sleep(0.2)  # let "done" and its ACKs go
        server.close()
        return {"received": proto.got, "digest": proto.digest.hexdigest()}
    certfile, keyfile = cert_files()
    specs = [rendr.ListenSpec("quic", f"{HOST}:0",
                              options={"certfile": certfile, "keyfile": keyfile})]
    if not msg["transport"].startswith("rendr-quic"):
        specs.append(rendr.ListenSpec("tcp", f"{HOST}:0"))
    ln = await rendr.listen(*specs)
    say({"addrs": [[HOST, p] for _, p in ln.addrs]})
    conn = await asyncio.wait_for(ln.accept(), 30.0)
    digest = hashlib.sha256()
    buf = bytearray(MIB)
    view = memoryview(buf)
    got = 0
    while n := await conn.readinto(buf):
        digest.update(view[:n])
        got += n
    await conn.write(b"done")
    try:
        await asyncio.wait_for(conn.close(), 10.0)
    except (asyncio.TimeoutError, rendr.RendrError):
        conn.abort()
    await ln.close()
    return {"received": got, "digest": digest.hexdigest()}


async def s_send(msg: tp.Msg, say: tp.Say) -> tp.Msg:
    size = int(msg["size"])
    addrs = msg["addrs"]
    expect = repeated_digest(tp.payload_block(), size).hex()
    if msg["transport"] == "raw-qh3":
        config = QuicConfiguration(is_client=True, alpn_protocols=["bench"], idle_timeout=120.0)
        config.verify_mode = ssl.CERT_NONE
        async with contextlib.AsyncExitStack() as stack:
            proto = await stack.enter_async_context(
                connect(addrs[0][0], addrs[0][1], configuration=config,
                        create_protocol=_RawClient))
            client: Any = proto
            quic = client._quic
            if "buffers" in RAW_FIXES:
                _tune(client._transport.get_extra_info("socket"))
            t0 = time.perf_counter()
            for chunk in _send_chunks(size):
                while quic.get_send_buffer_size(0) >= RAW_BUFFER:
                    client.drained = asyncio.get_running_loop().create_future()
                    await client.drained
                quic.send_stream_data(0, chunk)
                client.transmit()
            quic.send_stream_data(0, b"", end_stream=True)
            client.transmit()
            await asyncio.wait_for(client.answered, 600.0)
            elapsed = time.perf_counter() - t0
        return {"elapsed": elapsed, "expect": expect, "answer_ok": client.answer == b"done"}
    quic_addr = addrs[0]
    paths = [rendr.PathSpec("quic", f"{quic_addr[0]}:{quic_addr[1]}",
                            options=quic_options(msg["transport"].endswith("-auth")))]
    if len(addrs) > 1:
        paths.append(rendr.PathSpec("tcp", f"{addrs[1][0]}:{addrs[1][1]}"))
    conn = await rendr.Dialer(paths=paths).dial()
    for _ in range(300):
        if sum(p.state == "up" for p in conn.stats().paths) >= len(paths):
            break
        await asyncio.sleep(0.01)
    migrations = int(msg["migrations"])
    marks = [size * (i + 1) // (migrations + 1) for i in range(migrations)]
    done_migrations = 0
    sent = 0
    t0 = time.perf_counter()
    for chunk in _send_chunks(size):
        await conn.write(chunk)
        sent += len(chunk)
        if marks and sent >= marks[0]:
            marks.pop(0)
            others = [p.id for p in conn.stats().paths
                      if p.state == "up" and p.id != conn.active_path]
            if others:
                await conn.migrate(others[0])
                done_migrations += 1
    await conn.write_eof()
    answer = await conn.readexactly(4)
    elapsed = time.perf_counter() - t0
    st = conn.stats()
    per_path = {f"{p.id}:{p.transport}": p.bytes_sent for p in st.paths}
    auth_only = sorted(conn._driver.flow.auth_only)
    await conn.close()
    return {"elapsed": elapsed, "expect": expect, "answer_ok": answer == b"done",
            "migrations": done_migrations, "migration_count": st.migration_count,
            "per_path": per_path, "auth_only": auth_only}


HANDLERS: dict[str, tp.Handler] = {"s_recv": s_recv, "s_send": s_send}


# ---------------------------------------------------------------------------- parent


def run(recv: tp.Worker, send: tp.Worker, transport: str, size: int,
        migrations: int) -> tp.Msg:
    ready = recv.call(cmd="s_recv", transport=transport)
    send.send(cmd="s_send", transport=transport, addrs=ready["addrs"], size=size,
              migrations=migrations)
    s = send.recv()
    r = recv.recv()
    out = dict(s)
    out.update(received=r["received"], sha_ok=r["digest"] == s["expect"] and s["answer_ok"],
               mb_s=size / s["elapsed"] / 1e6)
    return out


def summary(transport: str, res: tp.Msg) -> str:
    s = (f"{transport:8} {res['mb_s']:6.1f} MB/s, {res['received']} bytes, SHA-256 "
         f"{'ok' if res['sha_ok'] else 'MISMATCH'}")
    if "migrations" in res:
        s += (f", migrations {res['migrations']} (stats {res['migration_count']}), bytes per "
              f"path {res['per_path']}, authentication-only paths {res['auth_only']}")
    return s
