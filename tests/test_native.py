"""The compiled (mypyc) engine and driver and their pure-Python fallback: which one runs,
and the rule that a compiled module built from other sources than the ``.py`` beside it
is not used (nor, then, any other compiled module of the build).

``RENDR_EXPECT_COMPILED=1`` (or ``0``) makes the suite fail unless the compiled (or the
pure) engine is the one under test: CI and the wheel builds set it.
"""

from __future__ import annotations

import glob
import importlib
import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import rendr
from rendr import _native

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def _engine_files() -> dict[str, str]:
    """Every module a compiled build compiles (the engine's and the driver's): its file."""
    return {f"{package}.{name}": importlib.import_module(f"{package}.{name}").__file__ or ""
            for package, names in _native.COMPILED.items() for name in names}


def test_the_build_lists() -> None:
    assert _native.COMPILED == {"rendr.core": _native.ENGINE_MODULES,
                                "rendr.aio": _native.DRIVER_MODULES}
    assert "driver" in _native.DRIVER_MODULES
    # the application's classes (which it may subclass) and the carriers stay interpreted
    for name in ("conn", "endpoint", "packetconn", "owner"):
        assert name not in _native.DRIVER_MODULES
    assert _native.package_dir("rendr.aio") == os.path.dirname(
        importlib.import_module("rendr.aio").__file__ or "")


def test_compiled_flag_matches_the_modules_that_run() -> None:
    files = _engine_files()
    native = {name: f.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
              for name, f in files.items()}
    assert rendr.__compiled__ is all(native.values()), files
    if rendr.__compiled__:
        # never compiled: their public dataclasses must copy, pickle and subclass
        for name in ("rendr.core.events", "rendr.core.stats", "rendr.core.bufpool",
                     "rendr.aio.conn", "rendr.aio.owner", "rendr.carriers.tcp"):
            module = importlib.import_module(name)
            assert (module.__file__ or "").endswith(".py"), module.__file__
    else:
        assert not any(native.values()), f"a partly compiled engine runs: {files}"


def test_the_expected_build_runs() -> None:
    expect = os.environ.get("RENDR_EXPECT_COMPILED")
    if expect not in ("0", "1"):
        pytest.skip("RENDR_EXPECT_COMPILED is not set")
    assert rendr.__compiled__ is (expect == "1"), _engine_files()


def _fake_build(directory: Path, names: list[str], record: dict[str, str] | None) -> None:
    for name in names:
        (directory / f"{name}.py").write_text(f"X = {name!r}\n")
        (directory / f"{name}{SUFFIX}").write_bytes(b"not really a compiled module")
    if record is not None:
        (directory / _native.SOURCES_RECORD).write_text(_native.format_record(record))


def test_stale_modules(tmp_path: Path) -> None:
    stale = _native.stale_modules
    (tmp_path / "c.py").write_text("X = 'never compiled'\n")
    assert stale(str(tmp_path)) == []  # nothing compiled
    _fake_build(tmp_path, ["a", "b"], None)
    assert stale(str(tmp_path)) == ["a", "b"]  # no record
    digests = {n: _native.source_digest(str(tmp_path / f"{n}.py")) for n in ("a", "b")}
    _fake_build(tmp_path, ["a", "b"], digests)
    assert _native.compiled_modules(str(tmp_path)) == ["a", "b"]
    assert stale(str(tmp_path)) == []  # as built
    (tmp_path / "b.py").write_text("X = 'edited'\n")
    assert stale(str(tmp_path)) == ["b"]
    (tmp_path / "b.py").unlink()  # a compiled module alone is all there is: used
    assert stale(str(tmp_path)) == []
    (tmp_path / f"c{SUFFIX}").write_bytes(b"left over from another build")
    assert stale(str(tmp_path)) == ["c"]  # not in the record
    (tmp_path / _native.SOURCES_RECORD).write_text("garbage\n")
    assert stale(str(tmp_path)) == ["a", "c"]


def test_record_round_trip() -> None:
    record = {"flow": "ab" * 32, "wire": "cd" * 32}
    assert _native.parse_record(_native.format_record(record)) == record


def test_source_only_finder_skips_compiled_modules(tmp_path: Path) -> None:
    _fake_build(tmp_path, ["a"], None)
    finder = _native.SourceOnlyFinder("pkg")
    spec = finder.find_spec("pkg.a", [str(tmp_path)])
    assert spec is not None and spec.origin == str(tmp_path / "a.py")
    assert isinstance(spec.loader, importlib.machinery.SourceFileLoader)
    assert finder.find_spec("pkg.missing", [str(tmp_path)]) is None
    assert finder.find_spec("elsewhere.a", [str(tmp_path)]) is None


def test_guard_checks_every_package(tmp_path: Path) -> None:
    core, aio = tmp_path / "core", tmp_path / "aio"
    core.mkdir()
    aio.mkdir()
    _fake_build(core, ["a"], {"a": _native.source_digest(str(_write(core / "a.py")))})
    _fake_build(aio, ["d"], None)  # no record: stale
    dirs = {"pkgc": str(core), "pkga": str(aio)}
    before = list(sys.meta_path)
    try:
        with pytest.warns(RuntimeWarning, match="stale"):
            assert _native.guard(dirs) == ["pkga.d"]
        finder = sys.meta_path[0]
        assert isinstance(finder, _native.SourceOnlyFinder)
        # sources for both packages, the one without a stale module too
        assert finder.packages == {"pkgc", "pkga"}
    finally:
        sys.meta_path[:] = before


def _write(path: Path) -> Path:
    path.write_text(f"X = {path.stem!r}\n")
    return path


def _import_copy(root: Path) -> subprocess.CompletedProcess[str]:
    code = ("import warnings; warnings.simplefilter('always'); import rendr, rendr.core.flow;"
            "import rendr.aio.driver;"
            "print(rendr.__compiled__, rendr.core.flow.__file__, rendr.aio.driver.__file__)")
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60, check=True)


@pytest.mark.skipif(not rendr.__compiled__, reason="needs the compiled build")
@pytest.mark.parametrize("edited", ["core/recvbuf.py", "aio/driver.py"])
def test_an_edited_source_is_not_shadowed_by_its_stale_build(tmp_path: Path,
                                                               edited: str) -> None:
    """A copy of this compiled install runs compiled; after editing one engine or driver
    module's source it runs the sources (all of them, in both packages) and warns."""
    package = Path(rendr.__file__).parent
    shutil.copytree(package, tmp_path / "rendr", ignore=shutil.ignore_patterns("__pycache__"))
    for lib in glob.glob(str(package.parent / "*__mypyc*")):  # mypyc's shared library
        shutil.copy(lib, tmp_path)
    as_built = _import_copy(tmp_path)
    assert as_built.stdout.startswith("True ") and "stale" not in as_built.stderr
    assert as_built.stdout.split()[2].endswith(SUFFIX)  # the driver runs compiled
    with open(tmp_path / "rendr" / edited, "a") as f:
        f.write("\n# edited after the build\n")
    edited_run = _import_copy(tmp_path)
    assert edited_run.stdout.split() == ["False", str(tmp_path / "rendr" / "core" / "flow.py"),
                                         str(tmp_path / "rendr" / "aio" / "driver.py")]
    assert "stale" in edited_run.stderr and edited in edited_run.stderr
