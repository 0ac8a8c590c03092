"""The one door to the compiled C core (rldb._rldb_core).

No other module imports the native module: this one turns every return code
into an exception, converts Python objects to C buffers, and refuses a compiled
module built for another version of the package (a stale build after an
upgrade would otherwise read or write formats it does not understand)."""
from array import array

from rldb._version import __version__
from rldb.errors import (
    CorruptionError,
    InvalidArgumentError,
    NotSupportedError,
    RldbError,
)

try:
    from rldb._rldb_core import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the build
    raise ImportError(
        "the rldb C core is not built; install the package (pip install -e .) "
        "so that setup.py compiles csrc/"
    ) from exc

_built_for = ffi.string(lib.rldb_version()).decode()
if _built_for != __version__:
    raise ImportError(
        f"the rldb C core was built for version {_built_for} but the package is "
        f"{__version__}; rebuild it (pip install -e .)"
    )

_CORRUPT = {lib.RLDB_ERR_TRUNCATED, lib.RLDB_ERR_OVERFLOW, lib.RLDB_ERR_CORRUPT,
            lib.RLDB_ERR_CHECKSUM}


def error_for(rc, context=""):
    """The exception for a negative return code."""
    message = ffi.string(lib.rldb_strerror(rc)).decode()
    if context:
        message = f"{context}: {message}"
    if rc in _CORRUPT:
        return CorruptionError(message)
    if rc in (lib.RLDB_ERR_INVALID_ARGUMENT, lib.RLDB_ERR_BUFFER_TOO_SMALL):
        return InvalidArgumentError(message)
    if rc == lib.RLDB_ERR_NOT_SUPPORTED:
        return NotSupportedError(message)
    if rc == lib.RLDB_ERR_NO_MEMORY:
        return MemoryError(message)
    return RldbError(f"{message} (code {rc})")


def _check(rc, context=""):
    if rc < 0:
        raise error_for(rc, context)
    return rc


def _buffer(data):
    """A uint8_t view of bytes-like data, without a copy."""
    return ffi.from_buffer("uint8_t[]", data)


def _packed(keys):
    """Keys as one buffer plus a uint32 length array, for the batch calls."""
    if not isinstance(keys, (list, tuple)):
        keys = list(keys)
    lengths = array("I", map(len, keys))
    return b"".join(keys), lengths, len(keys)


# ---- CRC-32C -----------------------------------------------------------------

HW_CRC32C = bool(lib.rldb_crc32c_hw_available())


def crc32c(data, crc=0):
    """CRC-32C of data, continuing from crc (0 to start)."""
    return lib.rldb_crc32c_extend(crc, _buffer(data), len(data))


def crc32c_software(data, crc=0):
    """The table implementation, whatever the CPU offers (tests compare the two)."""
    return lib.rldb_crc32c_extend_sw(crc, _buffer(data), len(data))


def crc32c_hardware(data, crc=0):
    """The CPU-instruction implementation; NotSupportedError where the CPU lacks it."""
    out = ffi.new("uint32_t *")
    _check(lib.rldb_crc32c_extend_hw(crc, _buffer(data), len(data), out), "crc32c")
    return out[0]


def mask_crc(crc):
    """LevelDB's masking, so that a CRC stored inside checksummed data stays strong."""
    return lib.rldb_crc32c_mask(crc)


def unmask_crc(masked):
    return lib.rldb_crc32c_unmask(masked)


# ---- varints -----------------------------------------------------------------

VARINT64_MAX = lib.RLDB_VARINT64_MAX
_U64_MAX = (1 << 64) - 1


def encode_varint(value):
    if not 0 <= value <= _U64_MAX:
        raise InvalidArgumentError(f"varint value {value} is outside 0..2**64-1")
    out = ffi.new("uint8_t[]", VARINT64_MAX)
    n = lib.rldb_varint_encode(value, out)
    return bytes(ffi.buffer(out, n))


def decode_varint(data, pos=0):
    """(value, position after it); CorruptionError if truncated or over-long."""
    if not 0 <= pos <= len(data):
        raise InvalidArgumentError(f"position {pos} is outside the buffer")
    value = ffi.new("uint64_t *")
    used = ffi.new("size_t *")
    buf = _buffer(data)
    _check(lib.rldb_varint_decode(buf + pos, len(data) - pos, value, used), "varint")
    return value[0], pos + used[0]


def encode_varints(values):
    values = list(values)
    for v in values:
        if not 0 <= v <= _U64_MAX:
            raise InvalidArgumentError(f"varint value {v} is outside 0..2**64-1")
    cap = len(values) * VARINT64_MAX
    out = ffi.new("uint8_t[]", max(cap, 1))
    written = ffi.new("size_t *")
    _check(lib.rldb_varint_encode_many(ffi.new("uint64_t[]", values), len(values),
                                       out, cap, written), "varint")
    return bytes(ffi.buffer(out, written[0]))


def decode_varints(data):
    """Every varint in data; CorruptionError if the last one is cut off."""
    n = len(data)
    values = ffi.new("uint64_t[]", max(n, 1))
    count = ffi.new("size_t *")
    used = ffi.new("size_t *")
    _check(lib.rldb_varint_decode_many(_buffer(data), n, values, n, count, used), "varint")
    return list(values[0:count[0]])


# ---- bloom filters -------------------------------------------------------------


def bloom_build(keys, bits_per_key=10):
    """A filter over keys (bytes); false-positive rate ~1% at 10 bits per key."""
    if not 1 <= bits_per_key <= 64:
        raise InvalidArgumentError(f"bits_per_key must be 1..64, not {bits_per_key}")
    data, lengths, count = _packed(keys)
    size = lib.rldb_bloom_size(count, bits_per_key)
    out = bytearray(size)
    _check(lib.rldb_bloom_build(data, ffi.from_buffer("uint32_t[]", lengths), count, bits_per_key,
                                _buffer(out), size), "bloom build")
    return bytes(out)


def bloom_may_contain(bloom_filter, key):
    """False only when key was certainly not added."""
    return bool(_check(lib.rldb_bloom_may_contain(bloom_filter, len(bloom_filter),
                                                  key, len(key)), "bloom filter"))


def bloom_probe_many(bloom_filter, keys):
    """may_contain for many keys in one call: a bytes of 0/1 flags."""
    data, lengths, count = _packed(keys)
    results = bytearray(count)
    _check(lib.rldb_bloom_probe_many(bloom_filter, len(bloom_filter), data,
                                     ffi.from_buffer("uint32_t[]", lengths), count, _buffer(results)),
           "bloom filter")
    return bytes(results)


def hash128(key):
    """The filter's two 64-bit hashes of key."""
    h = ffi.new("uint64_t[2]")
    lib.rldb_hash128(key, len(key), h, h + 1)
    return h[0], h[1]
