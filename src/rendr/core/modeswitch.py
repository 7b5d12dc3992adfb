"""Switching a live flow's mode, agreed by both ends.

A flow's mode decides how *each end* schedules what it sends (:mod:`.scheduler`);
the receiving side is the same in every mode (the stream reassembles by offset and
drops copies, packets are de-duplicated by number), so a switch can never lose or
duplicate anything the application sees.  It still has to be agreed, so both
directions use the same mode:

1. the requester sends ``MODE(seq, mode)`` on every live path (again every
   :data:`RESEND` seconds until answered: a datagram path may lose it);
2. the peer checks the transition (:func:`legal`), switches its own sending at
   once and answers ``MODE(seq, mode, ACK)`` (or ``ACK|REFUSED`` naming the mode it
   keeps);
3. the requester switches when the answer comes.

Both ends may ask at the same time: the dialer's request wins (the listener
switches to it and its own request is refused), so the ends never settle on
different modes.  A request that repeats (``seq`` already seen) is answered again
and changes nothing.
"""

from __future__ import annotations

from typing import Final

from ..config import FlowConfig
from ..errors import ModeSwitchIllegal, ProtocolError
from .path import PathState
from .paths import PathSet
from .scheduler import BondScheduler, Reliable, Scheduler, make_scheduler
from .types import Mode, Role
from .wire import MODE_ACK, MODE_REFUSED, decode_mode, encode_mode

__all__ = ["RESEND", "ModeSwitch", "legal"]

RESEND: Final = 0.5
"""Seconds between re-sends of an unanswered MODE request."""


def legal(old: Mode, new: Mode) -> bool:
    """Whether a flow may switch from ``old`` to ``new``: prime <-> race and prime
    <-> bond (and staying put); race <-> bond is not (race keeps no per-path order,
    bond needs it)."""
    return old is new or old is Mode.PRIME or new is Mode.PRIME


