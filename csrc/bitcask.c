/* The Bitcask store's C side: data files of append-only entries, the keydir
 * (keydir.c) that maps every key to its newest entry, and every call that
 * touches both in one step: put, delete and batches (encode, CRC-32C, one
 * pwrite, keydir update, hint record), get (keydir lookup, one pread, CRC
 * check), the data-file scanner and the hint loader used at open, merge, and
 * check.  Layouts: docs/formats.md, section "Bitcask".
 *
 * Python (rldb/storage/bitcask/) owns the directory, the file names and every
 * descriptor; it registers each open data file here under a slot, which is
 * what the keydir records.
 *
 * Locks, always taken in this order:
 *   write_mu  serialises appends to the active file and every change to the
 *             keydir, the file table and the active file's hint;
 *   sync_mu   group commit: one fdatasync at a time; a writer whose bytes a
 *             finished fdatasync covered returns without one;
 *   lock      reader-writer: get, merge liveness checks and stats read under
 *             it; keydir and file-table changes take it for writing, briefly.
 * A get holds the read lock across its pread, so the file cannot be removed
 * (and its descriptor closed and reused) under it.
 *
 * With sync, the active file is zero-filled and fdatasynced ahead of its end
 * (PREALLOC bytes at a time): an fdatasync after a write inside that region
 * changes no metadata (neither the size nor the block map), which makes it
 * markedly cheaper on ext4.  Sealing cuts the file back to its entries; after
 * a crash the zeros are a torn tail, which open cuts too. */
#include "internal.h"
#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#define NONE 0xffffffffu
#define HDR RLDB_BC_HEADER
#define HINT_HDR RLDB_BC_HINT_HEADER
#define HINT_TRAILER RLDB_BC_HINT_TRAILER
#define TOMB 0xffffffffu
#define F_TOMB RLDB_BC_FLAG_TOMBSTONE
#define F_BATCH RLDB_BC_FLAG_BATCH
#define HINT_MAGIC 0x544e494842444c52ULL /* "RLDBHINT" */
#define HINT_FLUSH (64 * 1024)
#define STACK_ENTRY 2048
#define READ_CHUNK (1 << 20)
#define MERGE_FLUSH (1 << 20)
#define PREALLOC (1 << 20) /* with sync: zeros written ahead of the active file's end */
#define PREFETCH_AHEAD 8
#define LOG_MOVE 1
#define LOG_DROP 2

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

/* ---- where the last failure was (per thread) ---- */
static __thread struct {
    int has, err;
    uint32_t id, rank;
    uint64_t offset;
} last_err;

static void set_loc(const bc_file *f, uint64_t offset, int err) {
    last_err.has = f != NULL;
    last_err.id = f ? f->id : 0;
    last_err.rank = f ? f->rank : 0;
    last_err.offset = offset;
    last_err.err = err;
}

int rldb_bc_last_error(uint32_t *id, uint32_t *rank, uint64_t *offset, int *err) {
    *id = last_err.id;
    *rank = last_err.rank;
    *offset = last_err.offset;
    *err = last_err.err;
    return last_err.has;
}

