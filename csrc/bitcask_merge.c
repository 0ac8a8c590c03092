/* Bitcask merge: the live entries of some immutable files copied into new
 * output files (with their hints), then, in one step under the locks, the
 * keydir pointed at the copies it still names.  Protocol around it:
 * rldb/storage/bitcask/merge.py; steps on disk: docs/formats.md, section
 * "Bitcask merge". */
#include "bitcask_internal.h"
#include <errno.h>

#define MERGE_FLUSH (1 << 20)
#define LOG_MOVE 1
#define LOG_DROP 2
#define LOG_FIXED 19

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
    bc_reader r;
};

rldb_bc_merge *rldb_bc_merge_new(rldb_bitcask *bc, uint64_t max_output) {
    if (max_output < 1 || max_output > RLDB_BC_MAX_FILE_SIZE) return NULL;
    rldb_bc_merge *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    m->bc = bc;
    m->max_output = max_output;
    m->out = NONE;
    m->out_fd = -1;
    rldb__bc_hint_reset(&m->hint, -1);
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
    if (m->out != NONE || hint_fd < 0) return RLDB_ERR_INVALID_ARGUMENT;
    pthread_rwlock_rdlock(&bc->lock);
    int rc = slot_usable(bc, slot);
    if (rc == RLDB_OK && (slot == bc->active || bc->files[slot].size))
        rc = RLDB_ERR_INVALID_ARGUMENT;
    if (rc == RLDB_OK) m->out_fd = bc->files[slot].fd;
    pthread_rwlock_unlock(&bc->lock);
    if (rc != RLDB_OK) return rc;
    m->out = slot;
    m->out_size = m->out_flushed = 0;
    m->data.len = 0;
    rldb__bc_hint_reset(&m->hint, hint_fd);
    return RLDB_OK;
}

static int merge_flush(rldb_bc_merge *m) {
    if (!m->data.len) return RLDB_OK;
    if (rldb__bc_pwrite_all(m->out_fd, m->data.data, m->data.len, m->out_flushed) != 0) {
        rldb__bc_set_loc_slot(m->bc, m->out, m->out_flushed, errno);
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

/* Records what the commit is to do for key: move it from (in, in_off) to
 * (out, out_off), or drop its tombstone. */
static int log_add(rldb_bc_merge *m, uint8_t kind, const uint8_t *key, uint32_t klen, uint32_t in,
                   uint32_t in_off, uint32_t out, uint32_t out_off) {
    uint8_t head[LOG_FIXED];
    head[0] = kind;
    head[1] = (uint8_t)(klen & 0xff);
    head[2] = (uint8_t)(klen >> 8);
    store32le(head + 3, in);
    store32le(head + 7, in_off);
    store32le(head + 11, out);
    store32le(head + 15, out_off);
    if (rbuf_append(&m->log, head, LOG_FIXED) || rbuf_append(&m->log, key, klen))
        return RLDB_ERR_NO_MEMORY;
    return RLDB_OK;
}

/* Appends the live entry at off of slot's file to the output. */
static int copy_entry(rldb_bc_merge *m, uint32_t slot, uint64_t off, const ehdr *e,
                      const uint8_t *p, size_t total) {
    size_t at = m->data.len;
    if (rbuf_append(&m->data, p, total)) return RLDB_ERR_NO_MEMORY;
    if (e->flags & F_BATCH) {
        /* Every output entry stands alone: the outputs become visible all at
         * once, so no batch can be torn there. */
        m->data.data[at + 20] = e->flags & F_TOMB;
        store32le(m->data.data + at, entry_crc(m->data.data + at, total));
    }
    const uint8_t *key = p + HDR;
    rldb__bc_hint_add(&m->hint, e->ts, m->out_size, e->vsize, e->klen, e->flags & F_TOMB, key);
    int rc = log_add(m, LOG_MOVE, key, e->klen, slot, (uint32_t)off, m->out, (uint32_t)m->out_size);
    if (rc != RLDB_OK) return rc;
    m->out_size += total;
    m->st.entries_written++;
    m->st.bytes_written += total;
    m->st.tombstones_kept += (e->flags & F_TOMB) != 0;
    return m->data.len >= MERGE_FLUSH ? merge_flush(m) : RLDB_OK;
}

int rldb_bc_merge_file(rldb_bc_merge *m, uint32_t slot, int drop_tombstones, uint64_t *resume) {
    rldb_bitcask *bc = m->bc;
    bc_file f;
    pthread_rwlock_rdlock(&bc->lock);
    int rc = slot_usable(bc, slot);
    if (rc == RLDB_OK && (slot == bc->active || slot == m->out)) rc = RLDB_ERR_INVALID_ARGUMENT;
    if (rc == RLDB_OK) f = bc->files[slot];
    pthread_rwlock_unlock(&bc->lock);
    if (rc != RLDB_OK) return rc;
    if (m->r.fd != f.fd || m->r.size != f.size) reader_open(&m->r, &f);
    uint64_t off = *resume;
    while (off < f.size) {
        ehdr e;
        size_t total;
        const uint8_t *p;
        int ok = rldb__bc_entry_at(&m->r, off, &e, &total, &p);
        if (ok <= 0) {
            rldb__bc_set_loc(&f, off, ok < 0 ? errno : 0);
            return ok < 0 ? ok : RLDB_ERR_CHECKSUM;
        }
        const uint8_t *key = p + HDR;
        rldb_keydir_rec rec;
        pthread_rwlock_rdlock(&bc->lock);
        int live = !bc->closed && rldb_keydir_get(bc->kd, key, e.klen, &rec) && rec.file == slot &&
                   rec.offset == off;
        pthread_rwlock_unlock(&bc->lock);
        if (live && (e.flags & F_TOMB) && drop_tombstones) {
            if ((rc = log_add(m, LOG_DROP, key, e.klen, slot, (uint32_t)off, NONE, 0)) != RLDB_OK)
                return rc;
            m->st.tombstones_dropped++;
        } else if (live) {
            if (m->out == NONE || (m->out_size > 0 && m->out_size + total > m->max_output)) {
                *resume = off;
                return RLDB_BC_NEED_OUTPUT;
            }
            if ((rc = copy_entry(m, slot, off, &e, p, total)) != RLDB_OK) return rc;
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
        rc = rldb__bc_hint_finish(&m->hint, m->out_size);
        if (rc != RLDB_OK) rldb__bc_set_loc_slot(m->bc, m->out, 0, errno);
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
    bc_lock(bc);
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
            if (slot_ok(bc, inputs[i])) rldb__bc_set_loc(&bc->files[inputs[i]], 0, 0);
            rc = RLDB_ERR_CORRUPT; /* the keydir still names an entry of an input */
            break;
        }
    }
out:
    bc_unlock(bc);
    return rc;
}

void rldb_bc_merge_get_stats(const rldb_bc_merge *m, rldb_bc_merge_stats *st) { *st = m->st; }
