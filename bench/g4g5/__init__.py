"""G4/G5 gates: silent path loss and path recovery on a real network (Linux netns).

Topology: :class:`rendr.testing.netns.NetnsTopology` with two veth paths between a
*client* and a *server* namespace.  One process, one event loop: the loop thread
lives in the client namespace for the whole run; the listener is created while
the thread briefly enters the server namespace (its sockets stay there).

G4 -- failover under load.  Two rendr connections over the same two paths:

* an *echo* connection: the client sends a 64-byte message (sequence number +
  checksum-like pattern) every 10 ms and the server echoes it; every send and
  answer time is recorded and every answer is checked (content and order);
* a *bulk* connection: the client streams ``--bulk-mib`` MiB (optionally shaped
  with ``tc tbf`` so it is still in flight at the drop), the server SHA-256s it
  and answers the digest at EOF.

About ``--drop-after`` seconds into the traffic, the path that is active for both
connections is black-holed (``topo.drop``: nftables DROP, no RST/ICMP).

*Failover time* = from the moment the drop command started until the client
receives the first echo answer to a request that was **sent after the drop
command completed** (such an answer can only have travelled on a working path).
The time of the first answer of any kind received after the drop (including
the requests stuck in flight) is reported too.  Required: failover <= 5 s
(target <= 0.3 s with default settings, issue 6), no exception from any
read/write, every echo answer correct and in order, the bulk SHA-256 identical
(every byte in flight arrives).

G5 -- recovery, same run.  ``topo.undrop`` the path; the dialer must re-dial it on
its own (a PATH_UP whose remote address is the recovered path's server address;
the time after the undrop is reported).  Then ``conn.add_path`` over the
recovered address explicitly, ``conn.migrate`` to the new path, echo 256 KiB
byte-exact over it, and check with ``stats()`` that the active path (both ends)
is the new one and that the bytes flowed on it; ``recv_dups`` must not increase
and ``recv_queue_hwm`` must not grow on either end during this clean migration.

Exit status: 0 all gates passed, 1 a gate failed, 77 skipped (not root, no
netns/nftables), 2 usage error.

Modules: :mod:`.params` (knobs), :mod:`.record` (what one run measured, verdicts),
:mod:`.traffic` (echo and bulk generators and sinks), :mod:`.probes` (paths, stats,
polling), :mod:`.scenarios` (the G4 drop and G5 recovery phases), :mod:`.run` (one
run on a fresh topology), :mod:`.analysis` (pure measurement logic), :mod:`.report`
(printed figures), :mod:`.cli` (flags, repeats, exit status).

Run it with ``python3 bench/g4_g5_netns.py [flags]`` (its docstring has examples) or,
from ``bench/``, ``python3 -m g4g5 [flags]``; ``--help`` lists the flags.
"""
