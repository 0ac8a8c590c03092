/* The point-lookup path of the LSM tree in one call.
 *
 * rldb_cache: the LRU block cache, bounded in bytes, keyed by (table, block),
 *   guarded by a mutex; a lookup seeks inside the cached block and copies the
 *   value out before unlocking, so an eviction never frees a block in use.
 * rldb_table: what a lookup needs of one SSTable, kept in memory: the bloom
 *   filter and the decoded index (last key and handle of every data block).
 * rldb_levels: the tables of every level with their key ranges.
 * rldb_get: memtables, then L0 newest first, then one table per level; when
 *   the data block is not cached it returns RLDB_GET_NEED_BLOCK and where to
 *   resume, the caller reads and inserts the block, and calls again. */
#include "internal.h"
#include <errno.h>
#include <pthread.h>
#include <unistd.h>

/* ---- cache ---- */
typedef struct centry {
    uint64_t key;
    struct centry *hnext, *prev, *next;
    size_t len;
    uint8_t data[];
} centry;

struct rldb_cache {
    pthread_mutex_t mu;
    centry **buckets;
    size_t nbuckets, count, bytes, capacity;
    centry lru;  /* sentinel: lru.next is the oldest */
    uint64_t hits, misses, evictions, inserts;
    uint64_t bloom_useful, bloom_false_positive;
};

static inline uint64_t ckey(uint64_t table, uint32_t block) { return (table << 24) ^ block; }
static inline size_t cslot(const rldb_cache *c, uint64_t key) {
    uint64_t h = key * 0x9e3779b97f4a7c15ULL;
    return (size_t)(h >> 32) & (c->nbuckets - 1);
}

rldb_cache *rldb_cache_new(size_t capacity) {
    rldb_cache *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->nbuckets = 1024;
    c->buckets = calloc(c->nbuckets, sizeof(centry *));
    if (!c->buckets) { free(c); return NULL; }
    pthread_mutex_init(&c->mu, NULL);
    c->capacity = capacity;
    c->lru.next = c->lru.prev = &c->lru;
    return c;
}

void rldb_cache_free(rldb_cache *c) {
    if (!c) return;
    centry *e = c->lru.next;
    while (e != &c->lru) {
        centry *n = e->next;
        free(e);
        e = n;
    }
    free(c->buckets);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void lru_unlink(centry *e) { e->prev->next = e->next; e->next->prev = e->prev; }
static void lru_push(rldb_cache *c, centry *e) {  /* newest at the tail */
    e->prev = c->lru.prev; e->next = &c->lru;
    c->lru.prev->next = e; c->lru.prev = e;
}

static centry *cfind(rldb_cache *c, uint64_t key) {
    for (centry *e = c->buckets[cslot(c, key)]; e; e = e->hnext)
        if (e->key == key) return e;
    return NULL;
}

static void cremove(rldb_cache *c, centry *e) {
    centry **pp = &c->buckets[cslot(c, e->key)];
    while (*pp != e) pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(e);
    c->count--;
    c->bytes -= e->len;
    free(e);
}

static void cgrow(rldb_cache *c) {
    size_t n = c->nbuckets * 2;
    centry **b = calloc(n, sizeof(centry *));
    if (!b) return;  /* keep the old table: slower, still correct */
    for (size_t i = 0; i < c->nbuckets; i++) {
        centry *e = c->buckets[i];
        while (e) {
            centry *next = e->hnext;
            size_t s = (size_t)((e->key * 0x9e3779b97f4a7c15ULL) >> 32) & (n - 1);
            e->hnext = b[s];
            b[s] = e;
            e = next;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = n;
}

/* Verifies a block read from disk (contents + trailer) and caches its contents.
 * Returns 1 when cached, 0 when it cannot be (capacity), <0 on a bad checksum. */
int rldb_cache_insert(rldb_cache *c, uint64_t table, uint32_t block, const uint8_t *data, size_t len) {
    size_t n;
    int rc = rldb_block_contents_size(data, len, &n);
    if (rc != RLDB_OK) return rc;
    if (n > c->capacity) return 0;
    centry *e = malloc(sizeof(centry) + n);
    if (!e) return RLDB_ERR_NO_MEMORY;
    e->key = ckey(table, block);
    rc = rldb_block_unwrap(data, len, e->data, n, &e->len);
    if (rc != RLDB_OK) {
        free(e);
        return rc;
    }
    pthread_mutex_lock(&c->mu);
    centry *old = cfind(c, e->key);
    if (old) cremove(c, old);
    size_t s = cslot(c, e->key);
    e->hnext = c->buckets[s];
    c->buckets[s] = e;
    lru_push(c, e);
    c->count++;
    c->bytes += n;
    c->inserts++;
    while (c->bytes > c->capacity && c->lru.next != &c->lru) {
        cremove(c, c->lru.next);
        c->evictions++;
    }
    if (c->count > c->nbuckets) cgrow(c);
    pthread_mutex_unlock(&c->mu);
    return 1;
}

/* Reads a block (size bytes of contents + the trailer) at offset of fd,
 * verifies it and caches its contents: rldb_cache_insert without the copy
 * through Python.  RLDB_ERR_IO with *err set when the read fails. */
int rldb_cache_load(rldb_cache *c, uint64_t table, uint32_t block, int fd, uint64_t offset,
                    uint64_t size, int *err) {
    size_t n = (size_t)size + RLDB_BLOCK_TRAILER;
    uint8_t stack[8192];
    uint8_t *buf = n <= sizeof stack ? stack : malloc(n);
    if (!buf) return RLDB_ERR_NO_MEMORY;
    size_t got = 0;
    int rc = RLDB_OK;
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)(offset + got));
        if (r < 0) {
            if (errno == EINTR) continue;
            *err = errno;
            rc = RLDB_ERR_IO;
            break;
        }
        if (r == 0) {
            rc = RLDB_ERR_TRUNCATED;
            break;
        }
        got += (size_t)r;
    }
    if (rc == RLDB_OK) rc = rldb_cache_insert(c, table, block, buf, n);
    if (buf != stack) free(buf);
    return rc;
}

