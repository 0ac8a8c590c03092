"""SSTable blocks (csrc/block.c): the trailer's checksum and compression
type, the entries of a data or index block, a point lookup inside one block,
and a table's decoded index."""
from array import array

from rldb._core.loader import as_buffer, check, ffi, lib
from rldb._core.memtable import MAX_SEQUENCE, found_entry
from rldb._core.varint import decode_varint
from rldb.errors import CorruptionError

__all__ = ["BLOCK_TRAILER", "BLOCK_RAW", "BLOCK_SNAPPY", "COMPRESSION", "verify_block",
           "unwrap_block", "decode_block", "block_get", "BlockIndex"]

BLOCK_TRAILER = lib.RLDB_BLOCK_TRAILER
BLOCK_RAW = lib.RLDB_BLOCK_RAW
BLOCK_SNAPPY = lib.RLDB_BLOCK_SNAPPY
COMPRESSION = {"none": BLOCK_RAW, "snappy": BLOCK_SNAPPY}


def verify_block(data):
    """Raises CorruptionError unless data (contents + trailer) has a good checksum."""
    check(lib.rldb_block_verify(as_buffer(data), len(data)), "block")


def unwrap_block(data):
    """The contents of a stored block (contents + trailer): checksum verified,
    decompressed when it was stored compressed."""
    size = ffi.new("size_t *")
    buf = as_buffer(data)
    check(lib.rldb_block_contents_size(buf, len(data), size), "block")
    if data[-BLOCK_TRAILER] == BLOCK_RAW:
        return bytes(data[:-BLOCK_TRAILER])
    out = ffi.new("uint8_t[]", max(size[0], 1))
    check(lib.rldb_block_unwrap(buf, len(data), out, size[0], size), "compressed block")
    return ffi.unpack(ffi.cast("char *", out), size[0])


def decode_block(block, check_order=False):
    """Every (key, value) of a block, keys decoded in full."""
    buf = as_buffer(block)
    counts = ffi.new("size_t[3]")
    check(lib.rldb_block_measure(buf, len(block), counts, counts + 1, counts + 2), "block")
    n, key_bytes, value_bytes = counts[0], counts[1], counts[2]
    keys = bytearray(key_bytes)
    values = bytearray(value_bytes)
    key_ends = array("I", bytes(4 * n))
    value_ends = array("I", bytes(4 * n))
    count = ffi.new("size_t *")
    check(lib.rldb_block_decode(
        buf, len(block), as_buffer(keys), key_bytes, ffi.from_buffer("uint32_t[]", key_ends),
        as_buffer(values), value_bytes, ffi.from_buffer("uint32_t[]", value_ends), n, count,
        1 if check_order else 0), "block")
    keys, values = bytes(keys), bytes(values)
    out, k0, v0 = [], 0, 0
    for k1, v1 in zip(key_ends, value_ends):
        out.append((keys[k0:k1], values[v0:v1]))
        k0, v0 = k1, v1
    return out


def block_get(block, key, snapshot=MAX_SEQUENCE):
    """None, or (kind, value) of the newest version of key <= snapshot in block."""
    found = ffi.new("rldb_found *")
    if check(lib.rldb_block_get(block, len(block), key, len(key), snapshot, found), "block"):
        return found_entry(found)
    return None


class BlockIndex:
    """A table's decoded index block: the last key of every data block and its
    handle, searchable from C with the table's bloom filter."""

    __slots__ = ("count", "_keys", "_ends", "handles", "last_keys")

    def __init__(self, index_block):
        entries = decode_block(index_block, check_order=True)
        self.count = len(entries)
        self.last_keys = [k for k, _ in entries]
        self._keys = b"".join(self.last_keys)
        ends, total = [], 0
        for k in self.last_keys:
            total += len(k)
            ends.append(total)
        self._ends = ffi.new("uint32_t[]", ends or [0])
        self.handles = []
        for _, handle in entries:
            offset, pos = decode_varint(handle)
            size, pos = decode_varint(handle, pos)
            if pos != len(handle):
                raise CorruptionError("index entry has trailing bytes")
            self.handles.append((offset, size))

    def search(self, key, snapshot=MAX_SEQUENCE):
        """The first block that may hold key (count when past the end)."""
        return lib.rldb_index_search(self._keys, self._ends, self.count, key, len(key), snapshot)

    def locate(self, bloom_filter, key, snapshot=MAX_SEQUENCE):
        """-1 when the filter rules key out, else the block to read (count: none)."""
        block = ffi.new("long *")
        if check(lib.rldb_table_locate(bloom_filter, len(bloom_filter), self._keys, self._ends,
                                       self.count, key, len(key), snapshot, block),
                 "bloom filter"):
            return block[0]
        return -1
