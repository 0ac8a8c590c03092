"""The k-way merge behind scans, memtable flushes and compactions
(csrc/kway_merge.c): sources are memtables or data blocks fed one at a time."""
from struct import iter_unpack as _iter_unpack

from rldb._core.loader import as_buffer, check, ffi, fields, lib
from rldb._core.memtable import MAX_SEQUENCE
from rldb.errors import InvalidArgumentError

__all__ = ["MERGE_DONE", "MERGE_NEED_DATA", "MERGE_OUTPUT_FULL", "Merger"]

MERGE_DONE = lib.RLDB_MERGE_DONE
MERGE_NEED_DATA = lib.RLDB_MERGE_NEED_DATA
MERGE_OUTPUT_FULL = lib.RLDB_MERGE_OUTPUT_FULL
_ENTRY = "<4I"
_STATS = ("entries_read", "entries_written", "versions_dropped", "tombstones_dropped")


class Merger:
    """The C k-way merge.  Sources are memtables or data blocks fed one at a time;
    see csrc/kway_merge.c.  Holds a reference to whatever it was given until replaced."""

    __slots__ = ("_m", "_held", "_data", "_index", "_cdata", "_cindex", "_scan_mode")

    def __init__(self, nsources, compact=False, reverse=False, snapshot=MAX_SEQUENCE,
                 start=None, end=None, drop_tombstones=False, buffer_size=1 << 18):
        m = lib.rldb_merger_new(
            nsources, lib.RLDB_MERGE_COMPACT if compact else lib.RLDB_MERGE_SCAN,
            1 if reverse else 0, snapshot,
            start or b"", len(start or b""), start is not None,
            end or b"", len(end or b""), end is not None, 1 if drop_tombstones else 0)
        if m == ffi.NULL:
            raise InvalidArgumentError("bad merger arguments")
        self._m = ffi.gc(m, lib.rldb_merger_free)
        self._held = [None] * nsources
        self._scan_mode = not compact
        if self._scan_mode:
            self._alloc(buffer_size)

    def _alloc(self, size):
        self._data = bytearray(size)
        self._index = bytearray(16 * max(64, size // 64))
        self._cdata = as_buffer(self._data)
        self._cindex = ffi.from_buffer("uint32_t[]", self._index)

    def set_block(self, source, block):
        self._held[source] = block
        check(lib.rldb_merger_set_block(self._m, source, block, len(block)), "block")

    def set_raw_block(self, source, raw):
        """A block as stored (bytes-like, trailer included): verified and
        decompressed into the merger's own memory."""
        self._held[source] = None
        check(lib.rldb_merger_set_raw_block(self._m, source, as_buffer(raw), len(raw)), "block")

    def set_memtable(self, source, memtable):
        self._held[source] = memtable
        check(lib.rldb_merger_set_memtable(self._m, source, memtable._mt), "merger")

    def set_done(self, source):
        self._held[source] = None
        check(lib.rldb_merger_set_done(self._m, source), "merger")

    def scan(self):
        """(status, source needing data or -1, [(key, value), ...])."""
        out = ffi.new("size_t[3]")
        need = ffi.new("int *")
        need[0] = -1
        while True:
            rc = lib.rldb_merger_scan(self._m, self._cdata, len(self._data), self._cindex,
                                      len(self._index) // 16, out, out + 1, need, out + 2)
            if rc != lib.RLDB_ERR_BUFFER_TOO_SMALL:
                break
            self._alloc(max(2 * len(self._data), 2 * out[2]))
        check(rc, "merge")
        count, used = out[0], out[1]
        entries = []
        if count:
            data = bytes(self._data[:used])
            entries = [(data[ko:vo], data[vo:vo + vl]) for ko, _kl, vo, vl in
                       _iter_unpack(_ENTRY, memoryview(self._index)[:16 * count])]
        return rc, need[0], entries

    def compact(self, builder, max_file_size):
        """(status, source needing data or -1): feeds builder until it passes
        max_file_size (OUTPUT_FULL), a source runs dry (NEED_DATA) or the end."""
        need = ffi.new("int *")
        need[0] = -1
        rc = check(lib.rldb_merger_compact(self._m, builder._tb, max_file_size, need), "merge")
        return rc, need[0]

    def stats(self):
        st = ffi.new("rldb_merge_stats *")
        lib.rldb_merger_get_stats(self._m, st)
        return fields(st, _STATS)
