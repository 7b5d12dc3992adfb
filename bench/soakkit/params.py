"""Knobs of one soak run (the command line fills them; the children get them as JSON)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

KIB = 1024
MIB = 1024 * 1024

Range = tuple[float, float]

FAULT_KINDS = ("kill", "blackhole", "stall")
"""Relay faults a client injects into one path of one flow."""
OP_KINDS = ("migrate", "add_path", "remove_path")
"""Administrative calls a client makes on its dialer-side connections."""


@dataclass
class Params:
    """One soak run.  Durations in seconds, rates in bytes per second."""

    minutes: float = 30.0
    flows: int = 200
    """Concurrent flows in all (split evenly over ``procs`` client processes)."""
    procs: int = 4
    seed: int = 1
    netns: bool = False
    use_uvloop: bool = True
    warmup: float = 0.0
    """Seconds after the start before the 'after warm-up' figures and the RSS fit;
    0 = a quarter of the run, clamped to 20..300 s."""
    sample: float = 5.0
    """Seconds between two samples of RSS, fds and tasks."""

    burst: int = 64 * KIB
    """Each direction of each flow sends bursts of 1..burst bytes (log-uniform) ..."""
    idle: Range = (2.0, 20.0)
    """... separated by this many seconds of silence (a flow is idle for rendr, with
    1 s PINGs instead of 50 ms ones, once nothing moved for a second)."""
    max_write: int = 64 * KIB
    """Write sizes are log-uniform in 1..max_write (2 % of them up to 8x larger)."""
    max_read: int = 128 * KIB
    flow_life: Range = (20.0, 90.0)
    long_frac: float = 0.25
    """Share of the flow slots whose single flow lives for the whole run."""
    ramp: float = 10.0
    """Flow slots start spread over this many seconds (no handshake storm)."""

    fault_gap: Range = (15.0, 45.0)
    """Pause, per flow, between the end of one relay fault and the next."""
    fault_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """kill, blackhole, stall."""
    blackhole_len: Range = (0.1, 2.0)
    stall_len: Range = (0.5, 4.0)
    stall_rate: Range = (1 * KIB, 16 * KIB)
    op_gap: Range = (10.0, 40.0)
    """Pause, per flow, between two administrative calls."""
    max_slots: int = 4
    """Most dialer path slots per flow (2 at dial time; add_path adds, remove_path
    removes, and each relay keeps at least one)."""

    drop_gap: Range = (20.0, 40.0)
    """netns: pause between two nftables DROPs (one real path at a time)."""
    drop_len: Range = (0.5, 3.0)
    drop_margin_before: float = 1.0
    drop_margin_after: float = 8.0
    """netns: a flow injects no relay fault on the other real path from this long
    before a DROP until this long after it (the re-dial of the dropped path can wait
    for the kernel's SYN retransmissions: 1, 3, 7 s), so every flow always keeps a
    healthy path."""

    relay_linger: float = 30.0
    """A failed flow's relays stay up (without faults) this long, so that rendr can still
    deliver the dialer's CLOSE to the listener over a fresh carrier (its farewell)."""
    stall_limit: float = 45.0
    """A flow whose reader got nothing for this long is reported as stalled (an error)."""
    end_grace: float = 90.0
    """After the stop, how long flows may take to finish (EOF both ways, close)."""
    settle: float = 30.0
    """After the last flow closed, how long the listener may take to return to its
    baseline of fds and tasks."""
    max_rss_growth: float = 64.0
    """MiB per hour of listener RSS growth after warm-up; gated only when at least
    ``rss_gate_minutes`` of samples follow the warm-up."""
    rss_gate_minutes: float = 10.0
    tracemalloc: bool = False
    """Trace the listener's allocations (slower): the sites that grew from warm-up to
    the end are reported."""
    debug: bool = False
    """DEBUG logs of rendr (dialer, relay, listener, engine) in every child's log."""
    knobs: dict[str, Any] = field(default_factory=dict)
    """FlowConfig overrides for both ends (``--knob name=value``)."""
    listener_caps: dict[str, Any] = field(default_factory=lambda: {
        "max_pending": 1024, "max_pending_per_source": 512})
    """All carriers reach the listener from the relays' one or two addresses: the
    per-source handshake cap (32) is the relays', not a hostile peer's."""

    @property
    def duration(self) -> float:
        return self.minutes * 60.0

    @property
    def warmup_s(self) -> float:
        if self.warmup > 0:
            return min(self.warmup, self.duration)
        return min(max(self.duration / 4.0, 20.0), 300.0, self.duration)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(d: dict[str, Any]) -> Params:
        d = dict(d)
        for name, f in Params.__dataclass_fields__.items():
            if name in d and isinstance(d[name], list) and "tuple" in str(f.type):
                d[name] = tuple(d[name])
        return Params(**d)

    def flows_of(self, proc: int) -> int:
        """Flow slots of client process ``proc`` (the remainder goes to the first ones)."""
        base, extra = divmod(self.flows, self.procs)
        return base + (1 if proc < extra else 0)
