"""Choosing compactions and writing the tables that flushes and compactions produce.

Leveled compaction as in LevelDB: L0 is compacted into L1 when it holds
l0_compaction_trigger files; level n >= 1 when it holds more than
level1_max_bytes * ratio**(n-1) bytes, one file at a time, round robin through
the key space.  Output tables are split at target_file_size.  Tombstones are
dropped only when no deeper level holds a file overlapping the compaction."""
import os
from dataclasses import dataclass, field

from rldb._core.kway_merge import MERGE_DONE, MERGE_NEED_DATA, Merger
from rldb._core.sstable import TableBuilder
from rldb.errors import StorageIOError
from rldb.storage.directory import fsync_dir, write_synced
from rldb.storage.lsm.format import encode_properties, split_internal_key, table_name
from rldb.storage.lsm.options import NUM_LEVELS
from rldb.storage.lsm.table import feed
from rldb.storage.lsm.version import FileMeta, VersionEdit
from rldb._version import __version__


def level_max_bytes(level, options):
    return options["level1_max_bytes"] * options["level_size_ratio"] ** (level - 1)


def scores(version, options):
    """(score, level) for every level that can be compacted; >= 1 means it should be."""
    out = [(len(version.levels[0]) / options["l0_compaction_trigger"], 0)]
    for level in range(1, NUM_LEVELS - 1):
        out.append((version.level_bytes(level) / level_max_bytes(level, options), level))
    return out


def needs_compaction(version, options):
    return max(scores(version, options))[0] >= 1


def pending_compaction_bytes(version, options):
    """Bytes that compaction still has to move down for every level to be within size."""
    pending = version.level_bytes(0) if len(version.levels[0]) >= options["l0_compaction_trigger"] else 0
    for level in range(1, NUM_LEVELS - 1):
        pending += max(0, version.level_bytes(level) - level_max_bytes(level, options))
    return pending


@dataclass
class Compaction:
    level: int
    inputs: list
    next_inputs: list = field(default_factory=list)
    drop_tombstones: bool = False

    @property
    def output_level(self):
        return self.level + 1

    def key_range(self):
        files = self.inputs + self.next_inputs
        return min(f.smallest for f in files), max(f.largest for f in files)

    def is_trivial_move(self):
        return len(self.inputs) == 1 and not self.next_inputs

    def input_bytes(self):
        return sum(f.size for f in self.inputs + self.next_inputs)


def _bottommost(version, output_level, smallest, largest):
    return not any(version.overlapping(level, smallest, largest)
                   for level in range(output_level + 1, NUM_LEVELS))


def setup(version, level, inputs):
    smallest = min(f.smallest for f in inputs)
    largest = max(f.largest for f in inputs)
    c = Compaction(level, list(inputs), version.overlapping(level + 1, smallest, largest))
    lo, hi = c.key_range()
    c.drop_tombstones = _bottommost(version, level + 1, lo, hi)
    return c


def pick(version, options, compact_pointers):
    """The most urgent compaction, or None."""
    score, level = max(scores(version, options))
    if score < 1:
        return None
    if level == 0:
        return setup(version, 0, version.levels[0])
    files = version.levels[level]
    pointer = compact_pointers.get(level)
    chosen = next((f for f in files if pointer is None or f.smallest > pointer), files[0])
    return setup(version, level, [chosen])


def write_table(dirname, number, builder):
    """Finishes builder into file `number` (fsynced, directory too); its FileMeta."""
    builder.seal()  # the last data block, filter and index: the figures are final
    stats = builder.stats()
    first, last = builder.key_range()
    smallest, largest = split_internal_key(first)[0], split_internal_key(last)[0]
    properties = dict(stats, smallest_key=smallest, largest_key=largest,
                      creator=f"rldb {__version__}")
    data = builder.finish(encode_properties(properties))
    path = os.path.join(dirname, table_name(number))
    try:
        write_synced(path, data)
        fsync_dir(dirname)
    except OSError as exc:
        raise StorageIOError(exc.errno, f"cannot write table {path}: {exc.strerror}") from None
    return FileMeta(number, len(data), smallest, largest, stats["entries"])


def build_tables(merger, feeders, dirname, new_number, options, max_file_size,
                 between_files=None):
    """Runs a compact-mode merger to the end, writing tables of at most about
    max_file_size.  feeders[i]() returns source i's next (table, offset,
    stored block) or None.
    between_files() runs after each finished table (to flush a memtable)."""
    metas, builder, number = [], None, None
    while True:
        if builder is None:
            number = new_number()
            builder = TableBuilder(options["block_size"], options["restart_interval"],
                                         options["bloom_bits_per_key"], options["compression"])
        status, need = merger.compact(builder, max_file_size)
        if status == MERGE_NEED_DATA:
            feed(merger, need, feeders[need]())
            continue
        if builder.stats()["entries"]:
            metas.append(write_table(dirname, number, builder))
            if between_files is not None and status != MERGE_DONE:
                between_files()
        builder = None
        if status == MERGE_DONE:
            return metas


def block_feeder(tables):
    """A function returning (table, offset, stored block) of tables in order,
    one per call; the merge verifies and decompresses them."""
    def blocks():
        for table in tables:
            for offset, raw in table.raw_blocks():
                yield table, offset, raw
    it = blocks()
    return lambda: next(it, None)


def run(compaction, open_table, dirname, new_number, options, between_files=None):
    """Merges the inputs into new tables; the edit that swaps them in and the
    merge counters."""
    edit = VersionEdit()
    for f in compaction.inputs:
        edit.delete(compaction.level, f.number)
    for f in compaction.next_inputs:
        edit.delete(compaction.output_level, f.number)
    if compaction.level == 0:
        groups = [[f] for f in compaction.inputs]
    else:
        groups = [compaction.inputs]
    if compaction.next_inputs:
        groups.append(compaction.next_inputs)
    feeders = [block_feeder([open_table(f) for f in group]) for group in groups]
    merger = Merger(len(feeders), compact=True, drop_tombstones=compaction.drop_tombstones)
    metas = build_tables(merger, feeders, dirname, new_number, options,
                         options["target_file_size"], between_files)
    for meta in metas:
        edit.add(compaction.output_level, meta)
    return edit, metas, merger.stats()
