"""rendr: one stable connection over swappable network paths.

An application holds one :class:`Conn` (a byte stream) or :class:`PacketConn`
(datagrams) whose underlying path (a TCP connection or a UDP flow) rendr swaps
without the application seeing a reset, an exception, EOF or a zero-length read.
See the README for a quick start.
"""

from typing import TYPE_CHECKING

from ._native import is_compiled as _is_compiled
from ._version import __version__
from .admin import AdminConn, AdminPacketConn
from .aio import (
    Conn,
    Dialer,
    Listener,
    PacketConn,
    PacketListener,
    PacketStats,
    listen,
    listen_quic,
    listen_quic_packet,
    listen_tcp,
    listen_udpflow,
    listen_udpflow_packet,
)
from .aio.datagrams import PacketTransport, create_datagram_endpoint
from .aio.runner import run
from .aio.streams import (
    ConnTransport,
    create_connection,
    create_server,
    open_connection,
    splice,
    start_server,
)
from .carriers import Carrier, register_transport
from .config import FlowConfig
from .core.events import Event, EventKind
from .core.stats import ConnStats, PathStats
from .core.types import Mode, State
from .errors import (
    ConnAborted,
    ConnClosed,
    HandshakeError,
    LastPathError,
    MigrationBudgetExceeded,
    ModeSwitchIllegal,
    ModeUnavailable,
    PacketTooLarge,
    ProtocolError,
    RendrError,
    ZombieFlow,
)
from .keys import generate_server_key, server_public_key
from .spec import ListenSpec, PathSpec

if TYPE_CHECKING:
    from .aio.anyio_stream import ConnByteStream

__compiled__: bool = _is_compiled()
"""Whether the engine (``rendr.core``) that runs is the mypyc-compiled build."""



def anyio_stream(conn: Conn) -> "ConnByteStream":
    """``conn`` as an :class:`anyio.abc.ByteStream` (for anyio's TLS, buffered and text
    streams); needs the optional ``anyio`` package (``pip install rendr[anyio]``).  See
    :mod:`rendr.aio.anyio_stream`."""
    from .aio.anyio_stream import anyio_stream as wrap

    return wrap(conn)


__all__ = [
    "AdminConn",
    "AdminPacketConn",
    "Carrier",
    "Conn",
    "ConnAborted",
    "ConnClosed",
    "ConnStats",
    "ConnTransport",
    "Dialer",
    "Event",
    "EventKind",
    "FlowConfig",
    "HandshakeError",
    "LastPathError",
    "ListenSpec",
    "Listener",
    "MigrationBudgetExceeded",
    "Mode",
    "ModeSwitchIllegal",
    "ModeUnavailable",
    "PacketConn",
    "PacketListener",
    "PacketStats",
    "PacketTooLarge",
    "PacketTransport",
    "PathSpec",
    "PathStats",
    "ProtocolError",
    "RendrError",
    "State",
    "ZombieFlow",
    "__compiled__",
    "__version__",
    "anyio_stream",
    "create_connection",
    "create_datagram_endpoint",
    "create_server",
    "generate_server_key",
    "listen",
    "listen_quic",
    "listen_quic_packet",
    "listen_tcp",
    "listen_udpflow",
    "listen_udpflow_packet",
    "open_connection",
    "register_transport",
    "run",
    "server_public_key",
    "splice",
    "start_server",
]
