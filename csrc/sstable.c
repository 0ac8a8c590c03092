/* The SSTable file: building one in memory (data blocks, a bloom filter over
 * the user keys, a properties block supplied by the caller, an index block
 * and a fixed footer) and decoding its footer.  Layout in docs/formats.md,
 * section "SSTable".  Keys must arrive in strictly increasing internal-key
 * order. */
#include "internal.h"

typedef struct {
    rbuf data;
    rbuf restarts;       /* fixed32 offsets */
    uint32_t nrestarts;
    uint32_t interval;
    uint32_t counter;    /* entries since the last restart */
    rbuf last_key;
    size_t entries;
} block_builder;

static void bb_reset(block_builder *bb) {
    bb->data.len = 0;
    bb->restarts.len = 0;
    bb->nrestarts = 0;
    bb->counter = 0;
    bb->last_key.len = 0;
    bb->entries = 0;
}

static void bb_free(block_builder *bb) {
    rbuf_free(&bb->data);
    rbuf_free(&bb->restarts);
    rbuf_free(&bb->last_key);
}

static size_t bb_size(const block_builder *bb) {
    return bb->data.len + bb->restarts.len + 4;
}

static int bb_add(block_builder *bb, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen) {
    size_t shared = 0;
    if (bb->counter < bb->interval && bb->entries > 0) {
        size_t m = klen < bb->last_key.len ? klen : bb->last_key.len;
        while (shared < m && bb->last_key.data[shared] == k[shared]) shared++;
    } else {
        if (rbuf_fixed32(&bb->restarts, (uint32_t)bb->data.len)) return RLDB_ERR_NO_MEMORY;
        bb->nrestarts++;
        bb->counter = 0;
    }
    if (rbuf_varint(&bb->data, shared) || rbuf_varint(&bb->data, klen - shared) ||
        rbuf_varint(&bb->data, vlen) || rbuf_append(&bb->data, k + shared, klen - shared) ||
        rbuf_append(&bb->data, v, vlen))
        return RLDB_ERR_NO_MEMORY;
    bb->last_key.len = 0;
    if (rbuf_append(&bb->last_key, k, klen)) return RLDB_ERR_NO_MEMORY;
    bb->counter++;
    bb->entries++;
    return RLDB_OK;
}

/* Appends the restart array; the block contents are then bb->data. */
static int bb_finish(block_builder *bb) {
    if (rbuf_append(&bb->data, bb->restarts.data, bb->restarts.len) ||
        rbuf_fixed32(&bb->data, bb->nrestarts))
        return RLDB_ERR_NO_MEMORY;
    return RLDB_OK;
}

struct rldb_table_builder {
    block_builder data, index;
    rbuf out;
    rbuf hashes;          /* uint64 pairs, one per distinct user key */
    rbuf first_key, last_key;
    uint32_t block_size;
    uint32_t bits_per_key;
    int compression;
    rbuf scratch;         /* compressed block */
    uint64_t handles[6];  /* filter, properties, index: offset and size */
    int sealed, finished;
    rldb_tb_stats stats;
};

rldb_table_builder *rldb_tb_new(uint32_t block_size, uint32_t restart_interval,
                                uint32_t bits_per_key, int compression) {
    if (block_size < 64 || restart_interval < 1 || bits_per_key > 64 ||
        (compression != RLDB_BLOCK_RAW && compression != RLDB_BLOCK_SNAPPY))
        return NULL;
    rldb_table_builder *tb = calloc(1, sizeof(*tb));
    if (!tb) return NULL;
    tb->compression = compression;
    tb->block_size = block_size;
    tb->bits_per_key = bits_per_key;
    tb->data.interval = restart_interval;
    tb->index.interval = 1;
    return tb;
}

void rldb_tb_free(rldb_table_builder *tb) {
    if (!tb) return;
    bb_free(&tb->data);
    bb_free(&tb->index);
    rbuf_free(&tb->out);
    rbuf_free(&tb->hashes);
    rbuf_free(&tb->first_key);
    rbuf_free(&tb->last_key);
    rbuf_free(&tb->scratch);
    free(tb);
}

/* Writes contents + trailer (type, masked CRC-32C) to out. */
static int write_block_as(rbuf *out, const uint8_t *contents, size_t len, uint8_t type,
                          uint64_t *offset, uint64_t *size) {
    uint8_t trailer[RLDB_BLOCK_TRAILER];
    trailer[0] = type;
    uint32_t crc = rldb_crc32c_extend(rldb_crc32c_extend(0, contents, len), trailer, 1);
    store32le(trailer + 1, rldb_crc32c_mask(crc));
    *offset = out->len;
    *size = len;
    if (rbuf_append(out, contents, len) || rbuf_append(out, trailer, sizeof trailer))
        return RLDB_ERR_NO_MEMORY;
    return RLDB_OK;
}

