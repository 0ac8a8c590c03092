"""One Bitcask merge (csrc/bitcask_merge.c): live entries of input files
copied to output files, then the keydir pointed at the copies in one step
(rldb/storage/bitcask/merge.py runs the protocol around it)."""
from rldb._core.loader import ffi, fields, lib
from rldb.errors import InvalidArgumentError

__all__ = ["BitcaskMerge"]

_NEED_OUTPUT = lib.RLDB_BC_NEED_OUTPUT
_STATS = ("entries_read", "bytes_read", "entries_written", "bytes_written",
          "tombstones_kept", "tombstones_dropped", "moved", "skipped")


class BitcaskMerge:
    """One merge of the store owner (a rldb._core.bitcask.Bitcask), whose
    errors name the file and offset of a failure."""

    __slots__ = ("_m", "_owner")

    def __init__(self, owner, max_output):
        m = lib.rldb_bc_merge_new(owner._bc, max_output)
        if m == ffi.NULL:
            raise InvalidArgumentError(f"bad merge output size {max_output}")
        self._m = ffi.gc(m, lib.rldb_bc_merge_free)
        self._owner = owner

    def set_output(self, slot, hint_fd):
        self._owner._check(lib.rldb_bc_merge_output(self._m, slot, hint_fd), "merge output")

    def merge_file(self, slot, drop_tombstones, resume):
        """(done, resume): done is False when the output is full."""
        pos = ffi.new("uint64_t *", resume)
        rc = self._owner._check(
            lib.rldb_bc_merge_file(self._m, slot, 1 if drop_tombstones else 0, pos), "merge")
        return rc != _NEED_OUTPUT, pos[0]

    def finish_output(self):
        """Writes the rest of the output and its hint; returns its size."""
        size = ffi.new("uint64_t *")
        self._owner._check(lib.rldb_bc_merge_finish_output(self._m, size), "merge output")
        return size[0]

    def commit(self, input_slots):
        slots = ffi.new("uint32_t[]", list(input_slots) or [0])
        self._owner._check(lib.rldb_bc_merge_commit(self._m, slots, len(input_slots)),
                           "merge commit")

    def stats(self):
        st = ffi.new("rldb_bc_merge_stats *")
        lib.rldb_bc_merge_get_stats(self._m, st)
        return fields(st, _STATS)
