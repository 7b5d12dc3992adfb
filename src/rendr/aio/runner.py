"""Running a coroutine on the best available event loop (uvloop when installed).

The library itself runs on any asyncio loop; the CLI and the benchmark gates use
:func:`run`, which picks uvloop where it is installed (it is by default on Linux
and macOS) and the standard loop elsewhere.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["loop_factory", "run"]

T = TypeVar("T")


def loop_factory(use_uvloop: bool = True) -> tuple[Callable[[], asyncio.AbstractEventLoop], str]:
    """The event-loop factory to use and a name for it (uvloop if wanted and importable)."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            return asyncio.new_event_loop, "asyncio (uvloop is not installed)"
        return uvloop.new_event_loop, f"uvloop {getattr(uvloop, '__version__', '')}".rstrip()
    return asyncio.new_event_loop, "asyncio"


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool = True,
        debug: bool | None = None) -> T:
    """Run ``main`` to completion on a fresh event loop and return its result.

    Like :func:`asyncio.run`, but on uvloop when it is installed (rendr installs it
    by default on Linux and macOS) and ``use_uvloop`` is true; on the standard loop
    otherwise.  rendr itself works on any asyncio loop: use ``asyncio.run`` or your
    framework's loop if you prefer.

    Example::

        rendr.run(main())
    """
    factory, _ = loop_factory(use_uvloop)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory, debug=debug) as runner:
            return runner.run(main)
    loop = factory()  # pragma: no cover - Python 3.10 has no asyncio.Runner
    try:  # pragma: no cover
        asyncio.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:  # pragma: no cover
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
