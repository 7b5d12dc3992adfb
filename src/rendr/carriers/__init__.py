"""Carriers: the byte streams that paths run on, behind one small interface."""

from .base import Carrier, CarrierKind, CarrierSink, TransportFactory, register_transport
from .streams import StreamsCarrier
from .tcp import TcpCarrier, connect_tcp, listen_tcp

__all__ = [
    "Carrier",
    "CarrierKind",
    "CarrierSink",
    "StreamsCarrier",
    "TcpCarrier",
    "TransportFactory",
    "connect_tcp",
    "listen_tcp",
    "register_transport",
]