static int write_block(rbuf *out, const uint8_t *contents, size_t len, uint64_t *offset,
                       uint64_t *size) {
    return write_block_as(out, contents, len, RLDB_BLOCK_RAW, offset, size);
}

/* A data block is stored compressed when that saves at least an eighth. */
static int write_data_block(rldb_table_builder *tb, const uint8_t *contents, size_t len,
                            uint64_t *offset, uint64_t *size) {
    if (tb->compression == RLDB_BLOCK_SNAPPY) {
        size_t max = rldb_snappy_max_compressed(len), clen;
        tb->scratch.len = 0;
        if (rbuf_reserve(&tb->scratch, max)) return RLDB_ERR_NO_MEMORY;
        int rc = rldb_snappy_compress(contents, len, tb->scratch.data, max, &clen);
        if (rc != RLDB_OK) return rc;
        if (clen < len - len / 8) {
            tb->stats.compressed_blocks++;
            return write_block_as(&tb->out, tb->scratch.data, clen, RLDB_BLOCK_SNAPPY, offset, size);
        }
    }
    return write_block(&tb->out, contents, len, offset, size);
}

static int flush_data_block(rldb_table_builder *tb) {
    if (tb->data.entries == 0) return RLDB_OK;
    int rc = bb_finish(&tb->data);
    if (rc != RLDB_OK) return rc;
    uint64_t off, size;
    rc = write_data_block(tb, tb->data.data.data, tb->data.data.len, &off, &size);
    if (rc != RLDB_OK) return rc;
    uint8_t handle[2 * RLDB_VARINT64_MAX];
    int n = rldb_varint_encode(off, handle);
    n += rldb_varint_encode(size, handle + n);
    rc = bb_add(&tb->index, tb->data.last_key.data, tb->data.last_key.len, handle, (size_t)n);
    if (rc != RLDB_OK) return rc;
    tb->stats.data_blocks++;
    bb_reset(&tb->data);
    return RLDB_OK;
}

int rldb_tb_add(rldb_table_builder *tb, const uint8_t *ikey, size_t iklen, const uint8_t *value,
                size_t vlen) {
    if (tb->sealed || iklen < 8 || iklen > 0xfffffff0u || vlen > 0xfffffff0u)
        return RLDB_ERR_INVALID_ARGUMENT;
    int new_user_key = 1;
    if (tb->stats.entries > 0) {
        if (ikey_cmp(tb->last_key.data, tb->last_key.len, ikey, iklen) >= 0)
            return RLDB_ERR_INVALID_ARGUMENT;
        new_user_key = user_cmp(tb->last_key.data, tb->last_key.len - 8, ikey, iklen - 8) != 0;
    } else if (rbuf_append(&tb->first_key, ikey, iklen)) {
        return RLDB_ERR_NO_MEMORY;
    }
    if (new_user_key && tb->bits_per_key) {
        uint64_t h[2];
        rldb_hash128(ikey, iklen - 8, &h[0], &h[1]);
        if (rbuf_append(&tb->hashes, h, sizeof h)) return RLDB_ERR_NO_MEMORY;
    }
    int rc = bb_add(&tb->data, ikey, iklen, value, vlen);
    if (rc != RLDB_OK) return rc;
    tb->last_key.len = 0;
    if (rbuf_append(&tb->last_key, ikey, iklen)) return RLDB_ERR_NO_MEMORY;
    tb->stats.entries++;
    if ((ikey_trailer(ikey, iklen) & 0xff) == 0) tb->stats.deletions++;
    tb->stats.raw_key_bytes += iklen;
    tb->stats.raw_value_bytes += vlen;
    if (bb_size(&tb->data) >= tb->block_size) return flush_data_block(tb);
    return RLDB_OK;
}

/* Packed form: keys and values back to back in data, lengths in klens/vlens. */
int rldb_tb_add_many(rldb_table_builder *tb, const uint8_t *data, const uint32_t *klens,
                     const uint32_t *vlens, size_t count) {
    size_t pos = 0;
    for (size_t i = 0; i < count; i++) {
        int rc = rldb_tb_add(tb, data + pos, klens[i], data + pos + klens[i], vlens[i]);
        if (rc != RLDB_OK) return rc;
        pos += (size_t)klens[i] + vlens[i];
    }
    return RLDB_OK;
}

