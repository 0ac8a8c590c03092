/* Bitcask hint files: the writer (records buffered and written in 64 KiB
 * pieces, a running CRC-32C, the trailer at the end) and the validator that
 * decides whether a hint describes its data file exactly.  Layout:
 * docs/formats.md, section "Bitcask", "Hint file". */
#include "bitcask_internal.h"

#define HINT_FLUSH (64 * 1024)

void rldb__bc_hint_reset(hint_writer *h, int fd) {
    h->fd = fd;
    h->buf.len = 0;
    h->crc = 0;
    h->count = h->written = 0;
    h->failed = fd < 0;
}

static int hint_flush(hint_writer *h) {
    if (h->failed) {
        h->buf.len = 0;
        return RLDB_ERR_IO;
    }
    if (!h->buf.len) return RLDB_OK;
    h->crc = rldb_crc32c_extend(h->crc, h->buf.data, h->buf.len);
    if (rldb__bc_pwrite_all(h->fd, h->buf.data, h->buf.len, h->written) != 0) {
        h->failed = 1;
        h->buf.len = 0;
        return RLDB_ERR_IO;
    }
    h->written += h->buf.len;
    h->buf.len = 0;
    return RLDB_OK;
}

void rldb__bc_hint_add(hint_writer *h, uint64_t ts, uint64_t off, uint32_t vsize, uint32_t klen,
                       uint8_t flags, const uint8_t *key) {
    if (h->failed) return;
    if (rbuf_reserve(&h->buf, HINT_HDR + klen)) {
        h->failed = 1;
        return;
    }
    uint8_t *p = h->buf.data + h->buf.len;
    store32le(p, (uint32_t)off);
    store32le(p + 4, vsize);
    store32le(p + 8, ts_seconds(ts));
    p[12] = (uint8_t)(klen & 0xff);
    p[13] = (uint8_t)(klen >> 8);
    p[14] = flags;
    memcpy(p + HINT_HDR, key, klen);
    h->buf.len += HINT_HDR + klen;
    h->count++;
    if (h->buf.len >= HINT_FLUSH) hint_flush(h);
}

int rldb__bc_hint_finish(hint_writer *h, uint64_t data_size) {
    if (h->failed) return RLDB_ERR_IO;
    uint8_t t[HINT_TRAILER];
    store64le(t, h->count);
    store64le(t + 8, data_size);
    store64le(t + 16, HINT_MAGIC);
    if (rbuf_append(&h->buf, t, 24)) {
        h->failed = 1;
        return RLDB_ERR_NO_MEMORY;
    }
    uint32_t crc = rldb_crc32c_extend(h->crc, h->buf.data, h->buf.len);
    store32le(t, crc);
    if (rbuf_append(&h->buf, t, 4)) {
        h->failed = 1;
        return RLDB_ERR_NO_MEMORY;
    }
    h->crc = 0; /* the buffer now holds its own checksum */
    int rc = hint_flush(h);
    h->fd = -1;
    h->failed = 1; /* nothing more goes into this hint */
    return rc;
}

/* The entries must describe the data file exactly: back to back from offset
 * 0 to its end. */
int rldb__bc_hint_validate(const uint8_t *h, size_t len, uint64_t data_size, uint64_t *count,
                           uint64_t *bad) {
    *bad = 0;
    if (len < HINT_TRAILER) return RLDB_ERR_TRUNCATED;
    const uint8_t *t = h + len - HINT_TRAILER;
    *bad = len - HINT_TRAILER;
    if (load64le(t + 16) != HINT_MAGIC) return RLDB_ERR_CORRUPT;
    if (rldb_crc32c_extend(0, h, len - 4) != load32le(t + 24)) return RLDB_ERR_CHECKSUM;
    if (load64le(t + 8) != data_size) return RLDB_BC_HINT_SIZE;
    uint64_t n = 0, expect = 0;
    const uint8_t *p = h;
    while (p < t) {
        *bad = (uint64_t)(p - h);
        if ((size_t)(t - p) < HINT_HDR) return RLDB_ERR_CORRUPT;
        hint_ent e;
        const uint8_t *next = hint_next(p, &e);
        if (e.klen == 0 || (size_t)(t - p) - HINT_HDR < e.klen || (e.flags & ~F_TOMB) ||
            ((e.flags & F_TOMB) && e.vsize) || e.vsize > RLDB_BC_MAX_VALUE || e.off != expect)
            return RLDB_ERR_CORRUPT;
        expect = (uint64_t)e.off + HDR + e.klen + e.vsize;
        if (expect > data_size) return RLDB_ERR_CORRUPT;
        p = next;
        n++;
    }
    *bad = len - HINT_TRAILER;
    if (n != load64le(t) || expect != data_size) return RLDB_ERR_CORRUPT;
    *count = n;
    return RLDB_OK;
}
