/* Reading SSTable blocks: checksum verification, entry decoding, seek.
 *
 * A block is a run of entries (varint shared, varint non_shared, varint
 * value_len, key delta, value) followed by restart offsets (fixed32 each) and
 * their count (fixed32).  Keys at restart points are stored whole, so a seek
 * binary-searches the restarts and then walks at most one restart interval.
 * On disk each block is followed by a 5-byte trailer: a type byte (0: raw) and
 * the masked CRC-32C of the contents and the type byte. */
#include "internal.h"

int rldb_block_verify(const uint8_t *data, size_t len) {
    if (len < RLDB_BLOCK_TRAILER) return RLDB_ERR_CORRUPT;
    size_t n = len - RLDB_BLOCK_TRAILER;
    uint32_t expected = rldb_crc32c_unmask(load32le(data + n + 1));
    if (rldb_crc32c_extend(0, data, n + 1) != expected) return RLDB_ERR_CHECKSUM;
    if (data[n] != RLDB_BLOCK_RAW && data[n] != RLDB_BLOCK_SNAPPY) return RLDB_ERR_CORRUPT;
    return RLDB_OK;
}

/* Verifies a stored block (contents + trailer) and gives the size of its
 * contents once uncompressed. */
int rldb_block_contents_size(const uint8_t *data, size_t len, size_t *size) {
    int rc = rldb_block_verify(data, len);
    if (rc != RLDB_OK) return rc;
    size_t n = len - RLDB_BLOCK_TRAILER;
    if (data[n] == RLDB_BLOCK_RAW) {
        *size = n;
        return RLDB_OK;
    }
    return rldb_snappy_uncompressed_length(data, n, size);
}

/* Writes the contents of a verified stored block to out (cap from
 * rldb_block_contents_size), decompressing when needed. */
int rldb_block_unwrap(const uint8_t *data, size_t len, uint8_t *out, size_t cap, size_t *out_len) {
    if (len < RLDB_BLOCK_TRAILER) return RLDB_ERR_CORRUPT;
    size_t n = len - RLDB_BLOCK_TRAILER;
    if (data[n] == RLDB_BLOCK_RAW) {
        if (n > cap) return RLDB_ERR_BUFFER_TOO_SMALL;
        memcpy(out, data, n);
        *out_len = n;
        return RLDB_OK;
    }
    return rldb_snappy_decompress(data, n, out, cap, out_len);
}

int rldb__block_open(rldb__block *b, const uint8_t *data, size_t len) {
    if (len < 4) return RLDB_ERR_CORRUPT;
    uint32_t nrestarts = load32le(data + len - 4);
    if (nrestarts > (len - 4) / 4) return RLDB_ERR_CORRUPT;
    b->data = data;
    b->len = len;
    b->nrestarts = nrestarts;
    b->entries_end = len - 4 - 4 * (size_t)nrestarts;
    b->restarts = data + b->entries_end;
    if (nrestarts == 0 && b->entries_end != 0) return RLDB_ERR_CORRUPT;
    for (uint32_t i = 0; i < nrestarts; i++)
        if (load32le(b->restarts + 4 * i) >= b->entries_end) return RLDB_ERR_CORRUPT;
    return RLDB_OK;
}

const uint8_t *rldb__block_entry(const rldb__block *b, size_t offset, rbuf *key,
                                 const uint8_t **value, uint32_t *vlen) {
    const uint8_t *p = b->data + offset, *limit = b->data + b->entries_end;
    uint32_t shared, non_shared, vl;
    if (!(p = get_varint32(p, limit, &shared))) return NULL;
    if (!(p = get_varint32(p, limit, &non_shared))) return NULL;
    if (!(p = get_varint32(p, limit, &vl))) return NULL;
    if (shared > key->len) return NULL;
    if ((size_t)(limit - p) < (size_t)non_shared + vl) return NULL;
    key->len = shared;
    if (rbuf_append(key, p, non_shared)) return NULL;
    *value = p + non_shared;
    *vlen = vl;
    return p + non_shared + vl;
}

