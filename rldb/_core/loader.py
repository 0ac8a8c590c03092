"""The one door to the compiled C core (rldb._rldb_core).

No other module imports the native module.  This one refuses a module built
for another version of the package (a stale build after an upgrade would
otherwise read or write formats it does not understand), and holds what
every wrapper shares: check(), the one place a C status becomes an rldb
exception, and the conversions of Python objects to C buffers."""
import errno as _errno
import os
from array import array

from rldb._version import __version__
from rldb.errors import (
    ClosedError,
    CorruptionError,
    InvalidArgumentError,
    NotSupportedError,
    RldbError,
    StorageIOError,
)

try:
    from rldb._rldb_core import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the build
    raise ImportError(
        "the rldb C core is not built; install the package (pip install -e .) "
        "so that setup.py compiles csrc/"
    ) from exc

__all__ = ["ffi", "lib", "check", "error_for", "status_text", "as_buffer", "packed", "fields"]

_built_for = ffi.string(lib.rldb_version()).decode()
if _built_for != __version__:
    raise ImportError(
        f"the rldb C core was built for version {_built_for} but the package is "
        f"{__version__}; rebuild it (pip install -e .)"
    )

# Every negative status the C core returns, and the exception it becomes.
_EXCEPTION = {
    lib.RLDB_ERR_TRUNCATED: CorruptionError,
    lib.RLDB_ERR_OVERFLOW: CorruptionError,
    lib.RLDB_ERR_CORRUPT: CorruptionError,
    lib.RLDB_ERR_CHECKSUM: CorruptionError,
    lib.RLDB_BC_HINT_SIZE: CorruptionError,
    lib.RLDB_ERR_INVALID_ARGUMENT: InvalidArgumentError,
    lib.RLDB_ERR_BUFFER_TOO_SMALL: InvalidArgumentError,
    lib.RLDB_ERR_NOT_SUPPORTED: NotSupportedError,
    lib.RLDB_ERR_NO_MEMORY: MemoryError,
    lib.RLDB_ERR_IO: StorageIOError,
    lib.RLDB_BC_CLOSED: ClosedError,
}


def status_text(rc):
    """The C core's message for a status."""
    return ffi.string(lib.rldb_strerror(rc)).decode()


def error_for(rc, what="", *, err=0, path=None, offset=None):
    """The exception for a negative status rc of the call `what`.

    err is the errno of a failed system call (RLDB_ERR_IO); path and offset
    say where, when known: a CorruptionError carries them, a StorageIOError
    names them in its message."""
    kind = _EXCEPTION.get(rc)
    if kind is StorageIOError:
        code = err or _errno.EIO
        message = os.strerror(code)
        if what:
            message = f"{what} failed: {message}"
        if path is not None:
            message += f" ({path} at offset {offset})"
        return StorageIOError(code, message)
    text = status_text(rc)
    if kind is ClosedError:
        return ClosedError(text)
    message = f"{what}: {text}" if what else text
    if kind is CorruptionError:
        return CorruptionError(message, path, offset)
    if kind is None:
        return RldbError(f"{message} (code {rc})")
    return kind(message)


def check(rc, what="", *, err=0, path=None, offset=None):
    """rc itself when it is not an error (>= 0); else raises error_for(rc, ...)."""
    if rc < 0:
        raise error_for(rc, what, err=err, path=path, offset=offset)
    return rc


def as_buffer(data):
    """A uint8_t view of bytes-like data, without a copy."""
    return ffi.from_buffer("uint8_t[]", data)


def packed(keys):
    """Keys as one buffer plus a uint32 length array and their count, for the
    batch calls."""
    if not isinstance(keys, (list, tuple)):
        keys = list(keys)
    lengths = array("I", map(len, keys))
    return b"".join(keys), ffi.from_buffer("uint32_t[]", lengths), len(keys)


def fields(struct, names):
    """A C struct's fields as a dict (the stats and usage calls)."""
    return {name: getattr(struct, name) for name in names}
