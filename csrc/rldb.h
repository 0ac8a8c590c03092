/* rldb C core: the one header.  It is also the cffi cdef (build_core.py strips
 * the preprocessor lines), so it holds plain declarations only.
 *
 * Conventions: every exported symbol starts with rldb_; functions that can fail
 * return an int, 0 (RLDB_OK) or a negative RLDB_ERR_* code whose text comes from
 * rldb_strerror().  No function aborts the process or reads past a length it was
 * given: corrupt input yields an error code. */
#ifndef RLDB_H
#define RLDB_H
#include <stddef.h>
#include <stdint.h>

enum rldb_rc {
    RLDB_OK = 0,
    RLDB_ERR_TRUNCATED = -1,      /* input ended inside an encoded value */
    RLDB_ERR_OVERFLOW = -2,       /* an encoded value is longer than allowed */
    RLDB_ERR_CORRUPT = -3,        /* a structure failed a format check */
    RLDB_ERR_BUFFER_TOO_SMALL = -4,
    RLDB_ERR_INVALID_ARGUMENT = -5,
    RLDB_ERR_NO_MEMORY = -6,
    RLDB_ERR_NOT_SUPPORTED = -7,
    RLDB_ERR_CHECKSUM = -8,       /* a stored checksum does not match its data */
    RLDB_ERR_IO = -9,             /* a system call failed; the caller has errno */
    RLDB_ERR_LAST = -10
};

/* Version of the package this module was built for, e.g. "0.1.0". */
const char *rldb_version(void);
/* Message for a return code (RLDB_ERR_* and the RLDB_BC_* codes); never NULL. */
const char *rldb_strerror(int rc);

/* ---- checksum: CRC-32C (Castagnoli) (checksum.c) ----------------------- */
/* crc32c of data appended to a running crc (start with 0). */
uint32_t rldb_crc32c_extend(uint32_t crc, const uint8_t *data, size_t n);
/* The two implementations behind rldb_crc32c_extend, for tests. */
uint32_t rldb_crc32c_extend_sw(uint32_t crc, const uint8_t *data, size_t n);
int rldb_crc32c_extend_hw(uint32_t crc, const uint8_t *data, size_t n, uint32_t *out);
/* 1 when the CPU's CRC-32C instruction is used, else 0. */
int rldb_crc32c_hw_available(void);
/* LevelDB's masked form, for checksums stored next to data that holds CRCs. */
uint32_t rldb_crc32c_mask(uint32_t crc);
uint32_t rldb_crc32c_unmask(uint32_t masked);

/* ---- varints (LevelDB / protobuf base-128, at most 10 bytes; varint.c) - */
#define RLDB_VARINT64_MAX 10
/* Writes v at out (room for RLDB_VARINT64_MAX bytes); returns bytes written. */
int rldb_varint_encode(uint64_t v, uint8_t *out);
/* Decodes one varint from buf[0..n); *consumed gets its length. */
int rldb_varint_decode(const uint8_t *buf, size_t n, uint64_t *value, size_t *consumed);
/* Batch forms: one call for many values. */
int rldb_varint_encode_many(const uint64_t *values, size_t count, uint8_t *out,
                            size_t cap, size_t *written);
int rldb_varint_decode_many(const uint8_t *buf, size_t n, uint64_t *values,
                            size_t max_count, size_t *count, size_t *consumed);

/* ---- bloom filters (bloom.c) -------------------------------------------- */
/* Keys are passed packed: data holds them back to back, lengths[i] is the
 * length of key i.  A filter is the bit array followed by one byte holding the
 * number of probes. */
size_t rldb_bloom_size(size_t key_count, uint32_t bits_per_key);
int rldb_bloom_build(const uint8_t *data, const uint32_t *lengths, size_t count,
                     uint32_t bits_per_key, uint8_t *out, size_t out_len);
/* 1 if the key may be present, 0 if it is certainly absent, <0 on a bad filter. */
int rldb_bloom_may_contain(const uint8_t *filter, size_t filter_len,
                           const uint8_t *key, size_t key_len);
int rldb_bloom_probe_many(const uint8_t *filter, size_t filter_len,
                          const uint8_t *data, const uint32_t *lengths, size_t count,
                          uint8_t *results);
/* The two 64-bit hashes of a key that the filter uses (tests, tools). */
void rldb_hash128(const uint8_t *key, size_t len, uint64_t *h1, uint64_t *h2);

