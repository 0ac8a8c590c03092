"""The one door to the compiled C core (rldb._rldb_core).

No other module imports the native module: this one turns every return code
into an exception, converts Python objects to C buffers, and refuses a compiled
module built for another version of the package (a stale build after an
upgrade would otherwise read or write formats it does not understand)."""
import os
import threading
from array import array
from struct import iter_unpack as _iter_unpack

from rldb._version import __version__
from rldb.errors import (
    CorruptionError,
    InvalidArgumentError,
    NotSupportedError,
    RldbError,
)

try:
    from rldb._rldb_core import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the build
    raise ImportError(
        "the rldb C core is not built; install the package (pip install -e .) "
        "so that setup.py compiles csrc/"
    ) from exc

_built_for = ffi.string(lib.rldb_version()).decode()
if _built_for != __version__:
    raise ImportError(
        f"the rldb C core was built for version {_built_for} but the package is "
        f"{__version__}; rebuild it (pip install -e .)"
    )

_CORRUPT = {lib.RLDB_ERR_TRUNCATED, lib.RLDB_ERR_OVERFLOW, lib.RLDB_ERR_CORRUPT,
            lib.RLDB_ERR_CHECKSUM}


def error_for(rc, context=""):
    """The exception for a negative return code."""
    message = ffi.string(lib.rldb_strerror(rc)).decode()
    if context:
        message = f"{context}: {message}"
    if rc in _CORRUPT:
        return CorruptionError(message)
    if rc in (lib.RLDB_ERR_INVALID_ARGUMENT, lib.RLDB_ERR_BUFFER_TOO_SMALL):
        return InvalidArgumentError(message)
    if rc == lib.RLDB_ERR_NOT_SUPPORTED:
        return NotSupportedError(message)
    if rc == lib.RLDB_ERR_NO_MEMORY:
        return MemoryError(message)
    return RldbError(f"{message} (code {rc})")


def _check(rc, context=""):
    if rc < 0:
        raise error_for(rc, context)
    return rc


def _buffer(data):
    """A uint8_t view of bytes-like data, without a copy."""
    return ffi.from_buffer("uint8_t[]", data)


def _packed(keys):
    """Keys as one buffer plus a uint32 length array, for the batch calls."""
    if not isinstance(keys, (list, tuple)):
        keys = list(keys)
    lengths = array("I", map(len, keys))
    return b"".join(keys), lengths, len(keys)


# ---- CRC-32C -----------------------------------------------------------------

HW_CRC32C = bool(lib.rldb_crc32c_hw_available())


def crc32c(data, crc=0):
    """CRC-32C of data, continuing from crc (0 to start)."""
    return lib.rldb_crc32c_extend(crc, _buffer(data), len(data))


def crc32c_software(data, crc=0):
    """The table implementation, whatever the CPU offers (tests compare the two)."""
    return lib.rldb_crc32c_extend_sw(crc, _buffer(data), len(data))


def crc32c_hardware(data, crc=0):
    """The CPU-instruction implementation; NotSupportedError where the CPU lacks it."""
    out = ffi.new("uint32_t *")
    _check(lib.rldb_crc32c_extend_hw(crc, _buffer(data), len(data), out), "crc32c")
    return out[0]


def mask_crc(crc):
    """LevelDB's masking, so that a CRC stored inside checksummed data stays strong."""
    return lib.rldb_crc32c_mask(crc)


def unmask_crc(masked):
    return lib.rldb_crc32c_unmask(masked)


# ---- varints -----------------------------------------------------------------

VARINT64_MAX = lib.RLDB_VARINT64_MAX
_U64_MAX = (1 << 64) - 1


def encode_varint(value):
    if not 0 <= value <= _U64_MAX:
        raise InvalidArgumentError(f"varint value {value} is outside 0..2**64-1")
    out = ffi.new("uint8_t[]", VARINT64_MAX)
    n = lib.rldb_varint_encode(value, out)
    return bytes(ffi.buffer(out, n))


def decode_varint(data, pos=0):
    """(value, position after it); CorruptionError if truncated or over-long."""
    if not 0 <= pos <= len(data):
        raise InvalidArgumentError(f"position {pos} is outside the buffer")
    value = ffi.new("uint64_t *")
    used = ffi.new("size_t *")
    buf = _buffer(data)
    _check(lib.rldb_varint_decode(buf + pos, len(data) - pos, value, used), "varint")
    return value[0], pos + used[0]


