/* The Bitcask keydir: every key -> a fixed 16-byte record (data file slot,
 * entry offset, value size, timestamp), in memory.
 *
 * One open-addressing hash table with linear probing and backward-shift
 * deletion (no tombstone slots).  A slot is 8 bytes: the top 32 bits of the
 * key's 64-bit hash, and a 32-bit reference (+1, so that 0 means empty) into
 * an arena of entries:
 *
 *     record (16 bytes) | key length u16 | key | padding to 4 bytes
 *
 * packed in chunks (4 KiB, doubling up to 4 MiB; the reference is
 * chunk << 20 | offset / 4, so the arena holds up to 16 GiB).  A key's home
 * slot is given by the top bits of those 32 hash bits, so growing the table
 * and deleting never read a key back (and a resize walks both tables in
 * order); the other hash bits are compared before any key is, so a lookup
 * touches the arena almost only for the key it finds.  The table doubles
 * past 3/4 full.  Removed entries leave holes in the arena that are counted
 * and squeezed out once they pass half of it.
 *
 * Memory per key: 8 bytes of slot / load factor (3/8..3/4) + 18 + key
 * length rounded up to 4, e.g. about 52 bytes for a 16-byte key (Riak's
 * keydir: about 91 + key).  rldb_keydir_get_usage() reports the bytes
 * actually malloc'd.
 *
 * Not thread-safe by itself: the bitcask store (bitcask_store.c) guards it
 * with its locks. */
#include "internal.h"

#define OFF_BITS 20                    /* offset / 4 within a chunk */
#define CHUNK_MAX ((size_t)4 << OFF_BITS) /* 4 MiB */
#define CHUNK_FIRST 4096
#define MAX_CHUNKS 4094 /* so that a reference + 1 fits 32 bits */
#define REF_MASK UINT64_C(0xffffffff)
#define REC_SIZE 16
#define ENTRY_FIXED 18 /* record + u16 key length */
#define MIN_SLOTS 16
#define DEAD_FILE 0xffffffffu /* record.file of a removed entry */

struct rldb_keydir {
    uint64_t *slots;
    size_t mask;    /* number of slots - 1 (a power of two minus one) */
    unsigned shift; /* 32 - log2(number of slots): home = hash32 >> shift */
    size_t count, tombs, key_bytes;
    uint8_t **chunks;
    uint32_t *chunk_cap;
    size_t nchunks, chunks_alloc;
    size_t tail_used;  /* bytes used in the last chunk */
    size_t arena_cap;  /* bytes malloc'd for chunks */
    size_t arena_used; /* bytes of entries, dead ones included */
    size_t arena_dead; /* bytes of removed entries */
};

/* ---- hashing (wyhash's mixing; keys of any length) ---- */
static const uint64_t S0 = 0xa0761d6478bd642fULL, S1 = 0xe7037ed1a0b428dbULL;

