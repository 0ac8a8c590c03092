/* The memtable: a skiplist of internal keys on an arena, as in LevelDB.
 *
 * One writer at a time (the caller serialises writes) and any number of
 * concurrent readers: a node is fully written before it is linked, and links
 * are published with release stores and read with acquire loads, so a reader
 * never sees a half-built node.  Nothing is freed before the whole memtable. */
#include "internal.h"

#define MAX_HEIGHT 12
#define ARENA_BLOCK 65536

typedef struct arena_block {
    struct arena_block *next;
    size_t size;
    uint8_t data[];
} arena_block;

typedef struct node {
    uint32_t klen;        /* internal key length (user key + 8) */
    uint32_t vlen;
    uint8_t height;
    struct node *next[];  /* height links, then key bytes, then value bytes */
} node;

struct rldb_memtable {
    arena_block *blocks;
    uint8_t *alloc_ptr;
    size_t alloc_left;
    size_t memory;        /* bytes taken from malloc */
    size_t count;
    size_t data_bytes;    /* sum of key and value lengths */
    int max_height;
    uint64_t rnd;
    node *head;
};

static inline uint8_t *node_key(const node *n) { return (uint8_t *)&n->next[n->height]; }
static inline uint8_t *node_value(const node *n) { return node_key(n) + n->klen; }

static inline node *next_acquire(const node *n, int level) {
    return __atomic_load_n(&n->next[level], __ATOMIC_ACQUIRE);
}

static void *arena_alloc(rldb_memtable *mt, size_t bytes) {
    bytes = (bytes + 7) & ~(size_t)7;
    if (bytes > mt->alloc_left) {
        size_t size = bytes > ARENA_BLOCK / 4 ? bytes : ARENA_BLOCK;
        arena_block *b = malloc(sizeof(arena_block) + size);
        if (!b) return NULL;
        b->size = size;
        b->next = mt->blocks;
        mt->blocks = b;
        mt->memory += sizeof(arena_block) + size;
        if (size != ARENA_BLOCK) return b->data;  /* a big node gets its own block */
        mt->alloc_ptr = b->data;
        mt->alloc_left = size;
    }
    void *p = mt->alloc_ptr;
    mt->alloc_ptr += bytes;
    mt->alloc_left -= bytes;
    return p;
}

static node *new_node(rldb_memtable *mt, int height, size_t klen, size_t vlen) {
    node *n = arena_alloc(mt, sizeof(node) + sizeof(node *) * (size_t)height + klen + vlen);
    if (!n) return NULL;
    n->klen = (uint32_t)klen;
    n->vlen = (uint32_t)vlen;
    n->height = (uint8_t)height;
    for (int i = 0; i < height; i++) n->next[i] = NULL;
    return n;
}

rldb_memtable *rldb_memtable_new(uint64_t seed) {
    rldb_memtable *mt = calloc(1, sizeof(*mt));
    if (!mt) return NULL;
    mt->rnd = seed ? seed : 0x2545F4914F6CDD1DULL;
    mt->max_height = 1;
    mt->head = new_node(mt, MAX_HEIGHT, 0, 0);
    if (!mt->head) {
        rldb_memtable_free(mt);
        return NULL;
    }
    return mt;
}

void rldb_memtable_free(rldb_memtable *mt) {
    if (!mt) return;
    arena_block *b = mt->blocks;
    while (b) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
    free(mt);
}

static int random_height(rldb_memtable *mt) {
    int h = 1;
    for (;;) {
        /* xorshift64* */
        mt->rnd ^= mt->rnd >> 12;
        mt->rnd ^= mt->rnd << 25;
        mt->rnd ^= mt->rnd >> 27;
        uint64_t r = mt->rnd * 0x2545F4914F6CDD1DULL;
        if (h < MAX_HEIGHT && (r >> 62) == 0) h++;  /* probability 1/4 */
        else return h;
    }
}

/* The last node < key (the head when there is none; with key NULL, the last
 * node); *ge, when given, gets the node after it as read here (the first >=
 * key, NULL at the end), and prev[], when given, the last node < key at each
 * level.  One walk for every search: readers run beside a writer, so the
 * node after the one returned is taken from this walk, not read again. */
static node *find_lt(const rldb_memtable *mt, const uint8_t *key, size_t klen, node **prev,
                     node **ge) {
    node *x = mt->head;
    int level = __atomic_load_n(&mt->max_height, __ATOMIC_RELAXED) - 1;
    for (;;) {
        node *next = next_acquire(x, level);
        if (next && (!key || ikey_cmp(node_key(next), next->klen, key, klen) < 0)) {
            x = next;
        } else {
            if (prev) prev[level] = x;
            if (level == 0) {
                if (ge) *ge = next;
                return x;
            }
            level--;
        }
    }
}

/* First node >= key; fills prev[] when given. */
static node *find_ge(const rldb_memtable *mt, const uint8_t *key, size_t klen, node **prev) {
    node *ge;
    find_lt(mt, key, klen, prev, &ge);
    return ge;
}

