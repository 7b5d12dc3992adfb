"""Looking at a run while it goes: which topology path a rendr path is on, a
connection's stats in one block, waiting for a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import rendr
from rendr.testing.netns import NetnsTopology


def host_of(addr: str) -> str:
    """``"10.231.0.2:4242"`` -> ``"10.231.0.2"`` (``[v6]:port`` too)."""
    host, _, _ = addr.rpartition(":")
    return host.strip("[]")


def path_index(topo: NetnsTopology, conn: rendr.Conn, path_id: int) -> int | None:
    """Topology path index carrying rendr path ``path_id`` of ``conn`` (by remote address
    on the client, local address on the server)."""
    for ps in conn.stats().paths:
        if ps.id != path_id:
            continue
        for addr in (ps.remote_addr, ps.local_addr):
            host = host_of(addr)
            for link in topo.paths:
                if link.server_addr == host:
                    return link.index
    return None


def up_paths(conn: rendr.Conn) -> list[rendr.PathStats]:
    return [p for p in conn.stats().paths if p.state == "up"]


def describe(conn: rendr.Conn | None, name: str) -> str:
    """A one-block dump of a connection's stats (for hang/failure diagnosis)."""
    if conn is None:
        return f"{name}: (no connection)"
    st = conn.stats()
    lines = [f"{name}: state={st.state} active={st.active_path} migrations="
             f"{st.migration_count} written={st.bytes_written} read={st.bytes_read} "
             f"unacked={st.unacked_bytes} dups={st.recv_dups} hwm={st.recv_queue_hwm}"]
    for p in st.paths:
        srtt = "-" if p.srtt is None else f"{p.srtt * 1e3:.1f}ms"
        lines.append(f"    path {p.id}: {p.state:8s} {p.local_addr} -> {p.remote_addr} "
                     f"srtt={srtt} sent={p.bytes_sent} recv={p.bytes_received} "
                     f"retx={p.retransmits} last_recv_age={p.last_recv_age:.3f}s "
                     f"down_cause={p.down_cause}")
    return "\n".join(lines)


async def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.005) -> bool:
    """Poll ``pred`` until true (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step)
    return True

