"""The point lookup of the LSM tree in one C call (csrc/point_lookup.c): the
block cache, what a lookup keeps of each table (filter and index), the tables
of one version by level, and the lookup itself over memtables and levels."""
import threading

from rldb._core.loader import as_buffer, check, error_for, ffi, fields, lib
from rldb._core.memtable import KIND_DELETE, KIND_VALUE
from rldb.errors import CorruptionError

__all__ = ["GET_NOT_FOUND", "GET_FOUND", "GET_NEED_BLOCK", "GET_TOO_BIG", "MAX_LEVELS",
           "SLOW_PATH", "BlockCache", "TableMeta", "Levels", "TreeView"]

GET_NOT_FOUND = lib.RLDB_GET_NOT_FOUND
GET_FOUND = lib.RLDB_GET_FOUND
GET_NEED_BLOCK = lib.RLDB_GET_NEED_BLOCK
GET_TOO_BIG = lib.RLDB_GET_TOO_BIG
MAX_LEVELS = lib.RLDB_MAX_LEVELS
_CACHE_STATS = ("capacity", "bytes", "blocks", "hits", "misses", "evictions",
                "bloom_useful", "bloom_false_positive")


class BlockCache:
    """The C LRU cache of verified data blocks, bounded in bytes."""

    __slots__ = ("_c", "capacity")

    def __init__(self, capacity):
        c = lib.rldb_cache_new(capacity)
        if c == ffi.NULL:
            raise MemoryError("cannot allocate the block cache")
        self._c = ffi.gc(c, lib.rldb_cache_free)
        self.capacity = capacity

    def insert(self, table, block, data):
        """Verifies data (contents + trailer) and caches it; False when too big."""
        return check(lib.rldb_cache_insert(self._c, table, block, as_buffer(data), len(data)),
                     "block") == 1

    def load(self, table, block, fd, offset, size):
        """Reads block `block` of a table from fd, verifies and caches it;
        False when too big to cache.  StorageIOError (with the bare errno
        text: the caller names the file) when the read fails."""
        err = ffi.new("int *")
        rc = lib.rldb_cache_load(self._c, table, block, fd, offset, size, err)
        return check(rc, "" if rc == lib.RLDB_ERR_IO else "block", err=err[0]) == 1

    def erase_table(self, table, nblocks):
        lib.rldb_cache_erase_table(self._c, table, nblocks)

    def stats(self):
        st = ffi.new("rldb_cache_stats *")
        lib.rldb_cache_get_stats(self._c, st)
        return fields(st, _CACHE_STATS)

    def check(self):
        check(lib.rldb_cache_check(self._c), "block cache check")


class TableMeta:
    """What point lookups need of one table, in C memory: filter and index."""

    __slots__ = ("_t", "number")

    def __init__(self, number, bloom_filter, index_block):
        t = lib.rldb_table_new(number, bloom_filter, len(bloom_filter), as_buffer(index_block),
                               len(index_block))
        if t == ffi.NULL:
            raise CorruptionError("index block does not decode")
        self._t = ffi.gc(t, lib.rldb_table_free)
        self.number = number


class Levels:
    """The tables of one version, for rldb_get; keeps its TableMetas alive."""

    __slots__ = ("_lv", "_held")

    def __init__(self):
        lv = lib.rldb_levels_new()
        if lv == ffi.NULL:
            raise MemoryError("cannot allocate levels")
        self._lv = ffi.gc(lv, lib.rldb_levels_free)
        self._held = []

    def add(self, level, meta, smallest, largest):
        self._held.append(meta)
        check(lib.rldb_levels_add(self._lv, level, meta._t, smallest, len(smallest),
                                  largest, len(largest)), "levels")


_tls = threading.local()
SLOW_PATH = object()  # tree_get's answer when the value is too big for its buffer


class TreeView:
    """What a point lookup reads at one moment: the memtables, the tables of
    one version (as Levels) and the block cache.  load_block(table, block,
    offset, size) puts a missing block into the cache (False: too big)."""

    __slots__ = ("state", "_held", "_mt", "_imt", "_lv", "_c", "_load_block")

    def __init__(self, mem, imm, levels, cache, load_block, state=None):
        self.state = state  # the caller's own view of the same moment
        self._held = (mem, imm, levels)  # keeps the C objects alive
        self._mt = mem._mt
        self._imt = imm._mt if imm is not None else ffi.NULL
        self._lv = levels._lv
        self._c = cache._c
        self._load_block = load_block

    def get(self, key, snapshot, _get=lib.rldb_get, _unpack=ffi.unpack, _tls=_tls):
        """None when absent, (kind, value) when found, or SLOW_PATH when the
        value is too big for the C path's buffer."""
        try:
            r = _tls.result
        except AttributeError:
            r = _tls.result = ffi.new("rldb_get_result *")
        rc = _get(self._mt, self._imt, self._lv, self._c, key, len(key), snapshot, 0, r)
        while rc == GET_NEED_BLOCK:
            if not self._load_block(r.need_table, r.need_block, r.need_offset, r.need_size):
                return SLOW_PATH
            rc = _get(self._mt, self._imt, self._lv, self._c, key, len(key), snapshot,
                      r.resume, r)
        if rc == GET_FOUND:
            if r.trailer & 0xFF:
                return KIND_VALUE, _unpack(r.value, r.vlen)
            return KIND_DELETE, b""
        if rc == GET_NOT_FOUND:
            return None
        if rc == GET_TOO_BIG:
            return SLOW_PATH
        raise error_for(rc, "lookup")
