/* The k-way merge behind scans, memtable flushes and compactions.
 *
 * Sources are memtables (walked in place) or SSTable data blocks handed in one
 * at a time: when a block runs out the merge returns RLDB_MERGE_NEED_DATA with
 * the source's number, and the caller supplies the next block (or marks the
 * source done).  Everything else runs here, without the GIL.
 *
 * Scan mode yields, per user key, the newest version not newer than the
 * snapshot, skipping tombstones, within [start, end), forward or reverse.
 * Compact mode keeps the newest version of each user key (dropping its
 * tombstone too when asked) and feeds a table builder. */
#include "internal.h"
#include "memtable_cursor.h"

enum { SRC_NEED = 0, SRC_BLOCK, SRC_MEM, SRC_DONE };

typedef struct {
    int state;
    rbuf own;                  /* the block's contents when the source holds its own copy */
    rbuf keys;                 /* decoded block keys, back to back */
    uint32_t *kends;
    const uint8_t **vptr;
    uint32_t *vlens;
    size_t n, cap;
    long pos;
    rldb__mt_cursor mc;
} source;

struct rldb_merger {
    int nsrc;
    source *src;
    int mode, reverse, drop_tombstones, done;
    uint64_t snapshot;
    rbuf start, end;
    int has_start, has_end;
    rbuf last_user;
    int have_last;
    rbuf pend_key, pend_val;
    int have_pend, pend_kind;
    rldb_merge_stats stats;
};

rldb_merger *rldb_merger_new(int nsources, int mode, int reverse, uint64_t snapshot,
                             const uint8_t *start, size_t start_len, int has_start,
                             const uint8_t *end, size_t end_len, int has_end,
                             int drop_tombstones) {
    if (nsources < 0 || (mode != RLDB_MERGE_SCAN && mode != RLDB_MERGE_COMPACT) ||
        (mode == RLDB_MERGE_COMPACT && reverse))
        return NULL;
    rldb_merger *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    m->src = calloc((size_t)(nsources ? nsources : 1), sizeof(source));
    if (!m->src) {
        free(m);
        return NULL;
    }
    m->nsrc = nsources;
    m->mode = mode;
    m->reverse = reverse;
    m->snapshot = snapshot >= (1ULL << 56) ? (1ULL << 56) - 1 : snapshot;
    m->drop_tombstones = drop_tombstones;
    m->has_start = has_start;
    m->has_end = has_end;
    if ((has_start && rbuf_append(&m->start, start, start_len)) ||
        (has_end && rbuf_append(&m->end, end, end_len))) {
        rldb_merger_free(m);
        return NULL;
    }
    return m;
}

void rldb_merger_free(rldb_merger *m) {
    if (!m) return;
    for (int i = 0; i < m->nsrc; i++) {
        source *s = &m->src[i];
        rbuf_free(&s->own);
        rbuf_free(&s->keys);
        free(s->kends);
        free(s->vptr);
        free(s->vlens);
    }
    free(m->src);
    rbuf_free(&m->start);
    rbuf_free(&m->end);
    rbuf_free(&m->last_user);
    rbuf_free(&m->pend_key);
    rbuf_free(&m->pend_val);
    free(m);
}

void rldb_merger_get_stats(const rldb_merger *m, rldb_merge_stats *st) { *st = m->stats; }

static inline void src_key(const source *s, long i, const uint8_t **k, size_t *kl) {
    size_t from = i ? s->kends[i - 1] : 0;
    *k = s->keys.data + from;
    *kl = s->kends[i] - from;
}

/* The internal key that sorts first among those of user key u. */
static int seek_key(rbuf *out, const rbuf *u) {
    out->len = 0;
    if (rbuf_append(out, u->data, u->len) || rbuf_fixed64(out, ((1ULL << 56) - 1) << 8 | 0xff))
        return RLDB_ERR_NO_MEMORY;
    return RLDB_OK;
}

static int check_source(rldb_merger *m, int i) {
    return (i < 0 || i >= m->nsrc) ? RLDB_ERR_INVALID_ARGUMENT : RLDB_OK;
}