def encode_varints(values):
    values = list(values)
    for v in values:
        if not 0 <= v <= _U64_MAX:
            raise InvalidArgumentError(f"varint value {v} is outside 0..2**64-1")
    cap = len(values) * VARINT64_MAX
    out = ffi.new("uint8_t[]", max(cap, 1))
    written = ffi.new("size_t *")
    _check(lib.rldb_varint_encode_many(ffi.new("uint64_t[]", values), len(values),
                                       out, cap, written), "varint")
    return bytes(ffi.buffer(out, written[0]))


def decode_varints(data):
    """Every varint in data; CorruptionError if the last one is cut off."""
    n = len(data)
    values = ffi.new("uint64_t[]", max(n, 1))
    count = ffi.new("size_t *")
    used = ffi.new("size_t *")
    _check(lib.rldb_varint_decode_many(_buffer(data), n, values, n, count, used), "varint")
    return list(values[0:count[0]])


# ---- bloom filters -------------------------------------------------------------


def bloom_build(keys, bits_per_key=10):
    """A filter over keys (bytes); false-positive rate ~1% at 10 bits per key."""
    if not 1 <= bits_per_key <= 64:
        raise InvalidArgumentError(f"bits_per_key must be 1..64, not {bits_per_key}")
    data, lengths, count = _packed(keys)
    size = lib.rldb_bloom_size(count, bits_per_key)
    out = bytearray(size)
    _check(lib.rldb_bloom_build(data, ffi.from_buffer("uint32_t[]", lengths), count, bits_per_key,
                                _buffer(out), size), "bloom build")
    return bytes(out)


def bloom_may_contain(bloom_filter, key):
    """False only when key was certainly not added."""
    return bool(_check(lib.rldb_bloom_may_contain(bloom_filter, len(bloom_filter),
                                                  key, len(key)), "bloom filter"))


def bloom_probe_many(bloom_filter, keys):
    """may_contain for many keys in one call: a bytes of 0/1 flags."""
    data, lengths, count = _packed(keys)
    results = bytearray(count)
    _check(lib.rldb_bloom_probe_many(bloom_filter, len(bloom_filter), data,
                                     ffi.from_buffer("uint32_t[]", lengths), count, _buffer(results)),
           "bloom filter")
    return bytes(results)


def hash128(key):
    """The filter's two 64-bit hashes of key."""
    h = ffi.new("uint64_t[2]")
    lib.rldb_hash128(key, len(key), h, h + 1)
    return h[0], h[1]


# ---- memtable ------------------------------------------------------------------

KIND_DELETE = 0
KIND_VALUE = 1
MAX_SEQUENCE = (1 << 56) - 1


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
        rc = lib.rldb_memtable_add(self._mt, seq, kind, key, len(key), value, len(value))
        if rc:
            raise error_for(rc, "memtable add")

    def add_batch(self, seq, ops):
        """ops: (kind, key, value) with value b"" for deletes; op i gets seq + i."""
        kinds = bytes(op[0] for op in ops)
        klens = array("I", [len(op[1]) for op in ops])
        vlens = array("I", [len(op[2]) for op in ops])
        data = b"".join(op[1] + op[2] for op in ops)
        _check(lib.rldb_memtable_add_batch(
            self._mt, seq, kinds, data, ffi.from_buffer("uint32_t[]", klens),
            ffi.from_buffer("uint32_t[]", vlens), len(ops)), "memtable add")

    def get(self, key, snapshot=MAX_SEQUENCE):
        """None when absent, else (kind, value) of the newest version <= snapshot."""
        found = ffi.new("rldb_found *")
        if lib.rldb_memtable_get(self._mt, key, len(key), snapshot, found) > 0:
            return found.trailer & 0xFF, ffi.unpack(found.value, found.vlen)
        return None

    def usage(self):
        """(bytes of memory, entries, key and value bytes)."""
        out = ffi.new("size_t[3]")
        lib.rldb_memtable_usage(self._mt, out, out + 1, out + 2)
        return out[0], out[1], out[2]

    def memory(self):
        return self.usage()[0]

    def check(self):
        _check(lib.rldb_memtable_check(self._mt), "memtable check")


# ---- SSTable blocks --------------------------------------------------------------

