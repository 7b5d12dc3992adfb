"""Knobs of one G4/G5 run, and the size units its parts share."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

KIB = 1024
MIB = 1024 * 1024


@dataclass
class Params:
    """Knobs of one G4/G5 run."""

    bulk_bytes: int = 512 * MIB
    rate: str | None = "1gbit"
    """``tc tbf`` rate on both paths (both directions); None = unshaped."""
    tbf_latency: str = "20ms"
    drop_after: float = 1.0
    echo_interval: float = 0.010
    g5_bytes: int = 256 * KIB
    failover_limit: float = 5.0
    failover_target: float = 0.3
    recovery_wait: float = 15.0
    """How long to wait for echo answers after the drop before declaring a hang."""
    redial_limit: float = 15.0
    """How long after the undrop the automatic re-dial may take."""
    bulk_timeout: float = 120.0
    settle_after_recovery: float = 1.0
    """Keep the echo loop running at least this long after the recovery."""
    window_before: float = 1.0
    window_after: float = 1.0
    """Echo RTT statistics 'around the drop' cover requests sent from
    ``window_before`` s before the drop to ``window_after`` s after the recovery."""
    knobs: dict[str, Any] = field(default_factory=dict)
    """FlowConfig overrides for both ends."""


def quick_params(**over: Any) -> Params:
    """The CI configuration (``--quick``)."""
    p = Params(bulk_bytes=64 * MIB, rate="200mbit", bulk_timeout=60.0)
    return dataclasses.replace(p, **over)
