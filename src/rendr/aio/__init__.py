"""The asyncio front-end: ``Conn``, ``PacketConn``, ``Dialer`` and ``Listener`` driving
the sans-I/O engine."""

from .conn import Conn
from .dialer import Dialer
from .listener import (
    Listener,
    PacketListener,
    listen,
    listen_quic,
    listen_quic_packet,
    listen_tcp,
    listen_udpflow,
    listen_udpflow_packet,
)
from .packetconn import PacketConn, PacketStats

__all__ = ["Conn", "Dialer", "Listener", "PacketConn", "PacketListener", "PacketStats",
           "listen", "listen_quic",
           "listen_quic_packet", "listen_tcp", "listen_udpflow", "listen_udpflow_packet"]
