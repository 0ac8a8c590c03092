"""Reading one SSTable (layout in docs/formats.md).

Opening a table reads and verifies its footer, filter, properties and index
and keeps them in memory (for Python and, as a TableMeta, for the C lookup
path).  Data blocks are read on demand and verified on every read.  The file
descriptor comes from a bounded FileCache, so a database of many tables keeps
at most max_open_files descriptors.

What a table holds is public here (footer, filter, index, blocks) so that the
inspection and verification tools read it the way lookups do."""
import os
import struct
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

from rldb._core.block import BLOCK_RAW, BLOCK_SNAPPY, BLOCK_TRAILER, BlockIndex, block_get, decode_block, unwrap_block
from rldb._core.point_lookup import TableMeta
from rldb._core.sstable import FOOTER_SIZE, TABLE_FORMAT, decode_footer
from rldb.errors import CorruptionError, NotSupportedError, StorageIOError
from rldb.storage.lsm.format import TABLE_MAGIC, decode_properties, ikey_compare

READAHEAD = 256 << 10  # bytes read at once by sequential block reads
# The footer as the C table builder writes it: three (offset, size) handles,
# the format version, the masked CRC-32C of the 52 bytes before it, the magic.
# The C decoder checks it; this only names its fields.
_FOOTER = struct.Struct("<6QIIQ")
MAGIC = struct.pack("<Q", TABLE_MAGIC)
COMPRESSIONS = {BLOCK_RAW: "raw", BLOCK_SNAPPY: "snappy"}  # a trailer's type byte


@dataclass(frozen=True)
class BlockHandle:
    offset: int
    size: int   # as stored, without its trailer


@dataclass(frozen=True)
class Footer:
    """The last FOOTER_SIZE bytes of a table, field by field."""
    filter: BlockHandle
    properties: BlockHandle
    index: BlockHandle
    format_version: int
    checksum: int   # masked CRC-32C
    magic: bytes

    @classmethod
    def unpack(cls, raw):
        f = _FOOTER.unpack(raw)
        return cls(BlockHandle(f[0], f[1]), BlockHandle(f[2], f[3]), BlockHandle(f[4], f[5]),
                   f[6], f[7], bytes(raw[-len(MAGIC):]))


def not_a_table(path):
    """Why the regular file at path is no table at all (shorter than a footer,
    or not ending in the magic), or None.  A damaged table still ends in the
    magic, so this tells "not a table" from "a corrupt table"."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file, not an SSTable"
        if size < FOOTER_SIZE:
            return f"not an SSTable ({size} bytes, shorter than the {FOOTER_SIZE}-byte footer)"
        with open(path, "rb") as f:
            f.seek(size - len(MAGIC))
            tail = f.read(len(MAGIC))
    except OSError as exc:
        raise StorageIOError(exc.errno, f"cannot read {path}: {exc.strerror}") from None
    if tail != MAGIC:
        return f'not an SSTable (it does not end with the magic "{MAGIC.decode()}")'
    return None


class OpenFile:
    """A read-only descriptor, closed when the last holder lets go of it (so
    a reader in the middle of a pread never sees it closed under it)."""

    __slots__ = ("fd", "_finalizer", "__weakref__")

    def __init__(self, path):
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise StorageIOError(exc.errno, f"cannot open table {path}: {exc.strerror}") from None
        self._finalizer = weakref.finalize(self, os.close, self.fd)

    def close(self):
        self._finalizer()


class FileCache:
    """At most `capacity` open table files, least recently used closed first."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.opens = 0
        self._files = OrderedDict()
        self._lock = threading.Lock()

    def get(self, number, path):
        f = self._files.get(number)
        if f is not None:
            return f
        with self._lock:
            f = self._files.get(number)
            if f is None:
                f = OpenFile(path)
                self.opens += 1
                self._files[number] = f
                while len(self._files) > self.capacity:
                    self._files.popitem(last=False)
            else:
                self._files.move_to_end(number)
            return f

    def forget(self, number):
        with self._lock:
            self._files.pop(number, None)

    def __len__(self):
        return len(self._files)


class ReadCounters:
    """Bloom filter outcomes of the Python lookup path (the C path counts its own)."""

    __slots__ = ("bloom_useful", "bloom_false_positive")

    def __init__(self):
        self.bloom_useful = 0
        self.bloom_false_positive = 0


