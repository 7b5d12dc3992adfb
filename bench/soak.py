#!/usr/bin/env python3
"""Soak (issue 7; the long-lived sessions of issue 6): many flows, many faults, long.

A listener process (``rendr.listen_tcp``, a verifying server) and ``--flows`` (200)
concurrent flows from ``--procs`` (4) client processes.  Every flow is dialled over
two paths, each through its own :class:`rendr.testing.relay.TcpRelay`, and lives
20-90 s (a quarter of the flow slots keep one flow for the whole run), then its slot
opens the next one.  Each direction of each flow is a pseudo-random byte stream sent
in bursts (1 B - 64 KiB, random-sized writes of 1 B - 64 KiB, 2 % up to 512 KiB)
2-20 s apart, as interactive sessions do; the receivers compare every byte with the
regenerated stream, and the parent compares both ends' byte counts and SHA-256 at the
end of every flow.  Meanwhile each flow gets, one at a time:

* relay faults every 15-45 s: abortive ``kill()`` (RST), silent ``blackhole()``
  lifted by ``forward()`` after 0.1-2 s, or a stall (``set_rate`` 1-16 KB/s for
  0.5-4 s);
* dialer-side calls every 10-40 s: ``migrate()`` to another live path,
  ``add_path()`` through a random relay (at most 4 path slots), ``remove_path()`` of
  a path whose relay keeps another slot;
* netns mode (root, ``ip``, ``nft``; the default when available): the relays'
  upstream connections cross two real veth paths between two namespaces (listener
  in one, clients in the other), and one real path at a time gets an nftables DROP
  for 0.5-3 s every 20-40 s.  No relay fault starts on the other path from 1 s
  before to 8 s after a DROP, so every flow always keeps a healthy path.

No fault lasts anywhere near the 90 s migration budget, so **any** exception, byte
mismatch, stall (45 s without a byte), unfinished flow or refused ``add_path()``
through a relay that had no fault is an error and fails the run.  (An ``add_path()``
that fails while its relay is faulted is counted, not an error.)  Measured: flows
completed, bytes verified, faults by kind, admin calls, rendr events by kind, errors,
the listener's RSS every ``--sample`` s (``/proc/<pid>/status``) and its growth per
hour after warm-up (least squares; gated at ``--max-rss-growth`` once 10 min of
samples follow the warm-up), the listener's fds / asyncio tasks / objects / pymalloc
blocks at the start, after warm-up and at the end, every process's fds and tasks
after all flows closed (they must be back at their start values; so must the
listener's open flows and promised receive memory), the objects it still holds by
type, its loop lag and the kernel accept queue of its listening socket.  A
cancellation that rendr swallows (seen on Python < 3.12, ``asyncio.wait_for`` inside
``add_path()``) is reported as an anomaly; the side tasks also watch a stop flag, so
it cannot hang the run.

Exit status: 0 PASS, 1 FAIL, 2 usage error, 77 ``--netns`` asked but unavailable.
Without root (or without ``ip``/``nft``) the default is the loopback-relay soak, and
the header says so.  The logs (each process's stderr, ``--debug`` for rendr's DEBUG
lines; every fault and call with its flow and time in ``client*.faults.log``;
``errors.log``) go to ``--rundir`` (default a new ``/tmp/rendr-soak-SEED-*``).  All
times in logs and reports are seconds since the start of the run.

Usage::

    python3 bench/soak.py                          # 30 min, 200 flows in 4 processes
    python3 bench/soak.py --minutes 2              # the short version
    python3 bench/soak.py --minutes 2 --no-netns --seed 7 --json /tmp/soak.json
    python3 bench/soak.py --minutes 10 --flows 400 --procs 8 --knob dead_timeout=0.4
    python3 bench/soak.py --minutes 2 --fault-gap 2:8 --idle 0.2:2   # a failover storm

The parts are the package ``bench/soakkit/`` (params, pattern, proto, probe, faults,
common, listener, client, orchestrate, record, report, cli, child); this file also
starts the child processes (``--role listener|client``).
"""

import sys

if __name__ == "__main__":
    if "--role" in sys.argv[1:]:
        from soakkit.child import child_main

        sys.exit(child_main(sys.argv[1:]))
    from soakkit.cli import main

    sys.exit(main())
