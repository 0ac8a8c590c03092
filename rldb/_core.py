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
