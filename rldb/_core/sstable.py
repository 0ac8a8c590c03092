"""The SSTable file (csrc/sstable.c): a table built in memory from internal
keys in order, and its footer decoded."""
from rldb._core.block import COMPRESSION
from rldb._core.loader import as_buffer, check, ffi, fields, lib
from rldb.errors import InvalidArgumentError

__all__ = ["FOOTER_SIZE", "TABLE_FORMAT", "decode_footer", "TableBuilder"]

FOOTER_SIZE = lib.RLDB_FOOTER_SIZE
TABLE_FORMAT = lib.RLDB_TABLE_FORMAT
_STATS = ("entries", "deletions", "data_blocks", "raw_key_bytes", "raw_value_bytes",
          "filter_bytes", "index_bytes", "compressed_blocks")


def decode_footer(footer, file_size):
    """The six block handles (filter, properties and index offset/size)."""
    handles = ffi.new("uint64_t[6]")
    check(lib.rldb_footer_decode(as_buffer(footer), len(footer), file_size, handles), "footer")
    return tuple(handles)


class TableBuilder:
    """Builds one SSTable in memory from internal keys in increasing order."""

    __slots__ = ("_tb",)

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

    def add(self, ikey, value):
        check(lib.rldb_tb_add(self._tb, ikey, len(ikey), value, len(value)),
              "table builder (keys must increase)")

    def estimated_size(self):
        return lib.rldb_tb_estimated_size(self._tb)

    def stats(self):
        st = ffi.new("rldb_tb_stats *")
        lib.rldb_tb_get_stats(self._tb, st)
        return fields(st, _STATS)

    def key_range(self):
        """(first internal key, last internal key)."""
        ptrs = ffi.new("uint8_t *[2]")
        lens = ffi.new("size_t[2]")
        check(lib.rldb_tb_key_range(self._tb, ptrs, lens, ptrs + 1, lens + 1), "empty table")
        return bytes(ffi.buffer(ptrs[0], lens[0])), bytes(ffi.buffer(ptrs[1], lens[1]))

    def seal(self):
        """Writes the last data block, filter and index: stats() is final after it."""
        check(lib.rldb_tb_seal(self._tb), "table seal")

    def finish(self, properties):
        """The whole file, with properties (bytes) as its properties block."""
        ptr = ffi.new("uint8_t **")
        size = ffi.new("size_t *")
        check(lib.rldb_tb_finish(self._tb, properties, len(properties), ptr, size), "table finish")
        return bytes(ffi.buffer(ptr[0], size[0]))
