"""The Bitcask store's C side (csrc/bitcask_*.c): the keydir, the table of
open data files, the active file and its hint, writes, reads, loading a
hint or scanning a data file at open, and the checks.  Merges are in
rldb._core.bitcask_merge; the keydir on its own in rldb._core.keydir."""
import threading
from array import array

from rldb._core.bitcask_merge import BitcaskMerge
from rldb._core.keydir import BC_MAX_KEY, KEYDIR_TOMBSTONE
from rldb._core.loader import as_buffer, check, error_for, ffi, fields, lib, status_text
from rldb.errors import InvalidArgumentError

__all__ = ["BC_HEADER", "BC_MAX_KEY", "BC_MAX_VALUE", "BC_MAX_FILE_SIZE", "BC_SCAN_CLEAN",
           "BC_SCAN_TORN", "BC_SCAN_CORRUPT", "KEYDIR_TOMBSTONE", "Bitcask"]

BC_HEADER = lib.RLDB_BC_HEADER
BC_MAX_VALUE = lib.RLDB_BC_MAX_VALUE
BC_MAX_FILE_SIZE = lib.RLDB_BC_MAX_FILE_SIZE
BC_SCAN_CLEAN = lib.RLDB_BC_SCAN_CLEAN
BC_SCAN_TORN = lib.RLDB_BC_SCAN_TORN
BC_SCAN_CORRUPT = lib.RLDB_BC_SCAN_CORRUPT
_BC_ABSENT = lib.RLDB_BC_ABSENT
_BC_CLOSED = lib.RLDB_BC_CLOSED
_BC_NEED_ROLL = lib.RLDB_BC_NEED_ROLL
_BC_HINT_SIZE = lib.RLDB_BC_HINT_SIZE
_BC_INLINE = 16384  # bytes of each thread's get buffer; longer values take a second call
_raw_new = ffi.new_allocator(should_clear_after_alloc=False)
_STATS = ("keys", "tombstones", "key_bytes", "keydir_memory", "keydir_slots", "files",
          "total_bytes", "live_bytes", "generation", "syncs", "hint_failures")
_WRITES = ("put", "delete", "write_batch")
# Why a hint is not valid: load_hint reports these instead of raising.
_HINT_PROBLEMS = (lib.RLDB_ERR_TRUNCATED, lib.RLDB_ERR_OVERFLOW, lib.RLDB_ERR_CORRUPT,
                  lib.RLDB_ERR_CHECKSUM)


