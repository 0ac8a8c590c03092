"""What one SSTable holds, as plain data: its footer, blocks, filter and
properties (table_info) and its entries (entries).  Everything is read through
Table, the reader lookups use, so the tools see what the engine sees; the
rldb-sstable tool prints these and the tests check them."""
import os
import stat
from dataclasses import dataclass, field

from rldb.errors import CorruptionError, InvalidArgumentError
from rldb.storage.lsm.finding import FAULT, Finding, bare_message
from rldb.storage.lsm.format import KIND_DELETE, KIND_VALUE, parse_name, split_internal_key
from rldb.storage.lsm.table import Footer, Table, not_a_table

KIND_NAMES = {KIND_VALUE: "put", KIND_DELETE: "delete"}


# ---- naming a table ---------------------------------------------------------------


def stat_path(path, what="file"):
    """os.stat(path); InvalidArgumentError (the caller named something that
    is not there) instead of an OSError."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise InvalidArgumentError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise InvalidArgumentError(f"{path}: {exc.strerror}") from None


def check_table_file(path):
    """InvalidArgumentError unless path is a regular file ending in the table
    magic (a damaged table passes: opening it then raises CorruptionError)."""
    st = stat_path(path)
    if stat.S_ISDIR(st.st_mode):
        raise InvalidArgumentError(f"{path}: is a directory, not an SSTable file")
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgumentError(f"{path}: not a regular file, so not an SSTable")
    reason = not_a_table(path)
    if reason is not None:
        raise InvalidArgumentError(f"{path}: {reason}")
    return st


def table_number(path):
    """The number in a table's file name (000012.sst: 12), 0 for another name."""
    parsed = parse_name(os.path.basename(path))
    return parsed[1] if parsed is not None and parsed[0] == "sst" else 0


def open_table(path):
    """A Table for a file a user named: InvalidArgumentError when it is no
    table at all, CorruptionError (naming file and offset) when it is a
    damaged one, NotSupportedError for another format version."""
    path = os.fspath(path)
    check_table_file(path)
    return Table(path, table_number(path))


# ---- what a table holds -----------------------------------------------------------


@dataclass
class BlockStats:
    count: int
    bytes: int                      # as stored, trailers excluded
    uncompressed_bytes: int | None  # None when a block could not be read
    types: dict                     # compression ("raw", "snappy") -> blocks
    min: int
    avg: float
    max: int


@dataclass
class FilterStats:
    bytes: int
    bits: int
    probes: int
    distinct_keys: int | None       # None when a data block could not be read
    bits_per_key: float | None


@dataclass
class TableInfo:
    file: str
    file_size: int
    format_version: int
    footer: Footer
    data_blocks: BlockStats
    index_entries: int
    filter: FilterStats
    smallest_key: bytes | None
    largest_key: bytes | None
    entries: int | None
    tombstones: int | None
    raw_key_bytes: int | None
    raw_value_bytes: int | None
    creator: str | None
    properties: dict = field(default_factory=dict)
    error: Finding | None = None    # the first unreadable data block


def table_info(table):
    """Everything about an open Table.  Reads every data block to count the
    distinct user keys the filter was built over; a damaged block ends the
    count and is named in .error instead of raising."""
    handles = table.index.handles
    sizes = [size for _, size in handles]
    types = {}
    for i in range(len(handles)):
        try:
            kind = table.block_compression(i)
        except CorruptionError:
            kind = "unreadable"
        types[kind] = types.get(kind, 0) + 1
    distinct, contents_bytes, error, previous = 0, 0, None, None
    for i, (offset, size) in enumerate(handles):
        try:
            contents_bytes += len(table.block(i))
            entries = table.block_entries(i)
        except CorruptionError as exc:
            message = bare_message(exc).removeprefix("block: ")
            error = Finding(FAULT, table.path, offset, f"data block {i}: {message}")
            distinct = contents_bytes = None
            break
        for ikey, _ in entries:
            user_key = ikey[:-8]
            if user_key != previous:
                distinct += 1
                previous = user_key
    props = table.properties
    keys = distinct if distinct is not None else props.get("entries")
    bits = table.filter_bits
    return TableInfo(
        file=table.path,
        file_size=table.file_size,
        format_version=table.footer.format_version,
        footer=table.footer,
        data_blocks=BlockStats(
            count=len(sizes), bytes=sum(sizes), uncompressed_bytes=contents_bytes, types=types,
            min=min(sizes, default=0), max=max(sizes, default=0),
            avg=round(sum(sizes) / len(sizes), 1) if sizes else 0),
        index_entries=table.index.count,
        filter=FilterStats(bytes=len(table.filter), bits=bits, probes=table.filter_probes,
                           distinct_keys=distinct,
                           bits_per_key=round(bits / keys, 2) if keys else None),
        smallest_key=props.get("smallest_key"),
        largest_key=props.get("largest_key"),
        entries=props.get("entries"),
        tombstones=props.get("deletions"),
        raw_key_bytes=props.get("raw_key_bytes"),
        raw_value_bytes=props.get("raw_value_bytes"),
        creator=props.get("creator"),
        properties=dict(props),
        error=error,
    )


@dataclass(frozen=True)
class Entry:
    key: bytes     # the user key
    seq: int
    kind: str      # "put" or "delete"
    value: bytes   # empty for a delete


def entries(table, limit=None):
    """The table's entries in order (key order checked, every block
    verified), at most limit of them."""
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise InvalidArgumentError(f"limit must be a non-negative integer, not {limit!r}")
    return _entries(table, limit)


def _entries(table, limit):
    for n, (ikey, value) in enumerate(table.entries(check_order=True)):
        if limit is not None and n >= limit:
            return
        key, seq, kind = split_internal_key(ikey)
        yield Entry(key, seq, KIND_NAMES.get(kind, f"kind-{kind}"), value)