static inline uint64_t mix(uint64_t a, uint64_t b) {
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t hash_key(const uint8_t *p, size_t n) {
    uint64_t seed = mix(S0, S1 ^ n), a, b;
    if (n <= 16) {
        if (n >= 4) {
            size_t m = (n >> 3) << 2;
            a = ((uint64_t)load32le(p) << 32) | load32le(p + m);
            b = ((uint64_t)load32le(p + n - 4) << 32) | load32le(p + n - 4 - m);
        } else if (n > 0) {
            a = ((uint64_t)p[0] << 16) | ((uint64_t)p[n >> 1] << 8) | p[n - 1];
            b = 0;
        } else {
            a = b = 0;
        }
    } else {
        size_t i = n;
        while (i > 16) {
            seed = mix(load64le(p) ^ S1, load64le(p + 8) ^ seed);
            p += 16;
            i -= 16;
        }
        a = load64le(p + i - 16);
        b = load64le(p + i - 8);
    }
    __uint128_t r = (__uint128_t)(a ^ S1) * (b ^ seed);
    return mix((uint64_t)r ^ S0 ^ n, (uint64_t)(r >> 64) ^ S1);
}

/* ---- entries ---- */
static inline uint8_t *entry_at(const rldb_keydir *kd, uint64_t slot) {
    uint32_t ref = (uint32_t)(slot & REF_MASK) - 1;
    return kd->chunks[ref >> OFF_BITS] + ((size_t)(ref & ((1u << OFF_BITS) - 1)) << 2);
}

static inline size_t entry_size(size_t klen) { return (ENTRY_FIXED + klen + 3) & ~(size_t)3; }

static inline size_t entry_klen(const uint8_t *e) {
    uint16_t k;
    memcpy(&k, e + REC_SIZE, 2);
    return k;
}

static inline size_t slot_home(const rldb_keydir *kd, uint64_t slot) {
    return kd->shift >= 32 ? 0 : (size_t)((uint32_t)(slot >> 32) >> kd->shift);
}

static inline unsigned shift_for(size_t nslots) {
    unsigned bits = 0;
    while (((size_t)1 << bits) < nslots) bits++;
    return 32 - bits;
}

rldb_keydir *rldb_keydir_new(void) {
    rldb_keydir *kd = calloc(1, sizeof(*kd));
    if (!kd) return NULL;
    kd->slots = calloc(MIN_SLOTS, sizeof(uint64_t));
    if (!kd->slots) {
        free(kd);
        return NULL;
    }
    kd->mask = MIN_SLOTS - 1;
    kd->shift = shift_for(MIN_SLOTS);
    return kd;
}

static void free_chunks(uint8_t **chunks, size_t n) {
    for (size_t i = 0; i < n; i++) free(chunks[i]);
}

void rldb_keydir_free(rldb_keydir *kd) {
    if (!kd) return;
    free_chunks(kd->chunks, kd->nchunks);
    free(kd->chunks);
    free(kd->chunk_cap);
    free(kd->slots);
    free(kd);
}

/* A new arena chunk of at least `need` bytes. */
static int add_chunk(rldb_keydir *kd, size_t need) {
    if (kd->nchunks >= MAX_CHUNKS) return RLDB_ERR_NO_MEMORY;
    if (kd->nchunks == kd->chunks_alloc) {
        size_t n = kd->chunks_alloc ? kd->chunks_alloc * 2 : 8;
        uint8_t **c = realloc(kd->chunks, n * sizeof(*c));
        if (!c) return RLDB_ERR_NO_MEMORY;
        kd->chunks = c;
        uint32_t *caps = realloc(kd->chunk_cap, n * sizeof(*caps));
        if (!caps) return RLDB_ERR_NO_MEMORY;
        kd->chunk_cap = caps;
        kd->chunks_alloc = n;
    }
    size_t shift = kd->nchunks < 10 ? kd->nchunks : 10;
    size_t size = (size_t)CHUNK_FIRST << shift;
    if (size > CHUNK_MAX) size = CHUNK_MAX;
    if (size < need) size = need;
    uint8_t *chunk = malloc(size);
    if (!chunk) return RLDB_ERR_NO_MEMORY;
    kd->chunks[kd->nchunks] = chunk;
    kd->chunk_cap[kd->nchunks] = (uint32_t)size;
    kd->nchunks++;
    kd->tail_used = 0;
    kd->arena_cap += size;
    return RLDB_OK;
}

/* Room for an entry of n bytes (a multiple of 4); *ref1 gets its reference + 1. */
static int arena_alloc(rldb_keydir *kd, size_t n, uint64_t *ref1, uint8_t **where) {
    if (kd->nchunks == 0 || kd->tail_used + n > kd->chunk_cap[kd->nchunks - 1]) {
        int rc = add_chunk(kd, n);
        if (rc != RLDB_OK) return rc;
    }
    size_t c = kd->nchunks - 1;
    *ref1 = (((uint64_t)c << OFF_BITS) | (kd->tail_used >> 2)) + 1;
    *where = kd->chunks[c] + kd->tail_used;
    kd->tail_used += n;
    kd->arena_used += n;
    return RLDB_OK;
}

/* Slot index of key (found: *found = 1) or of the empty slot ending its probe. */
static inline size_t probe(const rldb_keydir *kd, const uint8_t *key, size_t klen, uint64_t h,
                           int *found) {
    uint64_t tag = h >> 32;
    size_t i = kd->shift >= 32 ? 0 : (size_t)((uint32_t)tag >> kd->shift);
    for (;;) {
        uint64_t s = kd->slots[i];
        if (!s) {
            *found = 0;
            return i;
        }
        if ((s >> 32) == tag) {
            const uint8_t *e = entry_at(kd, s);
            if (entry_klen(e) == klen && memcmp(e + ENTRY_FIXED, key, klen) == 0) {
                *found = 1;
                return i;
            }
        }
        i = (i + 1) & kd->mask;
    }
}

static int resize(rldb_keydir *kd, size_t nslots) {
    if (nslots > ((size_t)1 << 32)) return RLDB_ERR_NO_MEMORY;
    uint64_t *slots = calloc(nslots, sizeof(uint64_t));
    if (!slots) return RLDB_ERR_NO_MEMORY;
    size_t mask = nslots - 1;
    unsigned shift = shift_for(nslots);
    /* Start after an empty slot, so that no probe run wraps past the start
     * of the walk: entries then land in the order of their homes. */
    size_t start = 0;
    while (start <= kd->mask && kd->slots[start]) start++;
    for (size_t n = 0; n <= kd->mask; n++) {
        uint64_t s = kd->slots[(start + n) & kd->mask];
        if (!s) continue;
        size_t j = shift >= 32 ? 0 : (size_t)((uint32_t)(s >> 32) >> shift);
        while (slots[j]) j = (j + 1) & mask;
        slots[j] = s;
    }
    free(kd->slots);
    kd->slots = slots;
    kd->mask = mask;
    kd->shift = shift;
    return RLDB_OK;
}

static inline size_t capacity_for(size_t count) {
    size_t n = MIN_SLOTS;
    while (count > n / 4 * 3) n *= 2;
    return n;
}

int rldb_keydir_reserve(rldb_keydir *kd, size_t count) {
    size_t n = capacity_for(count);
    return n > kd->mask + 1 ? resize(kd, n) : RLDB_OK;
}

void rldb_keydir_prefetch(const rldb_keydir *kd, const uint8_t *key, size_t klen) {
    uint64_t h = hash_key(key, klen);
    size_t i = kd->shift >= 32 ? 0 : (size_t)((uint32_t)(h >> 32) >> kd->shift);
    __builtin_prefetch(&kd->slots[i]);
}

int rldb_keydir_get(const rldb_keydir *kd, const uint8_t *key, size_t klen, rldb_keydir_rec *rec) {
    int found;
    size_t i = probe(kd, key, klen, hash_key(key, klen), &found);
    if (!found) return 0;
    memcpy(rec, entry_at(kd, kd->slots[i]), REC_SIZE);
    return 1;
}

int rldb_keydir_put(rldb_keydir *kd, const uint8_t *key, size_t klen, const rldb_keydir_rec *rec,
                    rldb_keydir_rec *old) {
    if (klen == 0 || klen > RLDB_KEYDIR_MAX_KEY || rec->file == DEAD_FILE)
        return RLDB_ERR_INVALID_ARGUMENT;
    uint64_t h = hash_key(key, klen);
    int found;
    size_t i = probe(kd, key, klen, h, &found);
    if (found) {
        uint8_t *e = entry_at(kd, kd->slots[i]);
        rldb_keydir_rec prev;
        memcpy(&prev, e, REC_SIZE);
        if (old) *old = prev;
        kd->tombs += (rec->vsize == RLDB_KEYDIR_TOMBSTONE) - (prev.vsize == RLDB_KEYDIR_TOMBSTONE);
        memcpy(e, rec, REC_SIZE);
        return 1;
    }
    if (kd->count + 1 > (kd->mask + 1) / 4 * 3) {
        int rc = resize(kd, (kd->mask + 1) * 2);
        if (rc != RLDB_OK) return rc;
        i = probe(kd, key, klen, h, &found);
    }
    uint64_t ref1;
    uint8_t *e;
    int rc = arena_alloc(kd, entry_size(klen), &ref1, &e);
    if (rc != RLDB_OK) return rc;
    memcpy(e, rec, REC_SIZE);
    uint16_t k16 = (uint16_t)klen;
    memcpy(e + REC_SIZE, &k16, 2);
    memcpy(e + ENTRY_FIXED, key, klen);
    kd->slots[i] = ((h >> 32) << 32) | ref1;
    kd->count++;
    kd->key_bytes += klen;
    kd->tombs += rec->vsize == RLDB_KEYDIR_TOMBSTONE;
    return 0;
}

/* Squeezes removed entries out of the arena: every live entry is copied to
 * fresh chunks and its slot repointed. */
static int compact_arena(rldb_keydir *kd) {
    rldb_keydir fresh = {0};
    for (size_t i = 0; i <= kd->mask; i++) {
        uint64_t s = kd->slots[i];
        if (!s) continue;
        const uint8_t *e = entry_at(kd, s);
        size_t n = entry_size(entry_klen(e));
        uint64_t ref1;
        uint8_t *to;
        if (arena_alloc(&fresh, n, &ref1, &to) != RLDB_OK) {
            free_chunks(fresh.chunks, fresh.nchunks);
            free(fresh.chunks);
            free(fresh.chunk_cap);
            return RLDB_ERR_NO_MEMORY;
        }
        memcpy(to, e, n);
        /* Other slots still point into the old arena, which stays intact
         * until every slot has moved. */
        kd->slots[i] = (s & ~REF_MASK) | ref1;
    }
    free_chunks(kd->chunks, kd->nchunks);
    free(kd->chunks);
    free(kd->chunk_cap);
    kd->chunks = fresh.chunks;
    kd->chunk_cap = fresh.chunk_cap;
    kd->nchunks = fresh.nchunks;
    kd->chunks_alloc = fresh.chunks_alloc;
    kd->tail_used = fresh.tail_used;
    kd->arena_cap = fresh.arena_cap;
    kd->arena_used = fresh.arena_used;
    kd->arena_dead = 0;
    return RLDB_OK;
}

int rldb_keydir_remove(rldb_keydir *kd, const uint8_t *key, size_t klen, rldb_keydir_rec *old) {
    int found;
    size_t i = probe(kd, key, klen, hash_key(key, klen), &found);
    if (!found) return 0;
    uint8_t *e = entry_at(kd, kd->slots[i]);
    rldb_keydir_rec prev;
    memcpy(&prev, e, REC_SIZE);
    if (old) *old = prev;
    uint32_t dead = DEAD_FILE;
    memcpy(e, &dead, 4);
    kd->arena_dead += entry_size(klen);
    kd->count--;
    kd->key_bytes -= klen;
    kd->tombs -= prev.vsize == RLDB_KEYDIR_TOMBSTONE;
    /* Backward shift: pull later members of the probe run into the hole. */
    size_t mask = kd->mask, hole = i;
    for (size_t j = (i + 1) & mask; kd->slots[j]; j = (j + 1) & mask) {
        size_t home = slot_home(kd, kd->slots[j]);
        /* The entry at j may move to the hole unless its home lies
         * cyclically in (hole, j]. */
        int stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            kd->slots[hole] = kd->slots[j];
            hole = j;
        }
    }
    kd->slots[hole] = 0;
    if (kd->arena_dead >= 4096 && kd->arena_dead * 2 > kd->arena_used)
        compact_arena(kd); /* on failure the holes simply stay */
    return 1;
}

