"""Parsing of ``host:port`` address strings."""

from __future__ import annotations

__all__ = ["format_address", "parse_address"]


def parse_address(address: str) -> tuple[str, int]:
    """Split ``"host:port"``, ``"[v6]:port"`` or ``":port"`` into ``(host, port)``.

    An empty host means every address (``"0.0.0.0"`` style wildcard: returned as ``""``).

    Raises:
        ValueError: the string has no valid port.
    """
    address = address.strip()
    if address.startswith("["):
        end = address.find("]")
        if end < 0 or address[end + 1 : end + 2] != ":":
            raise ValueError(f"bad address {address!r}: expected [host]:port")
        host, port_text = address[1:end], address[end + 2 :]
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep:
            raise ValueError(f"bad address {address!r}: expected host:port")
        if ":" in host:
            raise ValueError(f"bad address {address!r}: put IPv6 hosts in brackets")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad port in address {address!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {address!r}")
    return host, port


def format_address(sockname: object) -> str:
    """Format a socket name tuple as text (``host:port`` or ``[v6]:port``)."""
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        host, port = sockname[0], sockname[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(sockname)