/* ---- memtable: a skiplist of internal keys on an arena (memtable.c) ----- */
/* Internal key = user key + fixed64 (sequence << 8 | kind); kind 1 is a value,
 * 0 a tombstone.  One writer at a time; readers may run concurrently. */
typedef struct rldb_memtable rldb_memtable;
rldb_memtable *rldb_memtable_new(uint64_t seed);
void rldb_memtable_free(rldb_memtable *mt);
int rldb_memtable_add(rldb_memtable *mt, uint64_t seq, int kind, const uint8_t *key,
                      size_t klen, const uint8_t *value, size_t vlen);
int rldb_memtable_add_batch(rldb_memtable *mt, uint64_t seq, const uint8_t *kinds,
                            const uint8_t *data, const uint32_t *klens,
                            const uint32_t *vlens, size_t count);
/* What a point lookup found: the entry's trailer (sequence << 8 | kind) and value. */
typedef struct {
    uint64_t trailer;
    const char *value;
    size_t vlen;
} rldb_found;
/* 1 and the newest version with sequence <= snapshot, or 0 when absent. */
int rldb_memtable_get(rldb_memtable *mt, const uint8_t *key, size_t klen, uint64_t snapshot,
                      rldb_found *found);
void rldb_memtable_usage(const rldb_memtable *mt, size_t *memory, size_t *count,
                         size_t *data_bytes);
int rldb_memtable_check(const rldb_memtable *mt);

/* ---- log writer (WAL and MANIFEST framing, LevelDB's log format;
 *      log_writer.c) ------------------------------------------------------ */
typedef struct rldb_log_writer rldb_log_writer;
/* Appends to fd, which the caller owns; file_size is where the file ends now. */
rldb_log_writer *rldb_log_writer_new(int fd, uint64_t file_size);
void rldb_log_writer_free(rldb_log_writer *w);
int rldb_log_add(rldb_log_writer *w, const uint8_t *payload, size_t len);
/* One put (kind 1) or delete (kind 0): WAL record then memtable insert. */
int rldb_log_put(rldb_log_writer *w, rldb_memtable *mt, uint64_t seq, int kind,
                 const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen);
uint64_t rldb_log_written(const rldb_log_writer *w);
int rldb_log_errno(const rldb_log_writer *w);

/* ---- SSTable blocks (block.c, snappy.c) and tables (sstable.c) ---------- */
#define RLDB_BLOCK_TRAILER 5
#define RLDB_BLOCK_RAW 0
#define RLDB_BLOCK_SNAPPY 1
#define RLDB_FOOTER_SIZE 64
#define RLDB_TABLE_FORMAT 1
#define RLDB_TABLE_MAGIC 0x3130747373626472ULL

/* Checks the trailer (type byte and masked CRC-32C) of contents + trailer. */
int rldb_block_verify(const uint8_t *data, size_t len);
/* Verifies, then gives the contents' uncompressed size / writes them out. */
int rldb_block_contents_size(const uint8_t *data, size_t len, size_t *size);
int rldb_block_unwrap(const uint8_t *data, size_t len, uint8_t *out, size_t cap, size_t *out_len);

/* Snappy (raw format) compression of blocks. */
size_t rldb_snappy_max_compressed(size_t n);
int rldb_snappy_compress(const uint8_t *src, size_t n, uint8_t *dst, size_t cap, size_t *out_len);
int rldb_snappy_uncompressed_length(const uint8_t *src, size_t n, size_t *len);
int rldb_snappy_decompress(const uint8_t *src, size_t n, uint8_t *dst, size_t cap, size_t *out_len);
/* 1 with the trailer and value of the newest version <= snapshot, 0 if absent. */
int rldb_block_get(const uint8_t *data, size_t len, const uint8_t *key, size_t klen,
                   uint64_t snapshot, rldb_found *found);
int rldb_block_measure(const uint8_t *data, size_t len, size_t *count, size_t *key_bytes,
                       size_t *value_bytes);
int rldb_block_decode(const uint8_t *data, size_t len, uint8_t *keys_out, size_t keys_cap,
                      uint32_t *key_ends, uint8_t *values_out, size_t values_cap,
                      uint32_t *value_ends, size_t max_count, size_t *count, int check_order);
