/* What the bitcask_*.c files share: the store's structs, the entry and hint
 * layouts, the per-thread error location, and the helpers more than one of
 * them calls.  Not part of the cdef.
 *
 *   bitcask_store.c  the store: create, close, the file table, the active file
 *   bitcask_write.c  put, delete, batches, group commit, preallocation
 *   bitcask_read.c   get, sequential reads of data files, keys, stats
 *   bitcask_hint.c   writing and validating hint files
 *   bitcask_open.c   loading a hint, scanning a data file
 *   bitcask_check.c  the store and a hint checked against the data files
 *   bitcask_merge.c  merge
 *
 * Layouts: docs/formats.md, section "Bitcask"; locks: bitcask_store.c. */
#ifndef RLDB_BITCASK_INTERNAL_H
#define RLDB_BITCASK_INTERNAL_H
#include "internal.h"
#include <pthread.h>
#include <sys/types.h>

#define NONE 0xffffffffu
#define HDR RLDB_BC_HEADER
#define HINT_HDR RLDB_BC_HINT_HEADER
#define HINT_TRAILER RLDB_BC_HINT_TRAILER
#define TOMB 0xffffffffu
#define F_TOMB RLDB_BC_FLAG_TOMBSTONE
#define F_BATCH RLDB_BC_FLAG_BATCH
#define HINT_MAGIC 0x544e494842444c52ULL /* "RLDBHINT" */

typedef struct {
    int fd; /* -1: a free slot */
    uint32_t id, rank;
    uint64_t size; /* bytes of complete entries */
    uint64_t live; /* bytes of the entries the keydir points at */
} bc_file;

typedef struct {
    int fd; /* -1: no hint is being written */
    rbuf buf;
    uint32_t crc;
    uint64_t count, written;
    int failed;
} hint_writer;

struct rldb_bitcask {
    pthread_mutex_t write_mu, sync_mu;
    pthread_rwlock_t lock;
    rldb_keydir *kd;
    bc_file *files;
    uint32_t nfiles, files_cap;
    uint32_t active;
    int sealed, closed;
    int broken; /* errno of a failure that left the store unwritable */
    hint_writer hint;
    uint64_t max_file_size;
    int sync;
    uint64_t prealloc_end;          /* the active file is zero-filled up to here */
    int prealloc_failed;
    uint64_t gen;                   /* bumped when a new file becomes active */
    uint64_t synced_gen, synced_off; /* under sync_mu */
    uint64_t syncs, hint_failures;
};

/* ---- locks (order: write_mu, sync_mu, lock) ---- */
/* For a change of the keydir or the file table: write_mu, then lock for writing. */
static inline void bc_lock(rldb_bitcask *bc) {
    pthread_mutex_lock(&bc->write_mu);
    pthread_rwlock_wrlock(&bc->lock);
}

static inline void bc_unlock(rldb_bitcask *bc) {
    pthread_rwlock_unlock(&bc->lock);
    pthread_mutex_unlock(&bc->write_mu);
}

static inline int slot_ok(const rldb_bitcask *bc, uint32_t slot) {
    return slot < bc->nfiles && bc->files[slot].fd >= 0;
}

/* RLDB_BC_CLOSED, RLDB_ERR_INVALID_ARGUMENT for a slot that holds no file, else
 * RLDB_OK; called with a lock held. */
static inline int slot_usable(const rldb_bitcask *bc, uint32_t slot) {
    if (bc->closed) return RLDB_BC_CLOSED;
    return slot_ok(bc, slot) ? RLDB_OK : RLDB_ERR_INVALID_ARGUMENT;
}

/* ---- where the calling thread's last failure was (bitcask_store.c) ---- */
void rldb__bc_set_loc(const bc_file *f, uint64_t offset, int err);
/* The same for slot's file, read under the read lock. */
void rldb__bc_set_loc_slot(rldb_bitcask *bc, uint32_t slot, uint64_t offset, int err);

/* Points key at the entry at off of slot's file and moves the live bytes of
 * the entry it replaces; write lock held (bitcask_store.c). */
