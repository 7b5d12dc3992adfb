#!/usr/bin/env python3
"""Coverage-guided fuzzing of a listener-side ``Flow`` driven against the model
dialer of ``tests/fuzz/_flowpeer.py`` (the same checks as tests/fuzz/test_fuzz_flow.py).

Input: ``mode (1 B) | payload size (2 B) | back size (2 B) | steps``, each step
``op | a | b (2 B) | c (4 B) | n | n bytes``.  ``mode``: bit 0 hostile (malformed
frames in ``mode >> 4`` percent of the steps), bit 1 a listener memory budget,
bit 2 a small peer window, bit 3 keyed (wire v1 records; ``size`` bit 15: not
encrypted).  Any exception (including the model's PeerViolation) is a crash.
"""

from __future__ import annotations

import logging
import sys

import atheris
from _setup import paths

paths()
with atheris.instrument_imports(include=["rendr"]):
    from fuzz._flowpeer import FlowHarness, RawStep

MAX_STEPS = 300
PAYLOAD = bytes((i * 131 + (i >> 8)) & 0xFF for i in range(1 << 15))
BACK = bytes((i * 7 + 3) & 0xFF for i in range(24 * 1024))
logging.disable(logging.WARNING)  # a hostile peer makes the engine log every abort


def parse(data: bytes) -> tuple[int, int, int, list[RawStep]]:
    mode = data[0] if data else 0
    size = int.from_bytes(data[1:3], "big")
    back = int.from_bytes(data[3:5], "big") % (24 * 1024)
    steps: list[RawStep] = []
    pos = 5
    while pos + 9 <= len(data) and len(steps) < MAX_STEPS:
        op, a = data[pos], data[pos + 1]
        b = int.from_bytes(data[pos + 2 : pos + 4], "big")
        c = int.from_bytes(data[pos + 4 : pos + 8], "big")
        n = data[pos + 8] % 25
        blob = data[pos + 9 : pos + 9 + n]
        steps.append((op, a, b, c, blob))
        pos += 9 + n
    return mode, size, back, steps


def test_one_input(data: bytes) -> None:
    mode, size, back_size, steps = parse(data)
    h = FlowHarness(PAYLOAD[: size & 0x7FFF], BACK[:back_size], hostile=bool(mode & 1),
                    memory_limit=8 * 1024 if mode & 2 else None,
                    peer_window=4 * 1024 if mode & 4 else 64 * 1024,
                    hostile_rate=mode >> 4, keyed=bool(mode & 8),
                    encrypt=not size & 0x8000)
    for raw in steps:
        h.step(raw)
    h.finish()


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