long rldb_index_search(const uint8_t *keys, const uint32_t *ends, size_t count,
                       const uint8_t *key, size_t klen, uint64_t snapshot);
int rldb_table_locate(const uint8_t *filter, size_t filter_len, const uint8_t *keys,
                      const uint32_t *ends, size_t count, const uint8_t *key, size_t klen,
                      uint64_t snapshot, long *block);
int rldb_footer_decode(const uint8_t *footer, size_t len, uint64_t file_size, uint64_t *handles);

typedef struct {
    uint64_t entries, deletions, data_blocks, raw_key_bytes, raw_value_bytes;
    uint64_t filter_bytes, index_bytes, compressed_blocks;
} rldb_tb_stats;
typedef struct rldb_table_builder rldb_table_builder;
rldb_table_builder *rldb_tb_new(uint32_t block_size, uint32_t restart_interval,
                                uint32_t bits_per_key, int compression);
void rldb_tb_free(rldb_table_builder *tb);
int rldb_tb_add(rldb_table_builder *tb, const uint8_t *ikey, size_t iklen,
                const uint8_t *value, size_t vlen);
int rldb_tb_add_many(rldb_table_builder *tb, const uint8_t *data, const uint32_t *klens,
                     const uint32_t *vlens, size_t count);
uint64_t rldb_tb_estimated_size(const rldb_table_builder *tb);
void rldb_tb_get_stats(const rldb_table_builder *tb, rldb_tb_stats *st);
int rldb_tb_key_range(const rldb_table_builder *tb, const uint8_t **first, size_t *first_len,
                      const uint8_t **last, size_t *last_len);
/* Writes the last data block, the filter and the index (stats are then final). */
int rldb_tb_seal(rldb_table_builder *tb);
/* Completes the table; *file points at the whole file, owned by the builder. */
int rldb_tb_finish(rldb_table_builder *tb, const uint8_t *props, size_t props_len,
                   const uint8_t **file, size_t *file_len);

/* ---- point lookups over the whole tree (point_lookup.c) ----------------- */
#define RLDB_MAX_LEVELS 7
#define RLDB_INLINE_VALUE 1024
#define RLDB_GET_NOT_FOUND 0
#define RLDB_GET_FOUND 1
#define RLDB_GET_NEED_BLOCK 2
#define RLDB_GET_TOO_BIG 3
typedef struct {
    uint64_t capacity, bytes, blocks, hits, misses, evictions;
    uint64_t bloom_useful, bloom_false_positive;
} rldb_cache_stats;
typedef struct rldb_cache rldb_cache;
rldb_cache *rldb_cache_new(size_t capacity);
void rldb_cache_free(rldb_cache *c);
/* 1 cached, 0 not cacheable (too big), <0 bad checksum; data includes the trailer. */
int rldb_cache_insert(rldb_cache *c, uint64_t table, uint32_t block, const uint8_t *data, size_t len);
/* Reads, verifies and caches a block from fd: 1 cached, 0 too big, <0 error
 * (RLDB_ERR_IO with *err = errno). */
int rldb_cache_load(rldb_cache *c, uint64_t table, uint32_t block, int fd, uint64_t offset,
                    uint64_t size, int *err);
void rldb_cache_erase_table(rldb_cache *c, uint64_t table, uint32_t nblocks);
void rldb_cache_get_stats(rldb_cache *c, rldb_cache_stats *st);
int rldb_cache_check(rldb_cache *c);

typedef struct rldb_table rldb_table;
/* NULL when the index block does not decode. */
rldb_table *rldb_table_new(uint64_t number, const uint8_t *filter, size_t filter_len,
                           const uint8_t *index, size_t index_len);
void rldb_table_free(rldb_table *t);

typedef struct rldb_levels rldb_levels;
rldb_levels *rldb_levels_new(void);
void rldb_levels_free(rldb_levels *v);
int rldb_levels_add(rldb_levels *v, int level, rldb_table *t, const uint8_t *smallest,
                     size_t slen, const uint8_t *largest, size_t llen);

typedef struct {
    uint64_t trailer;       /* of the version found */
    size_t vlen;
    uint32_t where;         /* 0: a memtable, else the candidate table's ordinal */
    uint32_t resume;        /* pass back after NEED_BLOCK */
    uint64_t need_table, need_offset, need_size;
    uint32_t need_block;
    char value[RLDB_INLINE_VALUE];
} rldb_get_result;
/* FOUND (a tombstone when trailer & 0xff == 0), NOT_FOUND, NEED_BLOCK (read
 * need_* into the cache and call again with resume), TOO_BIG (value longer
 * than the inline buffer: read it another way), or <0. */