int rldb__bc_keydir_point(rldb_bitcask *bc, uint32_t slot, const uint8_t *key, uint32_t klen,
                          uint32_t off, uint32_t vsize, uint32_t tstamp);

/* ---- entries ---- */
typedef struct {
    uint64_t ts;
    uint32_t klen, vsize;
    uint8_t flags;
} ehdr;

static inline void decode_header(const uint8_t *h, ehdr *e) {
    e->ts = load64le(h + 4);
    e->klen = load32le(h + 12);
    e->vsize = load32le(h + 16);
    e->flags = h[20];
}

static inline int header_sane(const ehdr *e) {
    return e->klen >= 1 && e->klen <= RLDB_KEYDIR_MAX_KEY && !(e->flags & ~(F_TOMB | F_BATCH)) &&
           e->vsize <= RLDB_BC_MAX_VALUE && !((e->flags & F_TOMB) && e->vsize);
}

static inline uint32_t entry_crc(const uint8_t *entry, size_t total) {
    return rldb_crc32c_extend(0, entry + 4, total - 4);
}

static inline size_t rec_entry_size(const rldb_keydir_rec *r, size_t klen) {
    return HDR + klen + (r->vsize == TOMB ? 0 : r->vsize);
}

/* The keydir's value size of an entry: TOMB for a tombstone. */
static inline uint32_t rec_vsize(uint8_t flags, uint32_t vsize) {
    return (flags & F_TOMB) ? TOMB : vsize;
}

static inline uint32_t ts_seconds(uint64_t us) { return (uint32_t)(us / 1000000u); }

/* ---- file I/O (bitcask_write.c, bitcask_read.c) ---- */
int rldb__bc_pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off);
ssize_t rldb__bc_pread_full(int fd, uint8_t *p, size_t n, uint64_t off);

/* Group commit: returns once the active file of generation gen is on stable
 * storage up to end (bitcask_write.c). */
int rldb__bc_sync_to(rldb_bitcask *bc, uint64_t gen, uint64_t end);

/* ---- reading a data file sequentially (bitcask_read.c) ---- */
typedef struct {
    int fd;
    uint64_t size;
    uint8_t *buf;
    size_t cap;
    uint64_t base;
    size_t len;
} bc_reader;

/* Starts reading f (keeps the buffer; drops what it held). */
static inline void reader_open(bc_reader *r, const bc_file *f) {
    r->fd = f->fd;
    r->size = f->size;
    r->base = r->len = 0;
}

/* 1 with a valid entry at off (*e, *total, *p: its bytes), 0 when there is
 * none (damaged, cut short, or not an entry), <0 on a read failure. */
int rldb__bc_entry_at(bc_reader *r, uint64_t off, ehdr *e, size_t *total, const uint8_t **p);
/* 1 when a valid entry starts anywhere in [from, end of file). */
int rldb__bc_valid_after(bc_reader *r, uint64_t from);

/* ---- hint files (bitcask_hint.c) ---- */
typedef struct {
    uint32_t off, vsize, tstamp, klen; /* tstamp: seconds */
    uint8_t flags;
    const uint8_t *key;
} hint_ent;

void rldb__bc_hint_reset(hint_writer *h, int fd);
void rldb__bc_hint_add(hint_writer *h, uint64_t ts, uint64_t off, uint32_t vsize, uint32_t klen,
                       uint8_t flags, const uint8_t *key);
/* Writes what is buffered and the trailer; the hint is then complete. */
int rldb__bc_hint_finish(hint_writer *h, uint64_t data_size);
/* Checks a whole hint (trailer, checksum, every entry) against a data file
 * of data_size bytes; *count gets the number of entries, *bad where it is
 * wrong. */
int rldb__bc_hint_validate(const uint8_t *h, size_t len, uint64_t data_size, uint64_t *count,
                           uint64_t *bad);

static inline const uint8_t *hint_next(const uint8_t *p, hint_ent *e) {
    e->off = load32le(p);
    e->vsize = load32le(p + 4);
    e->tstamp = load32le(p + 8);
    e->klen = p[12] | ((uint32_t)p[13] << 8);
    e->flags = p[14];
    e->key = p + HINT_HDR;
    return p + HINT_HDR + e->klen;
}
#endif