class ModeSwitch:
    """The mode of one flow, its scheduler, and its switches in progress.

    Attributes:
        mode: the mode this end sends by now.
        scheduler: the scheduler of :attr:`mode` (replaced on every switch).
        pending: the mode this end asked for and the peer has not answered yet.
        switches: switches that took effect at this end.
    """

    __slots__ = ("_last_peer_seq", "_old_skips", "_packets", "_reliable", "_resend_at", "_seq",
                 "config",
                 "mode",
                 "pending", "refused", "role", "scheduler", "switches")

    def __init__(self, mode: Mode, role: Role, config: FlowConfig, now: float,
                 reliable: Reliable | None = None, packets: bool = False) -> None:
        self.mode = mode
        self.role = role
        self.config = config
        self._reliable = reliable
        self._packets = packets  # a packet flow
        self.scheduler: Scheduler = make_scheduler(mode, config, now, reliable, packets)
        self._old_skips = 0  # stuck-path skips of BOND schedulers switched away from
        self.pending: Mode | None = None
        self.refused: str | None = None
        """Why the latest request was refused (None: not refused)."""
        self.switches = 0
        self._seq = 0
        self._last_peer_seq = 0
        self._resend_at: float | None = None

    def set_mode(self, mode: Mode, paths: PathSet, now: float) -> None:
        """Ask the peer to switch to ``mode`` (the request goes on every live path).

        Raises:
            ModeSwitchIllegal: race <-> bond, or another switch is still pending.
        """
        frame = self.request(mode, now)
        if frame is not None:
            for path in paths.alive():
                path.outbox.append(frame)

    def on_timer(self, paths: PathSet, now: float) -> None:
        """Re-send an unanswered request on every live path when it is due."""
        frame = self.resend(now)
        if frame is not None:
            for path in paths.alive():
                path.outbox.append(frame)

    def receive(self, path: PathState, body: memoryview, now: float) -> bool:
        """A MODE frame from the peer on ``path`` (the answer goes back on it);
        True when the application should hear of it (the mode changed, or this
        end's request was answered either way).

        Raises:
            ProtocolError: malformed, or an unknown mode.
        """
        seq, mode, flags = decode_mode(body)
        answer, changed = self.on_frame(seq, mode, flags)
        if answer is not None:
            path.outbox.append(answer)
        if changed:
            self._old_skips = self.bond_stuck_skips
            self.scheduler = make_scheduler(self.mode, self.config, now, self._reliable,
                                            self._packets)
        return changed or bool(flags & MODE_ACK and self.pending is None)

    @property
    def bond_stuck_skips(self) -> int:
        """Times BOND left a path out for an RTT far above the best one's."""
        sched = self.scheduler
        return self._old_skips + (sched.stuck_skips if isinstance(sched, BondScheduler) else 0)

    def request(self, mode: Mode, now: float) -> bytes | None:
        """Ask the peer to switch to ``mode``: the MODE frame to send on every live
        path, or None when there is nothing to ask (already in ``mode``).

        Raises:
            ModeSwitchIllegal: race <-> bond, or another switch is still pending.
        """
        if self.pending is not None:
            raise ModeSwitchIllegal(f"a switch to {self.pending} is still in progress")
        if not legal(self.mode, mode):
            raise ModeSwitchIllegal(f"cannot switch from {self.mode} to {mode} (go "
                                    "through prime)")
        if mode is self.mode:
            return None
        self._seq += 1
        self.pending = mode
        self.refused = None
        self._resend_at = now + RESEND
        return encode_mode(self._seq, int(mode))

    def deadline(self) -> float | None:
        """When to re-send the pending request (None: nothing pending)."""
        return self._resend_at

    def resend(self, now: float) -> bytes | None:
        """The pending request again, if its re-send is due at ``now``."""
        at = self._resend_at
        if at is None or now < at or self.pending is None:
            return None
        self._resend_at = now + RESEND
        return encode_mode(self._seq, int(self.pending))

    def on_frame(self, seq: int, mode: int, flags: int) -> tuple[bytes | None, bool]:
        """A MODE frame from the peer: ``(answer to send or None, whether this end's
        mode changed)``.

        Raises:
            ProtocolError: an unknown mode.
        """
        try:
            wanted = Mode(mode)
        except ValueError:
            raise ProtocolError(f"MODE names unknown mode {mode}") from None
        if flags & MODE_ACK:
            return None, self._on_answer(seq, wanted, bool(flags & MODE_REFUSED))
        if seq <= self._last_peer_seq:  # a repeat: answer it again, change nothing
            flags = MODE_ACK if wanted is self.mode else MODE_ACK | MODE_REFUSED
            return encode_mode(seq, int(self.mode), flags), False
        if self.pending is not None and self.role is Role.DIALER:
            # crossed requests: the dialer's wins; the listener will switch to it
            return encode_mode(seq, int(self.mode), MODE_ACK | MODE_REFUSED), False
        self._last_peer_seq = seq
        if not legal(self.mode, wanted):
            return encode_mode(seq, int(self.mode), MODE_ACK | MODE_REFUSED), False
        changed = wanted is not self.mode
        if self.pending is not None:  # the listener's own request lost the crossing
            self.pending = None
            self._resend_at = None
            self.refused = f"the dialer switched to {wanted} at the same time"
        if changed:
            self.mode = wanted
            self.switches += 1
        return encode_mode(seq, int(wanted), MODE_ACK), changed

    def _on_answer(self, seq: int, mode: Mode, refused: bool) -> bool:
        if self.pending is None or seq != self._seq:
            return False  # an answer to a repeat, or to a request given up
        asked = self.pending
        self.pending = None
        self._resend_at = None
        if refused or mode is not asked:
            self.refused = f"the peer refused the switch (it stays in {mode})"
            return False
        changed = mode is not self.mode
        if changed:
            self.mode = mode
            self.switches += 1
        return changed
