"""Fault timing shared by the parent and the clients.

*Drop windows* (netns mode): the parent plans, from the seed, when it will DROP
which real path with nftables; every client gets the plan, so that no flow ever
has both of its real paths impaired at once (a relay fault on the other path is
not started near a DROP).  *Fault intervals*: when each relay of a flow was
faulted, to tell an ``add_path`` that failed because of an injected fault from
one that failed on its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .params import Params


@dataclass(frozen=True)
class Drop:
    path: int
    start: float
    end: float
    """time.monotonic() values (CLOCK_MONOTONIC: the same in every process)."""


def plan_drops(p: Params, t_start: float, t_stop: float) -> list[Drop]:
    """The nftables DROPs of one run: one real path at a time, alternating at random."""
    rng = random.Random(f"{p.seed}/drops")
    out: list[Drop] = []
    t = t_start + rng.uniform(*p.drop_gap) / 2
    while True:
        length = rng.uniform(*p.drop_len)
        if t + length > t_stop - 5.0:
            return out
        out.append(Drop(rng.randrange(2), t, t + length))
        t += length + rng.uniform(*p.drop_gap)


class DropPlan:
    def __init__(self, drops: list[Drop], before: float, after: float) -> None:
        self.drops = drops
        self.before = before
        self.after = after

    def blocks(self, relay: int, a: float, b: float) -> bool:
        """Would a fault on path ``relay`` during [a, b] coincide with (or follow too
        closely) a DROP of the other path?"""
        return any(d.path != relay and d.start - self.before < b and a < d.end + self.after
                   for d in self.drops)

    def touches(self, path: int, a: float, b: float) -> bool:
        """Was path ``path`` dropped during [a, b] (or recovering from a DROP)?"""
        return any(d.path == path and d.start < b and a < d.end + self.after
                   for d in self.drops)


class FaultIntervals:
    """When one relay of a flow was faulted (monotonic times)."""

    __slots__ = ("spans",)

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []

    def add(self, a: float, b: float) -> None:
        self.spans.append((a, b))
        if len(self.spans) > 64:
            del self.spans[:32]

    def touches(self, a: float, b: float, slack: float = 1.0) -> bool:
        return any(s < b and a < e + slack for s, e in self.spans)
