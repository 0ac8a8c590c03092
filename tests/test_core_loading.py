"""rldb._core: only the loader imports the compiled module, it refuses one
built for another package version, every concept module loads, and check()
turns each C status into its rldb exception."""
import ast
import errno
import importlib
import pathlib
import subprocess
import sys

import pytest

import rldb._core
from rldb._core import loader
from rldb._core.loader import check, error_for, ffi, lib
from rldb._version import __version__
from rldb.errors import (
    ClosedError,
    CorruptionError,
    InvalidArgumentError,
    NotSupportedError,
    RldbError,
    StorageIOError,
)

PACKAGE = pathlib.Path(rldb._core.__file__).parent


def test_loaded_module_matches_package():
    assert ffi.string(lib.rldb_version()).decode() == __version__


def test_version_mismatch_is_refused():
    code = ("import rldb._version as v; v.__version__ = '0.0.0-other'\n"
            "try:\n    import rldb._core\nexcept ImportError as e:\n    print('refused:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("refused:")
    assert "0.0.0-other" in out.stdout and __version__ in out.stdout


def _native_importers(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
        if any(name.endswith("_rldb_core") for name in names):
            return True
    return False


def test_only_the_loader_imports_the_native_module():
    importers = sorted(p.name for p in PACKAGE.glob("*.py") if _native_importers(p))
    assert importers == ["loader.py"]


@pytest.mark.parametrize("concept", rldb._core.CONCEPTS)
def test_each_concept_module_loads_and_says_what_it_wraps(concept):
    module = importlib.import_module(f"rldb._core.{concept}")
    assert "csrc/" in module.__doc__  # names the C file it wraps
    assert module.__all__, concept
    for name in module.__all__:
        assert hasattr(module, name), f"{concept}.{name}"


def test_every_concept_module_is_listed():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "loader"}
    assert modules == set(rldb._core.CONCEPTS)


def test_the_package_exports_no_flat_names():
    """Callers name the concept module; the single module's flat names are gone."""
    for name in ("crc32c", "Merger", "Bitcask", "check"):
        assert not hasattr(rldb._core, name), name
    with pytest.raises(ImportError):
        exec("from rldb._core import crc32c")


CORRUPTION = ["RLDB_ERR_TRUNCATED", "RLDB_ERR_OVERFLOW", "RLDB_ERR_CORRUPT", "RLDB_ERR_CHECKSUM",
              "RLDB_BC_HINT_SIZE"]
EXPECTED = {name: CorruptionError for name in CORRUPTION} | {
    "RLDB_ERR_BUFFER_TOO_SMALL": InvalidArgumentError,
    "RLDB_ERR_INVALID_ARGUMENT": InvalidArgumentError,
    "RLDB_ERR_NO_MEMORY": MemoryError,
    "RLDB_ERR_NOT_SUPPORTED": NotSupportedError,
    "RLDB_ERR_IO": StorageIOError,
    "RLDB_BC_CLOSED": ClosedError,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_check_maps_each_status_to_its_exception(name):
    rc = getattr(lib, name)
    with pytest.raises(EXPECTED[name]) as info:
        check(rc, "op")
    assert type(info.value) is EXPECTED[name]
    if name == "RLDB_ERR_IO":
        assert info.value.errno == errno.EIO and "op failed" in str(info.value)
    elif name == "RLDB_BC_CLOSED":
        assert str(info.value) == "the engine is closed"
    else:
        assert str(info.value).startswith("op: " + loader.status_text(rc))


def test_every_error_status_is_mapped():
    errors = [name for name in dir(lib) if name.startswith("RLDB_ERR_") and name != "RLDB_ERR_LAST"]
    errors += ["RLDB_BC_CLOSED", "RLDB_BC_HINT_SIZE"]
    assert sorted(errors) == sorted(EXPECTED)


def test_check_passes_non_errors_through():
    assert check(0) == 0
    assert check(lib.RLDB_BC_NEED_ROLL) == lib.RLDB_BC_NEED_ROLL
    assert check(7, "op") == 7


def test_an_unknown_status_is_an_rldb_error_with_its_code():
    with pytest.raises(RldbError, match=r"op: unknown error code \(code -999\)"):
        check(-999, "op")


def test_corruption_carries_where():
    exc = error_for(lib.RLDB_ERR_CHECKSUM, "get", path="/d/1.data", offset=42)
    assert (exc.path, exc.offset) == ("/d/1.data", 42)
    assert str(exc) == "get: checksum mismatch in /d/1.data at offset 42"


def test_io_errors_carry_the_errno_and_where():
    exc = error_for(lib.RLDB_ERR_IO, "get", err=errno.ENOSPC, path="/d/1.data", offset=7)
    assert exc.errno == errno.ENOSPC
    assert str(exc) == f"[Errno {errno.ENOSPC}] get failed: No space left on device (/d/1.data at offset 7)"
    bare = error_for(lib.RLDB_ERR_IO)
    assert (bare.errno, bare.strerror) == (errno.EIO, "Input/output error")


def test_status_messages():
    for rc in range(lib.RLDB_ERR_LAST + 1, 1):
        assert loader.status_text(rc) not in ("", "unknown error code")
    for rc in (lib.RLDB_BC_ABSENT, lib.RLDB_BC_CLOSED, lib.RLDB_BC_HINT_SIZE):
        assert loader.status_text(rc) != "unknown error code"
    assert loader.status_text(-999) == "unknown error code"
    assert loader.status_text(5) == "unknown error code"
