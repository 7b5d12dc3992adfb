#!/usr/bin/env python3
"""G4/G5 gates: silent path loss and path recovery on a real network (Linux netns).

The entry point the docs and CI name; the gate itself is the package ``bench/g4g5``
(its docstring describes the method).  Same as ``python -m g4g5`` from ``bench/``.

Usage::

    sudo python bench/g4_g5_netns.py --quick          # CI: 64 MiB at 200 mbit, 1 run
    sudo python bench/g4_g5_netns.py                  # full: 512 MiB at 1 gbit
    sudo python bench/g4_g5_netns.py --quick --repeat 5   # median failover over 5 runs
    sudo python bench/g4_g5_netns.py --quick --debug --log-file /tmp/rendr.log
"""

import sys

from g4g5.cli import main

if __name__ == "__main__":
    sys.exit(main())
