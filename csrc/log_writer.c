/* Appending records in LevelDB's log format (see rldb/storage/lsm/log.py for
 * the reader and docs/formats.md for the layout), and the write path of a
 * single put: encode the batch, frame it, write(2) it, insert it into the
 * memtable, all in one call. */
#include "internal.h"
#include <errno.h>
#include <unistd.h>

#define LOG_BLOCK 32768
#define LOG_HEADER 7

struct rldb_log_writer {
    int fd;
    uint32_t block_offset;
    uint64_t written;
    int last_errno;
    rbuf out;
    rbuf payload;
    uint32_t type_crc[5];
};

rldb_log_writer *rldb_log_writer_new(int fd, uint64_t file_size) {
    rldb_log_writer *w = calloc(1, sizeof(*w));
    if (!w) return NULL;
    w->fd = fd;
    w->written = file_size;
    w->block_offset = (uint32_t)(file_size % LOG_BLOCK);
    for (uint8_t t = 1; t <= 4; t++) w->type_crc[t] = rldb_crc32c_extend(0, &t, 1);
    return w;
}

void rldb_log_writer_free(rldb_log_writer *w) {
    if (!w) return;
    rbuf_free(&w->out);
    rbuf_free(&w->payload);
    free(w);
}

uint64_t rldb_log_written(const rldb_log_writer *w) { return w->written; }
int rldb_log_errno(const rldb_log_writer *w) { return w->last_errno; }

static int frame(rldb_log_writer *w, const uint8_t *p, size_t n) {
    w->out.len = 0;
    int first = 1;
    for (;;) {
        uint32_t left = LOG_BLOCK - w->block_offset;
        if (left < LOG_HEADER) {
            static const uint8_t zeros[LOG_HEADER] = {0};
            if (rbuf_append(&w->out, zeros, left)) return RLDB_ERR_NO_MEMORY;
            w->block_offset = 0;
            left = LOG_BLOCK;
        }
        size_t take = n < left - LOG_HEADER ? n : left - LOG_HEADER;
        int end = take == n;
        uint8_t type = first && end ? 1 : first ? 2 : end ? 4 : 3;
        uint8_t header[LOG_HEADER];
        store32le(header, rldb_crc32c_mask(rldb_crc32c_extend(w->type_crc[type], p, take)));
        header[4] = (uint8_t)(take & 0xff);
        header[5] = (uint8_t)(take >> 8);
        header[6] = type;
        if (rbuf_append(&w->out, header, LOG_HEADER) || rbuf_append(&w->out, p, take))
            return RLDB_ERR_NO_MEMORY;
        w->block_offset += (uint32_t)(LOG_HEADER + take);
        p += take;
        n -= take;
        first = 0;
        if (end) return RLDB_OK;
    }
}

static int write_out(rldb_log_writer *w) {
    const uint8_t *p = w->out.data;
    size_t n = w->out.len;
    while (n) {
        ssize_t r = write(w->fd, p, n);
        if (r < 0) {
            if (errno == EINTR) continue;
            w->last_errno = errno;
            return RLDB_ERR_IO;
        }
        p += r;
        n -= (size_t)r;
        w->written += (uint64_t)r;
    }
    return RLDB_OK;
}

int rldb_log_add(rldb_log_writer *w, const uint8_t *payload, size_t len) {
    int rc = frame(w, payload, len);
    return rc != RLDB_OK ? rc : write_out(w);
}

int rldb_log_put(rldb_log_writer *w, rldb_memtable *mt, uint64_t seq, int kind,
                 const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen) {
    if (klen == 0 || klen > 0xffffff00u || vlen > 0xffffff00u || (kind != 0 && kind != 1))
        return RLDB_ERR_INVALID_ARGUMENT;
    rbuf *b = &w->payload;
    b->len = 0;
    if (rbuf_fixed64(b, seq) || rbuf_fixed32(b, 1) || rbuf_append(b, &(uint8_t){(uint8_t)kind}, 1) ||
        rbuf_varint(b, klen) || rbuf_append(b, key, klen))
        return RLDB_ERR_NO_MEMORY;
    if (kind == 1 && (rbuf_varint(b, vlen) || rbuf_append(b, value, vlen)))
        return RLDB_ERR_NO_MEMORY;
    int rc = rldb_log_add(w, b->data, b->len);
    if (rc != RLDB_OK) return rc;
    return rldb_memtable_add(mt, seq, kind, key, klen, kind == 1 ? value : NULL, kind == 1 ? vlen : 0);
}
