/* The checksum of every stored structure: CRC-32C (Castagnoli, reflected
 * polynomial 0x82F63B78), and LevelDB's masked form of it.
 *
 * x86-64 CPUs with SSE4.2 have an instruction for it; everywhere else a
 * slicing-by-8 table does eight bytes per step.  The choice is made once, when
 * the module loads. */
#include "internal.h"

#define POLY 0x82F63B78u
#define MASK_DELTA 0xa282ead8u

static uint32_t table[8][256];
static int use_hw;

__attribute__((constructor)) static void crc32c_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    use_hw = __builtin_cpu_supports("sse4.2");
#endif
}

uint32_t rldb_crc32c_extend_sw(uint32_t crc, const uint8_t *p, size_t n) {
    uint32_t c = ~crc;
    while (n && ((uintptr_t)p & 7)) {
        c = (c >> 8) ^ table[0][(c ^ *p++) & 0xff];
        n--;
    }
    while (n >= 8) {
        uint64_t w = load64le(p) ^ c;
        c = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^
            table[5][(w >> 16) & 0xff] ^ table[4][(w >> 24) & 0xff] ^
            table[3][(w >> 32) & 0xff] ^ table[2][(w >> 40) & 0xff] ^
            table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) c = (c >> 8) ^ table[0][(c ^ *p++) & 0xff];
    return ~c;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <nmmintrin.h>
__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = ~crc;
    while (n && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        n -= 8;
    }
    while (n--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
#endif

int rldb_crc32c_extend_hw(uint32_t crc, const uint8_t *data, size_t n, uint32_t *out) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (use_hw) {
        *out = crc32c_hw(crc, data, n);
        return RLDB_OK;
    }
#endif
    (void)crc; (void)data; (void)n; (void)out;
    return RLDB_ERR_NOT_SUPPORTED;
}

int rldb_crc32c_hw_available(void) { return use_hw; }

uint32_t rldb_crc32c_extend(uint32_t crc, const uint8_t *data, size_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (use_hw) return crc32c_hw(crc, data, n);
#endif
    return rldb_crc32c_extend_sw(crc, data, n);
}

uint32_t rldb_crc32c_mask(uint32_t crc) {
    return ((crc >> 15) | (crc << 17)) + MASK_DELTA;
}

uint32_t rldb_crc32c_unmask(uint32_t masked) {
    uint32_t rot = masked - MASK_DELTA;
    return (rot >> 17) | (rot << 15);
}
