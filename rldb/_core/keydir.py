"""The Bitcask keydir on its own (csrc/keydir.c): key -> (file, offset,
value size, timestamp), in memory.  The store (rldb._core.bitcask) holds one;
this wrapper serves tests and bench/bitcask_keydir.py."""
from rldb._core.loader import check, ffi, fields, lib

__all__ = ["BC_MAX_KEY", "KEYDIR_TOMBSTONE", "Keydir"]

BC_MAX_KEY = lib.RLDB_KEYDIR_MAX_KEY
KEYDIR_TOMBSTONE = lib.RLDB_KEYDIR_TOMBSTONE
_USAGE = ("count", "tombstones", "key_bytes", "memory", "slots", "arena_bytes", "arena_used",
          "arena_dead")


def _record(rec):
    return rec.file, rec.offset, rec.vsize, rec.tstamp


class Keydir:
    """The C keydir: key -> (file, offset, value size, timestamp).  Not
    thread-safe."""

    __slots__ = ("_kd",)

    def __init__(self):
        kd = lib.rldb_keydir_new()
        if kd == ffi.NULL:
            raise MemoryError("cannot allocate a keydir")
        self._kd = ffi.gc(kd, lib.rldb_keydir_free)

    def put(self, key, file, offset, vsize, tstamp):
        """The previous record (a tuple) or None."""
        rec = ffi.new("rldb_keydir_rec *", (file, offset, vsize, tstamp))
        old = ffi.new("rldb_keydir_rec *")
        had = check(lib.rldb_keydir_put(self._kd, key, len(key), rec, old), "keydir put")
        return _record(old) if had else None

    def get(self, key):
        rec = ffi.new("rldb_keydir_rec *")
        if lib.rldb_keydir_get(self._kd, key, len(key), rec):
            return _record(rec)
        return None

    def remove(self, key):
        old = ffi.new("rldb_keydir_rec *")
        if lib.rldb_keydir_remove(self._kd, key, len(key), old):
            return _record(old)
        return None

    def reserve(self, count):
        check(lib.rldb_keydir_reserve(self._kd, count), "keydir reserve")

    def usage(self):
        u = ffi.new("rldb_keydir_usage *")
        lib.rldb_keydir_get_usage(self._kd, u)
        return fields(u, _USAGE)

    def items(self):
        """Every (key, record), in no particular order."""
        pos = ffi.new("uint64_t *")
        key = ffi.new("uint8_t **")
        klen = ffi.new("size_t *")
        rec = ffi.new("rldb_keydir_rec *")
        out = []
        while lib.rldb_keydir_next(self._kd, pos, key, klen, rec):
            out.append((bytes(ffi.buffer(key[0], klen[0])), _record(rec)))
        return out

    def check(self):
        check(lib.rldb_keydir_check(self._kd), "keydir check")

    def __len__(self):
        return self.usage()["count"]