int rldb_get(rldb_memtable *mem, rldb_memtable *imm, rldb_levels *v, rldb_cache *c,
             const uint8_t *key, size_t klen, uint64_t snapshot, uint32_t resume,
             rldb_get_result *r);

/* ---- k-way merge (kway_merge.c) -------------------------------------------- */
#define RLDB_MERGE_SCAN 0
#define RLDB_MERGE_COMPACT 1
#define RLDB_MERGE_DONE 0
#define RLDB_MERGE_NEED_DATA 1
#define RLDB_MERGE_OUTPUT_FULL 2
typedef struct {
    uint64_t entries_read, entries_written, versions_dropped, tombstones_dropped;
} rldb_merge_stats;
typedef struct rldb_merger rldb_merger;
rldb_merger *rldb_merger_new(int nsources, int mode, int reverse, uint64_t snapshot,
                             const uint8_t *start, size_t start_len, int has_start,
                             const uint8_t *end, size_t end_len, int has_end,
                             int drop_tombstones);
void rldb_merger_free(rldb_merger *m);
/* The block must stay alive until the source is refilled or the merger freed. */
int rldb_merger_set_block(rldb_merger *m, int source, const uint8_t *data, size_t len);
/* The same from a block as stored (verified and decompressed into the merger). */
int rldb_merger_set_raw_block(rldb_merger *m, int source, const uint8_t *data, size_t len);
int rldb_merger_set_memtable(rldb_merger *m, int source, rldb_memtable *mt);
int rldb_merger_set_done(rldb_merger *m, int source);
int rldb_merger_scan(rldb_merger *m, uint8_t *data, size_t cap, uint32_t *index,
                     size_t index_cap, size_t *count, size_t *used, int *need_source,
                     size_t *need_bytes);
int rldb_merger_compact(rldb_merger *m, rldb_table_builder *tb, uint64_t max_file_size,
                        int *need_source);
void rldb_merger_get_stats(const rldb_merger *m, rldb_merge_stats *st);

/* ---- bitcask ---- */
/* The keydir (keydir.c): key -> a fixed 16-byte record, in memory.  An
 * open-addressing hash table over an arena of keys; not thread-safe by itself
 * (rldb_bitcask guards it).  Keys are 1..RLDB_KEYDIR_MAX_KEY bytes. */
#define RLDB_KEYDIR_MAX_KEY 65535
#define RLDB_KEYDIR_TOMBSTONE 4294967295
typedef struct {
    uint32_t file;     /* slot of the data file in the bitcask's file table */
    uint32_t offset;   /* where the entry starts in that file */
    uint32_t vsize;    /* value size; RLDB_KEYDIR_TOMBSTONE for a tombstone */
    uint32_t tstamp;   /* seconds since the epoch */
} rldb_keydir_rec;
typedef struct {
    uint64_t count, tombstones, key_bytes;  /* entries (tombstones included) */
    uint64_t memory;                        /* bytes malloc'd, all told */
    uint64_t slots, arena_bytes, arena_used, arena_dead;
} rldb_keydir_usage;
typedef struct rldb_keydir rldb_keydir;
rldb_keydir *rldb_keydir_new(void);
void rldb_keydir_free(rldb_keydir *kd);
int rldb_keydir_reserve(rldb_keydir *kd, size_t count);
/* Starts loading key's home slot into the cache (for a put or get soon after). */
void rldb_keydir_prefetch(const rldb_keydir *kd, const uint8_t *key, size_t klen);
/* 1 and the record, or 0 when absent. */
int rldb_keydir_get(const rldb_keydir *kd, const uint8_t *key, size_t klen, rldb_keydir_rec *rec);
/* Inserts or replaces: 1 (and *old, if not NULL) when the key was there, 0 when new, <0 on error. */
int rldb_keydir_put(rldb_keydir *kd, const uint8_t *key, size_t klen, const rldb_keydir_rec *rec,
                    rldb_keydir_rec *old);
