/* Opening a Bitcask store: loading a data file's hint into the keydir, or
 * scanning the data file itself (every entry verified, batches applied only
 * once complete, a new hint written on the way).  The steps around them are
 * in docs/formats.md, section "Bitcask", "Opening". */
#include "bitcask_internal.h"
#include <errno.h>

#define PREFETCH_AHEAD 8

int rldb_bc_load_hint(rldb_bitcask *bc, uint32_t slot, const uint8_t *hint, size_t len) {
    uint64_t count, bad;
    bc_lock(bc);
    int rc = slot_usable(bc, slot);
    if (rc == RLDB_OK && slot == bc->active) rc = RLDB_ERR_INVALID_ARGUMENT;
    if (rc != RLDB_OK) goto out;
    rc = rldb__bc_hint_validate(hint, len, bc->files[slot].size, &count, &bad);
    if (rc != RLDB_OK) {
        rldb__bc_set_loc(&bc->files[slot], bad, 0);
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
            ahead = hint_next(ahead, &a);
            rldb_keydir_prefetch(bc->kd, a.key, a.klen);
        }
        p = hint_next(p, &e);
        rc = rldb__bc_keydir_point(bc, slot, e.key, e.klen, e.off, rec_vsize(e.flags, e.vsize),
                                   e.tstamp);
        if (rc != RLDB_OK) goto out;
    }
out:
    bc_unlock(bc);
    return rc;
}

/* An entry of a batch whose last entry the scan has not reached yet; its key
 * follows it in the pending buffer. */
typedef struct {
    uint64_t off, ts;
    uint32_t klen, vsize;
    uint8_t flags;
} pending_ent;

/* Puts the pending entries (a complete entry or batch) into the hint, and
 * with apply into the keydir. */
static int apply_pending(rldb_bitcask *bc, uint32_t slot, int apply, hint_writer *hw,
                         const rbuf *pending) {
    int rc = RLDB_OK;
    if (apply) pthread_rwlock_wrlock(&bc->lock);
    for (size_t pos = 0; pos < pending->len && rc == RLDB_OK;) {
        pending_ent q;
        memcpy(&q, pending->data + pos, sizeof(q));
        const uint8_t *key = pending->data + pos + sizeof(q);
        pos += sizeof(q) + q.klen;
        rldb__bc_hint_add(hw, q.ts, q.off, q.vsize, q.klen, q.flags & F_TOMB, key);
        if (apply)
            rc = rldb__bc_keydir_point(bc, slot, key, q.klen, (uint32_t)q.off,
                                       rec_vsize(q.flags, q.vsize), ts_seconds(q.ts));
    }
    if (apply) pthread_rwlock_unlock(&bc->lock);
    return rc;
}

int rldb_bc_scan(rldb_bitcask *bc, uint32_t slot, int apply, int hint_fd, uint64_t *valid_end,
                 uint64_t *bad_offset) {
    int rc, status = RLDB_BC_SCAN_CLEAN;
    bc_reader r = {0};
    hint_writer hw = {0};
    rbuf pending = {0}; /* entries of a batch not yet complete: pending_ent + key */
    uint64_t off = 0, end = 0, bad = 0, batch_start = 0;
    pthread_mutex_lock(&bc->write_mu);
    rc = slot_usable(bc, slot);
    if (rc == RLDB_OK && slot == bc->active) rc = RLDB_ERR_INVALID_ARGUMENT;
    if (rc != RLDB_OK) goto out;
    bc_file *f = &bc->files[slot];
    reader_open(&r, f);
    rldb__bc_hint_reset(&hw, hint_fd);
    while (off < r.size) {
        ehdr e;
        size_t total;
        const uint8_t *p;
        int ok = rldb__bc_entry_at(&r, off, &e, &total, &p);
        if (ok < 0) {
            rldb__bc_set_loc(f, off, errno);
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
            int after = rldb__bc_valid_after(&r, off + 1);
            if (after < 0) {
                rldb__bc_set_loc(f, off, errno);
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
        rc = apply_pending(bc, slot, apply, &hw, &pending);
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
        rc = rldb__bc_hint_finish(&hw, end);
        if (rc != RLDB_OK) rldb__bc_set_loc(f, 0, errno);
    }
out:
    pthread_mutex_unlock(&bc->write_mu);
    free(r.buf);
    rbuf_free(&hw.buf);
    rbuf_free(&pending);
    return rc != RLDB_OK ? rc : status;
}