class Bitcask:
    """The C side of one Bitcask store: the keydir, the table of open data
    files, the active file and its hint, merges.  The engine in
    rldb/storage/bitcask/ owns the directory and the descriptors.

    locate(id, rank) names the file an error happened in.  get, put and
    delete are made as closures (make_get, ...) so that each is one C call."""

    __slots__ = ("_bc", "_locate", "__weakref__")

    def __init__(self, max_file_size, sync, locate):
        bc = lib.rldb_bc_new(max_file_size, 1 if sync else 0)
        if bc == ffi.NULL:
            raise InvalidArgumentError(
                f"max_file_size must be 1..{BC_MAX_FILE_SIZE}, not {max_file_size}")
        self._bc = ffi.gc(bc, lib.rldb_bc_free)
        self._locate = locate

    # -- errors

    def error(self, rc, what):
        """The exception for a failed call, naming the file and offset the C
        side recorded for this thread."""
        if rc == _BC_CLOSED:
            return error_for(rc, what)
        ids = ffi.new("uint32_t[2]")
        offset = ffi.new("uint64_t *")
        err = ffi.new("int *")
        has = lib.rldb_bc_last_error(ids, ids + 1, offset, err)
        if rc == lib.RLDB_ERR_INVALID_ARGUMENT and what in _WRITES:
            what = (f"{what}: keys are 1..{BC_MAX_KEY} bytes and values at most "
                    f"{BC_MAX_VALUE} bytes in the bitcask engine")
        return error_for(rc, what, err=err[0], path=self._locate(ids[0], ids[1]) if has else None,
                         offset=offset[0] if has else None)

    def _check(self, rc, what):
        """check() with the file and offset of the failure."""
        if rc < 0:
            raise self.error(rc, what)
        return rc

    def _finish(self, rc, size, again, roll, what):
        """After a write returned rc: rolls while the active file is full, then
        raises on an error."""
        while rc == _BC_NEED_ROLL:
            roll(size)
            rc = again()
        self._check(rc, what)

    # -- the hot calls, as closures

    def make_get(self, bad_key):
        """get(key) -> bytes | None in one C call; bad_key(key) raises for a
        key that is not non-empty bytes."""
        bc, fn, unpack, tls, cap = self._bc, lib.rldb_bc_get, ffi.unpack, threading.local(), _BC_INLINE
        slow = self._get_big

        def get(key):
            if key.__class__ is not bytes or not key:
                bad_key(key)
            try:
                buf = tls.buf
            except AttributeError:
                buf = tls.buf = _raw_new("char[]", cap)
            n = fn(bc, key, len(key), buf, cap)
            if n >= 0:
                if n <= cap:
                    return unpack(buf, n)
                return slow(key, n)
            if n == _BC_ABSENT:
                return None
            raise self.error(n, "get")

        return get

    def _get_big(self, key, n):
        while True:
            cap = n + BC_HEADER + len(key)
            buf = _raw_new("char[]", cap)
            n = lib.rldb_bc_get(self._bc, key, len(key), buf, cap)
            if n == _BC_ABSENT:
                return None
            self._check(n, "get")
            if n <= cap:
                return ffi.unpack(buf, n)

    def make_put(self, bad_key, bad_value, roll):
        """put(key, value) in one C call; roll(entry_size) is called when the
        active file is full, and the put tried again."""
        bc, fn, finish = self._bc, lib.rldb_bc_put, self._finish

        def put(key, value):
            if key.__class__ is not bytes or not key:
                bad_key(key)
            if value.__class__ is not bytes:
                bad_value(value)
            rc = fn(bc, key, len(key), value, len(value))
            if rc:
                finish(rc, BC_HEADER + len(key) + len(value),
                       lambda: fn(bc, key, len(key), value, len(value)), roll, "put")

        return put

    def make_delete(self, bad_key, roll):
        bc, fn, finish = self._bc, lib.rldb_bc_delete, self._finish

        def delete(key):
            if key.__class__ is not bytes or not key:
                bad_key(key)
            rc = fn(bc, key, len(key))
            if rc:
                finish(rc, BC_HEADER + len(key), lambda: fn(bc, key, len(key)), roll, "delete")

        return delete

    def write_batch(self, ops, roll):
        """ops: validated (kind, key, value) with kind "put" or "delete"."""
        kinds = bytes(1 if kind == "put" else 0 for kind, _, _ in ops)
        klens = array("I", [len(key) for _, key, _ in ops])
        vlens = array("I", [len(value) if kind == "put" else 0 for kind, _, value in ops])
        data = b"".join([key + value if kind == "put" else key for kind, key, value in ops])
        size = len(data) + BC_HEADER * len(ops)
        ck, cv = ffi.from_buffer("uint32_t[]", klens), ffi.from_buffer("uint32_t[]", vlens)

        def again():
            return lib.rldb_bc_write_batch(self._bc, kinds, data, ck, cv, len(ops))

        self._finish(again(), size, again, roll, "write_batch")

    # -- the file table

    def add_file(self, fd, rank, file_id, size):
        """The slot of a newly registered data file."""
        return check(lib.rldb_bc_add_file(self._bc, fd, rank, file_id, size), "add data file")

    def remove_file(self, slot):
        self._check(lib.rldb_bc_remove_file(self._bc, slot),
                    "remove data file (the keydir still points into it)")

    def set_file_size(self, slot, size):
        self._check(lib.rldb_bc_set_file_size(self._bc, slot, size), "set file size")

    def reserve(self, keys):
        self._check(lib.rldb_bc_reserve(self._bc, keys), "keydir reserve")

    def activate(self, slot, hint_fd):
        self._check(lib.rldb_bc_activate(self._bc, slot, hint_fd), "activate data file")

    def seal(self):
        """(hint complete, size of the active file); no write goes to it after."""
        size = ffi.new("uint64_t *")
        ok = lib.rldb_bc_seal(self._bc, size)
        return bool(ok), size[0]

    def needs_roll(self, entry_size):
        return bool(lib.rldb_bc_needs_roll(self._bc, entry_size))

    def sync(self):
        self._check(lib.rldb_bc_sync(self._bc), "fsync of the active file")

    # -- open

    def load_hint(self, slot, hint):
        """None when the hint was loaded, else why it was not (nothing was
        applied then): "size" when it is intact but was written for a data
        file of another size, else what is wrong with it."""
        rc = lib.rldb_bc_load_hint(self._bc, slot, as_buffer(hint), len(hint))
        if rc == 0:
            return None
        if rc == _BC_HINT_SIZE:
            return "size"
        if rc in _HINT_PROBLEMS:
            return status_text(rc)
        raise self.error(rc, "hint file")

    def scan(self, slot, apply, hint_fd=-1):
        """(status, valid end, bad offset): every entry of a data file checked,
        applied to the keydir with apply, a hint of the valid part written to
        hint_fd when >= 0."""
        out = ffi.new("uint64_t[2]")
        rc = self._check(lib.rldb_bc_scan(self._bc, slot, 1 if apply else 0, hint_fd, out,
                                          out + 1), "scan of a data file")
        return rc, out[0], out[1]

    # -- reads of the whole store

    def keys(self):
        """Every live key, a snapshot, in no particular order."""
        st = self.stats()
        count, size = st["keys"] + st["tombstones"], st["key_bytes"]
        while True:
            buf = _raw_new("char[]", max(size, 1))
            lens = array("I", bytes(4 * max(count, 1)))
            out = ffi.new("size_t[2]")
            rc = lib.rldb_bc_keys(self._bc, buf, size, ffi.from_buffer("uint32_t[]", lens),
                                  count, out, out + 1)
            if rc != lib.RLDB_ERR_BUFFER_TOO_SMALL:
                self._check(rc, "keys")
                break
            count, size = out[0] + 64, out[1] + 4096  # the store grew meanwhile
        data = ffi.unpack(buf, out[1])
        keys, pos = [], 0
        for n in lens[:out[0]]:
            keys.append(data[pos:pos + n])
            pos += n
        return keys

    def stats(self):
        st = ffi.new("rldb_bc_stats *")
        lib.rldb_bc_get_stats(self._bc, st)
        return fields(st, _STATS)

    def files(self):
        """Every registered data file: slot, id, rank, active, size, live bytes."""
        n = 64
        while True:
            out = ffi.new("rldb_bc_file_info[]", n)
            count = ffi.new("size_t *")
            if lib.rldb_bc_files(self._bc, out, n, count) == 0:
                break
            n = count[0] + 16
        return [{"slot": f.slot, "id": f.id, "rank": f.rank, "active": bool(f.active),
                 "size": f.size, "live": f.live} for f in out[0:count[0]]]

    def check(self):
        self._check(lib.rldb_bc_check(self._bc), "check")

    def check_hint(self, slot, hint):
        self._check(lib.rldb_bc_check_hint(self._bc, slot, as_buffer(hint), len(hint)),
                    "hint check")

    def close(self):
        lib.rldb_bc_close(self._bc)

    def merge(self, max_output):
        return BitcaskMerge(self, max_output)