int rldb_merger_set_block(rldb_merger *m, int i, const uint8_t *data, size_t len) {
    int rc = check_source(m, i);
    if (rc != RLDB_OK) return rc;
    source *s = &m->src[i];
    rldb__block b;
    if ((rc = rldb__block_open(&b, data, len)) != RLDB_OK) return rc;
    s->keys.len = 0;
    s->n = 0;
    size_t off = 0;
    rbuf key = {0};
    while (off < b.entries_end) {
        const uint8_t *v;
        uint32_t vl;
        const uint8_t *next = rldb__block_entry(&b, off, &key, &v, &vl);
        if (!next || key.len < 8) { rc = RLDB_ERR_CORRUPT; break; }
        if (s->n == s->cap) {
            size_t cap = s->cap ? 2 * s->cap : 64;
            uint32_t *ke = realloc(s->kends, cap * sizeof *ke);
            if (ke) s->kends = ke;
            const uint8_t **vp = realloc(s->vptr, cap * sizeof *vp);
            if (vp) s->vptr = vp;
            uint32_t *vls = realloc(s->vlens, cap * sizeof *vls);
            if (vls) s->vlens = vls;
            if (!ke || !vp || !vls) { rc = RLDB_ERR_NO_MEMORY; break; }
            s->cap = cap;
        }
        if (s->n > 0) {
            const uint8_t *pk;
            size_t pkl;
            src_key(s, (long)s->n - 1, &pk, &pkl);
            if (ikey_cmp(pk, pkl, key.data, key.len) >= 0) { rc = RLDB_ERR_CORRUPT; break; }
        }
        if (rbuf_append(&s->keys, key.data, key.len)) { rc = RLDB_ERR_NO_MEMORY; break; }
        s->kends[s->n] = (uint32_t)s->keys.len;
        s->vptr[s->n] = v;
        s->vlens[s->n] = vl;
        s->n++;
        off = (size_t)(next - b.data);
    }
    rbuf_free(&key);
    if (rc != RLDB_OK) {
        s->n = 0;
        return rc;
    }
    /* Position: the first entry inside the bound, binary search. */
    rbuf target = {0};
    long lo = 0, hi = (long)s->n;
    const rbuf *bound = m->reverse ? (m->has_end ? &m->end : NULL) : (m->has_start ? &m->start : NULL);
    if (bound) {
        if (seek_key(&target, bound) != RLDB_OK) return RLDB_ERR_NO_MEMORY;
        while (lo < hi) {  /* first entry >= target */
            long mid = (lo + hi) / 2;
            const uint8_t *k;
            size_t kl;
            src_key(s, mid, &k, &kl);
            if (ikey_cmp(k, kl, target.data, target.len) < 0) lo = mid + 1;
            else hi = mid;
        }
        rbuf_free(&target);
    } else {
        lo = m->reverse ? (long)s->n : 0;
    }
    s->pos = m->reverse ? lo - 1 : lo;
    s->state = (s->pos >= 0 && s->pos < (long)s->n) ? SRC_BLOCK : SRC_NEED;
    return RLDB_OK;
}

/* A block as stored (contents + trailer, maybe compressed): verified,
 * decompressed into the source's own buffer, then used as by set_block.  The
 * caller's buffer may go away after the call. */
int rldb_merger_set_raw_block(rldb_merger *m, int i, const uint8_t *data, size_t len) {
    int rc = check_source(m, i);
    if (rc != RLDB_OK) return rc;
    size_t size;
    if ((rc = rldb_block_contents_size(data, len, &size)) != RLDB_OK) return rc;
    source *s = &m->src[i];
    s->own.len = 0;
    if (rbuf_reserve(&s->own, size + 1)) return RLDB_ERR_NO_MEMORY;
    if ((rc = rldb_block_unwrap(data, len, s->own.data, size, &s->own.len)) != RLDB_OK) return rc;
    return rldb_merger_set_block(m, i, s->own.data, s->own.len);
}

int rldb_merger_set_memtable(rldb_merger *m, int i, rldb_memtable *mt) {
    int rc = check_source(m, i);
    if (rc != RLDB_OK) return rc;
    source *s = &m->src[i];
    s->mc.mt = mt;
    const rbuf *bound = m->reverse ? (m->has_end ? &m->end : NULL) : (m->has_start ? &m->start : NULL);
    if (bound) {
        rbuf target = {0};
        if (seek_key(&target, bound) != RLDB_OK) return RLDB_ERR_NO_MEMORY;
        if (m->reverse) rldb__mt_cursor_seek_before(&s->mc, target.data, target.len);
        else rldb__mt_cursor_seek(&s->mc, target.data, target.len);
        rbuf_free(&target);
    } else if (m->reverse) {
        rldb__mt_cursor_last(&s->mc);
    } else {
        rldb__mt_cursor_first(&s->mc);
    }
    s->state = s->mc.n ? SRC_MEM : SRC_DONE;
    return RLDB_OK;
}

