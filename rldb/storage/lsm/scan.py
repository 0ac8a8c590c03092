"""Ordered iteration over a consistent snapshot of the whole tree.

The memtables and one source per L0 table and per deeper level feed the C
merge (csrc/kway_merge.c); this module only hands it blocks, in order, as it asks."""
from itertools import chain

from rldb._core.kway_merge import MERGE_DONE, MERGE_NEED_DATA, Merger
from rldb.storage.lsm.options import NUM_LEVELS
from rldb.storage.lsm.table import feed


def _table_blocks(tables, start, end, reverse):
    """(table, offset, stored block) of consecutive tables, from the block
    holding the bound onwards; the merge verifies and decompresses them."""
    for table in tables:
        index = table.index
        if index.count == 0:
            continue
        if reverse:
            first = index.count - 1 if end is None else min(index.search(end), index.count - 1)
        else:
            first = 0 if start is None else index.search(start)
        for offset, raw in table.raw_blocks(first, reverse):
            yield table, offset, raw


def _in_range(f, start, end):
    return (start is None or f.largest >= start) and (end is None or f.smallest < end)


def iterate(mem, imm, version, snapshot, open_table, start, end, reverse):
    """An iterator of (key, value) for start <= key < end at snapshot.  The
    entries come in chunks (about a block's worth); chaining them keeps the
    per-entry work in C."""
    return chain.from_iterable(_chunks(mem, imm, version, snapshot, open_table, start, end,
                                       reverse))


def _chunks(mem, imm, version, snapshot, open_table, start, end, reverse):
    memtables = [m for m in (mem, imm) if m is not None]
    groups = [[f] for f in version.levels[0] if _in_range(f, start, end)]
    for level in range(1, NUM_LEVELS):
        files = [f for f in version.levels[level] if _in_range(f, start, end)]
        if files:
            groups.append(files[::-1] if reverse else files)
    merger = Merger(len(memtables) + len(groups), reverse=reverse, snapshot=snapshot,
                          start=start, end=end)
    for i, m in enumerate(memtables):
        merger.set_memtable(i, m)
    feeds = [_table_blocks((open_table(f) for f in group), start, end, reverse)
             for group in groups]
    base = len(memtables)
    while True:
        status, need, entries = merger.scan()
        if entries:
            yield entries
        if status == MERGE_DONE:
            return
        if status == MERGE_NEED_DATA:
            feed(merger, need, next(feeds[need - base], None))