BLOCK_TRAILER = lib.RLDB_BLOCK_TRAILER
FOOTER_SIZE = lib.RLDB_FOOTER_SIZE
TABLE_FORMAT = lib.RLDB_TABLE_FORMAT


BLOCK_RAW = lib.RLDB_BLOCK_RAW
BLOCK_SNAPPY = lib.RLDB_BLOCK_SNAPPY
COMPRESSION = {"none": BLOCK_RAW, "snappy": BLOCK_SNAPPY}


def verify_block(data):
    """Raises CorruptionError unless data (contents + trailer) has a good checksum."""
    rc = lib.rldb_block_verify(_buffer(data), len(data))
    if rc:
        raise error_for(rc, "block")


def unwrap_block(data):
    """The contents of a stored block (contents + trailer): checksum verified,
    decompressed when it was stored compressed."""
    size = ffi.new("size_t *")
    buf = _buffer(data)
    rc = lib.rldb_block_contents_size(buf, len(data), size)
    if rc:
        raise error_for(rc, "block")
    if data[-BLOCK_TRAILER] == BLOCK_RAW:
        return bytes(data[:-BLOCK_TRAILER])
    out = ffi.new("uint8_t[]", max(size[0], 1))
    rc = lib.rldb_block_unwrap(buf, len(data), out, size[0], size)
    if rc:
        raise error_for(rc, "compressed block")
    return ffi.unpack(ffi.cast("char *", out), size[0])


def snappy_compress(data):
    cap = lib.rldb_snappy_max_compressed(len(data))
    out = ffi.new("uint8_t[]", cap)
    n = ffi.new("size_t *")
    _check(lib.rldb_snappy_compress(_buffer(data), len(data), out, cap, n), "compress")
    return ffi.unpack(ffi.cast("char *", out), n[0])


def snappy_decompress(data):
    size = ffi.new("size_t *")
    buf = _buffer(data)
    _check(lib.rldb_snappy_uncompressed_length(buf, len(data), size), "compressed data")
    out = ffi.new("uint8_t[]", max(size[0], 1))
    _check(lib.rldb_snappy_decompress(buf, len(data), out, size[0], size), "compressed data")
    return ffi.unpack(ffi.cast("char *", out), size[0])


def decode_footer(footer, file_size):
    """The six block handles (filter, properties and index offset/size)."""
    handles = ffi.new("uint64_t[6]")
    _check(lib.rldb_footer_decode(_buffer(footer), len(footer), file_size, handles), "footer")
    return tuple(handles)