int rldb_merger_set_done(rldb_merger *m, int i) {
    int rc = check_source(m, i);
    if (rc != RLDB_OK) return rc;
    m->src[i].state = SRC_DONE;
    return RLDB_OK;
}

static void current(source *s, const uint8_t **k, size_t *kl, const uint8_t **v, size_t *vl) {
    if (s->state == SRC_BLOCK) {
        src_key(s, s->pos, k, kl);
        *v = s->vptr[s->pos];
        *vl = s->vlens[s->pos];
    } else {
        rldb__mt_cursor_entry(&s->mc, k, kl, v, vl);
    }
}

static void advance(rldb_merger *m, source *s) {
    if (s->state == SRC_BLOCK) {
        s->pos += m->reverse ? -1 : 1;
        if (s->pos < 0 || s->pos >= (long)s->n) s->state = SRC_NEED;
    } else {
        if (m->reverse) rldb__mt_cursor_prev(&s->mc);
        else rldb__mt_cursor_next(&s->mc);
        if (!s->mc.n) s->state = SRC_DONE;
    }
}

/* The source holding the next entry in merge order: >= 0; -1 when all are
 * done; -2 - i when source i needs data first. */
static int pick(rldb_merger *m, const uint8_t **k, size_t *kl, const uint8_t **v, size_t *vl) {
    int best = -1;
    for (int i = 0; i < m->nsrc; i++) {
        source *s = &m->src[i];
        if (s->state == SRC_NEED) return -2 - i;
        if (s->state == SRC_DONE) continue;
        const uint8_t *ck, *cv;
        size_t ckl, cvl;
        current(s, &ck, &ckl, &cv, &cvl);
        int c = best < 0 ? 0 : ikey_cmp(ck, ckl, *k, *kl);
        if (best < 0 || (m->reverse ? c > 0 : c < 0)) {
            best = i;
            *k = ck; *kl = ckl; *v = cv; *vl = cvl;
        }
    }
    return best;
}

static inline int same_user(const rbuf *u, const uint8_t *k, size_t ulen) {
    return u->len == ulen && (ulen == 0 || memcmp(u->data, k, ulen) == 0);
}

static int set_rbuf(rbuf *b, const uint8_t *p, size_t n) {
    b->len = 0;
    return rbuf_append(b, p, n) ? RLDB_ERR_NO_MEMORY : RLDB_OK;
}

typedef struct {
    uint8_t *data;
    size_t cap, used;
    uint32_t *index;   /* 4 per entry: key offset, key length, value offset, value length */
    size_t index_cap, count;
} outbuf;

static int room(const outbuf *o, size_t klen, size_t vlen) {
    return o->count < o->index_cap && o->used + klen + vlen <= o->cap;
}

static void emit(outbuf *o, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen) {
    uint32_t *ix = o->index + 4 * o->count++;
    ix[0] = (uint32_t)o->used;
    ix[1] = (uint32_t)klen;
    memcpy(o->data + o->used, k, klen);
    o->used += klen;
    ix[2] = (uint32_t)o->used;
    ix[3] = (uint32_t)vlen;
    if (vlen) memcpy(o->data + o->used, v, vlen);
    o->used += vlen;
}

/* Not enough room: FULL when something was written, else ask for more. */
static int out_full(const outbuf *o, size_t need, size_t *need_bytes) {
    if (o->count) return RLDB_MERGE_OUTPUT_FULL;
    *need_bytes = need;
    return RLDB_ERR_BUFFER_TOO_SMALL;
}

static int flush_pending(rldb_merger *m, outbuf *o, size_t *need_bytes) {
    if (m->have_pend && m->pend_kind == 1) {
        if (!room(o, m->pend_key.len, m->pend_val.len))
            return out_full(o, m->pend_key.len + m->pend_val.len, need_bytes);
        emit(o, m->pend_key.data, m->pend_key.len, m->pend_val.data, m->pend_val.len);
        m->stats.entries_written++;
    }
    m->have_pend = 0;
    return RLDB_OK;
}

