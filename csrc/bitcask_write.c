/* Bitcask writes: put, delete and batches (encode, CRC-32C, one pwrite,
 * keydir update, hint record), the group commit that shares fdatasyncs
 * between threads, and preallocation.
 *
 * With sync, the active file is zero-filled and fdatasynced ahead of its end
 * (PREALLOC bytes at a time): an fdatasync after a write inside that region
 * changes no metadata (neither the size nor the block map), which makes it
 * markedly cheaper on ext4.  Sealing cuts the file back to its entries; after
 * a crash the zeros are a torn tail, which open cuts too. */
#include "bitcask_internal.h"
#include <errno.h>
#include <time.h>
#include <unistd.h>

#define STACK_ENTRY 2048
#define PREALLOC (1 << 20) /* with sync: zeros written ahead of the active file's end */

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int rldb__bc_pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off) {
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

/* RLDB_OK when an entry of total bytes can go to the active file now;
 * called with write_mu held. */
static int writable(rldb_bitcask *bc, uint64_t total) {
    if (bc->closed) return RLDB_BC_CLOSED;
    if (bc->broken) {
        rldb__bc_set_loc(NULL, 0, bc->broken);
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

/* ---- group commit ---- */
int rldb__bc_sync_to(rldb_bitcask *bc, uint64_t gen, uint64_t end) {
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
            rldb__bc_set_loc(&copy, size, errno);
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
    return rldb__bc_sync_to(bc, gen, end);
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
        if (rldb__bc_pwrite_all(f->fd, zeros, n, at) != 0) goto failed;
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
    for (size_t pos = 0; pos < n;) {
        ehdr e;
        decode_header(buf + pos, &e);
        int rc = rldb__bc_keydir_point(bc, slot, buf + pos + HDR, e.klen, (uint32_t)(off + pos),
                                       rec_vsize(e.flags, e.vsize), ts_seconds(e.ts));
        if (rc != RLDB_OK) return rc;
        pos += HDR + (size_t)e.klen + e.vsize;
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
            return bc->sync ? rldb__bc_sync_to(bc, gen, end) : RLDB_OK;
        }
    }
    uint64_t off = f->size;
    if (bc->sync) preallocate(bc, f, off + n);
    if (rldb__bc_pwrite_all(f->fd, buf, n, off) != 0) {
        int err = errno;
        /* Cut off whatever part was written, so the file stays a run of
         * whole entries; if even that fails, refuse every later write. */
        if (ftruncate(f->fd, (off_t)off) != 0) bc->broken = err ? err : EIO;
        bc->prealloc_end = off;
        rldb__bc_set_loc(f, off, err);
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
        rldb__bc_hint_add(&bc->hint, e.ts, off + pos, e.vsize, e.klen, e.flags & F_TOMB,
                          buf + pos + HDR);
        pos += HDR + (size_t)e.klen + e.vsize;
    }
    uint64_t gen = bc->gen, end = f->size;
    pthread_mutex_unlock(&bc->write_mu);
    return bc->sync ? rldb__bc_sync_to(bc, gen, end) : RLDB_OK;
}

/* One put (flags 0) or delete (F_TOMB, no value), encoded on the stack when small. */
static int write_one(rldb_bitcask *bc, const char *key, size_t klen, const char *value,
                     size_t vlen, uint8_t flags) {
    size_t total = HDR + klen + vlen;
    uint8_t stack[STACK_ENTRY];
    uint8_t *buf = total <= sizeof(stack) ? stack : malloc(total);
    if (!buf) return RLDB_ERR_NO_MEMORY;
    encode_entry(buf, now_us(), key, klen, value, vlen, flags);
    int rc = write_entries(bc, buf, total, (flags & F_TOMB) ? key : NULL, klen);
    if (buf != stack) free(buf);
    return rc;
}

int rldb_bc_put(rldb_bitcask *bc, const char *key, size_t klen, const char *value, size_t vlen) {
    if (klen == 0 || klen > RLDB_KEYDIR_MAX_KEY || vlen > RLDB_BC_MAX_VALUE)
        return RLDB_ERR_INVALID_ARGUMENT;
    return write_one(bc, key, klen, value, vlen, 0);
}

int rldb_bc_delete(rldb_bitcask *bc, const char *key, size_t klen) {
    if (klen == 0 || klen > RLDB_KEYDIR_MAX_KEY) return RLDB_ERR_INVALID_ARGUMENT;
    return write_one(bc, key, klen, NULL, 0, F_TOMB);
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
