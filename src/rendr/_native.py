"""Which build runs: the mypyc-compiled modules of :mod:`rendr.core` (the engine) and
:mod:`rendr.aio` (its per-message driver), or their sources.

The build (``setup.py``) may compile the modules named in :data:`COMPILED` (the engine's
:data:`ENGINE_MODULES` and the driver's :data:`DRIVER_MODULES`, one mypyc group) and
records the SHA-256 of each source it compiled in :data:`SOURCES_RECORD` beside them, one
record per package.  When ``rendr`` is imported, :func:`guard` checks every compiled
module of both packages against its record: one whose ``.py`` changed since it was built
(an edited editable install), or that the record does not list (left over from another
build), is stale.  Then *every* module of both packages is loaded from its source
(compiled modules call each other directly, across the two packages too, so a mix would
run old code) and a warning says how to rebuild.  A stale build never shadows edited
code.

This module must stay interpreted and use the standard library only: ``setup.py``
reads it before anything is built.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

__all__ = ["COMPILED", "DRIVER_MODULES", "ENGINE_MODULES", "SOURCES_RECORD", "guard",
           "is_compiled", "stale_modules"]

ENGINE_MODULES: tuple[str, ...] = (
    "bbr",
    "builder",
    "congestion",
    "cookie",
    "crypto",
    "delivery",
    "dgram",
    "fairness",
    "flow",
    "framing",
    "handshake",
    "inbound",
    "inflight",
    "lifecycle",
    "loss",
    "memory",
    "migration",
    "modeswitch",
    "packetizer",
    "packets",
    "path",
    "pathreport",
    "paths",
    "rangeset",
    "receiver",
    "records",
    "recovery",
    "recvbuf",
    "reliability",
    "scheduler",
    "sender",
    "sendbuf",
    "types",
    "window",
    "wire",
)
"""The ``rendr.core`` submodules a compiled build compiles.

Not compiled: ``__init__`` (it runs :func:`guard`); ``session``, ``opening``,
``admission`` and ``dialing`` (once per carrier handshake, nothing to gain); and
``events`` and ``stats``: public frozen dataclasses that applications copy, pickle,
inspect with ``vars()`` or subclass, which compiled (native) classes do not all allow,
for no measurable gain (they are built once per event or ``stats()`` call); and
``bufpool``, which reuses buffers once their reference counts show nothing refers to
them: its counts assume the interpreter's own references (compiled code may hold
borrowed ones, which would hide a live view: a buffer written over under it).
``records`` is compiled (its small-record seal and open run per message); it takes
and fills shared buffers only through the interpreted ``bufpool``, and holds owned
references to them like interpreted code, so the reuse checks stay exact.
"""

DRIVER_MODULES: tuple[str, ...] = ("driver",)
"""The ``rendr.aio`` submodules a compiled build compiles (with the engine, in one group:
the driver calls the engine natively).  ``driver`` is the per-message path between the
carriers, the engine and the application (``FlowDriver``: receive, flush, timer, waking;
the coroutines that ``Conn.read``, ``Conn.readexactly`` and ``Conn.write`` return).

Not compiled: ``conn``, ``packetconn`` and ``endpoint`` (the application's classes, which
it may subclass or patch) and every other ``rendr.aio`` module (once per connection or
path); the carriers (``rendr.carriers``: asyncio protocol subclasses, and the interface
applications implement).
"""

PACKAGE = "rendr.core"
COMPILED: dict[str, tuple[str, ...]] = {PACKAGE: ENGINE_MODULES, "rendr.aio": DRIVER_MODULES}
"""Every compiled module, by package (one mypyc group: stale anywhere, sources everywhere)."""

_HERE = os.path.dirname(os.path.abspath(__file__))


def package_dir(package: str) -> str:
    """The directory of ``rendr.<sub>`` beside this file (``rendr.core`` -> ``.../core``)."""
    return os.path.join(_HERE, *package.split(".")[1:])


SOURCES_RECORD = "_compiled_sources.sha256"
"""Written by the build beside the compiled modules: one ``<sha256>  <module>.py`` line
per compiled module (the format of ``sha256sum``)."""


def source_digest(path: str) -> str:
    """SHA-256 (hex) of a file's bytes."""
    import hashlib  # only when a compiled engine is present

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def format_record(digests: dict[str, str]) -> str:
    """The text of :data:`SOURCES_RECORD` for ``{module: sha256}``."""
    return "".join(f"{digest}  {name}.py\n" for name, digest in sorted(digests.items()))