/* The restart point's key, decoded in place (shared must be 0). */
static int restart_key(const rldb__block *b, uint32_t i, const uint8_t **k, uint32_t *klen) {
    const uint8_t *p = b->data + load32le(b->restarts + 4 * i), *limit = b->data + b->entries_end;
    uint32_t shared, non_shared, vl;
    if (!(p = get_varint32(p, limit, &shared)) || shared != 0) return RLDB_ERR_CORRUPT;
    if (!(p = get_varint32(p, limit, &non_shared))) return RLDB_ERR_CORRUPT;
    if (!(p = get_varint32(p, limit, &vl))) return RLDB_ERR_CORRUPT;
    if ((size_t)(limit - p) < non_shared || non_shared < 8) return RLDB_ERR_CORRUPT;
    *k = p;
    *klen = non_shared;
    return RLDB_OK;
}

/* Finds the first entry whose internal key >= target.  Returns 1 and fills key
 * and value when there is one, 0 when every key is smaller, <0 on corruption. */
static int block_seek(const rldb__block *b, const uint8_t *target, size_t tlen, rbuf *key,
                      const uint8_t **value, uint32_t *vlen) {
    if (b->nrestarts == 0) return 0;
    uint32_t lo = 0, hi = b->nrestarts - 1;
    while (lo < hi) {  /* last restart whose key < target */
        uint32_t mid = (lo + hi + 1) / 2;
        const uint8_t *k;
        uint32_t klen;
        if (restart_key(b, mid, &k, &klen) != RLDB_OK) return RLDB_ERR_CORRUPT;
        if (ikey_cmp(k, klen, target, tlen) < 0) lo = mid;
        else hi = mid - 1;
    }
    size_t off = load32le(b->restarts + 4 * lo);
    key->len = 0;
    while (off < b->entries_end) {
        const uint8_t *next = rldb__block_entry(b, off, key, value, vlen);
        if (!next || key->len < 8) return RLDB_ERR_CORRUPT;
        if (ikey_cmp(key->data, key->len, target, tlen) >= 0) return 1;
        off = (size_t)(next - b->data);
    }
    return 0;
}

static int make_lookup_key(rbuf *buf, const uint8_t *key, size_t klen, uint64_t snapshot) {
    if (snapshot >= (1ULL << 56)) snapshot = (1ULL << 56) - 1;
    buf->len = 0;
    if (rbuf_append(buf, key, klen) || rbuf_fixed64(buf, (snapshot << 8) | 0xff))
        return RLDB_ERR_NO_MEMORY;
    return RLDB_OK;
}

int rldb_block_get(const uint8_t *data, size_t len, const uint8_t *key, size_t klen,
                   uint64_t snapshot, rldb_found *out) {
    rldb__block b;
    int rc = rldb__block_open(&b, data, len);
    if (rc != RLDB_OK) return rc;
    rbuf target = {0}, found = {0};
    rc = make_lookup_key(&target, key, klen, snapshot);
    if (rc == RLDB_OK) {
        uint32_t vl = 0;
        const uint8_t *value = NULL;
        rc = block_seek(&b, target.data, target.len, &found, &value, &vl);
        if (rc == 1) {
            if (user_cmp(found.data, found.len - 8, key, klen) == 0) {
                out->trailer = load64le(found.data + found.len - 8);
                out->value = (const char *)value;
                out->vlen = vl;
            } else {
                rc = 0;
            }
        }
    }
    rbuf_free(&target);
    rbuf_free(&found);
    return rc;
}

/* Counts a block's entries and the bytes its keys and values take once decoded. */
int rldb_block_measure(const uint8_t *data, size_t len, size_t *count, size_t *key_bytes,
                       size_t *value_bytes) {
    rldb__block b;
    int rc = rldb__block_open(&b, data, len);
    if (rc != RLDB_OK) return rc;
    rbuf key = {0};
    size_t off = 0, n = 0, kb = 0, vb = 0;
    while (off < b.entries_end) {
        const uint8_t *v;
        uint32_t vl;
        const uint8_t *next = rldb__block_entry(&b, off, &key, &v, &vl);
        if (!next) {
            rbuf_free(&key);
            return RLDB_ERR_CORRUPT;
        }
        n++;
        kb += key.len;
        vb += vl;
        off = (size_t)(next - b.data);
    }
    rbuf_free(&key);
    *count = n;
    *key_bytes = kb;
    *value_bytes = vb;
    return RLDB_OK;
}

