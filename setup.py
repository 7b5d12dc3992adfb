"""Build script: compile the sans-I/O engine (``rendr.core``) and its per-message driver
(``rendr.aio.driver``) with mypyc when possible.

pyproject.toml holds the metadata; this file only decides whether to add extension
modules.  The pure-Python package is complete on its own, so compiling is optional:

- ``RENDR_COMPILE=1``: compile; fail if that is impossible.
- ``RENDR_COMPILE=0``: pure Python.
- unset (or ``auto``): a regular build (``pip install .``, a wheel) compiles when
  mypyc and a C compiler are available, else builds pure with a message saying why;
  an editable install (``pip install -e .``) stays pure, so edited sources are what
  runs.

Every build first deletes the compiled files an earlier in-place (editable) build
left in ``src/`` (and in ``build/lib*``): an old ``.so`` never shadows a ``.py``.  At
import time ``rendr/_native.py`` checks the same thing again (see ``guard``).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import platform
import shutil
import sys
import sysconfig
import time
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "src")


def _load_native() -> Any:
    """rendr/_native.py (standard library only): the module list and record name."""
    spec = importlib.util.spec_from_file_location(
        "_rendr_native", os.path.join(SRC, "rendr", "_native.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NATIVE = _load_native()
PACKAGE_DIRS = {package: os.path.join(SRC, *package.split("."))
                for package in NATIVE.COMPILED}
"""Each compiled package's directory in ``src`` (``rendr.core``, ``rendr.aio``)."""
COMPILED_SOURCES = [os.path.join("src", *package.split("."), f"{m}.py")
                    for package, names in NATIVE.COMPILED.items() for m in names]
"""The engine's and the driver's sources: one mypyc group (they call each other natively)."""


def _say(message: str) -> None:
    print(f"rendr build: {message}", file=sys.stderr, flush=True)


def _remove_stale_artifacts() -> None:
    """Delete the compiled files an earlier build left beside the sources (all of them:
    the package has no other extension modules) and in setuptools' build/lib*."""
    patterns = [os.path.join(SRC, "*__mypyc*"),
                *(os.path.join(d, NATIVE.SOURCES_RECORD) for d in PACKAGE_DIRS.values()),
                os.path.join(HERE, "build", "lib*", "*__mypyc*")]
    built = glob.glob(os.path.join(HERE, "build", "lib*", "rendr"))
    for base in [os.path.join(SRC, "rendr"), *built]:
        patterns += [os.path.join(base, "**", "*.so"), os.path.join(base, "**", "*.pyd")]
    removed = sorted({path for pattern in patterns for path in glob.glob(pattern, recursive=True)})
    for path in removed:
        os.remove(path)
    if removed:
        _say(f"removed {len(removed)} compiled file(s) of an earlier build: "
             + ", ".join(os.path.relpath(p, HERE) for p in removed))


def _why_not_compile() -> str | None:
    """Why this interpreter/machine cannot compile the engine (None: it can)."""
    if platform.python_implementation() != "CPython":
        return f"mypyc needs CPython, this is {platform.python_implementation()}"
    if importlib.util.find_spec("mypyc") is None:
        return "mypyc is not installed (it ships with mypy)"
    include = sysconfig.get_paths().get("include") or ""
    if not os.path.exists(os.path.join(include, "Python.h")):
        return f"the Python headers are missing (no Python.h in {include!r})"
    if os.name != "nt":  # MSVC is located by setuptools itself; a failure falls back
        cc = (sysconfig.get_config_var("CC") or "cc").split()
        compiler = os.environ.get("CC", "").split() or cc
        if not compiler or shutil.which(compiler[0]) is None:
            return f"no C compiler found ({' '.join(compiler) or 'CC'} is not on PATH)"
    return None


