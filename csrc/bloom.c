/* Bloom filters with two independent 64-bit hashes combined by double hashing
 * (Kirsch and Mitzenmacher): probe i looks at bit (h1 + i*h2) of the array.
 * Probes = bits per key x 0.69, rounded down: at 10 bits per key, 6 probes
 * and a false-positive rate of about 0.85%. */
#include "internal.h"

#define MAX_PROBES 30

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t fmix64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

#define C1 0x87c37b91114253d5ULL
#define C2 0x4cf5ad432745937fULL

void rldb_hash128(const uint8_t *p, size_t len, uint64_t *o1, uint64_t *o2) {
    uint64_t h1 = 0x9e3779b97f4a7c15ULL ^ (uint64_t)len;
    uint64_t h2 = 0xc2b2ae3d27d4eb4fULL + (uint64_t)len;
    size_t n = len;
    while (n >= 8) {
        uint64_t w = load64le(p);
        h1 ^= rotl64(w * C1, 31) * C2;
        h1 = rotl64(h1, 27) * 5 + 0x52dce729;
        h2 ^= rotl64(w * C2, 33) * C1;
        h2 = rotl64(h2, 31) * 5 + 0x38495ab5;
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        for (size_t i = 0; i < n; i++) w |= (uint64_t)p[i] << (8 * i);
        h1 ^= rotl64(w * C1, 31) * C2;
        h2 ^= rotl64(w * C2, 33) * C1;
    }
    h1 += h2;
    h2 += h1;
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 += h2;
    h2 += h1;
    *o1 = h1;
    *o2 = h2;
}

static uint32_t probes_for(uint32_t bits_per_key) {
    uint32_t k = (uint32_t)(bits_per_key * 69 / 100); /* ln 2 ~ 0.69 */
    if (k < 1) k = 1;
    if (k > MAX_PROBES) k = MAX_PROBES;
    return k;
}

size_t rldb_bloom_size(size_t key_count, uint32_t bits_per_key) {
    size_t bits = key_count * (size_t)bits_per_key;
    if (bits < 64) bits = 64;
    return (bits + 7) / 8 + 1;
}

/* Maps a 64-bit value onto [0, nbits) without a division. */
static inline uint64_t reduce(uint64_t x, uint64_t nbits) {
    return (uint64_t)(((__uint128_t)x * nbits) >> 64);
}

static inline void add_hashes(uint8_t *bits, uint64_t nbits, uint32_t k,
                              uint64_t h1, uint64_t h2) {
    for (uint32_t i = 0; i < k; i++) {
        uint64_t b = reduce(h1, nbits);
        bits[b >> 3] |= (uint8_t)(1u << (b & 7));
        h1 += h2;
    }
}

static inline int test_hashes(const uint8_t *bits, uint64_t nbits, uint32_t k,
                              uint64_t h1, uint64_t h2) {
    for (uint32_t i = 0; i < k; i++) {
        uint64_t b = reduce(h1, nbits);
        if (!(bits[b >> 3] & (1u << (b & 7)))) return 0;
        h1 += h2;
    }
    return 1;
}

int rldb_bloom_build(const uint8_t *data, const uint32_t *lengths, size_t count,
                     uint32_t bits_per_key, uint8_t *out, size_t out_len) {
    if (bits_per_key < 1 || bits_per_key > 64) return RLDB_ERR_INVALID_ARGUMENT;
    if (out_len != rldb_bloom_size(count, bits_per_key)) return RLDB_ERR_BUFFER_TOO_SMALL;
    size_t nbytes = out_len - 1;
    uint32_t k = probes_for(bits_per_key);
    memset(out, 0, nbytes);
    size_t pos = 0;
    for (size_t i = 0; i < count; i++) {
        uint64_t h1, h2;
        rldb_hash128(data + pos, lengths[i], &h1, &h2);
        add_hashes(out, (uint64_t)nbytes * 8, k, h1, h2);
        pos += lengths[i];
    }
    out[nbytes] = (uint8_t)k;
    return RLDB_OK;
}

static int filter_shape(const uint8_t *filter, size_t filter_len, uint32_t *k) {
    if (filter_len < 2) return RLDB_ERR_CORRUPT;
    *k = filter[filter_len - 1];
    if (*k < 1 || *k > MAX_PROBES) return RLDB_ERR_CORRUPT;
    return RLDB_OK;
}

int rldb_bloom_may_contain(const uint8_t *filter, size_t filter_len,
                           const uint8_t *key, size_t key_len) {
    uint32_t k;
    int rc = filter_shape(filter, filter_len, &k);
    if (rc != RLDB_OK) return rc;
    uint64_t h1, h2;
    rldb_hash128(key, key_len, &h1, &h2);
    return test_hashes(filter, (uint64_t)(filter_len - 1) * 8, k, h1, h2);
}

int rldb_bloom_probe_many(const uint8_t *filter, size_t filter_len,
                          const uint8_t *data, const uint32_t *lengths, size_t count,
                          uint8_t *results) {
    uint32_t k;
    int rc = filter_shape(filter, filter_len, &k);
    if (rc != RLDB_OK) return rc;
    uint64_t nbits = (uint64_t)(filter_len - 1) * 8;
    size_t pos = 0;
    for (size_t i = 0; i < count; i++) {
        uint64_t h1, h2;
        rldb_hash128(data + pos, lengths[i], &h1, &h2);
        results[i] = (uint8_t)test_hashes(filter, nbits, k, h1, h2);
        pos += lengths[i];
    }
    return RLDB_OK;
}

/* For tables: an empty filter means the table was built without one. */
int rldb__bloom_test_hashes(const uint8_t *filter, size_t filter_len, uint64_t h1, uint64_t h2) {
    if (filter_len == 0) return 1;
    uint32_t k;
    int rc = filter_shape(filter, filter_len, &k);
    if (rc != RLDB_OK) return rc;
    return test_hashes(filter, (uint64_t)(filter_len - 1) * 8, k, h1, h2);
}

/* Fills a filter of out_len bytes (from rldb_bloom_size) from hash pairs. */
void rldb__bloom_fill(uint8_t *out, size_t out_len, uint32_t bits_per_key,
                      const uint64_t *hashes, size_t count) {
    size_t nbytes = out_len - 1;
    uint32_t k = probes_for(bits_per_key);
    memset(out, 0, nbytes);
    for (size_t i = 0; i < count; i++)
        add_hashes(out, (uint64_t)nbytes * 8, k, hashes[2 * i], hashes[2 * i + 1]);
    out[nbytes] = (uint8_t)k;
}