def decode_block(block, check_order=False):
    """Every (key, value) of a block, keys decoded in full."""
    buf = _buffer(block)
    counts = ffi.new("size_t[3]")
    _check(lib.rldb_block_measure(buf, len(block), counts, counts + 1, counts + 2), "block")
    n, key_bytes, value_bytes = counts[0], counts[1], counts[2]
    keys = bytearray(key_bytes)
    values = bytearray(value_bytes)
    key_ends = array("I", bytes(4 * n))
    value_ends = array("I", bytes(4 * n))
    count = ffi.new("size_t *")
    _check(lib.rldb_block_decode(
        buf, len(block), _buffer(keys), key_bytes, ffi.from_buffer("uint32_t[]", key_ends),
        _buffer(values), value_bytes, ffi.from_buffer("uint32_t[]", value_ends), n, count,
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
    rc = lib.rldb_block_get(block, len(block), key, len(key), snapshot, found)
    if rc > 0:
        return found.trailer & 0xFF, ffi.unpack(found.value, found.vlen)
    if rc < 0:
        raise error_for(rc, "block")
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
        rc = lib.rldb_table_locate(bloom_filter, len(bloom_filter), self._keys, self._ends,
                                   self.count, key, len(key), snapshot, block)
        if rc > 0:
            return block[0]
        if rc == 0:
            return -1
        raise error_for(rc, "bloom filter")


class TableBuilder:
    """Builds one SSTable in memory from internal keys in increasing order."""

    __slots__ = ("_tb", "_finished")

    def __init__(self, block_size=4096, restart_interval=16, bits_per_key=10,
                 compression="snappy"):
        tb = lib.rldb_tb_new(block_size, restart_interval, bits_per_key,
                             COMPRESSION.get(compression, -1))
        if tb == ffi.NULL:
            raise InvalidArgumentError(
                f"bad table options: block_size={block_size} (>= 64), "
                f"restart_interval={restart_interval} (>= 1), bits_per_key={bits_per_key} "
                f"(0..64), compression={compression!r} (one of {', '.join(COMPRESSION)})")
        self._tb = ffi.gc(tb, lib.rldb_tb_free)
        self._finished = None

    def add(self, ikey, value):
        rc = lib.rldb_tb_add(self._tb, ikey, len(ikey), value, len(value))
        if rc:
            raise error_for(rc, "table builder (keys must increase)")

    def estimated_size(self):
        return lib.rldb_tb_estimated_size(self._tb)

    def stats(self):
        st = ffi.new("rldb_tb_stats *")
        lib.rldb_tb_get_stats(self._tb, st)
        return {name: getattr(st, name) for name in (
            "entries", "deletions", "data_blocks", "raw_key_bytes", "raw_value_bytes",
            "filter_bytes", "index_bytes", "compressed_blocks")}

    def key_range(self):
        """(first internal key, last internal key)."""
        ptrs = ffi.new("uint8_t *[2]")
        lens = ffi.new("size_t[2]")
        _check(lib.rldb_tb_key_range(self._tb, ptrs, lens, ptrs + 1, lens + 1), "empty table")
        return bytes(ffi.buffer(ptrs[0], lens[0])), bytes(ffi.buffer(ptrs[1], lens[1]))

    def seal(self):
        """Writes the last data block, filter and index: stats() is final after it."""
        _check(lib.rldb_tb_seal(self._tb), "table seal")

    def finish(self, properties):
        """The whole file, with properties (bytes) as its properties block."""
        ptr = ffi.new("uint8_t **")
        size = ffi.new("size_t *")
        _check(lib.rldb_tb_finish(self._tb, properties, len(properties), ptr, size), "table finish")
        return bytes(ffi.buffer(ptr[0], size[0]))


# ---- merging ----------------------------------------------------------------------

MERGE_DONE = lib.RLDB_MERGE_DONE
MERGE_NEED_DATA = lib.RLDB_MERGE_NEED_DATA
MERGE_OUTPUT_FULL = lib.RLDB_MERGE_OUTPUT_FULL
_ENTRY = "<4I"


class Merger:
    """The C k-way merge.  Sources are memtables or data blocks fed one at a time;
    see csrc/merge.c.  Holds a reference to whatever it was given until replaced."""

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
        self._cdata = _buffer(self._data)
        self._cindex = ffi.from_buffer("uint32_t[]", self._index)

    def set_block(self, source, block):
        self._held[source] = block
        rc = lib.rldb_merger_set_block(self._m, source, block, len(block))
        if rc:
            raise error_for(rc, "block")

    def set_raw_block(self, source, raw):
        """A block as stored (bytes-like, trailer included): verified and
        decompressed into the merger's own memory."""
        self._held[source] = None
        rc = lib.rldb_merger_set_raw_block(self._m, source, _buffer(raw), len(raw))
        if rc:
            raise error_for(rc, "block")

    def set_memtable(self, source, memtable):
        self._held[source] = memtable
        _check(lib.rldb_merger_set_memtable(self._m, source, memtable._mt), "merger")

    def set_done(self, source):
        self._held[source] = None
        _check(lib.rldb_merger_set_done(self._m, source), "merger")

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
        if rc < 0:
            raise error_for(rc, "merge")
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
        rc = lib.rldb_merger_compact(self._m, builder._tb, max_file_size, need)
        if rc < 0:
            raise error_for(rc, "merge")
        return rc, need[0]

    def stats(self):
        st = ffi.new("rldb_merge_stats *")
        lib.rldb_merger_get_stats(self._m, st)
        return {name: getattr(st, name) for name in (
            "entries_read", "entries_written", "versions_dropped", "tombstones_dropped")}


# ---- log writer ----------------------------------------------------------------------


class LogFramer:
    """Frames records in LevelDB's log format and write(2)s them to fd (owned by
    the caller); put() also inserts the op into a memtable, in one C call."""

    __slots__ = ("_w", "_errno")

    def __init__(self, fd, file_size):
        w = lib.rldb_log_writer_new(fd, file_size)
        if w == ffi.NULL:
            raise MemoryError("cannot allocate a log writer")
        self._w = ffi.gc(w, lib.rldb_log_writer_free)

    def _fail(self, rc, what):
        if rc == lib.RLDB_ERR_IO:
            code = lib.rldb_log_errno(self._w)
            raise OSError(code, os.strerror(code))
        raise error_for(rc, what)

    def add(self, payload):
        rc = lib.rldb_log_add(self._w, payload, len(payload))
        if rc:
            self._fail(rc, "log append")

    def put(self, memtable, seq, kind, key, value):
        rc = lib.rldb_log_put(self._w, memtable._mt, seq, kind, key, len(key), value, len(value))
        if rc:
            self._fail(rc, "log append")

    def written(self):
        return lib.rldb_log_written(self._w)


# ---- point lookups: block cache, table metadata, levels ----------------------------------------

GET_NOT_FOUND = lib.RLDB_GET_NOT_FOUND
GET_FOUND = lib.RLDB_GET_FOUND
GET_NEED_BLOCK = lib.RLDB_GET_NEED_BLOCK
GET_TOO_BIG = lib.RLDB_GET_TOO_BIG
MAX_LEVELS = lib.RLDB_MAX_LEVELS


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
        rc = lib.rldb_cache_insert(self._c, table, block, _buffer(data), len(data))
        if rc < 0:
            raise error_for(rc, "block")
        return rc == 1

    def load(self, table, block, fd, offset, size):
        """Reads block `block` of a table from fd, verifies and caches it;
        False when too big to cache.  OSError when the read fails."""
        err = ffi.new("int *")
        rc = lib.rldb_cache_load(self._c, table, block, fd, offset, size, err)
        if rc == lib.RLDB_ERR_IO:
            raise OSError(err[0], os.strerror(err[0]))
        if rc < 0:
            raise error_for(rc, "block")
        return rc == 1

    def erase_table(self, table, nblocks):
        lib.rldb_cache_erase_table(self._c, table, nblocks)

    def stats(self):
        st = ffi.new("rldb_cache_stats *")
        lib.rldb_cache_get_stats(self._c, st)
        return {name: getattr(st, name) for name in (
            "capacity", "bytes", "blocks", "hits", "misses", "evictions",
            "bloom_useful", "bloom_false_positive")}

    def check(self):
        _check(lib.rldb_cache_check(self._c), "block cache check")


class TableMeta:
    """What point lookups need of one table, in C memory: filter and index."""

    __slots__ = ("_t", "number")

    def __init__(self, number, bloom_filter, index_block):
        t = lib.rldb_table_new(number, bloom_filter, len(bloom_filter), _buffer(index_block),
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
        _check(lib.rldb_levels_add(self._lv, level, meta._t, smallest, len(smallest),
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


# ---- bitcask ------------------------------------------------------------------------------

from rldb.errors import ClosedError, StorageIOError  # noqa: E402  (this section's own errors)

BC_HEADER = lib.RLDB_BC_HEADER
BC_MAX_KEY = lib.RLDB_KEYDIR_MAX_KEY
BC_MAX_VALUE = lib.RLDB_BC_MAX_VALUE
BC_MAX_FILE_SIZE = lib.RLDB_BC_MAX_FILE_SIZE
BC_SCAN_CLEAN = lib.RLDB_BC_SCAN_CLEAN
BC_SCAN_TORN = lib.RLDB_BC_SCAN_TORN
BC_SCAN_CORRUPT = lib.RLDB_BC_SCAN_CORRUPT
KEYDIR_TOMBSTONE = lib.RLDB_KEYDIR_TOMBSTONE
_BC_ABSENT = lib.RLDB_BC_ABSENT
_BC_CLOSED = lib.RLDB_BC_CLOSED
_BC_NEED_ROLL = lib.RLDB_BC_NEED_ROLL
_BC_NEED_OUTPUT = lib.RLDB_BC_NEED_OUTPUT
_BC_HINT_SIZE = lib.RLDB_BC_HINT_SIZE
_BC_INLINE = 16384  # bytes of each thread's get buffer; longer values take a second call
_raw_new = ffi.new_allocator(should_clear_after_alloc=False)
_BC_STATS = ("keys", "tombstones", "key_bytes", "keydir_memory", "keydir_slots", "files",
             "total_bytes", "live_bytes", "generation", "syncs", "hint_failures")
_BC_MERGE_STATS = ("entries_read", "bytes_read", "entries_written", "bytes_written",
                   "tombstones_kept", "tombstones_dropped", "moved", "skipped")
_BC_PROBLEM = {lib.RLDB_ERR_TRUNCATED: "cut short", lib.RLDB_ERR_OVERFLOW: "value too long",
               lib.RLDB_ERR_CORRUPT: "damaged", lib.RLDB_ERR_CHECKSUM: "checksum mismatch",
               _BC_HINT_SIZE: "intact, but written for a data file of another size"}


class Keydir:
    """The C keydir on its own (csrc/keydir.c): key -> (file, offset, value
    size, timestamp).  The Bitcask engine uses it through Bitcask; this class
    serves tests and bench/bitcask_keydir.py.  Not thread-safe."""

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
        rc = lib.rldb_keydir_put(self._kd, key, len(key), rec, old)
        if rc < 0:
            raise error_for(rc, "keydir put")
        return (old.file, old.offset, old.vsize, old.tstamp) if rc else None

    def get(self, key):
        rec = ffi.new("rldb_keydir_rec *")
        if lib.rldb_keydir_get(self._kd, key, len(key), rec):
            return rec.file, rec.offset, rec.vsize, rec.tstamp
        return None

    def remove(self, key):
        old = ffi.new("rldb_keydir_rec *")
        if lib.rldb_keydir_remove(self._kd, key, len(key), old):
            return old.file, old.offset, old.vsize, old.tstamp
        return None

    def reserve(self, count):
        _check(lib.rldb_keydir_reserve(self._kd, count), "keydir reserve")

    def usage(self):
        u = ffi.new("rldb_keydir_usage *")
        lib.rldb_keydir_get_usage(self._kd, u)
        return {name: getattr(u, name) for name in (
            "count", "tombstones", "key_bytes", "memory", "slots", "arena_bytes", "arena_used",
            "arena_dead")}

    def items(self):
        """Every (key, record), in no particular order."""
        pos = ffi.new("uint64_t *")
        key = ffi.new("uint8_t **")
        klen = ffi.new("size_t *")
        rec = ffi.new("rldb_keydir_rec *")
        out = []
        while lib.rldb_keydir_next(self._kd, pos, key, klen, rec):
            out.append((bytes(ffi.buffer(key[0], klen[0])),
                        (rec.file, rec.offset, rec.vsize, rec.tstamp)))
        return out

    def check(self):
        _check(lib.rldb_keydir_check(self._kd), "keydir check")

    def __len__(self):
        return self.usage()["count"]


class Bitcask:
    """The C side of one Bitcask store (csrc/bitcask.c): the keydir, the table
    of open data files, the active file and its hint, merges.  The engine in
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
            return ClosedError("the engine is closed")
        ids = ffi.new("uint32_t[2]")
        offset = ffi.new("uint64_t *")
        err = ffi.new("int *")
        has = lib.rldb_bc_last_error(ids, ids + 1, offset, err)
        path = self._locate(ids[0], ids[1]) if has else None
        if rc == lib.RLDB_ERR_IO:
            code = err[0] or 5  # EIO
            where = f" ({path} at offset {offset[0]})" if has else ""
            return StorageIOError(code, f"{what} failed: {os.strerror(code)}{where}")
        if rc in _BC_PROBLEM:
            return CorruptionError(f"{what}: {_BC_PROBLEM[rc]}", path, offset[0] if has else None)
        if rc == lib.RLDB_ERR_INVALID_ARGUMENT and what in ("put", "delete", "write_batch"):
            return InvalidArgumentError(
                f"{what}: keys are 1..{BC_MAX_KEY} bytes and values at most {BC_MAX_VALUE} "
                f"bytes in the bitcask engine")
        return error_for(rc, what)

    def _finish(self, rc, size, again, roll, what):
        """After a write returned rc: rolls while the active file is full, then
        raises on an error."""
        while rc == _BC_NEED_ROLL:
            roll(size)
            rc = again()
        if rc:
            raise self.error(rc, what)

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
            if n < 0:
                raise self.error(n, "get")
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
        return _check(lib.rldb_bc_add_file(self._bc, fd, rank, file_id, size), "add data file")

    def remove_file(self, slot):
        rc = lib.rldb_bc_remove_file(self._bc, slot)
        if rc:
            raise self.error(rc, "remove data file (the keydir still points into it)")

    def set_file_size(self, slot, size):
        rc = lib.rldb_bc_set_file_size(self._bc, slot, size)
        if rc:
            raise self.error(rc, "set file size")

    def reserve(self, keys):
        rc = lib.rldb_bc_reserve(self._bc, keys)
        if rc:
            raise self.error(rc, "keydir reserve")

    def activate(self, slot, hint_fd):
        rc = lib.rldb_bc_activate(self._bc, slot, hint_fd)
        if rc:
            raise self.error(rc, "activate data file")

    def seal(self):
        """(hint complete, size of the active file); no write goes to it after."""
        size = ffi.new("uint64_t *")
        ok = lib.rldb_bc_seal(self._bc, size)
        return bool(ok), size[0]

    def needs_roll(self, entry_size):
        return bool(lib.rldb_bc_needs_roll(self._bc, entry_size))

    def sync(self):
        rc = lib.rldb_bc_sync(self._bc)
        if rc:
            raise self.error(rc, "fsync of the active file")

    # -- open

    def load_hint(self, slot, hint):
        """None when the hint was loaded, else why it was not (nothing was
        applied then): "size" when it is intact but was written for a data
        file of another size, else what is wrong with it."""
        rc = lib.rldb_bc_load_hint(self._bc, slot, _buffer(hint), len(hint))
        if rc == 0:
            return None
        if rc == _BC_HINT_SIZE:
            return "size"
        if rc not in _BC_PROBLEM:
            raise self.error(rc, "hint file")
        return _BC_PROBLEM[rc]

    def scan(self, slot, apply, hint_fd=-1):
        """(status, valid end, bad offset): every entry of a data file checked,
        applied to the keydir with apply, a hint of the valid part written to
        hint_fd when >= 0."""
        out = ffi.new("uint64_t[2]")
        rc = lib.rldb_bc_scan(self._bc, slot, 1 if apply else 0, hint_fd, out, out + 1)
        if rc < 0:
            raise self.error(rc, "scan of a data file")
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
            if rc == 0:
                break
            if rc != lib.RLDB_ERR_BUFFER_TOO_SMALL:
                raise self.error(rc, "keys")
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
        return {name: getattr(st, name) for name in _BC_STATS}

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
        rc = lib.rldb_bc_check(self._bc)
        if rc:
            raise self.error(rc, "check")

    def check_hint(self, slot, hint):
        rc = lib.rldb_bc_check_hint(self._bc, slot, _buffer(hint), len(hint))
        if rc:
            raise self.error(rc, "hint check")

    def close(self):
        lib.rldb_bc_close(self._bc)

    def merge(self, max_output):
        return BitcaskMerge(self, max_output)


class BitcaskMerge:
    """One merge: live entries of input files copied to output files (see
    rldb/storage/bitcask/merge.py for the protocol around it)."""

    __slots__ = ("_m", "_owner")

    def __init__(self, owner, max_output):
        m = lib.rldb_bc_merge_new(owner._bc, max_output)
        if m == ffi.NULL:
            raise InvalidArgumentError(f"bad merge output size {max_output}")
        self._m = ffi.gc(m, lib.rldb_bc_merge_free)
        self._owner = owner

    def set_output(self, slot, hint_fd):
        rc = lib.rldb_bc_merge_output(self._m, slot, hint_fd)
        if rc:
            raise self._owner.error(rc, "merge output")

    def merge_file(self, slot, drop_tombstones, resume):
        """(done, resume): done is False when the output is full."""
        pos = ffi.new("uint64_t *", resume)
        rc = lib.rldb_bc_merge_file(self._m, slot, 1 if drop_tombstones else 0, pos)
        if rc == _BC_NEED_OUTPUT:
            return False, pos[0]
        if rc:
            raise self._owner.error(rc, "merge")
        return True, pos[0]

    def finish_output(self):
        """Writes the rest of the output and its hint; returns its size."""
        size = ffi.new("uint64_t *")
        rc = lib.rldb_bc_merge_finish_output(self._m, size)
        if rc:
            raise self._owner.error(rc, "merge output")
        return size[0]

    def commit(self, input_slots):
        slots = ffi.new("uint32_t[]", list(input_slots) or [0])
        rc = lib.rldb_bc_merge_commit(self._m, slots, len(input_slots))
        if rc:
            raise self._owner.error(rc, "merge commit")

    def stats(self):
        st = ffi.new("rldb_bc_merge_stats *")
        lib.rldb_bc_merge_get_stats(self._m, st)
        return {name: getattr(st, name) for name in _BC_MERGE_STATS}
