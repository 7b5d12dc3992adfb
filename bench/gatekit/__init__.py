"""Shared parts of the issue-9 gates: checks and verdicts, percentiles, echo messages
and per-path statistics (:mod:`.common`), and the child-process handlers of the bond
gate (:mod:`.bulk`) and the race gate (:mod:`.packet_echo`).

The gates (each prints a report and a verdict; exit code 0 pass, 1 fail)::

    PYTHONPATH=src python3 bench/g2_echo.py --short      # G2 echo + migrations, ~65 s
    sudo PYTHONPATH=src python3 bench/bond_gate.py --short   # bond efficiency, ~20 s
    PYTHONPATH=src python3 bench/race_gate.py --short    # race, ~35 s

Without ``--short`` they run the full versions (30 min; ~3 min; ~6 min). While the
engine has no RACE/BOND, the goals that need them are UNAVAILABLE and fail the gate
unless ``--allow-unavailable``.

Nothing here prints: the gate scripts do.
"""
