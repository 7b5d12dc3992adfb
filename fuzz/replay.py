#!/usr/bin/env python3
"""Run a harness over files without fuzzing: reproduce a crash, or measure what a
corpus covers (under coverage.py).  No atheris instrumentation is applied.

    python3 fuzz/replay.py flow fuzz/corpus/flow            # every file of a corpus
    python3 fuzz/replay.py flow fuzz/artifacts/flow-crash-…  # one reproducer
    python3 -m coverage run --include='*/rendr/core/*' fuzz/replay.py flow fuzz/corpus/flow
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import time
import traceback
from pathlib import Path

import atheris


def main() -> int:
    target, *where = sys.argv[1:]
    atheris.instrument_imports = lambda *a, **k: contextlib.nullcontext()  # type: ignore[assignment]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    harness = importlib.import_module(f"fuzz_{target}")
    files = sorted(f for w in where for f in (Path(w).iterdir() if Path(w).is_dir()
                                               else [Path(w)]) if f.is_file())
    failed = 0
    t0 = time.monotonic()
    for f in files:
        try:
            harness.test_one_input(f.read_bytes())
        except Exception:
            failed += 1
            print(f"== {f}", file=sys.stderr)
            traceback.print_exc()
    print(f"{target}: {len(files)} inputs, {failed} failed, {time.monotonic() - t0:.1f} s",
          file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
