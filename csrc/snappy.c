/* Block compression in the Snappy format (the raw format, as LevelDB stores
 * blocks): a varint of the uncompressed length, then elements tagged in their
 * low two bits: 00 literal, 01 copy with an 11-bit offset and length 4..11,
 * 10 copy with a 16-bit offset, 11 copy with a 32-bit offset (length 1..64).
 * The compressor is a greedy LZ77 over a hash of 4-byte sequences.  The
 * decompressor checks every length and offset against its buffers. */
#include "internal.h"

#define HASH_BITS 14

static inline uint32_t load32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint32_t hash4(uint32_t v) { return (v * 0x1e35a7bdu) >> (32 - HASH_BITS); }

size_t rldb_snappy_max_compressed(size_t n) { return 32 + n + n / 6; }

static uint8_t *emit_literal(uint8_t *op, const uint8_t *lit, size_t len) {
    size_t n = len - 1;
    if (n < 60) {
        *op++ = (uint8_t)(n << 2);
    } else {
        int bytes = n < 0x100 ? 1 : n < 0x10000 ? 2 : n < 0x1000000 ? 3 : 4;
        *op++ = (uint8_t)((59 + bytes) << 2);
        for (int i = 0; i < bytes; i++) *op++ = (uint8_t)(n >> (8 * i));
    }
    memcpy(op, lit, len);
    return op + len;
}

static uint8_t *emit_copy(uint8_t *op, size_t offset, size_t len) {
    while (len >= 68) {  /* 64-byte copies, leaving at least 4 */
        *op++ = (uint8_t)(2 | (63 << 2));
        *op++ = (uint8_t)offset;
        *op++ = (uint8_t)(offset >> 8);
        len -= 64;
    }
    if (len > 64) {
        *op++ = (uint8_t)(2 | (59 << 2));
        *op++ = (uint8_t)offset;
        *op++ = (uint8_t)(offset >> 8);
        len -= 60;
    }
    if (len >= 4 && len <= 11 && offset < 2048) {
        *op++ = (uint8_t)(1 | ((len - 4) << 2) | ((offset >> 8) << 5));
        *op++ = (uint8_t)offset;
    } else {
        *op++ = (uint8_t)(2 | ((len - 1) << 2));
        *op++ = (uint8_t)offset;
        *op++ = (uint8_t)(offset >> 8);
    }
    return op;
}

/* Compresses src into dst (room for rldb_snappy_max_compressed(n) bytes);
 * blocks are small, so offsets stay below 64 KiB: inputs are cut into 64 KiB
 * fragments, matches never reach across one. */
int rldb_snappy_compress(const uint8_t *src, size_t n, uint8_t *dst, size_t cap, size_t *out_len) {
    if (cap < rldb_snappy_max_compressed(n) || n > 0xffffffffu) return RLDB_ERR_BUFFER_TOO_SMALL;
    uint8_t *op = dst + rldb_varint_encode(n, dst);
    uint16_t table[1 << HASH_BITS];
    for (size_t frag = 0; frag < n; frag += 65536) {
        const uint8_t *base = src + frag;
        size_t len = n - frag < 65536 ? n - frag : 65536;
        memset(table, 0, sizeof table);
        size_t lit = 0, i = 1;
        if (len < 16) {
            op = emit_literal(op, base, len);
            continue;
        }
        size_t limit = len - 4;
        while (i < limit) {
            uint32_t h = hash4(load32(base + i));
            size_t cand = table[h];
            table[h] = (uint16_t)i;
            if (cand < i && load32(base + cand) == load32(base + i)) {
                size_t m = 4;
                while (i + m < len && base[cand + m] == base[i + m]) m++;
                if (i > lit) op = emit_literal(op, base + lit, i - lit);
                op = emit_copy(op, i - cand, m);
                i += m;
                lit = i;
                if (i < limit) table[hash4(load32(base + i - 1))] = (uint16_t)(i - 1);
            } else {
                i++;
            }
        }
        if (lit < len) op = emit_literal(op, base + lit, len - lit);
    }
    *out_len = (size_t)(op - dst);
    return RLDB_OK;
}

/* The uncompressed length a compressed block announces. */
int rldb_snappy_uncompressed_length(const uint8_t *src, size_t n, size_t *len) {
    uint32_t v;
    if (!get_varint32(src, src + n, &v)) return RLDB_ERR_CORRUPT;
    *len = v;
    return RLDB_OK;
}

int rldb_snappy_decompress(const uint8_t *src, size_t n, uint8_t *dst, size_t cap, size_t *out_len) {
    const uint8_t *ip = src, *end = src + n;
    uint32_t want;
    if (!(ip = get_varint32(ip, end, &want))) return RLDB_ERR_CORRUPT;
    if (want > cap) return RLDB_ERR_BUFFER_TOO_SMALL;
    size_t op = 0;
    while (ip < end) {
        uint8_t tag = *ip++;
        size_t len, offset;
        switch (tag & 3) {
        case 0:
            len = tag >> 2;
            if (len >= 60) {
                int bytes = (int)len - 59;
                if (end - ip < bytes) return RLDB_ERR_CORRUPT;
                len = 0;
                for (int i = 0; i < bytes; i++) len |= (size_t)ip[i] << (8 * i);
                ip += bytes;
            }
            len += 1;
            if ((size_t)(end - ip) < len || want - op < len) return RLDB_ERR_CORRUPT;
            memcpy(dst + op, ip, len);
            ip += len;
            op += len;
            continue;
        case 1:
            if (end - ip < 1) return RLDB_ERR_CORRUPT;
            len = 4 + ((tag >> 2) & 7);
            offset = ((size_t)(tag >> 5) << 8) | *ip++;
            break;
        case 2:
            if (end - ip < 2) return RLDB_ERR_CORRUPT;
            len = 1 + (tag >> 2);
            offset = ip[0] | ((size_t)ip[1] << 8);
            ip += 2;
            break;
        default:
            if (end - ip < 4) return RLDB_ERR_CORRUPT;
            len = 1 + (tag >> 2);
            offset = load32le(ip);
            ip += 4;
        }
        if (offset == 0 || offset > op || want - op < len) return RLDB_ERR_CORRUPT;
        uint8_t *d = dst + op;
        const uint8_t *from = d - offset;
        if (offset >= len) {
            memcpy(d, from, len);
        } else if (offset >= 8) {  /* each 8-byte step reads bytes already written */
            size_t i = 0;
            for (; i + 8 <= len; i += 8) memcpy(d + i, from + i, 8);
            for (; i < len; i++) d[i] = from[i];
        } else {
            for (size_t i = 0; i < len; i++) d[i] = from[i];  /* a short repeating pattern */
        }
        op += len;
    }
    if (op != want) return RLDB_ERR_CORRUPT;
    *out_len = op;
    return RLDB_OK;
}
