/* Return-code messages and the build version. */
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
    if (rc > 0 || rc <= RLDB_ERR_LAST) return "unknown error code";
    return messages[-rc];
}
