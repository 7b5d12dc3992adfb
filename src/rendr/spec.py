"""Path and listener specifications."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ListenSpec", "PathSpec"]


@dataclass(frozen=True)
class PathSpec:
    """One path a dialer may use.

    Attributes:
        transport: a registered transport name ("tcp", or one registered with
            :func:`rendr.register_transport` / ``Dialer(transports=...)``).
        address: where to connect, ``"host:port"`` or ``"[v6]:port"``.
        options: free-form options for custom transports.
    """

    transport: str
    address: str
    options: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class ListenSpec:
    """One address a listener binds.

    Attributes:
        transport: "tcp", "udpflow", or a registered name.
        address: ``"host:port"`` (port 0 picks a free port; ``"[::]:port"`` for IPv6).
        options: keyword arguments for the transport's listen factory (udpflow:
            ``mtu``, the largest datagram sent).
    """

    transport: str
    address: str
    options: dict[str, str | int] = field(default_factory=dict, compare=False, hash=False)