/* ---- small helpers ---- */
static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off) {
    while (n) {
        ssize_t r = pwrite(fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

static ssize_t pread_full(int fd, uint8_t *p, size_t n, uint64_t off) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, p + got, n - got, (off_t)(off + got));
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

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

/* Writes one entry at out (room for HDR + klen + vlen bytes). */
static void encode_entry(uint8_t *out, uint64_t ts, const char *key, size_t klen, const char *value,
                         size_t vlen, uint8_t flags) {
    store64le(out + 4, ts);
    store32le(out + 12, (uint32_t)klen);
    store32le(out + 16, (uint32_t)vlen);
    out[20] = flags;
    memcpy(out + HDR, key, klen);
    if (vlen) memcpy(out + HDR + klen, value, vlen);
    store32le(out, entry_crc(out, HDR + klen + vlen));
}

static inline size_t rec_entry_size(const rldb_keydir_rec *r, size_t klen) {
    return HDR + klen + (r->vsize == TOMB ? 0 : r->vsize);
}

static inline uint32_t ts_seconds(uint64_t us) { return (uint32_t)(us / 1000000u); }

/* ---- hint files ---- */
static void hw_reset(hint_writer *h, int fd) {
    h->fd = fd;
    h->buf.len = 0;
    h->crc = 0;
    h->count = h->written = 0;
    h->failed = fd < 0;
}

static int hw_flush(hint_writer *h) {
    if (h->failed) {
        h->buf.len = 0;
        return RLDB_ERR_IO;
    }
    if (!h->buf.len) return RLDB_OK;
    h->crc = rldb_crc32c_extend(h->crc, h->buf.data, h->buf.len);
    if (pwrite_all(h->fd, h->buf.data, h->buf.len, h->written) != 0) {
        h->failed = 1;
        h->buf.len = 0;
        return RLDB_ERR_IO;
    }
    h->written += h->buf.len;
    h->buf.len = 0;
    return RLDB_OK;
}

static void hw_add(hint_writer *h, uint64_t ts, uint64_t off, uint32_t vsize, uint32_t klen,
                   uint8_t flags, const uint8_t *key) {
    if (h->failed) return;
    if (rbuf_reserve(&h->buf, HINT_HDR + klen)) {
        h->failed = 1;
        return;
    }
    uint8_t *p = h->buf.data + h->buf.len;
    store32le(p, (uint32_t)off);
    store32le(p + 4, vsize);
    store32le(p + 8, ts_seconds(ts));
    p[12] = (uint8_t)(klen & 0xff);
    p[13] = (uint8_t)(klen >> 8);
    p[14] = flags;
    memcpy(p + HINT_HDR, key, klen);
    h->buf.len += HINT_HDR + klen;
    h->count++;
    if (h->buf.len >= HINT_FLUSH) hw_flush(h);
}

/* Writes what is buffered and the trailer; the hint is then complete. */
static int hw_finish(hint_writer *h, uint64_t data_size) {
    if (h->failed) return RLDB_ERR_IO;
    uint8_t t[HINT_TRAILER];
    store64le(t, h->count);
    store64le(t + 8, data_size);
    store64le(t + 16, HINT_MAGIC);
    if (rbuf_append(&h->buf, t, 24)) {
        h->failed = 1;
        return RLDB_ERR_NO_MEMORY;
    }
    uint32_t crc = rldb_crc32c_extend(h->crc, h->buf.data, h->buf.len);
    store32le(t, crc);
    if (rbuf_append(&h->buf, t, 4)) {
        h->failed = 1;
        return RLDB_ERR_NO_MEMORY;
    }
    h->crc = 0; /* the buffer now holds its own checksum */
    int rc = hw_flush(h);
    h->fd = -1;
    h->failed = 1; /* nothing more goes into this hint */
    return rc;
}

typedef struct {
    uint32_t off, vsize, tstamp, klen; /* tstamp: seconds */
    uint8_t flags;
    const uint8_t *key;
} hint_ent;

/* Checks a whole hint (trailer, checksum, every entry) against a data file
 * of data_size bytes; *count gets the number of entries.  The entries must
 * describe the data file exactly: back to back from offset 0 to its end. */
static int hint_validate(const uint8_t *h, size_t len, uint64_t data_size, uint64_t *count,
                         uint64_t *bad) {
    *bad = 0;
    if (len < HINT_TRAILER) return RLDB_ERR_TRUNCATED;
    const uint8_t *t = h + len - HINT_TRAILER;
    *bad = len - HINT_TRAILER;
    if (load64le(t + 16) != HINT_MAGIC) return RLDB_ERR_CORRUPT;
    if (rldb_crc32c_extend(0, h, len - 4) != load32le(t + 24)) return RLDB_ERR_CHECKSUM;
    if (load64le(t + 8) != data_size) return RLDB_BC_HINT_SIZE;
    uint64_t n = 0, expect = 0;
    const uint8_t *p = h;
    while (p < t) {
        *bad = (uint64_t)(p - h);
        if ((size_t)(t - p) < HINT_HDR) return RLDB_ERR_CORRUPT;
        uint64_t off = load32le(p);
        uint32_t vsize = load32le(p + 4), klen = p[12] | ((uint32_t)p[13] << 8);
        uint8_t flags = p[14];
        if (klen == 0 || (size_t)(t - p) - HINT_HDR < klen || (flags & ~F_TOMB) ||
            ((flags & F_TOMB) && vsize) || vsize > RLDB_BC_MAX_VALUE || off != expect)
            return RLDB_ERR_CORRUPT;
        expect = off + HDR + klen + vsize;
        if (expect > data_size) return RLDB_ERR_CORRUPT;
        p += HINT_HDR + klen;
        n++;
    }
    *bad = len - HINT_TRAILER;
    if (n != load64le(t) || expect != data_size) return RLDB_ERR_CORRUPT;
    *count = n;
    return RLDB_OK;
}

static inline const uint8_t *hint_next(const uint8_t *p, hint_ent *e) {
    e->off = load32le(p);
    e->vsize = load32le(p + 4);
    e->tstamp = load32le(p + 8);
    e->klen = p[12] | ((uint32_t)p[13] << 8);
    e->flags = p[14];
    e->key = p + HINT_HDR;
    return p + HINT_HDR + e->klen;
}

/* ---- reading data files sequentially ---- */
typedef struct {
    int fd;
    uint64_t size;
    uint8_t *buf;
    size_t cap;
    uint64_t base;
    size_t len;
} reader;

/* [off, off + n) of the file, or NULL: *err 0 when that is past the end, -1
 * (errno set) when a read failed. */
static const uint8_t *rd(reader *r, uint64_t off, size_t n, int *err) {
    *err = 0;
    if (off + n > r->size || off + n < off) return NULL;
    if (off >= r->base && off + n <= r->base + r->len) return r->buf + (off - r->base);
    size_t want = n > READ_CHUNK ? n : READ_CHUNK;
    if (want > r->size - off) want = (size_t)(r->size - off);
    if (want > r->cap) {
        uint8_t *b = realloc(r->buf, want);
        if (!b) {
            errno = ENOMEM;
            *err = -1;
            return NULL;
        }
        r->buf = b;
        r->cap = want;
    }
    ssize_t got = pread_full(r->fd, r->buf, want, off);
    if (got < 0) {
        r->len = 0;
        *err = -1;
        return NULL;
    }
    r->base = off;
    r->len = (size_t)got;
    return (size_t)got >= n ? r->buf : NULL; /* a file shorter than we were told */
}

/* 1 with a valid entry at off (*e, *total, *p: its bytes), 0 when there is
 * none (damaged, cut short, or not an entry), <0 on a read failure. */
static int entry_at(reader *r, uint64_t off, ehdr *e, size_t *total, const uint8_t **p) {
    int err;
    const uint8_t *h = rd(r, off, HDR, &err);
    if (!h) return err ? RLDB_ERR_IO : 0;
    decode_header(h, e);
    if (!header_sane(e)) return 0;
    size_t t = HDR + (size_t)e->klen + e->vsize;
    const uint8_t *q = rd(r, off, t, &err);
    if (!q) return err ? RLDB_ERR_IO : 0;
    if (load32le(q) != entry_crc(q, t)) return 0;
    *total = t;
    *p = q;
    return 1;
}

/* 1 when a valid entry starts anywhere in [from, end of file). */
static int valid_after(reader *r, uint64_t from) {
    for (uint64_t off = from; off + HDR <= r->size; off++) {
        ehdr e;
        size_t t;
        const uint8_t *p;
        int rc = entry_at(r, off, &e, &t, &p);
        if (rc) return rc;
    }
    return 0;
}

/* ---- the store ---- */
rldb_bitcask *rldb_bc_new(uint64_t max_file_size, int sync) {
    if (max_file_size < 1 || max_file_size > RLDB_BC_MAX_FILE_SIZE) return NULL;
    rldb_bitcask *bc = calloc(1, sizeof(*bc));
    if (!bc) return NULL;
    bc->kd = rldb_keydir_new();
    if (!bc->kd) {
        free(bc);
        return NULL;
    }
    pthread_mutex_init(&bc->write_mu, NULL);
    pthread_mutex_init(&bc->sync_mu, NULL);
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
#ifdef PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP
    /* Writers (puts) must not starve behind a stream of readers. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
    pthread_rwlock_init(&bc->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    bc->active = NONE;
    bc->max_file_size = max_file_size;
    bc->sync = sync ? 1 : 0;
    hw_reset(&bc->hint, -1);
    return bc;
}

void rldb_bc_free(rldb_bitcask *bc) {
    if (!bc) return;
    rldb_keydir_free(bc->kd);
    rbuf_free(&bc->hint.buf);
    free(bc->files);
    pthread_rwlock_destroy(&bc->lock);
    pthread_mutex_destroy(&bc->sync_mu);
    pthread_mutex_destroy(&bc->write_mu);
    free(bc);
}

void rldb_bc_close(rldb_bitcask *bc) {
    pthread_mutex_lock(&bc->write_mu);
    pthread_rwlock_wrlock(&bc->lock);
    bc->closed = 1;
    rldb_keydir_free(bc->kd);
    bc->kd = NULL;
    bc->active = NONE;
    rbuf_free(&bc->hint.buf);
    hw_reset(&bc->hint, -1);
    pthread_rwlock_unlock(&bc->lock);
    pthread_mutex_unlock(&bc->write_mu);
}

static inline int slot_ok(const rldb_bitcask *bc, uint32_t slot) {
    return slot < bc->nfiles && bc->files[slot].fd >= 0;
}

int rldb_bc_add_file(rldb_bitcask *bc, int fd, uint32_t rank, uint32_t id, uint64_t size) {
    if (fd < 0 || size > RLDB_BC_MAX_FILE_SIZE + (uint64_t)HDR + RLDB_KEYDIR_MAX_KEY + RLDB_BC_MAX_VALUE)
        return RLDB_ERR_INVALID_ARGUMENT;
    int rc;
    pthread_mutex_lock(&bc->write_mu);
    pthread_rwlock_wrlock(&bc->lock);
    uint32_t slot = 0;
    if (bc->closed) {
        rc = RLDB_BC_CLOSED;
        goto out;
    }
    while (slot < bc->nfiles && bc->files[slot].fd >= 0) slot++;
    if (slot == bc->nfiles) {
        if (bc->nfiles == bc->files_cap) {
            uint32_t cap = bc->files_cap ? bc->files_cap * 2 : 16;
            bc_file *f = realloc(bc->files, cap * sizeof(*f));
            if (!f) {
                rc = RLDB_ERR_NO_MEMORY;
                goto out;
            }
            bc->files = f;
            bc->files_cap = cap;
        }
        bc->nfiles++;
    }
    bc->files[slot] = (bc_file){.fd = fd, .id = id, .rank = rank, .size = size, .live = 0};
    rc = (int)slot;
out:
    pthread_rwlock_unlock(&bc->lock);
    pthread_mutex_unlock(&bc->write_mu);
    return rc;
}

int rldb_bc_remove_file(rldb_bitcask *bc, uint32_t slot) {
    int rc = RLDB_OK;
    pthread_mutex_lock(&bc->write_mu);
    pthread_rwlock_wrlock(&bc->lock);
    if (!slot_ok(bc, slot) || (slot == bc->active && !bc->sealed) ||
        (!bc->closed && bc->files[slot].live))
        rc = RLDB_ERR_INVALID_ARGUMENT;
    else {
        bc->files[slot].fd = -1;
        if (slot == bc->active) bc->active = NONE; /* a sealed, empty active file */
    }
    pthread_rwlock_unlock(&bc->lock);
    pthread_mutex_unlock(&bc->write_mu);
    /* A sync in flight finishes before the caller closes the descriptor. */
    pthread_mutex_lock(&bc->sync_mu);
    pthread_mutex_unlock(&bc->sync_mu);
    return rc;
}

int rldb_bc_set_file_size(rldb_bitcask *bc, uint32_t slot, uint64_t size) {
    int rc = RLDB_OK;
    pthread_mutex_lock(&bc->write_mu);
    pthread_rwlock_wrlock(&bc->lock);
    if (bc->closed)
        rc = RLDB_BC_CLOSED;
    else if (!slot_ok(bc, slot) || slot == bc->active || size < bc->files[slot].live)
        rc = RLDB_ERR_INVALID_ARGUMENT;
    else
        bc->files[slot].size = size;
    pthread_rwlock_unlock(&bc->lock);
    pthread_mutex_unlock(&bc->write_mu);
    return rc;
}

int rldb_bc_reserve(rldb_bitcask *bc, size_t keys) {
    int rc;
    pthread_mutex_lock(&bc->write_mu);
    pthread_rwlock_wrlock(&bc->lock);
    rc = bc->closed ? RLDB_BC_CLOSED : rldb_keydir_reserve(bc->kd, keys);
    pthread_rwlock_unlock(&bc->lock);
    pthread_mutex_unlock(&bc->write_mu);
    return rc;
}

int rldb_bc_activate(rldb_bitcask *bc, uint32_t slot, int hint_fd) {
    int rc = RLDB_OK;
    pthread_mutex_lock(&bc->write_mu);
    pthread_rwlock_wrlock(&bc->lock);
    if (bc->closed)
        rc = RLDB_BC_CLOSED;
    else if (!slot_ok(bc, slot) || bc->files[slot].size != 0)
        rc = RLDB_ERR_INVALID_ARGUMENT;
    else {
        bc->active = slot;
        bc->sealed = 0;
        bc->prealloc_end = 0;
        bc->prealloc_failed = 0;
        bc->gen++;
        hw_reset(&bc->hint, hint_fd);
    }
    uint64_t gen = bc->gen;
    pthread_rwlock_unlock(&bc->lock);
    if (rc == RLDB_OK) {
        /* The previous active file was fdatasynced before this call (see
         * rldb/storage/bitcask/engine.py, _roll), and the new one is empty. */
        pthread_mutex_lock(&bc->sync_mu);
        bc->synced_gen = gen;
        bc->synced_off = 0;
        pthread_mutex_unlock(&bc->sync_mu);
    }
    pthread_mutex_unlock(&bc->write_mu);
    return rc;
}

int rldb_bc_seal(rldb_bitcask *bc, uint64_t *size) {
    int ok = 0;
    *size = 0;
    pthread_mutex_lock(&bc->write_mu);
    if (!bc->closed && bc->active != NONE) {
        bc->sealed = 1;
        *size = bc->files[bc->active].size;
        int cut = 1;
        if (bc->prealloc_end > *size) {
            /* If this fails the zeros stay, and so no hint (whose size would
             * not match): the next open scans the file and cuts them. */
            cut = ftruncate(bc->files[bc->active].fd, (off_t)*size) == 0;
            if (cut) bc->prealloc_end = *size;
        }
        if (cut && bc->hint.fd >= 0 && !bc->hint.failed) ok = hw_finish(&bc->hint, *size) == RLDB_OK;
        if (!ok) bc->hint_failures++;
        hw_reset(&bc->hint, -1);
    }
    pthread_mutex_unlock(&bc->write_mu);
    return ok;
}

static int writable(rldb_bitcask *bc, uint64_t total) {
    if (bc->closed) return RLDB_BC_CLOSED;
    if (bc->broken) {
        set_loc(NULL, 0, bc->broken);
        return RLDB_ERR_IO;
    }
    if (bc->active == NONE || bc->sealed) return RLDB_BC_NEED_ROLL;
    uint64_t size = bc->files[bc->active].size;
    if (size > 0 && size + total > bc->max_file_size) return RLDB_BC_NEED_ROLL;
    return RLDB_OK;
}

int rldb_bc_needs_roll(rldb_bitcask *bc, uint64_t entry_size) {
    pthread_mutex_lock(&bc->write_mu);
    int rc = writable(bc, entry_size);
    pthread_mutex_unlock(&bc->write_mu);
    return rc == RLDB_BC_NEED_ROLL;
}

/* Group commit: returns once the active file of generation gen is on stable
 * storage up to end. */
static int sync_to(rldb_bitcask *bc, uint64_t gen, uint64_t end) {
    int rc = RLDB_OK;
    pthread_mutex_lock(&bc->sync_mu);
    if (bc->synced_gen > gen || (bc->synced_gen == gen && bc->synced_off >= end)) goto out;
    pthread_rwlock_rdlock(&bc->lock);
    uint64_t g = bc->gen, size = 0;
    int fd = -1;
    const bc_file *f = NULL;
    if (!bc->closed && bc->active != NONE) {
        f = &bc->files[bc->active];
        fd = f->fd;
        size = f->size;
    }
    bc_file copy = f ? *f : (bc_file){0};
    pthread_rwlock_unlock(&bc->lock);
    /* g != gen: the file was rolled, and a roll fdatasyncs it first. */
    if (g == gen && fd >= 0) {
        if (fdatasync(fd) != 0) {
            set_loc(&copy, size, errno);
            rc = RLDB_ERR_IO;
            goto out;
        }
        bc->synced_gen = g;
        bc->synced_off = size;
        bc->syncs++;
    }
out:
    pthread_mutex_unlock(&bc->sync_mu);
    return rc;
}

int rldb_bc_sync(rldb_bitcask *bc) {
    pthread_mutex_lock(&bc->write_mu);
    if (bc->closed) {
        pthread_mutex_unlock(&bc->write_mu);
        return RLDB_BC_CLOSED;
    }
    uint64_t gen = bc->gen, end = bc->active != NONE ? bc->files[bc->active].size : 0;
    pthread_mutex_unlock(&bc->write_mu);
    return sync_to(bc, gen, end);
}

/* With sync: zeros written (and synced) past the end of the active file, so
 * that the next writes land in allocated, already sized space.  Called with
 * write_mu held.  A failure only means no preallocation for this file. */
static void preallocate(rldb_bitcask *bc, bc_file *f, uint64_t need_end) {
    static const uint8_t zeros[65536];
    if (bc->prealloc_failed || need_end <= bc->prealloc_end) return;
    uint64_t start = bc->prealloc_end > f->size ? bc->prealloc_end : f->size;
    uint64_t limit = bc->max_file_size > need_end ? bc->max_file_size : need_end;
    uint64_t end = need_end + PREALLOC;
    if (end > limit) end = limit;
    if (end <= need_end) return; /* nothing would be left ahead of the writes */
    for (uint64_t at = start; at < end;) {
        size_t n = end - at < sizeof(zeros) ? (size_t)(end - at) : sizeof(zeros);
        if (pwrite_all(f->fd, zeros, n, at) != 0) goto failed;
        at += n;
    }
    if (fdatasync(f->fd) != 0) goto failed;
    bc->prealloc_end = end;
    return;
failed:
    bc->prealloc_failed = 1;
    if (ftruncate(f->fd, (off_t)f->size) == 0) bc->prealloc_end = f->size;
}

/* Points the keydir at the entries buf holds, written at off of slot's file;
 * called with write_mu and the write lock held. */
static int apply_entries(rldb_bitcask *bc, uint32_t slot, const uint8_t *buf, size_t n,
                         uint64_t off) {
    size_t pos = 0;
    while (pos < n) {
        ehdr e;
        decode_header(buf + pos, &e);
        size_t total = HDR + (size_t)e.klen + e.vsize;
        rldb_keydir_rec rec = {slot, (uint32_t)(off + pos), (e.flags & F_TOMB) ? TOMB : e.vsize,
                               ts_seconds(e.ts)},
                        old;
        int had = rldb_keydir_put(bc->kd, buf + pos + HDR, e.klen, &rec, &old);
        if (had < 0) return had;
        if (had) bc->files[old.file].live -= rec_entry_size(&old, e.klen);
        bc->files[slot].live += total;
        pos += total;
    }
    return RLDB_OK;
}

/* Appends complete entries (one put, one tombstone or one batch) to the
 * active file, then updates the keydir and the hint.  A delete (del_key set)
 * writes its tombstone only when the key holds a value. */
static int write_entries(rldb_bitcask *bc, const uint8_t *buf, size_t n, const char *del_key,
                         size_t del_klen) {
    pthread_mutex_lock(&bc->write_mu);
    int rc = writable(bc, n);
    if (rc != RLDB_OK) {
        pthread_mutex_unlock(&bc->write_mu);
        return rc;
    }
    bc_file *f = &bc->files[bc->active];
    if (del_key) {
        rldb_keydir_rec cur;
        if (!rldb_keydir_get(bc->kd, (const uint8_t *)del_key, del_klen, &cur) || cur.vsize == TOMB) {
            uint64_t gen = bc->gen, end = f->size;
            pthread_mutex_unlock(&bc->write_mu);
            /* Already absent; with sync, absent durably (another thread may
             * have written the tombstone and still be waiting for its sync). */
            return bc->sync ? sync_to(bc, gen, end) : RLDB_OK;
        }
    }
    uint64_t off = f->size;
    if (bc->sync) preallocate(bc, f, off + n);
    if (pwrite_all(f->fd, buf, n, off) != 0) {
        int err = errno;
        /* Cut off whatever part was written, so the file stays a run of
         * whole entries; if even that fails, refuse every later write. */
        if (ftruncate(f->fd, (off_t)off) != 0) bc->broken = err ? err : EIO;
        bc->prealloc_end = off;
        set_loc(f, off, err);
        pthread_mutex_unlock(&bc->write_mu);
        return RLDB_ERR_IO;
    }
    pthread_rwlock_wrlock(&bc->lock);
    rc = apply_entries(bc, bc->active, buf, n, off);
    f->size = off + n;
    pthread_rwlock_unlock(&bc->lock);
    if (rc != RLDB_OK) {
        bc->broken = ENOMEM;
        pthread_mutex_unlock(&bc->write_mu);
        return rc;
    }
    for (size_t pos = 0; pos < n;) {
        ehdr e;
        decode_header(buf + pos, &e);
        hw_add(&bc->hint, e.ts, off + pos, e.vsize, e.klen, e.flags & F_TOMB, buf + pos + HDR);
        pos += HDR + (size_t)e.klen + e.vsize;
    }
    uint64_t gen = bc->gen, end = f->size;
    pthread_mutex_unlock(&bc->write_mu);
    return bc->sync ? sync_to(bc, gen, end) : RLDB_OK;
}

int rldb_bc_put(rldb_bitcask *bc, const char *key, size_t klen, const char *value, size_t vlen) {
    if (klen == 0 || klen > RLDB_KEYDIR_MAX_KEY || vlen > RLDB_BC_MAX_VALUE)
        return RLDB_ERR_INVALID_ARGUMENT;
    size_t total = HDR + klen + vlen;
    uint8_t stack[STACK_ENTRY];
    uint8_t *buf = total <= sizeof(stack) ? stack : malloc(total);
    if (!buf) return RLDB_ERR_NO_MEMORY;
    encode_entry(buf, now_us(), key, klen, value, vlen, 0);
    int rc = write_entries(bc, buf, total, NULL, 0);
    if (buf != stack) free(buf);
    return rc;
}

int rldb_bc_delete(rldb_bitcask *bc, const char *key, size_t klen) {
    if (klen == 0 || klen > RLDB_KEYDIR_MAX_KEY) return RLDB_ERR_INVALID_ARGUMENT;
    size_t total = HDR + klen;
    uint8_t stack[STACK_ENTRY];
    uint8_t *buf = total <= sizeof(stack) ? stack : malloc(total);
    if (!buf) return RLDB_ERR_NO_MEMORY;
    encode_entry(buf, now_us(), key, klen, NULL, 0, F_TOMB);
    int rc = write_entries(bc, buf, total, key, klen);
    if (buf != stack) free(buf);
    return rc;
}

int rldb_bc_write_batch(rldb_bitcask *bc, const uint8_t *kinds, const char *data,
                        const uint32_t *klens, const uint32_t *vlens, size_t count) {
    if (count == 0) return RLDB_ERR_INVALID_ARGUMENT;
    size_t total = 0;
    for (size_t i = 0; i < count; i++) {
        if (klens[i] == 0 || klens[i] > RLDB_KEYDIR_MAX_KEY || vlens[i] > RLDB_BC_MAX_VALUE ||
            kinds[i] > 1 || (kinds[i] == 0 && vlens[i]))
            return RLDB_ERR_INVALID_ARGUMENT;
        total += HDR + (size_t)klens[i] + vlens[i];
    }
    uint8_t *buf = malloc(total);
    if (!buf) return RLDB_ERR_NO_MEMORY;
    uint64_t ts = now_us();
    size_t pos = 0;
    const char *p = data;
    for (size_t i = 0; i < count; i++) {
        uint8_t flags = (kinds[i] ? 0 : F_TOMB) | (i + 1 < count ? F_BATCH : 0);
        encode_entry(buf + pos, ts, p, klens[i], p + klens[i], vlens[i], flags);
        p += klens[i] + vlens[i];
        pos += HDR + (size_t)klens[i] + vlens[i];
    }
    int rc = write_entries(bc, buf, total, NULL, 0);
    free(buf);
    return rc;
}

int64_t rldb_bc_get(rldb_bitcask *bc, const char *key, size_t klen, char *buf, size_t cap) {
    rldb_keydir_rec rec;
    pthread_rwlock_rdlock(&bc->lock);
    if (bc->closed) {
        pthread_rwlock_unlock(&bc->lock);
        return RLDB_BC_CLOSED;
    }
    if (!rldb_keydir_get(bc->kd, (const uint8_t *)key, klen, &rec) || rec.vsize == TOMB) {
        pthread_rwlock_unlock(&bc->lock);
        return RLDB_BC_ABSENT;
    }
    size_t total = HDR + klen + rec.vsize;
    uint8_t *p = (uint8_t *)buf, *heap = NULL;
    if (total > cap) {
        if (rec.vsize > cap) {
            pthread_rwlock_unlock(&bc->lock);
            return rec.vsize;
        }
        p = heap = malloc(total);
        if (!heap) {
            pthread_rwlock_unlock(&bc->lock);
            return RLDB_ERR_NO_MEMORY;
        }
    }
    if (!slot_ok(bc, rec.file)) {
        pthread_rwlock_unlock(&bc->lock);
        free(heap);
        set_loc(NULL, 0, 0);
        return RLDB_ERR_CORRUPT;
    }
    bc_file f = bc->files[rec.file];
    ssize_t got = pread_full(f.fd, p, total, rec.offset);
    int err = errno;
    pthread_rwlock_unlock(&bc->lock);
    int64_t rc = rec.vsize;
    if (got < 0) {
        set_loc(&f, rec.offset, err);
        rc = RLDB_ERR_IO;
    } else if ((size_t)got < total) {
        set_loc(&f, rec.offset, 0);
        rc = RLDB_ERR_TRUNCATED;
    } else {
        ehdr e;
        decode_header(p, &e);
        if (load32le(p) != entry_crc(p, total)) {
            set_loc(&f, rec.offset, 0);
            rc = RLDB_ERR_CHECKSUM;
        } else if (e.klen != klen || e.vsize != rec.vsize || (e.flags & F_TOMB) ||
                   memcmp(p + HDR, key, klen) != 0) {
            set_loc(&f, rec.offset, 0);
            rc = RLDB_ERR_CORRUPT;
        } else {
            memmove(buf, p + HDR + klen, rec.vsize);
        }
    }
    free(heap);
    return rc;
}

/* ---- open: hints and data scans ---- */
int rldb_bc_load_hint(rldb_bitcask *bc, uint32_t slot, const uint8_t *hint, size_t len) {
    int rc;
    uint64_t count, bad;
    pthread_mutex_lock(&bc->write_mu);
    pthread_rwlock_wrlock(&bc->lock);
    if (bc->closed) {
        rc = RLDB_BC_CLOSED;
        goto out;
    }
    if (!slot_ok(bc, slot) || slot == bc->active) {
        rc = RLDB_ERR_INVALID_ARGUMENT;
        goto out;
    }
    rc = hint_validate(hint, len, bc->files[slot].size, &count, &bad);
    if (rc != RLDB_OK) {
        set_loc(&bc->files[slot], bad, 0);
        goto out;
    }
    rldb_keydir_usage u;
    rldb_keydir_get_usage(bc->kd, &u);
    rc = rldb_keydir_reserve(bc->kd, u.count + count);
    if (rc != RLDB_OK) goto out;
    /* Keys come in no order, so nearly every insert misses the cache: the
     * home slot of the entry PREFETCH_AHEAD places ahead is asked for early. */
    const uint8_t *p = hint, *end = hint + len - HINT_TRAILER, *ahead = hint;
    for (int i = 0; i < PREFETCH_AHEAD && ahead < end; i++) {
        hint_ent a;
        ahead = hint_next(ahead, &a);
    }
    while (p < end) {
        hint_ent e;
        if (ahead < end) {
            hint_ent a;
            const uint8_t *at = ahead;
            ahead = hint_next(ahead, &a);
            rldb_keydir_prefetch(bc->kd, at + HINT_HDR, a.klen);
        }
        p = hint_next(p, &e);
        rldb_keydir_rec rec = {slot, e.off, (e.flags & F_TOMB) ? TOMB : e.vsize, e.tstamp}, old;
        int had = rldb_keydir_put(bc->kd, e.key, e.klen, &rec, &old);
        if (had < 0) {
            rc = had;
            goto out;
        }
        if (had) bc->files[old.file].live -= rec_entry_size(&old, e.klen);
        bc->files[slot].live += HDR + (size_t)e.klen + e.vsize;
    }
out:
    pthread_rwlock_unlock(&bc->lock);
    pthread_mutex_unlock(&bc->write_mu);
    return rc;
}

typedef struct {
    uint64_t off, ts;
    uint32_t klen, vsize;
    uint8_t flags;
} pending_ent;

int rldb_bc_scan(rldb_bitcask *bc, uint32_t slot, int apply, int hint_fd, uint64_t *valid_end,
                 uint64_t *bad_offset) {
    int rc = RLDB_OK, status = RLDB_BC_SCAN_CLEAN;
    reader r = {0};
    hint_writer hw = {0};
    rbuf pending = {0}; /* entries of a batch not yet complete: pending_ent + key */
    uint64_t off = 0, end = 0, bad = 0, batch_start = 0;
    pthread_mutex_lock(&bc->write_mu);
    if (bc->closed) {
        rc = RLDB_BC_CLOSED;
        goto out;
    }
    if (!slot_ok(bc, slot) || slot == bc->active) {
        rc = RLDB_ERR_INVALID_ARGUMENT;
        goto out;
    }
    bc_file *f = &bc->files[slot];
    r.fd = f->fd;
    r.size = f->size;
    hw_reset(&hw, hint_fd);
    while (off < r.size) {
        ehdr e;
        size_t total;
        const uint8_t *p;
        int ok = entry_at(&r, off, &e, &total, &p);
        if (ok < 0) {
            set_loc(f, off, errno);
            rc = ok;
            goto out;
        }
        if (ok && off > 0xffffffffu) { /* past what a keydir offset can hold */
            bad = off;
            status = RLDB_BC_SCAN_CORRUPT;
            break;
        }
        if (!ok) {
            bad = off;
            int after = valid_after(&r, off + 1);
            if (after < 0) {
                set_loc(f, off, errno);
                rc = after;
                goto out;
            }
            status = after ? RLDB_BC_SCAN_CORRUPT : RLDB_BC_SCAN_TORN;
            break;
        }
        if (!pending.len) batch_start = off;
        pending_ent pe = {off, e.ts, e.klen, e.vsize, e.flags};
        if (rbuf_append(&pending, &pe, sizeof(pe)) || rbuf_append(&pending, p + HDR, e.klen)) {
            rc = RLDB_ERR_NO_MEMORY;
            goto out;
        }
        off += total;
        if (e.flags & F_BATCH) continue;
        /* A complete entry or batch: into the keydir and the hint. */
        if (apply) pthread_rwlock_wrlock(&bc->lock);
        for (size_t pos = 0; pos < pending.len;) {
            pending_ent q;
            memcpy(&q, pending.data + pos, sizeof(q));
            const uint8_t *key = pending.data + pos + sizeof(q);
            pos += sizeof(q) + q.klen;
            hw_add(&hw, q.ts, q.off, q.vsize, q.klen, q.flags & F_TOMB, key);
            if (!apply) continue;
            rldb_keydir_rec rec = {slot, (uint32_t)q.off, (q.flags & F_TOMB) ? TOMB : q.vsize,
                                   ts_seconds(q.ts)},
                            old;
            int had = rldb_keydir_put(bc->kd, key, q.klen, &rec, &old);
            if (had < 0) {
                rc = had;
                break;
            }
            if (had) bc->files[old.file].live -= rec_entry_size(&old, q.klen);
            f->live += HDR + (size_t)q.klen + q.vsize;
        }
        if (apply) pthread_rwlock_unlock(&bc->lock);
        if (rc != RLDB_OK) goto out;
        pending.len = 0;
        end = off;
    }
    if (status == RLDB_BC_SCAN_CLEAN && pending.len) {
        status = RLDB_BC_SCAN_TORN; /* the file ends inside a batch */
        bad = batch_start;
    }
    *valid_end = end;
    *bad_offset = status == RLDB_BC_SCAN_CLEAN ? end : bad;
    if (hint_fd >= 0) {
        rc = hw_finish(&hw, end);
        if (rc != RLDB_OK) set_loc(f, 0, errno);
    }
out:
    pthread_mutex_unlock(&bc->write_mu);
    free(r.buf);
    rbuf_free(&hw.buf);
    rbuf_free(&pending);
    return rc != RLDB_OK ? rc : status;
}

/* ---- reads of the whole store ---- */
int rldb_bc_keys(rldb_bitcask *bc, char *buf, size_t cap, uint32_t *lens, size_t max,
                 size_t *count, size_t *used) {
    pthread_rwlock_rdlock(&bc->lock);
    if (bc->closed) {
        pthread_rwlock_unlock(&bc->lock);
        return RLDB_BC_CLOSED;
    }
    size_t n = 0, bytes = 0;
    int fits = 1;
    uint64_t pos = 0;
    const uint8_t *key;
    size_t klen;
    rldb_keydir_rec rec;
    while (rldb_keydir_next(bc->kd, &pos, &key, &klen, &rec)) {
        if (rec.vsize == TOMB) continue;
        if (fits && (n >= max || bytes + klen > cap)) fits = 0;
        if (fits) {
            memcpy(buf + bytes, key, klen);
            lens[n] = (uint32_t)klen;
        }
        n++;
        bytes += klen;
    }
    pthread_rwlock_unlock(&bc->lock);
    *count = n;
    *used = bytes;
    return fits ? RLDB_OK : RLDB_ERR_BUFFER_TOO_SMALL;
}

void rldb_bc_get_stats(rldb_bitcask *bc, rldb_bc_stats *st) {
    memset(st, 0, sizeof(*st));
    pthread_rwlock_rdlock(&bc->lock);
    if (!bc->closed) {
        rldb_keydir_usage u;
        rldb_keydir_get_usage(bc->kd, &u);
        st->keys = u.count - u.tombstones;
        st->tombstones = u.tombstones;
        st->key_bytes = u.key_bytes;
        st->keydir_memory = u.memory;
        st->keydir_slots = u.slots;
        for (uint32_t i = 0; i < bc->nfiles; i++) {
            if (bc->files[i].fd < 0) continue;
            st->files++;
            st->total_bytes += bc->files[i].size;
            st->live_bytes += bc->files[i].live;
        }
    }
    st->generation = bc->gen;
    pthread_rwlock_unlock(&bc->lock);
    st->syncs = __atomic_load_n(&bc->syncs, __ATOMIC_RELAXED);
    st->hint_failures = __atomic_load_n(&bc->hint_failures, __ATOMIC_RELAXED);
}

int rldb_bc_files(rldb_bitcask *bc, rldb_bc_file_info *out, size_t max, size_t *count) {
    size_t n = 0;
    pthread_rwlock_rdlock(&bc->lock);
    for (uint32_t i = 0; i < bc->nfiles; i++) {
        const bc_file *f = &bc->files[i];
        if (f->fd < 0) continue;
        if (n < max)
            out[n] = (rldb_bc_file_info){i, f->id, f->rank, i == bc->active, f->size, f->live};
        n++;
    }
    pthread_rwlock_unlock(&bc->lock);
    *count = n;
    return n <= max ? RLDB_OK : RLDB_ERR_BUFFER_TOO_SMALL;
}

int rldb_bc_check(rldb_bitcask *bc) {
    int rc = RLDB_OK;
    reader r = {0};
    set_loc(NULL, 0, 0);
    pthread_mutex_lock(&bc->write_mu);
    pthread_rwlock_rdlock(&bc->lock);
    if (bc->closed) {
        rc = RLDB_BC_CLOSED;
        goto out;
    }
    rc = rldb_keydir_check(bc->kd);
    if (rc != RLDB_OK) goto out;
    uint64_t refs = 0;
    for (uint32_t s = 0; s < bc->nfiles; s++) {
        const bc_file *f = &bc->files[s];
        if (f->fd < 0) continue;
        r.fd = f->fd;
        r.size = f->size;
        r.base = r.len = 0;
        uint64_t off = 0, live = 0;
        int in_batch = 0;
        while (off < f->size) {
            ehdr e;
            size_t total;
            const uint8_t *p;
            int ok = entry_at(&r, off, &e, &total, &p);
            if (ok <= 0) {
                set_loc(f, off, ok < 0 ? errno : 0);
                rc = ok < 0 ? ok : RLDB_ERR_CHECKSUM;
                goto out;
            }
            in_batch = (e.flags & F_BATCH) != 0;
            rldb_keydir_rec rec;
            if (rldb_keydir_get(bc->kd, p + HDR, e.klen, &rec) && rec.file == s && rec.offset == off) {
                int tomb = (e.flags & F_TOMB) != 0;
                if (tomb != (rec.vsize == TOMB) || (!tomb && rec.vsize != e.vsize) ||
                    rec.tstamp != ts_seconds(e.ts)) {
                    set_loc(f, off, 0);
                    rc = RLDB_ERR_CORRUPT;
                    goto out;
                }
                refs++;
                live += total;
            }
            off += total;
        }
        if (in_batch || live != f->live) {
            set_loc(f, in_batch ? off : 0, 0);
            rc = RLDB_ERR_CORRUPT;
            goto out;
        }
    }
    rldb_keydir_usage u;
    rldb_keydir_get_usage(bc->kd, &u);
    if (refs != u.count) rc = RLDB_ERR_CORRUPT; /* some keydir entry names no entry */
out:
    pthread_rwlock_unlock(&bc->lock);
    pthread_mutex_unlock(&bc->write_mu);
    free(r.buf);
    return rc;
}

int rldb_bc_check_hint(rldb_bitcask *bc, uint32_t slot, const uint8_t *hint, size_t len) {
    int rc;
    uint64_t count, bad;
    reader r = {0};
    pthread_rwlock_rdlock(&bc->lock);
    if (bc->closed) {
        rc = RLDB_BC_CLOSED;
        goto out;
    }
    if (!slot_ok(bc, slot)) {
        rc = RLDB_ERR_INVALID_ARGUMENT;
        goto out;
    }
    const bc_file *f = &bc->files[slot];
    rc = hint_validate(hint, len, f->size, &count, &bad);
    if (rc != RLDB_OK) {
        set_loc(f, bad, 0);
        goto out;
    }
    r.fd = f->fd;
    r.size = f->size;
    const uint8_t *p = hint, *end = hint + len - HINT_TRAILER;
    while (p < end) {
        hint_ent h;
        const uint8_t *at = p;
        p = hint_next(p, &h);
        ehdr e;
        size_t total;
        const uint8_t *q;
        int ok = entry_at(&r, h.off, &e, &total, &q);
        if (ok <= 0 || ts_seconds(e.ts) != h.tstamp || e.klen != h.klen || e.vsize != h.vsize ||
            (e.flags & F_TOMB) != h.flags || memcmp(q + HDR, h.key, h.klen) != 0) {
            set_loc(f, (uint64_t)(at - hint), ok < 0 ? errno : 0);
            rc = ok < 0 ? ok : RLDB_ERR_CORRUPT;
            goto out;
        }
    }
out:
    pthread_rwlock_unlock(&bc->lock);
    free(r.buf);
    return rc;
}

/* ---- merge ---- */
struct rldb_bc_merge {
    rldb_bitcask *bc;
    uint64_t max_output;
    uint32_t out;
    int out_fd;
    uint64_t out_size, out_flushed;
    rbuf data;
    hint_writer hint;
    rbuf log; /* kind u8 | klen u16 | in u32 | in_off u32 | out u32 | out_off u32 | key */
    rldb_bc_merge_stats st;
    reader r;
};

#define LOG_FIXED 19

rldb_bc_merge *rldb_bc_merge_new(rldb_bitcask *bc, uint64_t max_output) {
    if (max_output < 1 || max_output > RLDB_BC_MAX_FILE_SIZE) return NULL;
    rldb_bc_merge *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    m->bc = bc;
    m->max_output = max_output;
    m->out = NONE;
    m->out_fd = -1;
    hw_reset(&m->hint, -1);
    return m;
}

void rldb_bc_merge_free(rldb_bc_merge *m) {
    if (!m) return;
    rbuf_free(&m->data);
    rbuf_free(&m->hint.buf);
    rbuf_free(&m->log);
    free(m->r.buf);
    free(m);
}

int rldb_bc_merge_output(rldb_bc_merge *m, uint32_t slot, int hint_fd) {
    rldb_bitcask *bc = m->bc;
    int rc = RLDB_OK;
    if (m->out != NONE || hint_fd < 0) return RLDB_ERR_INVALID_ARGUMENT;
    pthread_rwlock_rdlock(&bc->lock);
    if (bc->closed)
        rc = RLDB_BC_CLOSED;
    else if (!slot_ok(bc, slot) || slot == bc->active || bc->files[slot].size)
        rc = RLDB_ERR_INVALID_ARGUMENT;
    else
        m->out_fd = bc->files[slot].fd;
    pthread_rwlock_unlock(&bc->lock);
    if (rc != RLDB_OK) return rc;
    m->out = slot;
    m->out_size = m->out_flushed = 0;
    m->data.len = 0;
    hw_reset(&m->hint, hint_fd);
    return RLDB_OK;
}

static int merge_flush(rldb_bc_merge *m) {
    if (!m->data.len) return RLDB_OK;
    if (pwrite_all(m->out_fd, m->data.data, m->data.len, m->out_flushed) != 0) {
        int err = errno;
        pthread_rwlock_rdlock(&m->bc->lock);
        bc_file f = m->bc->files[m->out];
        pthread_rwlock_unlock(&m->bc->lock);
        set_loc(&f, m->out_flushed, err);
        return RLDB_ERR_IO;
    }
    m->out_flushed += m->data.len;
    m->data.len = 0;
    /* Readers only look at the output once the commit points the keydir at
     * it; the size is what check() reads. */
    pthread_rwlock_wrlock(&m->bc->lock);
    m->bc->files[m->out].size = m->out_flushed;
    pthread_rwlock_unlock(&m->bc->lock);
    return RLDB_OK;
}

int rldb_bc_merge_file(rldb_bc_merge *m, uint32_t slot, int drop_tombstones, uint64_t *resume) {
    rldb_bitcask *bc = m->bc;
    int rc = RLDB_OK;
    bc_file f;
    pthread_rwlock_rdlock(&bc->lock);
    if (bc->closed)
        rc = RLDB_BC_CLOSED;
    else if (!slot_ok(bc, slot) || slot == bc->active || slot == m->out)
        rc = RLDB_ERR_INVALID_ARGUMENT;
    else
        f = bc->files[slot];
    pthread_rwlock_unlock(&bc->lock);
    if (rc != RLDB_OK) return rc;
    if (m->r.fd != f.fd || m->r.size != f.size) {
        m->r.fd = f.fd;
        m->r.size = f.size;
        m->r.base = m->r.len = 0;
    }
    uint64_t off = *resume;
    while (off < f.size) {
        ehdr e;
        size_t total;
        const uint8_t *p;
        int ok = entry_at(&m->r, off, &e, &total, &p);
        if (ok <= 0) {
            set_loc(&f, off, ok < 0 ? errno : 0);
            return ok < 0 ? ok : RLDB_ERR_CHECKSUM;
        }
        const uint8_t *key = p + HDR;
        rldb_keydir_rec rec;
        pthread_rwlock_rdlock(&bc->lock);
        int live = !bc->closed && rldb_keydir_get(bc->kd, key, e.klen, &rec) && rec.file == slot &&
                   rec.offset == off;
        pthread_rwlock_unlock(&bc->lock);
        int tomb = (e.flags & F_TOMB) != 0;
        if (live && tomb && drop_tombstones) {
            uint8_t head[LOG_FIXED];
            head[0] = LOG_DROP;
            head[1] = (uint8_t)(e.klen & 0xff);
            head[2] = (uint8_t)(e.klen >> 8);
            store32le(head + 3, slot);
            store32le(head + 7, (uint32_t)off);
            store32le(head + 11, NONE);
            store32le(head + 15, 0);
            if (rbuf_append(&m->log, head, LOG_FIXED) || rbuf_append(&m->log, key, e.klen))
                return RLDB_ERR_NO_MEMORY;
            m->st.tombstones_dropped++;
        } else if (live) {
            if (m->out == NONE || (m->out_size > 0 && m->out_size + total > m->max_output)) {
                *resume = off;
                return RLDB_BC_NEED_OUTPUT;
            }
            size_t at = m->data.len;
            if (rbuf_append(&m->data, p, total)) return RLDB_ERR_NO_MEMORY;
            if (e.flags & F_BATCH) {
                /* Every output entry stands alone: the outputs become visible
                 * all at once, so no batch can be torn there. */
                m->data.data[at + 20] = e.flags & F_TOMB;
                store32le(m->data.data + at, entry_crc(m->data.data + at, total));
            }
            hw_add(&m->hint, e.ts, m->out_size, e.vsize, e.klen, e.flags & F_TOMB, key);
            uint8_t head[LOG_FIXED];
            head[0] = LOG_MOVE;
            head[1] = (uint8_t)(e.klen & 0xff);
            head[2] = (uint8_t)(e.klen >> 8);
            store32le(head + 3, slot);
            store32le(head + 7, (uint32_t)off);
            store32le(head + 11, m->out);
            store32le(head + 15, (uint32_t)m->out_size);
            if (rbuf_append(&m->log, head, LOG_FIXED) || rbuf_append(&m->log, key, e.klen))
                return RLDB_ERR_NO_MEMORY;
            m->out_size += total;
            m->st.entries_written++;
            m->st.bytes_written += total;
            m->st.tombstones_kept += tomb;
            if (m->data.len >= MERGE_FLUSH && (rc = merge_flush(m)) != RLDB_OK) return rc;
        }
        m->st.entries_read++;
        m->st.bytes_read += total;
        off += total;
    }
    *resume = f.size;
    return RLDB_OK;
}

int rldb_bc_merge_finish_output(rldb_bc_merge *m, uint64_t *size) {
    if (m->out == NONE) return RLDB_ERR_INVALID_ARGUMENT;
    int rc = merge_flush(m);
    if (rc == RLDB_OK) {
        rc = hw_finish(&m->hint, m->out_size);
        if (rc != RLDB_OK) {
            pthread_rwlock_rdlock(&m->bc->lock);
            bc_file f = m->bc->files[m->out];
            pthread_rwlock_unlock(&m->bc->lock);
            set_loc(&f, 0, errno);
        }
    }
    *size = m->out_size;
    m->out = NONE;
    m->out_fd = -1;
    return rc;
}

int rldb_bc_merge_commit(rldb_bc_merge *m, const uint32_t *inputs, size_t count) {
    rldb_bitcask *bc = m->bc;
    int rc = RLDB_OK;
    if (m->out != NONE) return RLDB_ERR_INVALID_ARGUMENT;
    pthread_mutex_lock(&bc->write_mu);
    pthread_rwlock_wrlock(&bc->lock);
    if (bc->closed) {
        rc = RLDB_BC_CLOSED;
        goto out;
    }
    for (size_t pos = 0; pos < m->log.len;) {
        const uint8_t *h = m->log.data + pos;
        uint32_t klen = h[1] | ((uint32_t)h[2] << 8);
        uint32_t in = load32le(h + 3), in_off = load32le(h + 7);
        uint32_t out = load32le(h + 11), out_off = load32le(h + 15);
        const uint8_t *key = h + LOG_FIXED;
        pos += LOG_FIXED + klen;
        rldb_keydir_rec cur;
        if (!rldb_keydir_get(bc->kd, key, klen, &cur) || cur.file != in || cur.offset != in_off) {
            m->st.skipped++; /* written or deleted again since it was copied */
            continue;
        }
        size_t size = rec_entry_size(&cur, klen);
        bc->files[in].live -= size;
        if (h[0] == LOG_DROP) {
            rldb_keydir_remove(bc->kd, key, klen, NULL);
        } else {
            cur.file = out;
            cur.offset = out_off;
            rldb_keydir_put(bc->kd, key, klen, &cur, NULL); /* replaces: cannot fail */
            bc->files[out].live += size;
            m->st.moved++;
        }
    }
    for (size_t i = 0; i < count; i++) {
        if (!slot_ok(bc, inputs[i]) || bc->files[inputs[i]].live != 0) {
            if (slot_ok(bc, inputs[i])) set_loc(&bc->files[inputs[i]], 0, 0);
            rc = RLDB_ERR_CORRUPT; /* the keydir still names an entry of an input */
            break;
        }
    }
out:
    pthread_rwlock_unlock(&bc->lock);
    pthread_mutex_unlock(&bc->write_mu);
    return rc;
}

void rldb_bc_merge_get_stats(const rldb_bc_merge *m, rldb_bc_merge_stats *st) { *st = m->st; }