void rldb_cache_erase_table(rldb_cache *c, uint64_t table, uint32_t nblocks) {
    pthread_mutex_lock(&c->mu);
    for (uint32_t i = 0; i < nblocks; i++) {
        centry *e = cfind(c, ckey(table, i));
        if (e) cremove(c, e);
    }
    pthread_mutex_unlock(&c->mu);
}

void rldb_cache_get_stats(rldb_cache *c, rldb_cache_stats *st) {
    pthread_mutex_lock(&c->mu);
    st->capacity = c->capacity;
    st->bytes = c->bytes;
    st->blocks = c->count;
    st->hits = c->hits;
    st->misses = c->misses;
    st->evictions = c->evictions;
    st->bloom_useful = __atomic_load_n(&c->bloom_useful, __ATOMIC_RELAXED);
    st->bloom_false_positive = __atomic_load_n(&c->bloom_false_positive, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&c->mu);
}

int rldb_cache_check(rldb_cache *c) {
    pthread_mutex_lock(&c->mu);
    size_t bytes = 0, count = 0;
    int rc = RLDB_OK;
    for (centry *e = c->lru.next; e != &c->lru; e = e->next) {
        bytes += e->len;
        count++;
        if (cfind(c, e->key) != e) rc = RLDB_ERR_CORRUPT;
    }
    if (bytes != c->bytes || count != c->count || c->bytes > c->capacity) rc = RLDB_ERR_CORRUPT;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ---- table metadata ---- */
struct rldb_table {
    uint64_t number;
    uint8_t *filter;
    size_t filter_len;
    uint8_t *keys;       /* index: last key of every block, back to back */
    uint32_t *ends;
    uint64_t *handles;   /* offset, size pairs */
    size_t count;
};

rldb_table *rldb_table_new(uint64_t number, const uint8_t *filter, size_t filter_len,
                           const uint8_t *index, size_t index_len) {
    size_t n, kb, vb;
    if (rldb_block_measure(index, index_len, &n, &kb, &vb) != RLDB_OK) return NULL;
    rldb_table *t = calloc(1, sizeof(*t));
    uint8_t *vals = malloc(vb + 1);
    uint32_t *vends = malloc((n + 1) * sizeof(uint32_t));
    if (t) {
        t->number = number;
        t->filter = malloc(filter_len + 1);
        t->keys = malloc(kb + 1);
        t->ends = malloc((n + 1) * sizeof(uint32_t));
        t->handles = malloc((2 * n + 1) * sizeof(uint64_t));
    }
    size_t count = 0;
    if (!t || !vals || !vends || !t->filter || !t->keys || !t->ends || !t->handles ||
        rldb_block_decode(index, index_len, t->keys, kb, t->ends, vals, vb, vends, n, &count, 1) != RLDB_OK ||
        count != n) {
        free(vals);
        free(vends);
        rldb_table_free(t);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = vals + (i ? vends[i - 1] : 0), *limit = vals + vends[i];
        if (!(p = get_varint64(p, limit, &t->handles[2 * i])) ||
            !(p = get_varint64(p, limit, &t->handles[2 * i + 1])) || p != limit) {
            free(vals);
            free(vends);
            rldb_table_free(t);
            return NULL;
        }
    }
    free(vals);
    free(vends);
    memcpy(t->filter, filter, filter_len);
    t->filter_len = filter_len;
    t->count = n;
    return t;
}

void rldb_table_free(rldb_table *t) {
    if (!t) return;
    free(t->filter);
    free(t->keys);
    free(t->ends);
    free(t->handles);
    free(t);
}

/* ---- levels: the tables of one version ---- */
typedef struct {
    rldb_table *t;
    uint8_t *smallest, *largest;
    size_t slen, llen;
} vfile;

struct rldb_levels {
    int nlevels;
    vfile *files[RLDB_MAX_LEVELS];
    size_t counts[RLDB_MAX_LEVELS], caps[RLDB_MAX_LEVELS];
};

rldb_levels *rldb_levels_new(void) {
    rldb_levels *v = calloc(1, sizeof(*v));
    if (v) v->nlevels = RLDB_MAX_LEVELS;
    return v;
}

void rldb_levels_free(rldb_levels *v) {
    if (!v) return;
    for (int l = 0; l < RLDB_MAX_LEVELS; l++) {
        for (size_t i = 0; i < v->counts[l]; i++) {
            free(v->files[l][i].smallest);
            free(v->files[l][i].largest);
        }
        free(v->files[l]);
    }
    free(v);
}

/* Files are added in lookup order: L0 newest first, deeper levels by key. */
int rldb_levels_add(rldb_levels *v, int level, rldb_table *t, const uint8_t *smallest,
                     size_t slen, const uint8_t *largest, size_t llen) {
    if (level < 0 || level >= RLDB_MAX_LEVELS || !t) return RLDB_ERR_INVALID_ARGUMENT;
    if (v->counts[level] == v->caps[level]) {
        size_t cap = v->caps[level] ? 2 * v->caps[level] : 8;
        vfile *f = realloc(v->files[level], cap * sizeof(vfile));
        if (!f) return RLDB_ERR_NO_MEMORY;
        v->files[level] = f;
        v->caps[level] = cap;
    }
    vfile *f = &v->files[level][v->counts[level]];
    f->t = t;
    f->smallest = malloc(slen + 1);
    f->largest = malloc(llen + 1);
    if (!f->smallest || !f->largest) {
        free(f->smallest);
        free(f->largest);
        return RLDB_ERR_NO_MEMORY;
    }
    memcpy(f->smallest, smallest, slen);
    memcpy(f->largest, largest, llen);
    f->slen = slen;
    f->llen = llen;
    v->counts[level]++;
    return RLDB_OK;
}

/* ---- get ---- */
static int copy_value(rldb_get_result *r, uint64_t trailer, const uint8_t *value, size_t vlen) {
    r->trailer = trailer;
    r->vlen = vlen;
    if ((trailer & 0xff) == 0) return RLDB_GET_FOUND;
    if (vlen > RLDB_INLINE_VALUE) return RLDB_GET_TOO_BIG;
    if (vlen) memcpy(r->value, value, vlen);
    return RLDB_GET_FOUND;
}

/* Probes one table: RLDB_GET_NOT_FOUND to go on, FOUND/TOO_BIG, NEED_BLOCK, or <0. */
static int probe(rldb_cache *c, rldb_table *t, const uint8_t *target, size_t tlen, uint64_t h1,
                 uint64_t h2, rldb_get_result *r) {
    int may = rldb__bloom_test_hashes(t->filter, t->filter_len, h1, h2);
    if (may < 0) return may;
    if (!may) {
        __atomic_fetch_add(&c->bloom_useful, 1, __ATOMIC_RELAXED);
        return RLDB_GET_NOT_FOUND;
    }
    size_t lo = 0, hi = t->count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        size_t from = mid ? t->ends[mid - 1] : 0;
        if (ikey_cmp(t->keys + from, t->ends[mid] - from, target, tlen) < 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo == t->count) {
        __atomic_fetch_add(&c->bloom_false_positive, 1, __ATOMIC_RELAXED);
        return RLDB_GET_NOT_FOUND;
    }
    uint64_t key = ckey(t->number, (uint32_t)lo);
    pthread_mutex_lock(&c->mu);
    centry *e = cfind(c, key);
    if (!e) {
        c->misses++;
        pthread_mutex_unlock(&c->mu);
        r->need_table = t->number;
        r->need_block = (uint32_t)lo;
        r->need_offset = t->handles[2 * lo];
        r->need_size = t->handles[2 * lo + 1];
        return RLDB_GET_NEED_BLOCK;
    }
    c->hits++;
    lru_unlink(e);
    lru_push(c, e);
    rldb_found f;
    int rc = rldb_block_get(e->data, e->len, target, tlen - 8, load64le(target + tlen - 8) >> 8, &f);
    if (rc == 1) rc = copy_value(r, f.trailer, (const uint8_t *)f.value, f.vlen);
    pthread_mutex_unlock(&c->mu);
    if (rc == 0) {
        __atomic_fetch_add(&c->bloom_false_positive, 1, __ATOMIC_RELAXED);
        return RLDB_GET_NOT_FOUND;
    }
    return rc;
}

int rldb_get(rldb_memtable *mem, rldb_memtable *imm, rldb_levels *v, rldb_cache *c,
             const uint8_t *key, size_t klen, uint64_t snapshot, uint32_t resume,
             rldb_get_result *r) {
    if (snapshot >= (1ULL << 56)) snapshot = (1ULL << 56) - 1;
    if (resume == 0) {
        rldb_memtable *mts[2] = {mem, imm};
        for (int i = 0; i < 2; i++) {
            rldb_found f;
            if (mts[i] && rldb_memtable_get(mts[i], key, klen, snapshot, &f) == 1) {
                r->where = 0;
                return copy_value(r, f.trailer, (const uint8_t *)f.value, f.vlen);
            }
        }
        resume = 1;
    }
    uint8_t stack[264];
    uint8_t *target = klen + 8 <= sizeof stack ? stack : malloc(klen + 8);
    if (!target) return RLDB_ERR_NO_MEMORY;
    memcpy(target, key, klen);
    store64le(target + klen, (snapshot << 8) | 0xff);
    size_t tlen = klen + 8;
    uint64_t h1, h2;
    rldb_hash128(key, klen, &h1, &h2);
    uint32_t ordinal = 0;  /* candidates visited so far, for resuming */
    int rc = RLDB_GET_NOT_FOUND;
    for (int l = 0; l < RLDB_MAX_LEVELS && rc == RLDB_GET_NOT_FOUND; l++) {
        size_t n = v->counts[l];
        vfile *files = v->files[l];
        size_t lo = 0, hi = n;
        if (l > 0) {  /* the one file whose largest >= key */
            while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (user_cmp(files[mid].largest, files[mid].llen, key, klen) < 0) lo = mid + 1;
                else hi = mid;
            }
            hi = lo < n ? lo + 1 : lo;
        }
        for (size_t i = lo; i < hi && rc == RLDB_GET_NOT_FOUND; i++) {
            vfile *f = &files[i];
            if (user_cmp(key, klen, f->smallest, f->slen) < 0 ||
                user_cmp(key, klen, f->largest, f->llen) > 0)
                continue;
            ordinal++;
            if (ordinal < resume) continue;
            rc = probe(c, f->t, target, tlen, h1, h2, r);
            r->where = ordinal;
            r->resume = ordinal;  /* same candidate once its block is cached */
        }
    }
    if (target != stack) free(target);
    return rc;
}
