"""The ``quic`` transport's registry entry, importing qh3 only when it is used, so
``import rendr`` works without qh3 installed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Carrier, CarrierKind, register_transport

__all__ = ["dial_quic", "listen_quic"]

_MISSING = ("the 'quic' transport needs the qh3 package (pip install qh3, or "
            "pip install rendr, which depends on it)")


async def dial_quic(address: str, **options: Any) -> Carrier:
    """The ``quic`` dial factory (:func:`rendr.carriers.quic.connect_quic`).

    Raises:
        ImportError: qh3 is not installed.
    """
    try:
        from .quic import connect_quic
    except ImportError as exc:
        raise ImportError(_MISSING) from exc
    return await connect_quic(address, **options)


async def listen_quic(address: str, on_carrier: Callable[[Carrier], None],
                      backlog: int = 128, **options: Any) -> Any:
    """The ``quic`` listen factory (:func:`rendr.carriers.quic_listen.listen_quic`).

    Raises:
        ImportError: qh3 is not installed.
    """
    try:
        from .quic_listen import listen_quic as listen
    except ImportError as exc:
        raise ImportError(_MISSING) from exc
    return await listen(address, on_carrier, backlog, **options)


# UDP underneath; each carrier is a stream or a datagram carrier by its flow's kind
register_transport("quic", dial_quic, listen=listen_quic, kind=CarrierKind.DATAGRAM)
