"""rendr: one stable connection over swappable network paths.

An application holds one :class:`Conn` (a byte stream) or :class:`PacketConn`
(datagrams) whose underlying path (a TCP connection or a UDP flow) rendr swaps
without the application seeing a reset, an exception, EOF or a zero-length read.
See the README for a quick start.
"""

from typing import TYPE_CHECKING

from . import _native
from ._native import is_compiled as _is_compiled

# Before any other module of the package is imported: a compiled build (the engine and
# its driver) made from other sources than the .py files here must not shadow them.
_native.guard()

from ._version import __version__  # noqa: E402
from .admin import AdminConn, AdminPacketConn  # noqa: E402
from .aio import (  # noqa: E402
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
from .aio.datagrams import PacketTransport, create_datagram_endpoint  # noqa: E402
from .aio.runner import run  # noqa: E402
from .aio.streams import (  # noqa: E402
    ConnTransport,
    create_connection,
    create_server,
    open_connection,
    splice,
    start_server,
)
from .carriers import Carrier, register_transport  # noqa: E402
from .config import FlowConfig  # noqa: E402
from .core.events import Event, EventKind  # noqa: E402
from .core.stats import ConnStats, PathStats  # noqa: E402
from .core.types import Mode, State  # noqa: E402
from .errors import (  # noqa: E402
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
from .keys import generate_server_key, server_public_key  # noqa: E402
from .spec import ListenSpec, PathSpec  # noqa: E402

if TYPE_CHECKING:
    from .aio.anyio_stream import ConnByteStream

__compiled__: bool = _is_compiled()
"""Whether the engine (``rendr.core``) and its driver (``rendr.aio.driver``) that run are
the mypyc-compiled build (both are, or neither: see ``rendr._native``)."""



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
