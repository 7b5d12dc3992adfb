"""A carrier over any connected asyncio stream pair (TLS, SSH channels, relays...)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from .address import format_address
from .base import Buffer, Carrier

__all__ = ["StreamsCarrier"]

logger = logging.getLogger("rendr.carriers.streams")

READ_SIZE = 256 * 1024
HIGH_WATER = 4 * 1024 * 1024


class StreamsCarrier(Carrier):
    """Adapt an ``(asyncio.StreamReader, asyncio.StreamWriter)`` pair to a carrier.

    Args:
        reader / writer: a connected stream pair.
        transport: the name to show in statistics.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 transport: str = "stream") -> None:
        super().__init__()
        self.transport = transport
        self._reader = reader
        self._writer = writer
        self._done = False
        self._paused = False
        self.local_addr = format_address(writer.get_extra_info("sockname"))
        self.remote_addr = format_address(writer.get_extra_info("peername"))
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    async def _read_loop(self) -> None:
        exc: BaseException | None = None
        try:
            while True:
                data = await self._reader.read(READ_SIZE)
                if not data:
                    break
                self._sink.carrier_data(data)
        except asyncio.CancelledError:
            return
        except Exception as e:  # any stream error is a path failure
            exc = e
        self._report_lost(exc)

    def write(self, buffers: Sequence[Buffer]) -> None:
        if self._done or self._writer.is_closing():
            return
        self._writer.writelines(buffers)
        size = self._writer.transport.get_write_buffer_size()
        if size > HIGH_WATER and not self._paused:
            self._paused = True
            self._sink.carrier_pause()
            asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        with contextlib.suppress(Exception):
            await self._writer.drain()
        if self._paused:
            self._paused = False
            if not self._done:
                self._sink.carrier_resume()

    def close(self) -> None:
        self._done = True
        self._task.cancel()
        if not self._writer.is_closing():
            self._writer.close()

    def abort(self) -> None:
        self._done = True
        self._task.cancel()
        self._writer.transport.abort()

    def _report_lost(self, exc: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        self._sink.carrier_lost(exc)
