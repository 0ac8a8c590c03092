"""rldb._core refuses a compiled module built for another package version."""
import subprocess
import sys

from rldb import _core
from rldb._version import __version__
from rldb.errors import CorruptionError, InvalidArgumentError, NotSupportedError


def test_loaded_module_matches_package():
    assert _core.ffi.string(_core.lib.rldb_version()).decode() == __version__


def test_version_mismatch_is_refused():
    code = ("import rldb._version as v; v.__version__ = '0.0.0-other'\n"
            "try:\n    import rldb._core\nexcept ImportError as e:\n    print('refused:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("refused:")
    assert "0.0.0-other" in out.stdout and __version__ in out.stdout


def test_return_codes_become_exceptions():
    lib = _core.lib
    assert isinstance(_core.error_for(lib.RLDB_ERR_CHECKSUM), CorruptionError)
    assert isinstance(_core.error_for(lib.RLDB_ERR_TRUNCATED), CorruptionError)
    assert isinstance(_core.error_for(lib.RLDB_ERR_INVALID_ARGUMENT), InvalidArgumentError)
    assert isinstance(_core.error_for(lib.RLDB_ERR_NOT_SUPPORTED), NotSupportedError)
    assert isinstance(_core.error_for(lib.RLDB_ERR_NO_MEMORY), MemoryError)
    assert "checksum mismatch" in str(_core.error_for(lib.RLDB_ERR_CHECKSUM, "block"))
    for rc in range(lib.RLDB_ERR_LAST + 1, 1):
        assert _core.ffi.string(lib.rldb_strerror(rc)).decode() not in ("", "unknown error code")
    assert _core.ffi.string(lib.rldb_strerror(-999)) == b"unknown error code"
    assert _core.ffi.string(lib.rldb_strerror(5)) == b"unknown error code"
