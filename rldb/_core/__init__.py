"""The compiled C core (csrc/) seen from Python: one module per concept,
named as its C file, each wrapping that file's part of csrc/rldb.h.

    loader         the only importer of the native module rldb._rldb_core:
                   refuses a stale build; check(), C status -> rldb.errors
    checksum       CRC-32C and its masked form           csrc/checksum.c
    varint         base-128 varints                       csrc/varint.c
    bloom          bloom filters                          csrc/bloom.c
    memtable       the skiplist of internal keys          csrc/memtable.c
    log_writer     the WAL/MANIFEST log format, written   csrc/log_writer.c
    block          SSTable blocks and a table's index     csrc/block.c
    snappy         block compression                      csrc/snappy.c
    sstable        building a table, its footer           csrc/sstable.c
    kway_merge     the merge behind scans and compactions csrc/kway_merge.c
    point_lookup   block cache, levels, the lookup        csrc/point_lookup.c
    keydir         the Bitcask keydir on its own          csrc/keydir.c
    bitcask        the Bitcask store                      csrc/bitcask_*.c
    bitcask_merge  a Bitcask merge                        csrc/bitcask_merge.c

Import names from the concept module (from rldb._core.bloom import
bloom_build): this package itself exports nothing, so every caller says
which concept it uses.  Importing it loads the native module, so a build
made for another version is refused here."""
from rldb._core import loader  # noqa: F401  (loads and checks the build)

CONCEPTS = ("checksum", "varint", "bloom", "memtable", "log_writer", "block", "snappy",
            "sstable", "kway_merge", "point_lookup", "keydir", "bitcask", "bitcask_merge")

