"""A child process (``soak.py --role listener|client --index I``): hello, config, role."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time

from rendr.aio import runner

from .client import ClientRole
from .listener import ListenerRole
from .params import Params
from .proto import Channel


async def _main(role: str, index: int) -> None:
    ch = Channel()
    await ch.open()
    ch.say("hello", pid=os.getpid(), role=role, index=index)
    cfg = await ch.recv()
    if cfg is None or cfg.get("cmd") != "config":
        raise RuntimeError(f"expected a config command, got {cfg!r}")
    p = Params.from_json(cfg["params"])
    t0 = float(cfg["t0"])
    _log_setup(f"{role}{index}", t0, p.debug)
    if role == "listener":
        await ListenerRole(ch, p, t0).main()
    else:
        await ClientRole(ch, p, index, t0, cfg["fault_log"]).main()


def _log_setup(name: str, t0: float, debug: bool) -> None:
    """Log lines carry the run's clock (seconds since the parent started), as the
    fault logs and the error reports do."""

    seen: dict[tuple[str, object], int] = {}

    class _Clock(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            # every flow's Dialer logs the same warning (no psk): an identical message
            # (no arguments) passes 3 times
            if not record.args and record.levelno < logging.ERROR:
                key = (record.name, record.msg)
                n = seen[key] = seen.get(key, 0) + 1
                if n > 3:
                    return False
            record.rel = f"{time.monotonic() - t0:10.3f}"
            return True

    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Clock())
    handler.setFormatter(logging.Formatter(f"%(rel)s {name} %(name)s %(levelname)s "
                                           "%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    if debug:
        logging.getLogger("rendr").setLevel(logging.DEBUG)


def child_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", choices=("listener", "client"), required=True)
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"%(asctime)s {a.role}{a.index} %(name)s %(levelname)s "
                               "%(message)s")
    try:
        runner.run(_main(a.role, a.index), use_uvloop=a.loop == "uvloop")
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 1
    return 0
