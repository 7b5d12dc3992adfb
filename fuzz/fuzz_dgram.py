#!/usr/bin/env python3
"""Coverage-guided fuzzing of the datagram path: sealed datagrams, packet-mode frames,
the engine on datagram paths and the udpflow carrier (targets and models in
``tests/fuzz/_dgram.py``, shared with ``tests/fuzz/test_fuzz_dgram.py``).

Input: ``target (1 B) | operations``; the target byte picks ``TARGETS[b % 6]``:
0 the ``DatagramOpener`` (replay window, epochs, tampered / moved / re-numbered /
forged datagrams), 1 ``parse_datagram`` against a reference parser, 2 packet mode
(``PacketReceiver``, MODE, PATH_REPORT and ``PathRates``), 3 a keyed listener
``Flow`` of a packet flow on two datagram paths, 4 the udpflow listener's
datagram parsing (``UdpServer`` over a fake loop and socket), 5 the udpflow
dialer's.  A target raises AssertionError on a model mismatch; any other exception
is a bug too.
"""

from __future__ import annotations

import logging
import sys

import atheris
from _setup import paths

paths()
logging.disable(logging.WARNING)  # an authenticated rogue peer makes the engine log aborts
with atheris.instrument_imports(include=["rendr"]):  # the engine, imported by the models
    from fuzz._dgram import (
        run_engine,
        run_opener,
        run_packets,
        run_parse,
        run_udp_dialer,
        run_udp_listener,
    )

TARGETS = [run_opener, run_parse, run_packets, run_engine, run_udp_listener, run_udp_dialer]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    TARGETS[data[0] % len(TARGETS)](data[1:])


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
