/* rldb C core: the one header.  It is also the cffi cdef (build_core.py strips
 * the preprocessor lines), so it holds plain declarations only.
 *
 * Conventions: every exported symbol starts with rldb_; functions that can fail
 * return an int, 0 (RLDB_OK) or a negative RLDB_ERR_* code whose text comes from
 * rldb_strerror().  No function aborts the process or reads past a length it was
 * given: corrupt input yields an error code. */
#ifndef RLDB_H
#define RLDB_H
#include <stddef.h>
#include <stdint.h>

enum rldb_rc {
    RLDB_OK = 0,
    RLDB_ERR_TRUNCATED = -1,      /* input ended inside an encoded value */
    RLDB_ERR_OVERFLOW = -2,       /* an encoded value is longer than allowed */
    RLDB_ERR_CORRUPT = -3,        /* a structure failed a format check */
    RLDB_ERR_BUFFER_TOO_SMALL = -4,
    RLDB_ERR_INVALID_ARGUMENT = -5,
    RLDB_ERR_NO_MEMORY = -6,
    RLDB_ERR_NOT_SUPPORTED = -7,
    RLDB_ERR_CHECKSUM = -8,       /* a stored checksum does not match its data */
    RLDB_ERR_LAST = -9
};

/* Version of the package this module was built for, e.g. "0.1.0". */
const char *rldb_version(void);
/* Message for a return code; never NULL. */
const char *rldb_strerror(int rc);

/* ---- CRC-32C (Castagnoli) ---------------------------------------------- */
/* crc32c of data appended to a running crc (start with 0). */
uint32_t rldb_crc32c_extend(uint32_t crc, const uint8_t *data, size_t n);
/* The two implementations behind rldb_crc32c_extend, for tests. */
uint32_t rldb_crc32c_extend_sw(uint32_t crc, const uint8_t *data, size_t n);
int rldb_crc32c_extend_hw(uint32_t crc, const uint8_t *data, size_t n, uint32_t *out);
/* 1 when the CPU's CRC-32C instruction is used, else 0. */
int rldb_crc32c_hw_available(void);
/* LevelDB's masked form, for checksums stored next to data that holds CRCs. */
uint32_t rldb_crc32c_mask(uint32_t crc);
uint32_t rldb_crc32c_unmask(uint32_t masked);

/* ---- varints (LevelDB / protobuf base-128, at most 10 bytes) ----------- */
#define RLDB_VARINT64_MAX 10
/* Writes v at out (room for RLDB_VARINT64_MAX bytes); returns bytes written. */
int rldb_varint_encode(uint64_t v, uint8_t *out);
/* Decodes one varint from buf[0..n); *consumed gets its length. */
int rldb_varint_decode(const uint8_t *buf, size_t n, uint64_t *value, size_t *consumed);
/* Batch forms: one call for many values. */
int rldb_varint_encode_many(const uint64_t *values, size_t count, uint8_t *out,
                            size_t cap, size_t *written);
int rldb_varint_decode_many(const uint8_t *buf, size_t n, uint64_t *values,
                            size_t max_count, size_t *count, size_t *consumed);

/* ---- bloom filters ------------------------------------------------------ */
/* Keys are passed packed: data holds them back to back, lengths[i] is the
 * length of key i.  A filter is the bit array followed by one byte holding the
 * number of probes. */
size_t rldb_bloom_size(size_t key_count, uint32_t bits_per_key);
int rldb_bloom_build(const uint8_t *data, const uint32_t *lengths, size_t count,
                     uint32_t bits_per_key, uint8_t *out, size_t out_len);
/* 1 if the key may be present, 0 if it is certainly absent, <0 on a bad filter. */
int rldb_bloom_may_contain(const uint8_t *filter, size_t filter_len,
                           const uint8_t *key, size_t key_len);
int rldb_bloom_probe_many(const uint8_t *filter, size_t filter_len,
                          const uint8_t *data, const uint32_t *lengths, size_t count,
                          uint8_t *results);
/* The two 64-bit hashes of a key that the filter uses (tests, tools). */
void rldb_hash128(const uint8_t *key, size_t len, uint64_t *h1, uint64_t *h2);

#endif
