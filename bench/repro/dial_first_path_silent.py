#!/usr/bin/env python3
"""``dial()`` over two paths fails when the path it sends HELLO on first is silent,
although the other path works.

Found by ``bench/soak.py`` (dials while the listener was slow to accept).  The dialer
connects every path, then sends HELLO on one carrier at a time and waits up to
``handshake_timeout`` (10 s) for its answer; the other carriers sit connected and
silent, so the listener closes them after ``first_frame_timeout`` (3 s).  When the
first HELLO gets no answer, the fallback HELLO goes out on a carrier the listener has
already reset ("carrier closed during handshake"), or, when the first HELLO was only
late, the listener refuses the second one (``DUPLICATE_PATH``): ``dial()`` raises
``HandshakeError`` although one path was fine all along.

Method: a listener, two ``TcpRelay`` in front of it, one of them blackholed (it
accepts, never forwards); ``dial()`` over both, ``--tries`` times (which carrier gets
HELLO first varies).  Exit status 1 if a dial failed.

Usage: ``python3 bench/repro/dial_first_path_silent.py [--tries 4]``
"""

from __future__ import annotations

import argparse
import sys
import time

import rendr
from rendr.testing.relay import TcpRelay


async def once(silent: int) -> tuple[bool, str]:
    ln = await rendr.listen_tcp("127.0.0.1:0")
    relays = [TcpRelay(("127.0.0.1", ln.addrs[0][1])) for _ in range(2)]
    for r in relays:
        await r.start()
    relays[silent].blackhole()
    dialer = rendr.Dialer(paths=[rendr.PathSpec("tcp", f"127.0.0.1:{r.addr[1]}")
                                 for r in relays])
    t = time.monotonic()
    try:
        conn = await dialer.dial()
    except (OSError, rendr.RendrError) as exc:
        ok, text = False, f"FAILED after {time.monotonic() - t:.2f} s: {type(exc).__name__}: {exc}"
    else:
        ok, text = True, f"ok after {time.monotonic() - t:.2f} s (active path {conn.active_path})"
        conn.abort()
    for r in relays:
        r.forward()
        await r.close()
    await ln.close()
    return ok, text


async def main(tries: int) -> int:
    failed = 0
    for i in range(tries):
        ok, text = await once(i % 2)
        failed += not ok
        print(f"path {i % 2} silent: dial {text}", flush=True)
    print(f"{failed}/{tries} dials failed although one of their two paths worked")
    return 1 if failed else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tries", type=int, default=4)
    sys.exit(rendr.run(main(ap.parse_args().tries)))