class BuildExt(build_ext):
    """Build the extensions; record what they were compiled from; in auto mode, a
    compiler failure falls back to the pure package instead of failing the install."""

    optional = False

    def run(self) -> None:
        start = time.monotonic()
        try:
            super().run()
        except Exception as exc:  # compiler, linker or platform errors (they vary)
            if not self.optional:
                raise
            detail = str(exc) if len(str(exc)) < 300 else str(exc)[:300] + "..."
            _say(f"compiling the engine failed ({type(exc).__name__}: {detail}); "
                 "building the pure-Python engine instead")
            self._drop_extensions()
            return
        self._write_record()
        if self.extensions:
            _say(f"C compiler: {time.monotonic() - start:.1f} s")

    def _drop_extensions(self) -> None:
        """Remove whatever part of the compiled engine did get built."""
        for ext in self.extensions:
            path = os.path.join(self.build_lib, self.get_ext_filename(ext.name))
            if os.path.exists(path):
                os.remove(path)
        self.extensions = []

    def _write_record(self) -> None:
        """One record per compiled package (``rendr/core``, ``rendr/aio``)."""
        for package, names in NATIVE.COMPILED.items():
            source_dir = PACKAGE_DIRS[package]
            record = {m: NATIVE.source_digest(os.path.join(source_dir, f"{m}.py"))
                      for m in names}
            targets = [os.path.join(self.build_lib, *package.split("."))]
            if self.inplace or getattr(self, "editable_mode", False):
                targets.append(source_dir)
            for target in targets:
                os.makedirs(target, exist_ok=True)
                with open(os.path.join(target, NATIVE.SOURCES_RECORD), "w",
                          encoding="utf-8") as f:
                    f.write(NATIVE.format_record(record))

    def get_outputs(self) -> list[str]:
        outputs: list[str] = super().get_outputs()
        if self.extensions:
            outputs += [os.path.join(self.build_lib, *package.split("."), NATIVE.SOURCES_RECORD)
                        for package in NATIVE.COMPILED]
        return outputs


def _extensions() -> tuple[list[Any], bool]:
    """(ext_modules, optional): what to compile, and whether a failure may fall back."""
    setting = os.environ.get("RENDR_COMPILE", "auto").strip().lower() or "auto"
    if setting not in ("0", "1", "auto"):
        raise SystemExit(f"RENDR_COMPILE must be 0, 1 or auto, not {setting!r}")
    editable = any(arg in ("editable_wheel", "develop") for arg in sys.argv)
    if setting == "0":
        _say("RENDR_COMPILE=0: pure-Python engine")
        return [], False
    if setting == "auto" and editable:
        _say("editable install: pure-Python engine (RENDR_COMPILE=1 compiles it)")
        return [], False
    reason = _why_not_compile()
    if reason is not None:
        if setting == "1":
            raise SystemExit(f"rendr build: RENDR_COMPILE=1 but cannot compile: {reason}")
        _say(f"cannot compile the engine ({reason}): pure-Python engine (same behaviour, "
             "slower; RENDR_COMPILE=0 silences this)")
        return [], False
    from mypyc.build import mypycify

    _say(f"compiling the engine with mypyc: {', '.join(NATIVE.ENGINE_MODULES)}; and the "
         f"driver: {', '.join(NATIVE.DRIVER_MODULES)}")
    start = time.monotonic()
    try:
        extensions = mypycify(COMPILED_SOURCES, opt_level="3", debug_level="0",
                              target_dir=os.path.join("build", "mypyc"))
    except (Exception, SystemExit) as exc:  # mypyc reports type errors with SystemExit
        if setting == "1":
            raise
        _say(f"mypyc failed ({exc!r}): pure-Python engine")
        return [], False
    _say(f"mypyc (type check and C generation): {time.monotonic() - start:.1f} s")
    return extensions, setting == "auto"


_BUILD_COMMANDS = {"build", "build_ext", "bdist", "bdist_wheel", "bdist_egg", "editable_wheel",
                   "develop", "install"}


def _is_build_command() -> bool:
    """Whether setup.py runs to build or install (not only to produce metadata)."""
    return any(arg in _BUILD_COMMANDS for arg in sys.argv[1:])


if _is_build_command():
    _remove_stale_artifacts()
    EXT_MODULES, OPTIONAL = _extensions()
else:
    EXT_MODULES, OPTIONAL = [], False
BuildExt.optional = OPTIONAL

setup(ext_modules=EXT_MODULES, cmdclass={"build_ext": BuildExt})
