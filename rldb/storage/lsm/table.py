"""Reading one SSTable (layout in docs/formats.md).

Opening a table reads and verifies its footer, index, filter and properties
and keeps them in memory; data blocks are read on demand, verified, and kept in
the shared block cache.  The file descriptor is closed when the last reference
to the Table goes, so a table deleted by compaction stays readable for the
scans that still hold it."""
import os
import weakref

from rldb import _core
from rldb.errors import CorruptionError, StorageIOError
from rldb.storage.lsm.format import decode_properties, ikey_compare

FOOTER_SIZE = _core.FOOTER_SIZE
BLOCK_TRAILER = _core.BLOCK_TRAILER


class ReadCounters:
    """Bloom filter outcomes, shared by all tables of an engine."""

    __slots__ = ("bloom_useful", "bloom_false_positive")

    def __init__(self):
        self.bloom_useful = 0          # lookups the filter answered alone
        self.bloom_false_positive = 0  # the filter said maybe, the table said no


class Table:
    def __init__(self, path, number, cache=None, counters=None):
        self.counters = counters if counters is not None else ReadCounters()
        self.path = str(path)
        self.number = number
        self.cache = cache
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise StorageIOError(exc.errno, f"cannot open table {self.path}: {exc.strerror}") from None
        self._finalizer = weakref.finalize(self, os.close, self._fd)
        try:
            self.file_size = os.fstat(self._fd).st_size
            if self.file_size < FOOTER_SIZE:
                raise CorruptionError(
                    f"file of {self.file_size} bytes is too short to be a table", self.path, 0)
            footer = self._pread(self.file_size - FOOTER_SIZE, FOOTER_SIZE)
            try:
                handles = _core.decode_footer(footer, self.file_size)
            except CorruptionError as exc:
                raise CorruptionError(f"bad footer ({exc})", self.path,
                                      self.file_size - FOOTER_SIZE) from None
            self.handles = handles
            self.filter = self.read_block(handles[0], handles[1])
            self.properties = decode_properties(self.read_block(handles[2], handles[3]), self.path)
            try:
                self.index = _core.BlockIndex(self.read_block(handles[4], handles[5]))
            except CorruptionError as exc:
                raise CorruptionError(f"bad index block ({exc})", self.path, handles[4]) from None
        except BaseException:
            self.close()
            raise

    def _pread(self, offset, size):
        try:
            data = os.pread(self._fd, size, offset)
        except OSError as exc:
            raise StorageIOError(exc.errno, f"read of {self.path} failed: {exc.strerror}") from None
        if len(data) != size:
            raise CorruptionError(f"short read ({len(data)} of {size} bytes)", self.path, offset)
        return data

    def read_block(self, offset, size):
        """A block's contents, its checksum verified."""
        data = self._pread(offset, size + BLOCK_TRAILER)
        try:
            _core.verify_block(data)
        except CorruptionError as exc:
            raise CorruptionError(f"block {exc}", self.path, offset) from None
        return data[:size]

    def block(self, i, fill_cache=True):
        """Data block i, from the cache when there."""
        cache = self.cache
        if cache is not None:
            block = cache.get((self.number, i))
            if block is not None:
                return block
        offset, size = self.index.handles[i]
        block = self.read_block(offset, size)
        if cache is not None and fill_cache:
            cache.put((self.number, i), block)
        return block

    def get(self, key, snapshot):
        """None, or (kind, value) of key's newest version <= snapshot."""
        index = self.index
        i = index.locate(self.filter, key, snapshot)
        if i < 0:
            self.counters.bloom_useful += 1
            return None
        if i >= index.count:
            self.counters.bloom_false_positive += 1
            return None
        block = self.block(i)
        try:
            found = _core.block_get(block, key, snapshot)
        except CorruptionError as exc:
            raise CorruptionError(f"bad data block ({exc})", self.path, index.handles[i][0]) from None
        if found is None:
            self.counters.bloom_false_positive += 1
        return found

    def blocks(self, start_block=0, reverse=False, fill_cache=True):
        """Data blocks from start_block onwards (or backwards)."""
        if reverse:
            for i in range(min(start_block, self.index.count - 1), -1, -1):
                yield self.block(i, fill_cache)
        else:
            for i in range(start_block, self.index.count):
                yield self.block(i, fill_cache)

    def entries(self, check_order=False):
        """Every (internal key, value) in order, every block verified."""
        for i in range(self.index.count):
            offset, _ = self.index.handles[i]
            try:
                yield from _core.decode_block(self.block(i, fill_cache=False), check_order)
            except CorruptionError as exc:
                raise CorruptionError(f"bad data block ({exc})", self.path, offset) from None

    def verify(self):
        """Reads every block and checks checksums, key order, the index and the
        properties; returns the entry count."""
        count = deletions = 0
        previous = None
        for i in range(self.index.count):
            offset, _ = self.index.handles[i]
            entries = None
            try:
                entries = _core.decode_block(self.read_block(*self.index.handles[i]), True)
            except CorruptionError as exc:
                raise CorruptionError(f"bad data block {i} ({exc})", self.path, offset) from None
            if not entries:
                raise CorruptionError(f"data block {i} is empty", self.path, offset)
            if previous is not None and ikey_compare(previous, entries[0][0]) >= 0:
                raise CorruptionError(f"data block {i} does not follow the one before", self.path, offset)
            if entries[-1][0] != self.index.last_keys[i]:
                raise CorruptionError(f"index entry {i} does not match its block", self.path, offset)
            previous = entries[-1][0]
            count += len(entries)
            deletions += sum(1 for k, _ in entries if k[-8] == 0)
        props = self.properties
        if props.get("entries") != count or props.get("deletions") != deletions:
            raise CorruptionError(
                f"properties say {props.get('entries')} entries / {props.get('deletions')} "
                f"tombstones, blocks hold {count} / {deletions}", self.path)
        return count

    def close(self):
        self._finalizer()
