"""Shared parts of the issue-9 gates (``bench/g2_echo.py``, ``bench/bond_gate.py``,
``bench/race_gate.py``): checks and verdicts, percentiles, echo messages, mode
availability, and the per-path statistics both ends report.

Nothing here prints: the gate scripts do.
"""