class Table:
    def __init__(self, path, number, files=None, counters=None):
        self.path = str(path)
        self.number = number
        self.files = files if files is not None else FileCache(1)
        self.counters = counters if counters is not None else ReadCounters()
        try:
            self.file_size = os.path.getsize(self.path)
        except OSError as exc:
            raise StorageIOError(exc.errno, f"cannot open table {self.path}: {exc.strerror}") from None
        if self.file_size < FOOTER_SIZE:
            raise CorruptionError(
                f"file of {self.file_size} bytes is too short to be a table", self.path, 0)
        footer = self._pread(self.file_size - FOOTER_SIZE, FOOTER_SIZE)
        try:
            handles = decode_footer(footer, self.file_size)
        except CorruptionError as exc:
            raise CorruptionError(f"bad footer ({exc})", self.path,
                                  self.file_size - FOOTER_SIZE) from None
        except NotSupportedError:
            version = Footer.unpack(footer).format_version
            raise NotSupportedError(f"{self.path}: table format version {version} is not "
                                    f"supported (this rldb reads version {TABLE_FORMAT})"
                                    ) from None
        self.handles = handles
        self.footer = Footer.unpack(footer)
        self.filter = self.read_block(handles[0], handles[1])
        if self.filter and not (len(self.filter) >= 2 and 1 <= self.filter[-1] <= 30):
            raise CorruptionError("bloom filter block is malformed", self.path, handles[0])
        self.properties = decode_properties(self.read_block(handles[2], handles[3]), self.path)
        index_block = self.read_block(handles[4], handles[5])
        try:
            self.index = BlockIndex(index_block)
            self.meta = TableMeta(number, self.filter, index_block)
        except CorruptionError as exc:
            raise CorruptionError(f"bad index block ({exc})", self.path, handles[4]) from None
        end = 0  # data blocks lie back to back before the filter
        for i, (offset, size) in enumerate(self.index.handles):
            if offset != end or size + BLOCK_TRAILER > handles[0] - offset:
                raise CorruptionError(f"index entry {i} points outside the data blocks "
                                      f"({offset}, {size})", self.path, handles[4])
            end = offset + size + BLOCK_TRAILER

    def _pread(self, offset, size):
        f = self.files.get(self.number, self.path)
        try:
            data = os.pread(f.fd, size, offset)
        except OSError as exc:
            raise StorageIOError(exc.errno, f"read of {self.path} failed: {exc.strerror}") from None
        if len(data) != size:
            raise CorruptionError(f"short read ({len(data)} of {size} bytes)", self.path, offset)
        return data

    def load_into(self, cache, block, offset, size):
        """Reads data block `block` straight into the C block cache."""
        f = self.files.get(self.number, self.path)
        try:
            return cache.load(self.number, block, f.fd, offset, size)
        except OSError as exc:
            raise StorageIOError(exc.errno, f"read of {self.path} failed: {exc.strerror}") from None
        except CorruptionError as exc:
            raise CorruptionError(str(exc), self.path, offset) from None

    def read_raw(self, offset, size):
        """A block with its trailer, unverified (the block cache verifies)."""
        return self._pread(offset, size + BLOCK_TRAILER)

    def read_block(self, offset, size):
        """A block's contents, its checksum verified, decompressed."""
        return self._unwrap(self.read_raw(offset, size), offset)

    def _unwrap(self, raw, offset):
        try:
            return unwrap_block(raw)
        except CorruptionError as exc:
            raise CorruptionError(str(exc), self.path, offset) from None

    def block(self, i):
        """Data block i's contents, verified and decompressed."""
        return self.read_block(*self.index.handles[i])

    def block_compression(self, i):
        """How data block i is stored ("raw", "snappy"), from its trailer's
        type byte; the block itself is not verified."""
        offset, size = self.index.handles[i]
        kind = self._pread(offset + size, 1)[0]
        return COMPRESSIONS.get(kind, f"type-{kind}")

    @property
    def filter_probes(self):
        """The bloom filter's probe count (its last byte); 0 without a filter."""
        return self.filter[-1] if self.filter else 0

    @property
    def filter_bits(self):
        return max(len(self.filter) - 1, 0) * 8

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
            found = block_get(block, key, snapshot)
        except CorruptionError as exc:
            raise CorruptionError(f"bad data block ({exc})", self.path, index.handles[i][0]) from None
        if found is None:
            self.counters.bloom_false_positive += 1
        return found

    def raw_blocks(self, start_block=0, reverse=False, readahead=READAHEAD):
        """(offset, stored block) from start_block on (or back), unverified:
        views into reads of up to `readahead` bytes, for a consumer that
        verifies and decompresses them itself (the C merge)."""
        handles = self.index.handles
        if not handles:
            return
        if reverse:
            order = list(range(min(start_block, len(handles) - 1), -1, -1))
        else:
            order = list(range(start_block, len(handles)))
        pos = 0
        while pos < len(order):
            run = [order[pos]]
            lo = hi = order[pos]
            pos += 1
            while pos < len(order):
                nxt = order[pos]
                lo2, hi2 = min(lo, nxt), max(hi, nxt)
                if handles[hi2][0] + handles[hi2][1] + BLOCK_TRAILER - handles[lo2][0] > readahead:
                    break
                run.append(nxt)
                lo, hi = lo2, hi2
                pos += 1
            base = handles[lo][0]
            data = memoryview(self._pread(base, handles[hi][0] + handles[hi][1] + BLOCK_TRAILER - base))
            for i in run:
                offset, size = handles[i]
                yield offset, data[offset - base:offset - base + size + BLOCK_TRAILER]

    def block_entries(self, i, check_order=False):
        """The (internal key, value) pairs of data block i, the block verified."""
        block = self.block(i)
        try:
            return decode_block(block, check_order)
        except CorruptionError as exc:
            raise CorruptionError(f"bad data block {i} ({exc})", self.path,
                                  self.index.handles[i][0]) from None

    def entries(self, check_order=False):
        """Every (internal key, value) in order, every block verified."""
        for i in range(self.index.count):
            yield from self.block_entries(i, check_order)

    def verify(self):
        """Reads every block and checks checksums, key order, the index and the
        properties; returns the entry count."""
        count = deletions = 0
        previous = None
        for i in range(self.index.count):
            offset, _ = self.index.handles[i]
            entries = self.block_entries(i, True)
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
        self.files.forget(self.number)


def feed(merger, source, item):
    """Hands a (table, offset, stored block) to a merge source, or tells the
    merge the source is done (item None); a bad block names its table."""
    if item is None:
        merger.set_done(source)
        return
    table, offset, raw = item
    try:
        merger.set_raw_block(source, raw)
    except CorruptionError as exc:
        raise CorruptionError(str(exc), table.path, offset) from None
