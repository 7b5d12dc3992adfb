"""Shared set-up of the atheris harnesses (see README.md).

Imports: the engine from ``src/`` of this checkout (pure Python: atheris instruments
Python bytecode, not a mypyc build; ``RENDR_FUZZ_INSTALLED=1`` uses the installed
``rendr`` instead), and the models and reference parsers of the hypothesis suite
(``tests/fuzz/_common.py``, ``tests/fuzz/_flowpeer.py``, imported as ``fuzz.*``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STRICT = os.environ.get("RENDR_FUZZ_STRICT") == "1"
"""Report the known crashes too (pinned by strict xfail tests in tests/fuzz/) instead
of skipping their inputs."""


def paths() -> None:
    if os.environ.get("RENDR_FUZZ_INSTALLED") != "1":
        sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "tests"))


def cuts_and_rest(data: bytes, most: int = 8) -> tuple[list[int], int, bytes]:
    """``data`` as ``n (1 B) | n cut points (2 B each) | kind (1 B) | rest``."""
    n = data[0] % (most + 1) if data else 0
    cuts = [int.from_bytes(data[1 + 2 * i : 3 + 2 * i], "big") for i in range(n)]
    pos = 1 + 2 * n
    kind = data[pos] if len(data) > pos else 0
    return cuts, kind, data[pos + 1 :]