uint64_t rldb_tb_estimated_size(const rldb_table_builder *tb) {
    return tb->out.len + bb_size(&tb->data) + tb->index.data.len +
           (tb->hashes.len / 16) * tb->bits_per_key / 8;
}

void rldb_tb_get_stats(const rldb_table_builder *tb, rldb_tb_stats *st) { *st = tb->stats; }

int rldb_tb_key_range(const rldb_table_builder *tb, const uint8_t **first, size_t *first_len,
                      const uint8_t **last, size_t *last_len) {
    if (tb->stats.entries == 0) return RLDB_ERR_INVALID_ARGUMENT;
    *first = tb->first_key.data;
    *first_len = tb->first_key.len;
    *last = tb->last_key.data;
    *last_len = tb->last_key.len;
    return RLDB_OK;
}

/* Writes the last data block, the filter and the index; after it no more
 * keys can be added and the statistics are final. */
int rldb_tb_seal(rldb_table_builder *tb) {
    if (tb->sealed) return RLDB_OK;
    int rc = flush_data_block(tb);
    if (rc != RLDB_OK) return rc;
    size_t nkeys = tb->hashes.len / 16;
    size_t flen = tb->bits_per_key ? rldb_bloom_size(nkeys, tb->bits_per_key) : 0;
    uint8_t *filter = malloc(flen + 1);
    if (!filter) return RLDB_ERR_NO_MEMORY;
    if (flen) rldb__bloom_fill(filter, flen, tb->bits_per_key, (const uint64_t *)tb->hashes.data, nkeys);
    rc = write_block(&tb->out, filter, flen, &tb->handles[0], &tb->handles[1]);
    free(filter);
    if (rc != RLDB_OK) return rc;
    tb->stats.filter_bytes = flen;
    if ((rc = bb_finish(&tb->index)) != RLDB_OK) return rc;
    rc = write_block(&tb->out, tb->index.data.data, tb->index.data.len, &tb->handles[4],
                     &tb->handles[5]);
    if (rc != RLDB_OK) return rc;
    tb->stats.index_bytes = tb->index.data.len;
    tb->sealed = 1;
    return RLDB_OK;
}

/* Seals the table if needed, then writes the properties block and the footer. */
int rldb_tb_finish(rldb_table_builder *tb, const uint8_t *props, size_t props_len,
                   const uint8_t **file, size_t *file_len) {
    if (tb->finished) return RLDB_ERR_INVALID_ARGUMENT;
    int rc = rldb_tb_seal(tb);
    if (rc != RLDB_OK) return rc;
    uint64_t *h = tb->handles;
    if ((rc = write_block(&tb->out, props, props_len, &h[2], &h[3])) != RLDB_OK) return rc;
    uint8_t footer[RLDB_FOOTER_SIZE];
    for (int i = 0; i < 6; i++) store64le(footer + 8 * i, h[i]);
    store32le(footer + 48, RLDB_TABLE_FORMAT);
    store32le(footer + 52, rldb_crc32c_mask(rldb_crc32c_extend(0, footer, 52)));
    store64le(footer + 56, RLDB_TABLE_MAGIC);
    if (rbuf_append(&tb->out, footer, sizeof footer)) return RLDB_ERR_NO_MEMORY;
    tb->finished = 1;
    *file = tb->out.data;
    *file_len = tb->out.len;
    return RLDB_OK;
}

/* Parses and checks a footer: six fixed64 (filter, properties and index
 * offset/size), format, masked CRC of the first 52 bytes, magic. */
int rldb_footer_decode(const uint8_t *footer, size_t len, uint64_t file_size, uint64_t *handles) {
    if (len != RLDB_FOOTER_SIZE) return RLDB_ERR_CORRUPT;
    if (load64le(footer + 56) != RLDB_TABLE_MAGIC) return RLDB_ERR_CORRUPT;
    if (rldb_crc32c_unmask(load32le(footer + 52)) != rldb_crc32c_extend(0, footer, 52))
        return RLDB_ERR_CHECKSUM;
    if (load32le(footer + 48) != RLDB_TABLE_FORMAT) return RLDB_ERR_NOT_SUPPORTED;
    for (int i = 0; i < 6; i++) handles[i] = load64le(footer + 8 * i);
    for (int i = 0; i < 6; i += 2)
        if (handles[i] > file_size || handles[i + 1] + RLDB_BLOCK_TRAILER > file_size - handles[i])
            return RLDB_ERR_CORRUPT;
    return RLDB_OK;
}
