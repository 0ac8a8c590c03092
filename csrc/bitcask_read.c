/* Bitcask reads: get (keydir lookup, one pread, CRC check), the sequential
 * reader of a data file that open, check and merge walk entries with, and the
 * reads of the whole store (keys, stats, the file table). */
#include "bitcask_internal.h"
#include <errno.h>
#include <unistd.h>

#define READ_CHUNK (1 << 20)

ssize_t rldb__bc_pread_full(int fd, uint8_t *p, size_t n, uint64_t off) {
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
        rldb__bc_set_loc(NULL, 0, 0);
        return RLDB_ERR_CORRUPT;
    }
    bc_file f = bc->files[rec.file];
    ssize_t got = rldb__bc_pread_full(f.fd, p, total, rec.offset);
    int err = errno;
    pthread_rwlock_unlock(&bc->lock);
    int64_t rc = rec.vsize;
    if (got < 0) {
        rldb__bc_set_loc(&f, rec.offset, err);
        rc = RLDB_ERR_IO;
    } else if ((size_t)got < total) {
        rldb__bc_set_loc(&f, rec.offset, 0);
        rc = RLDB_ERR_TRUNCATED;
    } else {
        ehdr e;
        decode_header(p, &e);
        if (load32le(p) != entry_crc(p, total)) {
            rldb__bc_set_loc(&f, rec.offset, 0);
            rc = RLDB_ERR_CHECKSUM;
        } else if (e.klen != klen || e.vsize != rec.vsize || (e.flags & F_TOMB) ||
                   memcmp(p + HDR, key, klen) != 0) {
            rldb__bc_set_loc(&f, rec.offset, 0);
            rc = RLDB_ERR_CORRUPT;
        } else {
            memmove(buf, p + HDR + klen, rec.vsize);
        }
    }
    free(heap);
    return rc;
}

/* ---- reading data files sequentially ---- */
/* [off, off + n) of the file, or NULL: *err 0 when that is past the end, -1
 * (errno set) when a read failed. */
static const uint8_t *rd(bc_reader *r, uint64_t off, size_t n, int *err) {
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
    ssize_t got = rldb__bc_pread_full(r->fd, r->buf, want, off);
    if (got < 0) {
        r->len = 0;
        *err = -1;
        return NULL;
    }
    r->base = off;
    r->len = (size_t)got;
    return (size_t)got >= n ? r->buf : NULL; /* a file shorter than we were told */
}

int rldb__bc_entry_at(bc_reader *r, uint64_t off, ehdr *e, size_t *total, const uint8_t **p) {
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

int rldb__bc_valid_after(bc_reader *r, uint64_t from) {
    for (uint64_t off = from; off + HDR <= r->size; off++) {
        ehdr e;
        size_t t;
        const uint8_t *p;
        int rc = rldb__bc_entry_at(r, off, &e, &t, &p);
        if (rc) return rc;
    }
    return 0;
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
