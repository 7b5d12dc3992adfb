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
        weight: BOND's prior for sharing this end's *packets* among paths (in
            proportion to the weights) until the peer reports what each path
            delivers (PATH_REPORT, every 50 ms); then the reports decide.  Streams
            are shared by each path's measured delivery rate.
    """

    transport: str
    address: str
    options: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    weight: float = field(default=1.0, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise ValueError(f"PathSpec.weight must be positive, not {self.weight!r}")


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