/* 1 (and *old) when removed, 0 when absent. */
int rldb_keydir_remove(rldb_keydir *kd, const uint8_t *key, size_t klen, rldb_keydir_rec *old);
void rldb_keydir_get_usage(const rldb_keydir *kd, rldb_keydir_usage *u);
/* Walks every entry in no particular order: *pos starts at 0; 1 with the next
 * entry (key points into the keydir, valid until it changes), 0 at the end. */
int rldb_keydir_next(const rldb_keydir *kd, uint64_t *pos, const uint8_t **key, size_t *klen,
                     rldb_keydir_rec *rec);
int rldb_keydir_check(const rldb_keydir *kd);

/* Bitcask data files and hint files (bitcask_*.c, bitcask_internal.h lists
 * them; layouts in docs/formats.md).
 * Entry: crc32c u32 | timestamp u64 (us) | key size u32 | value size u32 |
 * flags u8 | key | value.  Hint entry: entry offset u32 | value size u32 |
 * timestamp u32 (seconds) | key size u16 | flags u8 | key; the hint ends with
 * a 28-byte trailer: count u64 | data file size u64 | magic u64 | crc32c u32. */
#define RLDB_BC_HEADER 21
#define RLDB_BC_HINT_HEADER 15
#define RLDB_BC_HINT_TRAILER 28
#define RLDB_BC_FLAG_TOMBSTONE 1
#define RLDB_BC_FLAG_BATCH 2
#define RLDB_BC_MAX_VALUE 2147483647
#define RLDB_BC_MAX_FILE_SIZE 4294967295
#define RLDB_BC_SCAN_CLEAN 0
#define RLDB_BC_SCAN_TORN 1
#define RLDB_BC_SCAN_CORRUPT 2
enum rldb_bc_code {
    RLDB_BC_NEED_ROLL = 1,    /* the active file is full or sealed: roll, then call again */
    RLDB_BC_NEED_OUTPUT = 2,  /* merge: give the merge a new output file, then call again */
    RLDB_BC_ABSENT = -64,     /* get: no such key (or a tombstone) */
    RLDB_BC_CLOSED = -65,     /* the bitcask was closed */
    RLDB_BC_HINT_SIZE = -66   /* an intact hint describes a data file of another size */
};

/* Threads may call put, delete, write_batch, get, sync, keys, stats and the
 * merge calls at once; file-table calls (add/remove/activate/seal) come from
 * one thread at a time.  The caller opens every descriptor and closes it only
 * after rldb_bc_remove_file (or rldb_bc_close) returned. */
typedef struct rldb_bitcask rldb_bitcask;
rldb_bitcask *rldb_bc_new(uint64_t max_file_size, int sync);
void rldb_bc_free(rldb_bitcask *bc);
/* Every later call returns RLDB_BC_CLOSED; the keydir is freed. */
void rldb_bc_close(rldb_bitcask *bc);
/* Registers a data file (fd open for reading; the active file and merge
 * outputs also for writing); returns its slot. */
int rldb_bc_add_file(rldb_bitcask *bc, int fd, uint32_t rank, uint32_t id, uint64_t size);
/* Refused (RLDB_ERR_INVALID_ARGUMENT) while the keydir points into the file,
 * or for the active file unless it was sealed. */
int rldb_bc_remove_file(rldb_bitcask *bc, uint32_t slot);
int rldb_bc_set_file_size(rldb_bitcask *bc, uint32_t slot, uint64_t size);
int rldb_bc_reserve(rldb_bitcask *bc, size_t keys);
/* Makes slot the (empty) active file, with hint_fd for its hint file. */
int rldb_bc_activate(rldb_bitcask *bc, uint32_t slot, int hint_fd);
/* Stops writes to the active file and completes its hint; 1 when the hint is
 * complete, 0 when it is not (a write to it failed, or none). */
int rldb_bc_seal(rldb_bitcask *bc, uint64_t *size);
/* 1 when an entry of that many bytes would need a roll first. */
int rldb_bc_needs_roll(rldb_bitcask *bc, uint64_t entry_size);
int rldb_bc_put(rldb_bitcask *bc, const char *key, size_t klen, const char *value, size_t vlen);
int rldb_bc_delete(rldb_bitcask *bc, const char *key, size_t klen);
/* kinds[i]: 1 put, 0 delete; data holds key i then value i (none for a delete). */
int rldb_bc_write_batch(rldb_bitcask *bc, const uint8_t *kinds, const char *data,
                        const uint32_t *klens, const uint32_t *vlens, size_t count);
