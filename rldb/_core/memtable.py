"""The memtable (csrc/memtable.c): the C skiplist of internal keys, and the
constants of internal keys (kinds, the largest sequence number)."""
from array import array

from rldb._core.loader import check, ffi, lib

__all__ = ["KIND_DELETE", "KIND_VALUE", "MAX_SEQUENCE", "Memtable", "found_entry"]

KIND_DELETE = 0
KIND_VALUE = 1
MAX_SEQUENCE = (1 << 56) - 1


def found_entry(found):
    """(kind, value) of what a point lookup filled into an rldb_found."""
    return found.trailer & 0xFF, ffi.unpack(found.value, found.vlen)


class Memtable:
    """The C skiplist of internal keys.  Callers serialise add(); get() may run
    from any thread at the same time.  Freed when the last reference goes."""

    __slots__ = ("_mt", "__weakref__")

    def __init__(self, seed=0):
        mt = lib.rldb_memtable_new(seed)
        if mt == ffi.NULL:
            raise MemoryError("cannot allocate a memtable")
        self._mt = ffi.gc(mt, lib.rldb_memtable_free)

    def add(self, seq, kind, key, value):
        check(lib.rldb_memtable_add(self._mt, seq, kind, key, len(key), value, len(value)),
              "memtable add")

    def add_batch(self, seq, ops):
        """ops: (kind, key, value) with value b"" for deletes; op i gets seq + i."""
        kinds = bytes(op[0] for op in ops)
        klens = array("I", [len(op[1]) for op in ops])
        vlens = array("I", [len(op[2]) for op in ops])
        data = b"".join(op[1] + op[2] for op in ops)
        check(lib.rldb_memtable_add_batch(
            self._mt, seq, kinds, data, ffi.from_buffer("uint32_t[]", klens),
            ffi.from_buffer("uint32_t[]", vlens), len(ops)), "memtable add")

    def get(self, key, snapshot=MAX_SEQUENCE):
        """None when absent, else (kind, value) of the newest version <= snapshot."""
        found = ffi.new("rldb_found *")
        if lib.rldb_memtable_get(self._mt, key, len(key), snapshot, found) > 0:
            return found_entry(found)
        return None

    def usage(self):
        """(bytes of memory, entries, key and value bytes)."""
        out = ffi.new("size_t[3]")
        lib.rldb_memtable_usage(self._mt, out, out + 1, out + 2)
        return out[0], out[1], out[2]

    def memory(self):
        return self.usage()[0]

    def check(self):
        check(lib.rldb_memtable_check(self._mt), "memtable check")
