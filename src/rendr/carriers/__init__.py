"""Carriers: the byte streams that paths run on, behind one small interface."""

from .base import Carrier, CarrierSink, TransportFactory, register_transport
from .streams import StreamsCarrier
from .tcp import TcpCarrier, connect_tcp

__all__ = [
    "Carrier",
    "CarrierSink",
    "StreamsCarrier",
    "TcpCarrier",
    "TransportFactory",
    "connect_tcp",
    "register_transport",
]
