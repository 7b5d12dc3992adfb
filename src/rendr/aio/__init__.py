"""The asyncio front-end: ``Conn``, ``Dialer`` and ``Listener`` driving the sans-I/O engine."""

from .conn import Conn
from .dialer import Dialer
from .listener import Listener, listen, listen_tcp

__all__ = ["Conn", "Dialer", "Listener", "listen", "listen_tcp"]
