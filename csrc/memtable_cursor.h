/* A position in a memtable, for the k-way merge (kway_merge.c). */
#ifndef RLDB_MEMTABLE_CURSOR_H
#define RLDB_MEMTABLE_CURSOR_H
#include "rldb.h"
typedef struct {
    rldb_memtable *mt;
    void *n;   /* current node, NULL when not valid */
} rldb__mt_cursor;

void rldb__mt_cursor_first(rldb__mt_cursor *c);
void rldb__mt_cursor_last(rldb__mt_cursor *c);
int rldb__mt_cursor_seek(rldb__mt_cursor *c, const uint8_t *ikey, size_t iklen);
int rldb__mt_cursor_seek_before(rldb__mt_cursor *c, const uint8_t *ikey, size_t iklen);
void rldb__mt_cursor_next(rldb__mt_cursor *c);
void rldb__mt_cursor_prev(rldb__mt_cursor *c);
void rldb__mt_cursor_entry(const rldb__mt_cursor *c, const uint8_t **k, size_t *klen,
                           const uint8_t **v, size_t *vlen);
#endif