def parse_record(text: str) -> dict[str, str]:
    """``{module: sha256}`` from the text of :data:`SOURCES_RECORD`."""
    record = {}
    for line in text.splitlines():
        digest, _, filename = line.partition("  ")
        if filename.endswith(".py"):
            record[filename[:-3]] = digest
    return record


def compiled_modules(directory: str) -> list[str]:
    """The modules in ``directory`` that exist as an extension this interpreter loads."""
    try:
        files = sorted(os.listdir(directory))
    except OSError:
        return []
    names = []
    for f in files:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:  # e.g. .cpython-311-...so, .so
            name = f[: -len(suffix)]
            if f.endswith(suffix) and name.isidentifier():
                names.append(name)
                break
    return sorted(set(names))


def stale_modules(directory: str) -> list[str]:
    """The compiled modules in ``directory`` that must not be used.

    A compiled module is stale when a ``.py`` beside it differs from the source it was
    compiled from, or is not in the build's record (missing or unreadable record: all
    are).  A compiled module without a ``.py`` beside it is all there is: used.
    """
    compiled = [name for name in compiled_modules(directory)
                if os.path.exists(os.path.join(directory, name + ".py"))]
    if not compiled:
        return []
    try:
        with open(os.path.join(directory, SOURCES_RECORD), encoding="utf-8") as f:
            record = parse_record(f.read())
    except (OSError, ValueError):
        return compiled
    return [name for name in compiled
            if record.get(name) != source_digest(os.path.join(directory, name + ".py"))]


class SourceOnlyFinder:
    """A meta-path finder that loads the modules of some packages from their ``.py``."""

    def __init__(self, *packages: str) -> None:
        self.packages = frozenset(packages)

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        parent, _, name = fullname.rpartition(".")
        if parent not in self.packages:
            return None
        for directory in path or ():
            source = os.path.join(directory, name + ".py")
            if os.path.exists(source):
                return importlib.util.spec_from_file_location(fullname, source)
        return None


_guarded: list[str] | None = None


def guard(directories: dict[str, str] | None = None) -> list[str]:
    """Called by ``rendr/__init__.py`` before it imports any other module of ``rendr``
    (and again, at no cost, by ``rendr/core/__init__.py``).

    ``directories``: ``{package: directory}`` to check (tests; by default the packages of
    :data:`COMPILED` beside this file).  Returns the stale compiled modules found, as
    ``package.module`` (then the sources of every package are used instead).
    """
    global _guarded
    default = directories is None
    if default and _guarded is not None:
        return _guarded
    dirs = directories or {package: package_dir(package) for package in COMPILED}
    stale = [f"{package}.{name}" for package, directory in dirs.items()
             for name in stale_modules(directory)]
    if stale and not any(isinstance(f, SourceOnlyFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, SourceOnlyFinder(*dirs))
        files = ", ".join(m.replace(".", "/") + ".py" for m in stale)
        warnings.warn(
            f"rendr: the compiled build in {_HERE} is stale (built from other sources "
            f"than {files}): running the pure-Python engine and driver instead. Rebuild: "
            "`RENDR_COMPILE=1 pip install -e .` (compiled) or `pip install -e .` (pure, "
            "removes the stale files).",
            RuntimeWarning,
            stacklevel=2,
        )
    if default:
        _guarded = stale
    return stale


def is_compiled() -> bool:
    """Whether every compiled-build module (:data:`COMPILED`: the engine and its driver)
    imported so far, and at least one, is compiled."""
    files = [getattr(sys.modules.get(f"{package}.{name}"), "__file__", None)
             for package, names in COMPILED.items() for name in names]
    loaded = [f for f in files if f is not None]
    return bool(loaded) and all(
        f.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)) for f in loaded
    )
