"""Carriers: the byte streams that paths run on, behind one small interface."""

from . import quic_entry as _quic_entry  # noqa: F401  (registers "quic")
from .base import Carrier, CarrierKind, CarrierSink, TransportFactory, register_transport
from .streams import StreamsCarrier
from .tcp import TcpCarrier, connect_tcp, listen_tcp
from .udpflow import connect_udpflow, listen_udpflow

__all__ = [
    "Carrier",
    "CarrierKind",
    "CarrierSink",
    "StreamsCarrier",
    "TcpCarrier",
    "TransportFactory",
    "connect_tcp",
    "connect_udpflow",
    "listen_tcp",
    "listen_udpflow",
    "register_transport",
]