int rldb_memtable_add(rldb_memtable *mt, uint64_t seq, int kind, const uint8_t *key,
                      size_t klen, const uint8_t *value, size_t vlen) {
    if (klen > 0xffffff00u || vlen > 0xffffff00u || seq >= (1ULL << 56) || kind < 0 || kind > 1)
        return RLDB_ERR_INVALID_ARGUMENT;
    int height = random_height(mt);
    node *n = new_node(mt, height, klen + 8, vlen);
    if (!n) return RLDB_ERR_NO_MEMORY;
    uint8_t *k = node_key(n);
    if (klen) memcpy(k, key, klen);
    store64le(k + klen, (seq << 8) | (uint64_t)kind);
    if (vlen) memcpy(node_value(n), value, vlen);

    node *prev[MAX_HEIGHT];
    find_ge(mt, k, klen + 8, prev);
    if (height > mt->max_height) {
        for (int i = mt->max_height; i < height; i++) prev[i] = mt->head;
        __atomic_store_n(&mt->max_height, height, __ATOMIC_RELAXED);
    }
    for (int i = 0; i < height; i++) {
        n->next[i] = prev[i]->next[i];
        __atomic_store_n(&prev[i]->next[i], n, __ATOMIC_RELEASE);
    }
    mt->count++;
    mt->data_bytes += klen + vlen;
    return RLDB_OK;
}

/* Applies a packed batch: for each op, kinds[i] (1 put, 0 delete), and in data
 * the key then the value, with lengths klens[i], vlens[i].  Op i gets seq+i. */
int rldb_memtable_add_batch(rldb_memtable *mt, uint64_t seq, const uint8_t *kinds,
                            const uint8_t *data, const uint32_t *klens,
                            const uint32_t *vlens, size_t count) {
    size_t pos = 0;
    for (size_t i = 0; i < count; i++) {
        int rc = rldb_memtable_add(mt, seq + i, kinds[i], data + pos, klens[i],
                                   data + pos + klens[i], vlens[i]);
        if (rc != RLDB_OK) return rc;
        pos += (size_t)klens[i] + vlens[i];
    }
    return RLDB_OK;
}

static int lookup_key(uint8_t *buf, size_t cap, const uint8_t *key, size_t klen,
                      uint64_t seq, uint8_t **out) {
    uint8_t *k = klen + 8 <= cap ? buf : malloc(klen + 8);
    if (!k) return RLDB_ERR_NO_MEMORY;
    if (klen) memcpy(k, key, klen);
    store64le(k + klen, (seq << 8) | 0xff);
    *out = k;
    return RLDB_OK;
}

int rldb_memtable_get(rldb_memtable *mt, const uint8_t *key, size_t klen, uint64_t snapshot,
                      rldb_found *found) {
    uint8_t stack[256], *lk;
    if (snapshot >= (1ULL << 56)) snapshot = (1ULL << 56) - 1;
    int rc = lookup_key(stack, sizeof stack, key, klen, snapshot, &lk);
    if (rc != RLDB_OK) return rc;
    node *n = find_ge(mt, lk, klen + 8, NULL);
    if (lk != stack) free(lk);
    if (!n || user_cmp(node_key(n), n->klen - 8, key, klen) != 0) return 0;
    found->trailer = ikey_trailer(node_key(n), n->klen);
    found->value = (const char *)node_value(n);
    found->vlen = n->vlen;
    return 1;
}

void rldb_memtable_usage(const rldb_memtable *mt, size_t *memory, size_t *count,
                         size_t *data_bytes) {
    *memory = mt->memory;
    *count = mt->count;
    *data_bytes = mt->data_bytes;
}

/* ---- cursors, for the k-way merge (kway_merge.c) and checks ---- */
#include "memtable_cursor.h"

void rldb__mt_cursor_first(rldb__mt_cursor *c) { c->n = next_acquire(c->mt->head, 0); }

void rldb__mt_cursor_last(rldb__mt_cursor *c) {
    node *n = find_lt(c->mt, NULL, 0, NULL, NULL);
    c->n = n == c->mt->head ? NULL : n;
}

int rldb__mt_cursor_seek(rldb__mt_cursor *c, const uint8_t *ikey, size_t iklen) {
    c->n = find_ge(c->mt, ikey, iklen, NULL);
    return RLDB_OK;
}

int rldb__mt_cursor_seek_before(rldb__mt_cursor *c, const uint8_t *ikey, size_t iklen) {
    node *n = find_lt(c->mt, ikey, iklen, NULL, NULL);
    c->n = n == c->mt->head ? NULL : n;
    return RLDB_OK;
}

void rldb__mt_cursor_next(rldb__mt_cursor *c) { c->n = next_acquire((node *)c->n, 0); }

void rldb__mt_cursor_prev(rldb__mt_cursor *c) {
    node *cur = c->n;
    node *n = find_lt(c->mt, node_key(cur), cur->klen, NULL, NULL);
    c->n = n == c->mt->head ? NULL : n;
}

void rldb__mt_cursor_entry(const rldb__mt_cursor *c, const uint8_t **k, size_t *klen,
                           const uint8_t **v, size_t *vlen) {
    const node *n = c->n;
    *k = node_key(n);
    *klen = n->klen;
    *v = node_value(n);
    *vlen = n->vlen;
}

int rldb_memtable_check(const rldb_memtable *mt) {
    size_t count = 0;
    for (int level = 0; level < MAX_HEIGHT; level++) {
        node *prev = NULL;
        for (node *n = mt->head->next[level]; n; n = n->next[level]) {
            if (n->klen < 8 || n->height < level + 1) return RLDB_ERR_CORRUPT;
            if (prev && ikey_cmp(node_key(prev), prev->klen, node_key(n), n->klen) >= 0)
                return RLDB_ERR_CORRUPT;
            prev = n;
            if (level == 0) count++;
        }
    }
    return count == mt->count ? RLDB_OK : RLDB_ERR_CORRUPT;
}
