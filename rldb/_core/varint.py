"""Base-128 varints, LevelDB's encoding (csrc/varint.c): one value or many
per call."""
from rldb._core.loader import as_buffer, check, ffi, lib
from rldb.errors import InvalidArgumentError

__all__ = ["VARINT64_MAX", "encode_varint", "decode_varint", "encode_varints", "decode_varints"]

VARINT64_MAX = lib.RLDB_VARINT64_MAX
_U64_MAX = (1 << 64) - 1


def _in_range(value):
    if not 0 <= value <= _U64_MAX:
        raise InvalidArgumentError(f"varint value {value} is outside 0..2**64-1")


def encode_varint(value):
    _in_range(value)
    out = ffi.new("uint8_t[]", VARINT64_MAX)
    n = lib.rldb_varint_encode(value, out)
    return bytes(ffi.buffer(out, n))


def decode_varint(data, pos=0):
    """(value, position after it); CorruptionError if truncated or over-long."""
    if not 0 <= pos <= len(data):
        raise InvalidArgumentError(f"position {pos} is outside the buffer")
    value = ffi.new("uint64_t *")
    used = ffi.new("size_t *")
    buf = as_buffer(data)
    check(lib.rldb_varint_decode(buf + pos, len(data) - pos, value, used), "varint")
    return value[0], pos + used[0]


def encode_varints(values):
    values = list(values)
    for v in values:
        _in_range(v)
    cap = len(values) * VARINT64_MAX
    out = ffi.new("uint8_t[]", max(cap, 1))
    written = ffi.new("size_t *")
    check(lib.rldb_varint_encode_many(ffi.new("uint64_t[]", values), len(values),
                                      out, cap, written), "varint")
    return bytes(ffi.buffer(out, written[0]))


def decode_varints(data):
    """Every varint in data; CorruptionError if the last one is cut off."""
    n = len(data)
    values = ffi.new("uint64_t[]", max(n, 1))
    count = ffi.new("size_t *")
    used = ffi.new("size_t *")
    check(lib.rldb_varint_decode_many(as_buffer(data), n, values, n, count, used), "varint")
    return list(values[0:count[0]])
