/* Return-code messages (the bitcask's own codes too) and the build version. */
#include "rldb.h"

#ifndef RLDB_VERSION
#error "RLDB_VERSION must be defined by the build"
#endif

static const char *const messages[] = {
    "ok",
    "truncated input",
    "encoded value too long",
    "corrupt data",
    "output buffer too small",
    "invalid argument",
    "out of memory",
    "not supported on this machine",
    "checksum mismatch",
    "system call failed",
};

const char *rldb_version(void) { return RLDB_VERSION; }

const char *rldb_strerror(int rc) {
    switch (rc) {
    case RLDB_BC_ABSENT: return "no such key";
    case RLDB_BC_CLOSED: return "the engine is closed";
    case RLDB_BC_HINT_SIZE: return "intact, but written for a data file of another size";
    }
    if (rc > 0 || rc <= RLDB_ERR_LAST) return "unknown error code";
    return messages[-rc];
}
