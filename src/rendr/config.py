"""Tuning knobs of a flow.  Durations are in seconds, sizes in bytes.

:class:`FlowConfig` is what ``Dialer(...)`` and ``listen(...)`` build from their
keyword arguments; every field is a keyword argument of both, with the default
shown here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["FlowConfig"]

KIB = 1024
MIB = 1024 * 1024
CONGESTION_CONTROLLERS = ("bbr", "newreno")
"""The values of :attr:`FlowConfig.congestion`."""


@dataclass(frozen=True)
class FlowConfig:
    """Tuning knobs shared by both ends of a flow."""

    migration_budget: float = 90.0
    """How long the flow may have no live path at all before read/write raise
    :class:`~rendr.MigrationBudgetExceeded`. Counted from the death of the last path."""

    ping_interval: float = 0.05
    """PING period on every path while the flow is busy (data unacknowledged or
    recently received)."""

    idle_ping_interval: float = 1.0
    """PING period on every path while the flow is idle (also keeps NAT state alive)."""

    dead_timeout: float = 0.6
    """A path on which a PING got no answer — and nothing else arrived — for this long
    (or ``3*srtt + 4*rttvar`` if larger) is declared dead: its carrier is closed and
    what it carried is re-sent on another path."""

    suspect_timeout: float = 0.2
    """A path on which a PING got no answer — and nothing else arrived — for this long
    (or ``2*srtt + 4*rttvar`` if larger) is *suspect*: if it is the active path and
    another live path is not suspect, the flow moves there at once and re-sends what
    the suspect path carried, but keeps the suspect path.  If it answers again it is a
    backup like any other; if it stays silent until its dead time it is dead.  A quiet
    path is never suspected while anything arrives on it (ACKs of a slow, saturated
    path count), and the RTT terms stretch both times on slow or jittery paths."""

    send_buffer: int = 8 * MIB
    """Most bytes written but not yet acknowledged that one connection may hold;
    ``write()`` waits when the buffer is full.  The buffer is auto-tuned between
    ``send_buffer_min`` and this value: about four bandwidth-delay products of the
    active path (delivery rate times minimum RTT)."""

    send_buffer_min: int = 2 * MIB
    """Floor of the auto-tuned send buffer.  Small buffers keep data hot in cache on
    fast local paths; the auto-tuning grows the buffer on long fat paths."""

    recv_window: int = 8 * MIB
    """Flow-control window: bytes the peer may send beyond what the application read."""

    packet_queue: int = 1 * MIB
    """Packet flows: payload bytes queued for sending (``send()`` waits beyond it) and,
    on the receiving side, unread payload bytes held (newer packets are dropped beyond
    it, as a full socket buffer drops datagrams)."""

    max_frame: int = 1 * MIB
    """Largest DATA payload on stream carriers (a stream carrier reads up to 1 MiB at
    once, so larger frames mean fewer pieces per read)."""

    write_burst: int = 1 * MIB
    """Most bytes one flush writes to one path before yielding to the event loop (one
    ``writelines`` per flush: fewer loop iterations per byte; see docs/benchmarks.md)."""

    ack_delay: float = 0.005
    """Longest time received data waits before it is acknowledged."""

    linger: float = 10.0
    """How long ``close()`` waits for the peer to acknowledge everything written."""

    zombie_max_migrations: int = 2
    """Outages answered by a death-driven migration that moved no application data,
    within ``zombie_window``, after which the next one fails the flow with
    :class:`~rendr.ZombieFlow` (0 disables the guard; paths lost together count as one
    outage, see ``zombie_settle``).  On networks whose paths die every fraction of a second
    the guard can end a flow that would have recovered (measured: random RST kills
    and blackholes every 50-300 ms over three rate-limited paths with data both
    ways ended 1-2 flows in 48): raise this value, or disable the guard and rely on
    ``migration_budget``."""

    zombie_window: float = 30.0
    """Window of the zombie guard."""

    zombie_settle: float = 0.5
    """Losses of the active path within this time of an outage's first loss are that
    same outage: the zombie guard counts one strike however many paths it took (paths
    over one route fail together; an end learns of their resets one after the other,
    and liveness finds silent busy paths a PING interval or so apart).  A path that
    keeps dying still costs a strike every ``zombie_settle`` at least, so
    ``zombie_max_migrations * zombie_settle`` must be below ``zombie_window``."""

    stall_grace: float = 0.25
    """If the engine's timer fires this much later than asked, the local event loop
    was stalled: liveness deadlines are pushed back instead of killing paths."""

    connect_timeout: float = 3.0
    """Timeout of one carrier connect attempt (dialer)."""

    handshake_timeout: float = 10.0
    """Timeout of a carrier handshake (preface + HELLO/JOIN and its answer)."""

    hello_stagger: float = 0.25
    """Dialer: how long ``dial()`` waits for the answer to its HELLO on one path before
    it sends HELLO on the next connected path too (as happy eyeballs staggers its
    connection attempts); a HELLO that fails moves on at once.  The first HELLO_ACK
    opens the flow; the other carriers then JOIN it (see docs/wire.md)."""

    join_wait: float = 0.5
    """How long a listener holds a JOIN whose flow it does not know yet (a JOIN
    may overtake its flow's HELLO)."""

    redial_backoff: float = 0.05
    """First delay before the dialer re-dials a dead path; doubles per failure."""

    redial_backoff_max: float = 2.0
    """Cap of the re-dial delay."""

    redial_jitter: float = 0.5
    """Fraction of each re-dial delay that is random: a delay ``d`` becomes uniform in
    ``[d * (1 - redial_jitter), d]``, so that flows which lost the same path (a relay
    restarted, a link came back) do not all re-dial it in the same instant."""

    prime_switch: bool = True
    """PRIME mode (dialer): move to a clearly better path on quality, not only on death.
    A challenger must have a minimum RTT (over the last ``rtt_window``) lower than the
    active path's by ``prime_hysteresis`` (fraction) and by at least ``prime_floor``
    seconds, continuously for ``prime_dwell`` seconds, and ``prime_cooldown`` seconds must
    have passed since the last migration.  Deaths bypass all of this."""

    prime_hysteresis: float = 0.25
    """Relative RTT advantage a challenger needs."""

    prime_floor: float = 0.005
    """Absolute RTT advantage a challenger needs (seconds)."""

    prime_dwell: float = 3.0
    """How long the challenger must stay better."""

    prime_cooldown: float = 15.0
    """Minimum time between two migrations for quality."""

    rtt_window: float = 10.0
    """Window of the per-path minimum RTT used for quality decisions.  The minimum
    (not the smoothed RTT) is used so that a path's own load does not count against it."""

    max_paths: int = 16
    """Most paths one flow may have at once."""

    records: bool = True
    """Carry every frame after the handshake in authenticated records (AES-256-GCM,
    one key per direction, nonce = path id + record number): nothing can be injected,
    replayed or moved between paths, even by an attacker on the path.  On if either
    end asks (so both ends must turn it off).  Turn it off only for carriers that
    authenticate every byte themselves: without records, an attacker on the path can
    inject frames into the flow (the handshake and every JOIN stay keyed and
    authenticated either way)."""

    encrypt: bool = True
    """With ``records``: encrypt them too (else authenticate only, for carriers that
    bring their own confidentiality, e.g. TLS).  On if either end asks."""

    trust_carrier: bool = True
    """With ``encrypt``: on a path whose carrier encrypts and authenticates itself and
    whose certificate the dialer verified (a QUIC path dialed with a CA or a ``pin``,
    not ``insecure``; :attr:`Carrier.verified <rendr.carriers.base.Carrier.verified>`),
    records are authenticated only, not encrypted a second time.  Agreed per path in
    the keyed handshake, bound to the certificate (docs/security.md); off on either end:
    every path encrypts."""

    congestion: str = "bbr"
    """Congestion control of datagram paths (udpflow) carrying a stream: ``"bbr"``
    (:mod:`rendr.core.bbr`: paces at the measured bandwidth, so random loss costs
    only the bytes re-sent) or ``"newreno"`` (RFC 9002: halves its window on every
    loss episode).  Each end chooses for what it sends."""

    # ---- listener caps (hostile peers; see docs/hardening.md) ----

    max_flows: int = 1024
    """Listener: most flows at once; a HELLO beyond it is refused (BUSY)."""

    max_pending: int = 256
    """Listener: most carriers in their handshake at once; more are closed at once."""

    max_pending_per_source: int = 32
    """Listener: most carriers in their handshake at once from one IP address."""

    first_frame_timeout: float = 3.0
    """Listener: a carrier must send its preface and HELLO/JOIN within this time."""

    listener_memory: int = 512 * MIB
    """Listener: the most receive memory all its flows' windows together may promise.
    Under pressure a flow's window stops growing (never below ``recv_window_floor``
    beyond what its application read); see :class:`rendr.core.memory.MemoryBudget`."""

    recv_window_floor: int = 128 * KIB
    """Listener: the window every flow keeps whatever the memory pressure."""

    # ---- HELLO flood defence (listener; see docs/security.md) ----

    hello_load_rate: float = 200.0
    """Listener: HELLOs per second (over the last second) from which it is *under
    load*: it then answers a HELLO without a valid cookie with RETRY (a stateless
    cookie, no key exchange) and rations key exchanges per source
    (``source_hello_rate``).  A listener spends about 1.3 ms of CPU per accepted flow
    (pure Python; docs/handshake-bench.md): 200 flows/s is a quarter of a core.
    0: never under load by rate."""

    hello_load_pending: float = 0.5
    """Listener: also under load when the carriers in their handshake reach this
    fraction of ``max_pending``, or the flows this fraction of ``max_flows``.  0: never
    by occupancy."""

    source_hello_rate: float = 20.0
    """Listener, under load: key exchanges per second one source (address or prefix,
    ``source_prefix_v4``/``_v6``) may cost, with bursts of ``source_hello_burst``; a
    HELLO beyond is answered BUSY without one.  0: no per-source limit."""

    source_hello_burst: float = 40.0
    """Listener: the burst of ``source_hello_rate`` (tokens a source starts with)."""

    source_prefix_v4: int = 32
    """Listener: IPv4 prefix length that is one source for the per-source limits."""

    source_prefix_v6: int = 64
    """Listener: IPv6 prefix length that is one source for the per-source limits."""

    max_flows_per_source: int = 256
    """Listener: most flows at once from one source (see ``source_prefix_v4``); a
    HELLO beyond it is answered BUSY.  0: no cap."""

    cookie_lifetime: float = 10.0
    """Listener: how long a RETRY cookie stays valid (at most 120 s)."""

    confirm_timeout: float = 5.0
    """Listener: a new flow must receive its first (authenticated, with records) frame
    from the dialer within this time, or it is aborted (``PROTOCOL_ERROR``): a
    half-open flow (HELLO_ACK sent, nothing ever came back) does not hold a place in
    ``max_flows`` for the whole migration budget.  The reference dialer sends a PING
    at once.  0: no limit."""

    def __post_init__(self) -> None:
        if self.congestion not in CONGESTION_CONTROLLERS:
            raise ValueError(f"congestion must be one of {CONGESTION_CONTROLLERS}, "
                             f"got {self.congestion!r}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "congestion":
                continue
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{f.name} must be a non-negative number, got {value!r}")
        if self.migration_budget > 90.0:
            raise ValueError("migration_budget may not exceed 90 s")
        if self.max_frame < 1 or self.max_frame > 1 << 23:
            raise ValueError("max_frame must be in 1..8 MiB")
        if self.send_buffer < 1 or self.recv_window < self.max_frame:
            raise ValueError("send_buffer must be >= 1 and recv_window >= max_frame")
        if self.recv_window >= 1 << 32:
            raise ValueError("recv_window must be below 4 GiB (a u32 on the wire)")
        if not 0 < self.recv_window_floor <= self.recv_window:
            raise ValueError("recv_window_floor must be in 1..recv_window")
        if self.send_buffer_min > self.send_buffer:
            object.__setattr__(self, "send_buffer_min", self.send_buffer)
        if self.ping_interval <= 0 or self.idle_ping_interval <= 0 or self.dead_timeout <= 0:
            raise ValueError("ping intervals and dead_timeout must be positive")
        if self.redial_jitter > 1:
            raise ValueError("redial_jitter must be in 0..1")
        if not 0 < self.suspect_timeout <= self.dead_timeout:
            raise ValueError("suspect_timeout must be positive and at most dead_timeout")
        if self.zombie_max_migrations * self.zombie_settle >= self.zombie_window > 0:
            raise ValueError("zombie_max_migrations * zombie_settle must be below "
                             "zombie_window (else a flapping path is never a zombie)")
        if self.source_prefix_v4 > 32 or self.source_prefix_v6 > 128:
            raise ValueError("source_prefix_v4 must be in 0..32, source_prefix_v6 in 0..128")

    def replace(self, **changes: Any) -> FlowConfig:
        """A copy with some fields changed (unknown names raise TypeError)."""
        return dataclasses.replace(self, **changes)
