/* Helpers shared by the C files; not part of the cdef. */
#ifndef RLDB_INTERNAL_H
#define RLDB_INTERNAL_H
#include "rldb.h"
#include <stdlib.h>
#include <string.h>

/* Little-endian loads and stores: a memcpy, and a byte swap on big-endian CPUs. */
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define RLDB_LE64(v) __builtin_bswap64(v)
#define RLDB_LE32(v) __builtin_bswap32(v)
#else
#define RLDB_LE64(v) (v)
#define RLDB_LE32(v) (v)
#endif

static inline uint64_t load64le(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return RLDB_LE64(v);
}

static inline uint32_t load32le(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return RLDB_LE32(v);
}

static inline void store64le(uint8_t *p, uint64_t v) {
    v = RLDB_LE64(v);
    memcpy(p, &v, 8);
}

static inline void store32le(uint8_t *p, uint32_t v) {
    v = RLDB_LE32(v);
    memcpy(p, &v, 4);
}

/* Decodes a varint32 from [p, limit); returns the position after it or NULL. */
static inline const uint8_t *get_varint32(const uint8_t *p, const uint8_t *limit, uint32_t *v) {
    uint32_t result = 0;
    for (int shift = 0; shift <= 28 && p < limit; shift += 7) {
        uint32_t b = *p++;
        if (shift == 28 && b > 0x0f) return NULL;
        result |= (b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = result;
            return p;
        }
    }
    return NULL;
}

static inline const uint8_t *get_varint64(const uint8_t *p, const uint8_t *limit, uint64_t *v) {
    size_t used;
    if (rldb_varint_decode(p, (size_t)(limit - p), v, &used) != RLDB_OK) return NULL;
    return p + used;
}

/* ---- growable byte buffers ---- */
typedef struct {
    uint8_t *data;
    size_t len, cap;
} rbuf;

static inline int rbuf_reserve(rbuf *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) return -1;
    b->data = d;
    b->cap = cap;
    return 0;
}

static inline int rbuf_append(rbuf *b, const void *p, size_t n) {
    if (rbuf_reserve(b, n)) return -1;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static inline int rbuf_varint(rbuf *b, uint64_t v) {
    if (rbuf_reserve(b, RLDB_VARINT64_MAX)) return -1;
    b->len += (size_t)rldb_varint_encode(v, b->data + b->len);
    return 0;
}

static inline int rbuf_fixed32(rbuf *b, uint32_t v) {
    if (rbuf_reserve(b, 4)) return -1;
    store32le(b->data + b->len, v);
    b->len += 4;
    return 0;
}

static inline int rbuf_fixed64(rbuf *b, uint64_t v) {
    if (rbuf_reserve(b, 8)) return -1;
    store64le(b->data + b->len, v);
    b->len += 8;
    return 0;
}

static inline void rbuf_free(rbuf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- internal keys: user key + fixed64 trailer (sequence << 8 | kind) ----
 * Ordered by user key ascending, then trailer descending (newest first). */
static inline int user_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
    size_t m = alen < blen ? alen : blen;
    int r = m ? memcmp(a, b, m) : 0;
    if (r) return r;
    return alen < blen ? -1 : (alen > blen ? 1 : 0);
}

static inline int ikey_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
    int r = user_cmp(a, alen - 8, b, blen - 8);
    if (r) return r;
    uint64_t ta = load64le(a + alen - 8), tb = load64le(b + blen - 8);
    return ta > tb ? -1 : (ta < tb ? 1 : 0);
}

static inline uint64_t ikey_trailer(const uint8_t *k, size_t klen) { return load64le(k + klen - 8); }

/* Bloom probing shared by bloom.c and the table code. */
int rldb__bloom_test_hashes(const uint8_t *filter, size_t filter_len, uint64_t h1, uint64_t h2);
void rldb__bloom_fill(uint8_t *out, size_t out_len, uint32_t bits_per_key,
                      const uint64_t *hashes, size_t count);

/* Block internals shared by sstable.c, block.c and kway_merge.c. */
typedef struct {
    const uint8_t *data;      /* block contents, without the trailer */
    size_t len;
    size_t entries_end;       /* where the restart array starts */
    uint32_t nrestarts;
    const uint8_t *restarts;
} rldb__block;

int rldb__block_open(rldb__block *b, const uint8_t *data, size_t len);
/* Decodes the entry at offset; key bytes are written to key (a growable buffer
 * holding the previous key, for the shared prefix). */
const uint8_t *rldb__block_entry(const rldb__block *b, size_t offset, rbuf *key,
                                 const uint8_t **value, uint32_t *vlen);
#endif
