#!/usr/bin/env python3
"""A clean close over a datagram path ends in ``MigrationBudgetExceeded`` on one side
when the other's last datagrams (its ACK of the peer's FIN and its CLOSE) are lost.

Found by a randomized datagram fault-schedule run (2026-12-03; not fixed in the
engine).  Method: the simulator (``rendr.testing.simnet``), one datagram path (20 ms
one way); the dialer writes 100 kB and its EOF, the listener only its EOF; both read
to EOF, then both call ``close()`` at once.  From the moment the listener has read the
dialer's EOF, every datagram it sends is dropped.  The listener's own FIN is already
acknowledged, so it sends CLOSE(0) once and ends at once (CLOSED, no error); the
dialer, whose FIN is unacknowledged, never hears of it and ends with
``MigrationBudgetExceeded`` once its path is gone, though every byte arrived both ways.
``--no-eof``: a closed datagram carrier tells the peer nothing (as a UDP socket).

The real udpflow carrier covers most of this below the engine: after ``close()`` it
sends its last datagram twice more and answers up to 8 of the peer's datagrams with it
for 2 s (``rendr.carriers.udpbase.CLOSE_REPEATS``, ``DRAIN``); the simulator's datagram
paths do not model that.  An engine-level closing state (RFC 9000 10.2.1) would not
depend on the carrier.  Exit status 1 if the dialer ends with an error.
"""

from __future__ import annotations

import os
import sys

from rendr.config import FlowConfig
from rendr.core.events import EventKind
from rendr.testing.simnet import Side, Sim, SimPath

D, L = Side.DIALER, Side.LISTENER


class DropAfterEof(Sim):
    """Drops every listener datagram once the listener has read the dialer's EOF."""

    drop_from_listener = False

    def _datagram(self, path: SimPath, side: Side, data: bytes) -> None:
        if side is L and self.drop_from_listener:
            path.drops[side] += 1
            return
        super()._datagram(path, side, data)

    def _drain_reader(self, side: Side) -> None:
        super()._drain_reader(side)
        if side is L and self.eof[L]:
            self.drop_from_listener = True  # before this turn's transmits: the FIN's ACK


class NoEof(DropAfterEof):
    """...and a closed datagram carrier signals nothing to the peer."""

    def _close_end(self, side: Side, pid: int, abort: bool) -> None:
        p = self.paths.get(pid)
        if p is not None and p.mtu is not None and not abort:
            p.closed[side] = True
            return
        super()._close_end(side, pid, abort)


def main() -> int:
    kind = NoEof if "--no-eof" in sys.argv else DropAfterEof
    sim = kind(FlowConfig(migration_budget=3.0, zombie_max_migrations=0), seed=1)
    sim.add_path(0.02, mtu=1200)
    sim.write(D, os.urandom(100_000), eof=True)
    sim.write(L, b"", eof=True)
    assert sim.run_until(lambda: sim.eof[L] and sim.eof[D], 30)
    sim.close(D)
    sim.close(L)
    sim.run_until(lambda: all(f.state.value == "closed" for f in sim.flows), sim.now + 60)
    for side in Side:
        ends = [(round(e.at, 3), e.kind.name) for e in sim.events[side]
                if e.kind in (EventKind.PATH_DOWN, EventKind.CLOSED)]
        print(f"{side.name}: {sim.flows[side].state.value}, error {sim.flows[side].error!r}, "
              f"{ends}")
    failed = sim.dialer.error is not None
    print("the dialer ends with an error" if failed else "both ends closed cleanly")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