/* The value's length (copied to buf when it fits in cap; else call again
 * with a buffer of cap >= length + RLDB_BC_HEADER + klen), RLDB_BC_ABSENT,
 * or <0 (a checksum failure names the file and offset: rldb_bc_last_error). */
int64_t rldb_bc_get(rldb_bitcask *bc, const char *key, size_t klen, char *buf, size_t cap);
/* fdatasync of the active file, shared with other threads' syncs. */
int rldb_bc_sync(rldb_bitcask *bc);
/* Loads a hint file into the keydir; <0 (nothing applied) when it is not valid. */
int rldb_bc_load_hint(rldb_bitcask *bc, uint32_t slot, const uint8_t *hint, size_t len);
/* Reads a data file, verifying every entry; with apply the keydir takes its
 * entries, with hint_fd >= 0 a hint of the valid part is written there.
 * Returns RLDB_BC_SCAN_CLEAN, _TORN (bad at *bad_offset, nothing valid after
 * it) or _CORRUPT (valid entries follow the damage); *valid_end is where the
 * last complete entry (or batch) ends. */
int rldb_bc_scan(rldb_bitcask *bc, uint32_t slot, int apply, int hint_fd, uint64_t *valid_end,
                 uint64_t *bad_offset);
/* Copies every live key (no tombstones): RLDB_ERR_BUFFER_TOO_SMALL with the
 * totals needed in *count and *used when they do not fit. */
int rldb_bc_keys(rldb_bitcask *bc, char *buf, size_t cap, uint32_t *lens, size_t max,
                 size_t *count, size_t *used);
typedef struct {
    uint64_t keys, tombstones, key_bytes, keydir_memory, keydir_slots;
    uint64_t files, total_bytes, live_bytes, generation, syncs, hint_failures;
} rldb_bc_stats;
void rldb_bc_get_stats(rldb_bitcask *bc, rldb_bc_stats *st);
typedef struct {
    uint32_t slot, id, rank, active;
    uint64_t size, live;
} rldb_bc_file_info;
int rldb_bc_files(rldb_bitcask *bc, rldb_bc_file_info *out, size_t max, size_t *count);
/* Every entry of every file (checksums, framing) against the keydir, the
 * per-file live bytes, and the keydir's own invariants. */
int rldb_bc_check(rldb_bitcask *bc);
/* A hint file against its data file. */
int rldb_bc_check_hint(rldb_bitcask *bc, uint32_t slot, const uint8_t *hint, size_t len);
/* Where the calling thread's last failure was: 1 with the file (id, rank), the
 * offset and the errno of a failed system call (0 if none); 0 if no file. */
int rldb_bc_last_error(uint32_t *id, uint32_t *rank, uint64_t *offset, int *err);

/* Merge (bitcask_merge.c): rewrites the live entries of some immutable files
 * into new files. */
typedef struct {
    uint64_t entries_read, bytes_read, entries_written, bytes_written;
    uint64_t tombstones_kept, tombstones_dropped, moved, skipped;
} rldb_bc_merge_stats;
typedef struct rldb_bc_merge rldb_bc_merge;
rldb_bc_merge *rldb_bc_merge_new(rldb_bitcask *bc, uint64_t max_output);
void rldb_bc_merge_free(rldb_bc_merge *m);
/* The output (a registered, empty slot) the next entries go to. */
int rldb_bc_merge_output(rldb_bc_merge *m, uint32_t slot, int hint_fd);
/* Copies the live entries of slot's file from *resume on: RLDB_OK at its end,
 * RLDB_BC_NEED_OUTPUT when the output is full (*resume: where to go on). */
int rldb_bc_merge_file(rldb_bc_merge *m, uint32_t slot, int drop_tombstones, uint64_t *resume);
/* Writes the rest of the output and its hint; *size: the output's size. */
int rldb_bc_merge_finish_output(rldb_bc_merge *m, uint64_t *size);
/* Points the keydir at the copies of entries it still names, drops the
 * tombstones let go, and verifies that nothing points into the inputs. */
int rldb_bc_merge_commit(rldb_bc_merge *m, const uint32_t *inputs, size_t count);
void rldb_bc_merge_get_stats(const rldb_bc_merge *m, rldb_bc_merge_stats *st);

#endif
