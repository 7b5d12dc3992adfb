"""Which engine runs: the mypyc-compiled modules of :mod:`rendr.core`, or their sources.

The build (``setup.py``) may compile the modules named in :data:`ENGINE_MODULES` and
records the SHA-256 of each source it compiled in :data:`SOURCES_RECORD` beside them.
When ``rendr.core`` is imported, :func:`guard` checks every compiled module there
against that record: one whose ``.py`` changed since it was built (an edited editable
install), or that the record does not list (left over from another build), is stale.
Then *every* module of ``rendr.core`` is loaded from its source (compiled modules call
each other directly, so a mix would run old code) and a warning says how to rebuild.
A stale build never shadows edited code.

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

__all__ = ["ENGINE_MODULES", "SOURCES_RECORD", "guard", "is_compiled", "stale_modules"]

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
``bufpool`` and ``records``, which reuse buffers once their reference counts show
nothing refers to them (compiled code may hold borrowed references, which would
hide a live view: a buffer written over under it).
"""

PACKAGE = "rendr.core"
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
    """A meta-path finder that loads the modules of one package from their ``.py``."""

    def __init__(self, package: str) -> None:
        self.package = package

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        parent, _, name = fullname.rpartition(".")
        if parent != self.package:
            return None
        for directory in path or ():
            source = os.path.join(directory, name + ".py")
            if os.path.exists(source):
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def guard(package_dir: str) -> list[str]:
    """Called by ``rendr/core/__init__.py`` before it imports any engine module.

    Returns the stale compiled modules found (then the sources are used instead).
    """
    stale = stale_modules(package_dir)
    if stale and not any(isinstance(f, SourceOnlyFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, SourceOnlyFinder(PACKAGE))
        warnings.warn(
            f"rendr: the compiled engine in {package_dir} is stale (built from other "
            f"sources than {', '.join(m + '.py' for m in stale)}): running the pure-Python "
            "engine instead. Rebuild: `RENDR_COMPILE=1 pip install -e .` (compiled) or "
            "`pip install -e .` (pure, removes the stale files).",
            RuntimeWarning,
            stacklevel=2,
        )
    return stale


def is_compiled() -> bool:
    """Whether every engine module imported so far (and at least one) is compiled."""
    files = [getattr(sys.modules.get(f"{PACKAGE}.{name}"), "__file__", None)
             for name in ENGINE_MODULES]
    loaded = [f for f in files if f is not None]
    return bool(loaded) and all(
        f.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)) for f in loaded
    )