int rldb_merger_scan(rldb_merger *m, uint8_t *data, size_t cap, uint32_t *index,
                     size_t index_cap, size_t *count, size_t *used, int *need_source,
                     size_t *need_bytes) {
    if (m->mode != RLDB_MERGE_SCAN) return RLDB_ERR_INVALID_ARGUMENT;
    outbuf o = {data, cap, 0, index, index_cap, 0};
    int rc = RLDB_MERGE_DONE;
    for (;;) {
        if (m->done) { rc = RLDB_MERGE_DONE; break; }
        const uint8_t *k = NULL, *v = NULL;
        size_t kl = 0, vl = 0;
        int best = pick(m, &k, &kl, &v, &vl);
        if (best <= -2) {
            *need_source = -2 - best;
            rc = RLDB_MERGE_NEED_DATA;
            break;
        }
        if (best == -1) {
            if (m->reverse && (rc = flush_pending(m, &o, need_bytes)) != RLDB_OK) break;
            m->done = 1;
            continue;
        }
        size_t ulen = kl - 8;
        uint64_t trailer = load64le(k + ulen);
        int kind = (int)(trailer & 0xff);
        int visible = (trailer >> 8) <= m->snapshot;
        if (!m->reverse) {
            if (m->has_end && user_cmp(k, ulen, m->end.data, m->end.len) >= 0) {
                m->done = 1;
                continue;
            }
            int skip = !visible || (m->has_start && user_cmp(k, ulen, m->start.data, m->start.len) < 0) ||
                       (m->have_last && same_user(&m->last_user, k, ulen));
            if (!skip && kind == 1 && !room(&o, ulen, vl)) { rc = out_full(&o, ulen + vl, need_bytes); break; }
            advance(m, &m->src[best]);
            m->stats.entries_read++;
            if (skip) continue;
            if (set_rbuf(&m->last_user, k, ulen) != RLDB_OK) { rc = RLDB_ERR_NO_MEMORY; break; }
            m->have_last = 1;
            if (kind == 1) {
                emit(&o, k, ulen, v, vl);
                m->stats.entries_written++;
            }
        } else {
            if (m->has_start && user_cmp(k, ulen, m->start.data, m->start.len) < 0) {
                if ((rc = flush_pending(m, &o, need_bytes)) != RLDB_OK) break;
                m->done = 1;
                continue;
            }
            int skip = !visible || (m->has_end && user_cmp(k, ulen, m->end.data, m->end.len) >= 0);
            if (!skip && m->have_pend && !same_user(&m->pend_key, k, ulen) &&
                (rc = flush_pending(m, &o, need_bytes)) != RLDB_OK)
                break;
            /* versions of one user key arrive oldest first: the last visible one wins */
            if (!skip && (set_rbuf(&m->pend_key, k, ulen) || set_rbuf(&m->pend_val, v, vl))) {
                rc = RLDB_ERR_NO_MEMORY;
                break;
            }
            if (!skip) {
                m->have_pend = 1;
                m->pend_kind = kind;
            }
            advance(m, &m->src[best]);
            m->stats.entries_read++;
        }
    }
    *count = o.count;
    *used = o.used;
    return rc;
}

int rldb_merger_compact(rldb_merger *m, rldb_table_builder *tb, uint64_t max_file_size,
                        int *need_source) {
    if (m->mode != RLDB_MERGE_COMPACT) return RLDB_ERR_INVALID_ARGUMENT;
    for (;;) {
        if (m->done) return RLDB_MERGE_DONE;
        const uint8_t *k = NULL, *v = NULL;
        size_t kl = 0, vl = 0;
        int best = pick(m, &k, &kl, &v, &vl);
        if (best <= -2) {
            *need_source = -2 - best;
            return RLDB_MERGE_NEED_DATA;
        }
        if (best == -1) {
            m->done = 1;
            continue;
        }
        size_t ulen = kl - 8;
        if (m->have_last && same_user(&m->last_user, k, ulen)) {
            m->stats.versions_dropped++;
        } else {
            rldb_tb_stats st;
            rldb_tb_get_stats(tb, &st);
            if (st.entries > 0 && rldb_tb_estimated_size(tb) >= max_file_size)
                return RLDB_MERGE_OUTPUT_FULL;
            if (set_rbuf(&m->last_user, k, ulen) != RLDB_OK) return RLDB_ERR_NO_MEMORY;
            m->have_last = 1;
            if ((load64le(k + ulen) & 0xff) == 0 && m->drop_tombstones) {
                m->stats.tombstones_dropped++;
            } else {
                int rc = rldb_tb_add(tb, k, kl, v, vl);
                if (rc != RLDB_OK) return rc;
                m->stats.entries_written++;
            }
        }
        advance(m, &m->src[best]);
        m->stats.entries_read++;
    }
}
