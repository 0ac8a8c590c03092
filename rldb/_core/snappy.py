"""Snappy compression, the raw format LevelDB stores blocks in (csrc/snappy.c)."""
from rldb._core.loader import as_buffer, check, ffi, lib

__all__ = ["snappy_compress", "snappy_decompress"]


def snappy_compress(data):
    cap = lib.rldb_snappy_max_compressed(len(data))
    out = ffi.new("uint8_t[]", cap)
    n = ffi.new("size_t *")
    check(lib.rldb_snappy_compress(as_buffer(data), len(data), out, cap, n), "compress")
    return ffi.unpack(ffi.cast("char *", out), n[0])


def snappy_decompress(data):
    size = ffi.new("size_t *")
    buf = as_buffer(data)
    check(lib.rldb_snappy_uncompressed_length(buf, len(data), size), "compressed data")
    out = ffi.new("uint8_t[]", max(size[0], 1))
    check(lib.rldb_snappy_decompress(buf, len(data), out, size[0], size), "compressed data")
    return ffi.unpack(ffi.cast("char *", out), size[0])
