"""Pure measurement logic: echo timing around the drop, bulk stalls, engine events.

Nothing here touches the network; the inputs are the times and counts the traffic
recorded (see :mod:`.traffic`) and the events the connections reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import rendr

Events = list[tuple[float, str, rendr.Event]]
"""(monotonic time, connection name, event) in the order the events came."""


@dataclass
class EchoAnalysis:
    """Echo timing around the drop (all times in seconds)."""

    failover: float | None
    """Drop start -> first answer to a request sent after the drop completed."""
    first_any_after: float | None
    """Drop start -> first answer of any kind received after the drop completed."""
    stuck: int
    """Requests unanswered when the drop completed."""
    baseline_p50: float | None
    baseline_p99: float | None
    around_p50: float | None
    around_p99: float | None
    around_max: float | None
    around_n: int
    overall_max: float | None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def analyze_echo(sent: list[float], recv: list[float | None], t0: float, t1: float,
                 window_before: float = 1.0, window_after: float = 1.0) -> EchoAnalysis:
    """Echo timing around a drop that started at ``t0`` and was complete at ``t1``.

    ``sent[i]``/``recv[i]`` are the send/answer times of request ``i`` (``recv[i]`` is
    None if it was never answered).  The failover time is measured from ``t0`` to the
    first answer to a request sent at or after ``t1``: that answer cannot predate the
    recovery.  RTT statistics 'around the drop' cover requests sent from
    ``t0 - window_before`` to ``window_after`` after the recovery.
    """
    fresh = [r for s, r in zip(sent, recv, strict=True) if s >= t1 and r is not None]
    recovered_at = min(fresh) if fresh else None
    after = [r for r in recv if r is not None and r > t1]
    first_any = min(after) if after else None
    stuck = sum(1 for s, r in zip(sent, recv, strict=True) if s < t1 and (r is None or r > t1))
    rtts = [(s, r - s) for s, r in zip(sent, recv, strict=True) if r is not None]
    base = [x for s, x in rtts if s < t0 - 0.05]
    hi = (recovered_at if recovered_at is not None else t1) + window_after
    around = [x for s, x in rtts if t0 - window_before <= s <= hi]
    return EchoAnalysis(
        failover=None if recovered_at is None else recovered_at - t0,
        first_any_after=None if first_any is None else first_any - t0,
        stuck=stuck,
        baseline_p50=percentile(base, 50),
        baseline_p99=percentile(base, 99),
        around_p50=percentile(around, 50),
        around_p99=percentile(around, 99),
        around_max=max(around) if around else None,
        around_n=len(around),
        overall_max=max((x for _, x in rtts), default=None),
    )


def longest_stall(progress: list[tuple[float, int]], total: int) -> float:
    """Longest time (s) the received byte count of ``progress`` samples ((time, bytes),
    in time order) stood still before reaching ``total``."""
    gap, last_t, last_b = 0.0, None, -1
    for t, b in progress:
        if b < total and b == last_b and last_t is not None:
            gap = max(gap, t - last_t)
        elif b != last_b:
            last_t, last_b = t, b
    return gap


def first_migration_after(events: Events, name: str, t0: float) -> float | None:
    """Seconds from ``t0`` to connection ``name``'s first MIGRATION at or after it."""
    for t, n, ev in events:
        if n == name and t >= t0 and ev.kind is rendr.EventKind.MIGRATION:
            return t - t0
    return None


def _since_drop(t: float, t_drop: float | None) -> str:
    return "" if t_drop is None else f"@{(t - t_drop) * 1e3:+.0f}ms"


def path_down_causes(events: Events, t_drop: float | None) -> list[str]:
    """``name:path:cause@+ms`` for every PATH_DOWN (time relative to the drop)."""
    return [f"{n}:{ev.path_id}:{ev.cause}{_since_drop(t, t_drop)}" for t, n, ev in events
            if ev.kind is rendr.EventKind.PATH_DOWN]


def migration_causes(events: Events, t_drop: float | None) -> list[str]:
    """``name:old->new:cause@+ms`` for every MIGRATION (time relative to the drop)."""
    return [f"{n}:{ev.old_path}->{ev.new_path}:{ev.cause}{_since_drop(t, t_drop)}"
            for t, n, ev in events if ev.kind is rendr.EventKind.MIGRATION]
