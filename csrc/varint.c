/* Base-128 varints, least significant group first (LevelDB's encoding). */
#include "rldb.h"

int rldb_varint_encode(uint64_t v, uint8_t *out) {
    int i = 0;
    while (v >= 0x80) {
        out[i++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[i++] = (uint8_t)v;
    return i;
}

int rldb_varint_decode(const uint8_t *buf, size_t n, uint64_t *value, size_t *consumed) {
    uint64_t result = 0;
    for (size_t i = 0; i < RLDB_VARINT64_MAX; i++) {
        if (i >= n) return RLDB_ERR_TRUNCATED;
        uint64_t b = buf[i];
        /* The tenth byte may only carry the top bit of a 64-bit value. */
        if (i == RLDB_VARINT64_MAX - 1 && b > 1) return RLDB_ERR_OVERFLOW;
        result |= (b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *value = result;
            *consumed = i + 1;
            return RLDB_OK;
        }
    }
    return RLDB_ERR_OVERFLOW;
}

int rldb_varint_encode_many(const uint64_t *values, size_t count, uint8_t *out,
                            size_t cap, size_t *written) {
    size_t pos = 0;
    uint8_t tmp[RLDB_VARINT64_MAX];
    for (size_t i = 0; i < count; i++) {
        int len = rldb_varint_encode(values[i], tmp);
        if (pos + (size_t)len > cap) return RLDB_ERR_BUFFER_TOO_SMALL;
        for (int j = 0; j < len; j++) out[pos + j] = tmp[j];
        pos += (size_t)len;
    }
    *written = pos;
    return RLDB_OK;
}

int rldb_varint_decode_many(const uint8_t *buf, size_t n, uint64_t *values,
                            size_t max_count, size_t *count, size_t *consumed) {
    size_t pos = 0, i = 0;
    while (pos < n && i < max_count) {
        size_t used;
        int rc = rldb_varint_decode(buf + pos, n - pos, &values[i], &used);
        if (rc != RLDB_OK) return rc;
        pos += used;
        i++;
    }
    *count = i;
    *consumed = pos;
    return RLDB_OK;
}