/* Decodes every entry: keys and values packed back to back into keys_out and
 * values_out, their end offsets into key_ends and value_ends.  Buffers are
 * sized from rldb_block_measure.  With check_order, keys must be strictly
 * increasing internal keys (>= 8 bytes). */
int rldb_block_decode(const uint8_t *data, size_t len, uint8_t *keys_out, size_t keys_cap,
                      uint32_t *key_ends, uint8_t *values_out, size_t values_cap,
                      uint32_t *value_ends, size_t max_count, size_t *count, int check_order) {
    rldb__block b;
    int rc = rldb__block_open(&b, data, len);
    if (rc != RLDB_OK) return rc;
    rbuf key = {0};
    size_t off = 0, n = 0, kpos = 0, vpos = 0, prev_off = 0, prev_len = 0;
    rc = RLDB_OK;
    while (off < b.entries_end) {
        const uint8_t *v;
        uint32_t vl;
        const uint8_t *next = rldb__block_entry(&b, off, &key, &v, &vl);
        if (!next) { rc = RLDB_ERR_CORRUPT; break; }
        if (n >= max_count || kpos + key.len > keys_cap || vpos + vl > values_cap) {
            rc = RLDB_ERR_BUFFER_TOO_SMALL;
            break;
        }
        if (check_order) {
            if (key.len < 8 || (n > 0 && ikey_cmp(keys_out + prev_off, prev_len, key.data, key.len) >= 0)) {
                rc = RLDB_ERR_CORRUPT;
                break;
            }
        }
        memcpy(keys_out + kpos, key.data, key.len);
        prev_off = kpos;
        prev_len = key.len;
        kpos += key.len;
        key_ends[n] = (uint32_t)kpos;
        if (vl) memcpy(values_out + vpos, v, vl);
        vpos += vl;
        value_ends[n] = (uint32_t)vpos;
        n++;
        off = (size_t)(next - b.data);
    }
    rbuf_free(&key);
    *count = n;
    return rc;
}

/* Index search: keys are the decoded last keys of each data block (packed,
 * with end offsets).  Returns the first block whose last key >= the lookup key
 * for (key, snapshot); count when there is none. */
static size_t index_search(const uint8_t *keys, const uint32_t *ends, size_t count,
                           const uint8_t *target, size_t tlen) {
    size_t lo = 0, hi = count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        size_t start = mid ? ends[mid - 1] : 0;
        if (ikey_cmp(keys + start, ends[mid] - start, target, tlen) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

long rldb_index_search(const uint8_t *keys, const uint32_t *ends, size_t count,
                       const uint8_t *key, size_t klen, uint64_t snapshot) {
    rbuf target = {0};
    if (make_lookup_key(&target, key, klen, snapshot) != RLDB_OK) return RLDB_ERR_NO_MEMORY;
    size_t i = index_search(keys, ends, count, target.data, target.len);
    rbuf_free(&target);
    return (long)i;
}

/* A point lookup's first step in one call: the bloom filter, then the index.
 * Returns 0 when the filter rules the key out, 1 with *block set otherwise
 * (*block == count when the key is past the last block), <0 on a bad filter. */
int rldb_table_locate(const uint8_t *filter, size_t filter_len, const uint8_t *keys,
                      const uint32_t *ends, size_t count, const uint8_t *key, size_t klen,
                      uint64_t snapshot, long *block) {
    uint64_t h1, h2;
    rldb_hash128(key, klen, &h1, &h2);
    int may = rldb__bloom_test_hashes(filter, filter_len, h1, h2);
    if (may <= 0) return may;
    long i = rldb_index_search(keys, ends, count, key, klen, snapshot);
    if (i < 0) return (int)i;
    *block = i;
    return 1;
}
