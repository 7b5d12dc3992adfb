"""The soak of ``bench/soak.py`` (issue 7): its parts.

:mod:`.params` (knobs), :mod:`.pattern` (regenerable byte streams and checkers),
:mod:`.proto` (JSON lines between the parent and its children), :mod:`.probe` (fds,
tasks, loop lag of a child), :mod:`.faults` (DROP plan, fault intervals),
:mod:`.common` (flow header, descriptions), :mod:`.listener` and :mod:`.client` (the
two child roles), :mod:`.orchestrate` (the parent), :mod:`.record` (results and
verdict), :mod:`.report` (printing), :mod:`.cli` (flags), :mod:`.child` (a child's
entry).  See ``bench/soak.py`` for the method.
"""
