"""Bloom filters over user keys (csrc/bloom.c): built, probed one key or
many at a time; the filter block of an SSTable."""
from rldb._core.loader import as_buffer, check, ffi, lib, packed
from rldb.errors import InvalidArgumentError

__all__ = ["bloom_build", "bloom_may_contain", "bloom_probe_many", "hash128"]


def bloom_build(keys, bits_per_key=10):
    """A filter over keys (bytes); false-positive rate ~1% at 10 bits per key."""
    if not 1 <= bits_per_key <= 64:
        raise InvalidArgumentError(f"bits_per_key must be 1..64, not {bits_per_key}")
    data, lengths, count = packed(keys)
    size = lib.rldb_bloom_size(count, bits_per_key)
    out = bytearray(size)
    check(lib.rldb_bloom_build(data, lengths, count, bits_per_key, as_buffer(out), size),
          "bloom build")
    return bytes(out)


def bloom_may_contain(bloom_filter, key):
    """False only when key was certainly not added."""
    return bool(check(lib.rldb_bloom_may_contain(bloom_filter, len(bloom_filter),
                                                 key, len(key)), "bloom filter"))


def bloom_probe_many(bloom_filter, keys):
    """may_contain for many keys in one call: a bytes of 0/1 flags."""
    data, lengths, count = packed(keys)
    results = bytearray(count)
    check(lib.rldb_bloom_probe_many(bloom_filter, len(bloom_filter), data, lengths, count,
                                    as_buffer(results)), "bloom filter")
    return bytes(results)


def hash128(key):
    """The filter's two 64-bit hashes of key."""
    h = ffi.new("uint64_t[2]")
    lib.rldb_hash128(key, len(key), h, h + 1)
    return h[0], h[1]
