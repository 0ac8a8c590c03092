/* Bitcask checks: every entry of every data file (checksums, framing) against
 * the keydir and the per-file live bytes, with the keydir's own invariants;
 * and one hint file against its data file. */
#include "bitcask_internal.h"
#include <errno.h>

/* Walks the entries of slot s's file: RLDB_OK when the keydir's records of
 * them match and its live bytes add up (*refs counts those records), else an
 * error with the location set. */
static int check_file(rldb_bitcask *bc, uint32_t s, bc_reader *r, uint64_t *refs) {
    const bc_file *f = &bc->files[s];
    reader_open(r, f);
    uint64_t off = 0, live = 0;
    int in_batch = 0;
    while (off < f->size) {
        ehdr e;
        size_t total;
        const uint8_t *p;
        int ok = rldb__bc_entry_at(r, off, &e, &total, &p);
        if (ok <= 0) {
            rldb__bc_set_loc(f, off, ok < 0 ? errno : 0);
            return ok < 0 ? ok : RLDB_ERR_CHECKSUM;
        }
        in_batch = (e.flags & F_BATCH) != 0;
        rldb_keydir_rec rec;
        if (rldb_keydir_get(bc->kd, p + HDR, e.klen, &rec) && rec.file == s && rec.offset == off) {
            if (rec.vsize != rec_vsize(e.flags, e.vsize) || rec.tstamp != ts_seconds(e.ts)) {
                rldb__bc_set_loc(f, off, 0);
                return RLDB_ERR_CORRUPT;
            }
            (*refs)++;
            live += total;
        }
        off += total;
    }
    if (in_batch || live != f->live) {
        rldb__bc_set_loc(f, in_batch ? off : 0, 0);
        return RLDB_ERR_CORRUPT;
    }
    return RLDB_OK;
}

int rldb_bc_check(rldb_bitcask *bc) {
    int rc = RLDB_OK;
    bc_reader r = {0};
    rldb__bc_set_loc(NULL, 0, 0);
    pthread_mutex_lock(&bc->write_mu);
    pthread_rwlock_rdlock(&bc->lock);
    if (bc->closed) {
        rc = RLDB_BC_CLOSED;
        goto out;
    }
    rc = rldb_keydir_check(bc->kd);
    uint64_t refs = 0;
    for (uint32_t s = 0; s < bc->nfiles && rc == RLDB_OK; s++)
        if (bc->files[s].fd >= 0) rc = check_file(bc, s, &r, &refs);
    if (rc != RLDB_OK) goto out;
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
    uint64_t count, bad;
    bc_reader r = {0};
    pthread_rwlock_rdlock(&bc->lock);
    int rc = slot_usable(bc, slot);
    if (rc != RLDB_OK) goto out;
    const bc_file *f = &bc->files[slot];
    rc = rldb__bc_hint_validate(hint, len, f->size, &count, &bad);
    if (rc != RLDB_OK) {
        rldb__bc_set_loc(f, bad, 0);
        goto out;
    }
    reader_open(&r, f);
    const uint8_t *p = hint, *end = hint + len - HINT_TRAILER;
    while (p < end) {
        hint_ent h;
        const uint8_t *at = p;
        p = hint_next(p, &h);
        ehdr e;
        size_t total;
        const uint8_t *q;
        int ok = rldb__bc_entry_at(&r, h.off, &e, &total, &q);
        if (ok <= 0 || ts_seconds(e.ts) != h.tstamp || e.klen != h.klen || e.vsize != h.vsize ||
            (e.flags & F_TOMB) != h.flags || memcmp(q + HDR, h.key, h.klen) != 0) {
            rldb__bc_set_loc(f, (uint64_t)(at - hint), ok < 0 ? errno : 0);
            rc = ok < 0 ? ok : RLDB_ERR_CORRUPT;
            goto out;
        }
    }
out:
    pthread_rwlock_unlock(&bc->lock);
    free(r.buf);
    return rc;
}