void rldb_keydir_get_usage(const rldb_keydir *kd, rldb_keydir_usage *u) {
    u->count = kd->count;
    u->tombstones = kd->tombs;
    u->key_bytes = kd->key_bytes;
    u->slots = kd->mask + 1;
    u->arena_bytes = kd->arena_cap;
    u->arena_used = kd->arena_used;
    u->arena_dead = kd->arena_dead;
    u->memory = sizeof(*kd) + (kd->mask + 1) * sizeof(uint64_t) + kd->arena_cap +
                kd->chunks_alloc * (sizeof(uint8_t *) + sizeof(uint32_t));
}

int rldb_keydir_next(const rldb_keydir *kd, uint64_t *pos, const uint8_t **key, size_t *klen,
                     rldb_keydir_rec *rec) {
    for (size_t i = (size_t)*pos; i <= kd->mask; i++) {
        uint64_t s = kd->slots[i];
        if (!s) continue;
        const uint8_t *e = entry_at(kd, s);
        memcpy(rec, e, REC_SIZE);
        *klen = entry_klen(e);
        *key = e + ENTRY_FIXED;
        *pos = i + 1;
        return 1;
    }
    *pos = kd->mask + 1;
    return 0;
}

int rldb_keydir_check(const rldb_keydir *kd) {
    size_t count = 0, tombs = 0, key_bytes = 0, live_bytes = 0, mask = kd->mask;
    if ((mask + 1) & mask) return RLDB_ERR_CORRUPT;
    if (kd->count > (mask + 1) / 4 * 3) return RLDB_ERR_CORRUPT;
    size_t cap = 0;
    for (size_t c = 0; c < kd->nchunks; c++) cap += kd->chunk_cap[c];
    if (cap != kd->arena_cap || kd->arena_dead > kd->arena_used) return RLDB_ERR_CORRUPT;
    if (kd->shift != shift_for(mask + 1)) return RLDB_ERR_CORRUPT;
    for (size_t i = 0; i <= mask; i++) {
        uint64_t s = kd->slots[i];
        if (!s) continue;
        if ((s & REF_MASK) == 0) return RLDB_ERR_CORRUPT;
        uint32_t ref = (uint32_t)(s & REF_MASK) - 1;
        size_t c = ref >> OFF_BITS, off = (size_t)(ref & ((1u << OFF_BITS) - 1)) << 2;
        if (c >= kd->nchunks || off + ENTRY_FIXED > kd->chunk_cap[c]) return RLDB_ERR_CORRUPT;
        const uint8_t *e = kd->chunks[c] + off;
        size_t klen = entry_klen(e);
        if (klen == 0 || off + ENTRY_FIXED + klen > kd->chunk_cap[c]) return RLDB_ERR_CORRUPT;
        if (c == kd->nchunks - 1 && off + ENTRY_FIXED + klen > kd->tail_used) return RLDB_ERR_CORRUPT;
        rldb_keydir_rec rec;
        memcpy(&rec, e, REC_SIZE);
        if (rec.file == DEAD_FILE) return RLDB_ERR_CORRUPT;
        uint64_t h = hash_key(e + ENTRY_FIXED, klen);
        if ((h >> 32) != (s >> 32)) return RLDB_ERR_CORRUPT;
        /* No empty slot between the key's home and where it sits. */
        for (size_t j = slot_home(kd, s); j != i; j = (j + 1) & mask)
            if (!kd->slots[j]) return RLDB_ERR_CORRUPT;
        /* The key is found by a lookup (so no duplicate sits before it). */
        int found;
        if (probe(kd, e + ENTRY_FIXED, klen, h, &found) != i || !found) return RLDB_ERR_CORRUPT;
        count++;
        tombs += rec.vsize == RLDB_KEYDIR_TOMBSTONE;
        key_bytes += klen;
        live_bytes += entry_size(klen);
    }
    if (count != kd->count || tombs != kd->tombs || key_bytes != kd->key_bytes ||
        live_bytes != kd->arena_used - kd->arena_dead)
        return RLDB_ERR_CORRUPT;
    return RLDB_OK;
}
