"""Shared test setup: ``bench/`` on ``sys.path``, as it is for a script run from there,
so that tests import the gates' packages (``g4g5``) by name."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = str(Path(__file__).resolve().parents[1] / "bench")
if BENCH not in sys.path:
    sys.path.append(BENCH)
