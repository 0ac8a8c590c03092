/* The Bitcask store's C side: data files of append-only entries and the
 * keydir (keydir.c) that maps every key to its newest entry, changed together
 * in one step by every call.  This file holds the store itself: creating and
 * closing it, the table of data files, the active file, and where the
 * calling thread's last failure was.  The other calls are in the
 * bitcask_*.c files listed in bitcask_internal.h.  Layouts: docs/formats.md,
 * section "Bitcask".
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
 * (and its descriptor closed and reused) under it. */
#include "bitcask_internal.h"
#include <unistd.h>

/* ---- where the last failure was (per thread) ---- */
static __thread struct {
    int has, err;
    uint32_t id, rank;
    uint64_t offset;
} last_err;

void rldb__bc_set_loc(const bc_file *f, uint64_t offset, int err) {
    last_err.has = f != NULL;
    last_err.id = f ? f->id : 0;
    last_err.rank = f ? f->rank : 0;
    last_err.offset = offset;
    last_err.err = err;
}

void rldb__bc_set_loc_slot(rldb_bitcask *bc, uint32_t slot, uint64_t offset, int err) {
    pthread_rwlock_rdlock(&bc->lock);
    bc_file f = bc->files[slot];
    pthread_rwlock_unlock(&bc->lock);
    rldb__bc_set_loc(&f, offset, err);
}

int rldb_bc_last_error(uint32_t *id, uint32_t *rank, uint64_t *offset, int *err) {
    *id = last_err.id;
    *rank = last_err.rank;
    *offset = last_err.offset;
    *err = last_err.err;
    return last_err.has;
}

/* ---- the keydir's accounting ---- */
int rldb__bc_keydir_point(rldb_bitcask *bc, uint32_t slot, const uint8_t *key, uint32_t klen,
                          uint32_t off, uint32_t vsize, uint32_t tstamp) {
    rldb_keydir_rec rec = {slot, off, vsize, tstamp}, old;
    int had = rldb_keydir_put(bc->kd, key, klen, &rec, &old);
    if (had < 0) return had;
    if (had) bc->files[old.file].live -= rec_entry_size(&old, klen);
    bc->files[slot].live += rec_entry_size(&rec, klen);
    return RLDB_OK;
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
    rldb__bc_hint_reset(&bc->hint, -1);
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
    bc_lock(bc);
    bc->closed = 1;
    rldb_keydir_free(bc->kd);
    bc->kd = NULL;
    bc->active = NONE;
    rbuf_free(&bc->hint.buf);
    rldb__bc_hint_reset(&bc->hint, -1);
    bc_unlock(bc);
}

/* ---- the file table ---- */
int rldb_bc_add_file(rldb_bitcask *bc, int fd, uint32_t rank, uint32_t id, uint64_t size) {
    if (fd < 0 || size > RLDB_BC_MAX_FILE_SIZE + (uint64_t)HDR + RLDB_KEYDIR_MAX_KEY + RLDB_BC_MAX_VALUE)
        return RLDB_ERR_INVALID_ARGUMENT;
    int rc;
    bc_lock(bc);
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
    bc_unlock(bc);
    return rc;
}

int rldb_bc_remove_file(rldb_bitcask *bc, uint32_t slot) {
    int rc = RLDB_OK;
    bc_lock(bc);
    if (!slot_ok(bc, slot) || (slot == bc->active && !bc->sealed) ||
        (!bc->closed && bc->files[slot].live))
        rc = RLDB_ERR_INVALID_ARGUMENT;
    else {
        bc->files[slot].fd = -1;
        if (slot == bc->active) bc->active = NONE; /* a sealed, empty active file */
    }
    bc_unlock(bc);
    /* A sync in flight finishes before the caller closes the descriptor. */
    pthread_mutex_lock(&bc->sync_mu);
    pthread_mutex_unlock(&bc->sync_mu);
    return rc;
}

int rldb_bc_set_file_size(rldb_bitcask *bc, uint32_t slot, uint64_t size) {
    bc_lock(bc);
    int rc = slot_usable(bc, slot);
    if (rc == RLDB_OK && (slot == bc->active || size < bc->files[slot].live))
        rc = RLDB_ERR_INVALID_ARGUMENT;
    if (rc == RLDB_OK) bc->files[slot].size = size;
    bc_unlock(bc);
    return rc;
}

int rldb_bc_reserve(rldb_bitcask *bc, size_t keys) {
    bc_lock(bc);
    int rc = bc->closed ? RLDB_BC_CLOSED : rldb_keydir_reserve(bc->kd, keys);
    bc_unlock(bc);
    return rc;
}

/* ---- the active file ---- */
int rldb_bc_activate(rldb_bitcask *bc, uint32_t slot, int hint_fd) {
    bc_lock(bc);
    int rc = slot_usable(bc, slot);
    if (rc == RLDB_OK && bc->files[slot].size != 0) rc = RLDB_ERR_INVALID_ARGUMENT;
    if (rc == RLDB_OK) {
        bc->active = slot;
        bc->sealed = 0;
        bc->prealloc_end = 0;
        bc->prealloc_failed = 0;
        bc->gen++;
        rldb__bc_hint_reset(&bc->hint, hint_fd);
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
        if (cut && bc->hint.fd >= 0 && !bc->hint.failed)
            ok = rldb__bc_hint_finish(&bc->hint, *size) == RLDB_OK;
        if (!ok) bc->hint_failures++;
        rldb__bc_hint_reset(&bc->hint, -1);
    }
    pthread_mutex_unlock(&bc->write_mu);
    return ok;
}
