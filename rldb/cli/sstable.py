"""rldb-sstable: look inside the LSM engine's files (layouts in docs/formats.md).

    rldb-sstable inspect 000012.sst [--json]     footer, blocks, filter, properties
    rldb-sstable dump 000012.sst [--limit N]     every entry, in order
    rldb-sstable verify 000012.sst | DATA_DIR    checksums, order, manifest, logs
    rldb-sstable compact DATA_DIR                full manual compaction

Binary keys and values are shown with Python bytes-literal escapes: printable
ASCII as is, a backslash as \\\\, tab / newline / carriage return as \\t \\n \\r,
any other byte as \\xNN (codecs.escape_decode turns the text back into bytes).

Exit codes: 0 success; 1 a fault was found or the operation failed; 2 the path
is missing, is not an SSTable or not a data directory (or another usage error)."""
import errno
import fcntl
import functools
import json
import os
import re
import stat
import struct
import sys
import time

import click

from rldb import _core
from rldb._version import __version__
from rldb.errors import (
    CorruptionError,
    InvalidArgumentError,
    NotSupportedError,
    RldbError,
    StorageIOError,
)
from rldb.storage.lsm.batch import decode_batch
from rldb.storage.lsm.format import (
    CURRENT,
    KIND_DELETE,
    KIND_VALUE,
    LOCK,
    TABLE_MAGIC,
    log_name,
    parse_name,
    split_internal_key,
    table_name,
)
from rldb.storage.lsm import log as logformat
from rldb.storage.lsm.log import read_log
from rldb.storage.lsm.table import BLOCK_TRAILER, FOOTER_SIZE, Table
from rldb.storage.lsm.version import Version, VersionEdit, read_current

PROG = "rldb-sstable"
_MAGIC = struct.pack("<Q", TABLE_MAGIC)
_FOOTER = struct.Struct("<6QIIQ")  # three (offset, size) handles, format, masked crc, magic
_KIND_NAMES = {KIND_VALUE: "put", KIND_DELETE: "delete"}
_BLOCK_TYPES = {0: "raw", 1: "snappy"}  # the block trailer's type byte


# ---- showing bytes ------------------------------------------------------------------

_SHOW = [chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}" for b in range(256)]
_SHOW[0x5C] = "\\\\"
_SHOW[0x09] = "\\t"
_SHOW[0x0A] = "\\n"
_SHOW[0x0D] = "\\r"


def show(data):
    """bytes as safe ASCII text (see the module docstring); None stays None."""
    if data is None:
        return None
    return "".join([_SHOW[b] for b in data])


def _jsonable(value):
    if isinstance(value, (bytes, bytearray)):
        return show(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# ---- errors -------------------------------------------------------------------------


class UserError(click.ClickException):
    """The path is not what the command needs: one line, exit code 2."""

    exit_code = 2

    def show(self, file=None):
        click.echo(f"{PROG}: error: {self.message}", err=True)


class Failure(click.ClickException):
    """The file is damaged or the operation failed: one line, exit code 1."""

    exit_code = 1

    def show(self, file=None):
        click.echo(f"{PROG}: error: {self.message}", err=True)


def _bare_message(exc):
    """A CorruptionError's message without the ' in PATH at offset N' it appends
    (also where a wrapped error repeats it inside), and without the doubled
    'block block:' of Table.read_block's wording."""
    text = str(exc)
    path = getattr(exc, "path", None)
    if path is not None:
        text = re.sub(re.escape(f" in {path}") + r"(?: at offset \d+)?", "", text)
    return text.replace("block block: ", "block: ")


def _where(path, offset):
    return f"{path}" if offset is None else f"{path} offset {offset}"


def _friendly(fn):
    """Turns rldb and OS errors into one error line instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except BrokenPipeError:
            # `rldb-sstable dump big.sst | head`: stop quietly.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError, AttributeError):
                pass
            raise SystemExit(0) from None
        except CorruptionError as exc:
            raise Failure(f"{_where(exc.path, exc.offset)}: {_bare_message(exc)}"
                          if exc.path else str(exc)) from None
        except InvalidArgumentError as exc:
            raise UserError(str(exc)) from None
        except StorageIOError as exc:
            raise Failure(exc.strerror or str(exc)) from None
        except (RldbError, OSError) as exc:
            raise Failure(str(exc)) from None

    return wrapper


# ---- opening tables -----------------------------------------------------------------


def _stat(path, what="file"):
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror}") from None


def check_table_file(path):
    """Raises UserError unless path is a regular file ending in the table magic."""
    st = _stat(path)
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{path}: is a directory, not an SSTable file")
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{path}: not a regular file, so not an SSTable")
    if st.st_size == 0:
        raise UserError(f"{path}: empty file, not an SSTable")
    if st.st_size < FOOTER_SIZE:
        raise UserError(f"{path}: not an SSTable ({st.st_size} bytes, shorter than the "
                        f"{FOOTER_SIZE}-byte footer)")
    try:
        with open(path, "rb") as f:
            f.seek(st.st_size - len(_MAGIC))
            tail = f.read(len(_MAGIC))
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror}") from None
    if tail != _MAGIC:
        raise UserError(f"{path}: not an SSTable (it does not end with the magic "
                        f"\"rdbsst01\")")
    return st


def _table_number(path):
    parsed = parse_name(os.path.basename(path))
    return parsed[1] if parsed is not None and parsed[0] == "sst" else 0


def open_table(path):
    """A Table for a file the user named: UserError (exit 2) when it is not an
    SSTable at all, CorruptionError when it is a damaged one."""
    path = os.fspath(path)
    check_table_file(path)
    try:
        return Table(path, _table_number(path))
    except NotSupportedError:
        raise Failure(f"{path}: {_unsupported(path)}") from None


def _unsupported(path):
    """Why Table refused a footer as not supported: its format version."""
    try:
        with open(path, "rb") as f:
            f.seek(os.path.getsize(path) - FOOTER_SIZE + 48)
            version = struct.unpack("<I", f.read(4))[0]
    except (OSError, struct.error):
        return "unsupported table format"
    return (f"table format version {version} is not supported (this rldb reads "
            f"version {_core.TABLE_FORMAT})")


def read_footer(table):
    """The footer's fields, read raw (Table has already checked them)."""
    raw = table._pread(table.file_size - FOOTER_SIZE, FOOTER_SIZE)
    fields = _FOOTER.unpack(raw)
    return {
        "filter": {"offset": fields[0], "size": fields[1]},
        "properties": {"offset": fields[2], "size": fields[3]},
        "index": {"offset": fields[4], "size": fields[5]},
        "format_version": fields[6],
        "checksum": f"0x{fields[7]:08x}",
        "magic": raw[56:].decode("ascii", "replace"),
    }


def table_info(table):
    """Everything `inspect` shows, as plain data (bytes escaped).  Reads every
    data block to count the distinct user keys the filter was built over."""
    footer = read_footer(table)
    props = table.properties
    sizes = [size for _, size in table.index.handles]
    distinct, scan_error, previous = 0, None, None
    types, contents_bytes = {}, 0
    for offset, size in table.index.handles:
        try:
            kind = table._pread(offset + size, 1)[0]  # the trailer's type byte
        except CorruptionError:
            kind = "unreadable"
        types[kind] = types.get(kind, 0) + 1
    try:
        for i, (offset, size) in enumerate(table.index.handles):
            try:
                contents = table.read_block(offset, size)  # verified (and uncompressed)
                entries = _core.decode_block(contents)
            except CorruptionError as exc:
                message = _bare_message(exc).removeprefix("block: ")
                raise CorruptionError(f"data block {i}: {message}", table.path, offset) from None
            contents_bytes += len(contents)
            for ikey, _ in entries:
                user_key = ikey[:-8]
                if user_key != previous:
                    distinct += 1
                    previous = user_key
    except CorruptionError as exc:
        distinct, scan_error = None, exc
    filter_bytes = len(table.filter)
    filter_bits = (filter_bytes - 1) * 8  # the last byte holds the probe count
    keys_for_filter = distinct if distinct is not None else props.get("entries")
    info = {
        "file": table.path,
        "file_size": table.file_size,
        "format_version": footer["format_version"],
        "footer": footer,
        "data_blocks": {
            "count": len(sizes),
            "bytes": sum(sizes),
            "uncompressed_bytes": contents_bytes if scan_error is None else None,
            "types": {_BLOCK_TYPES.get(k, f"type-{k}"): n for k, n in types.items()},
            "min": min(sizes) if sizes else 0,
            "avg": round(sum(sizes) / len(sizes), 1) if sizes else 0,
            "max": max(sizes) if sizes else 0,
        },
        "index_entries": table.index.count,
        "filter": {
            "bytes": filter_bytes,
            "bits": filter_bits,
            "probes": table.filter[-1] if table.filter else 0,
            "distinct_keys": distinct,
            "bits_per_key": round(filter_bits / keys_for_filter, 2) if keys_for_filter else None,
        },
        "smallest_key": show(props.get("smallest_key")),
        "largest_key": show(props.get("largest_key")),
        "entries": props.get("entries"),
        "tombstones": props.get("deletions"),
        "raw_key_bytes": props.get("raw_key_bytes"),
        "raw_value_bytes": props.get("raw_value_bytes"),
        "creator": props.get("creator"),
        "properties": _jsonable(props),
    }
    if scan_error is not None:
        info["error"] = f"{_where(scan_error.path, scan_error.offset)}: {_bare_message(scan_error)}"
    return info


def _print_info(info):
    f = info["footer"]
    b = info["data_blocks"]
    fl = info["filter"]
    types = ", ".join(f"{n} {name}" for name, n in b["types"].items()) or "none"
    if b["uncompressed_bytes"] is not None and b["uncompressed_bytes"] != b["bytes"]:
        types += f"; {b['uncompressed_bytes']} bytes uncompressed"
    rows = [
        ("file", info["file"]),
        ("size", f"{info['file_size']} bytes"),
        ("format version", info["format_version"]),
        ("footer", f"filter {f['filter']['offset']}+{f['filter']['size']}, "
                   f"properties {f['properties']['offset']}+{f['properties']['size']}, "
                   f"index {f['index']['offset']}+{f['index']['size']} (offset+size); "
                   f"checksum {f['checksum']}; magic {f['magic']}"),
        ("data blocks", f"{b['count']} holding {b['bytes']} bytes ({types}); sizes min "
                        f"{b['min']} / avg {b['avg']} / max {b['max']} (as stored, each + "
                        f"{BLOCK_TRAILER}-byte trailer)"),
        ("index entries", info["index_entries"]),
    ]
    if fl["distinct_keys"] is not None:
        keys = f"{fl['distinct_keys']} distinct keys"
    else:
        keys = f"{info['entries']} entries (data unreadable)"
    rows += [
        ("filter", f"{fl['bytes']} bytes, {fl['probes']} probes, {fl['bits']} bits over {keys}"
                   f" = {fl['bits_per_key']} bits per key"),
        ("smallest key", info["smallest_key"]),
        ("largest key", info["largest_key"]),
        ("entries", info["entries"]),
        ("tombstones", info["tombstones"]),
        ("raw key bytes", f"{info['raw_key_bytes']} (internal keys: user key + 8)"),
        ("raw value bytes", info["raw_value_bytes"]),
        ("creator", info["creator"]),
    ]
    for label, value in rows:
        click.echo(f"{label:<16} {value}")


# ---- the commands -------------------------------------------------------------------


@click.group()
@click.version_option(__version__, prog_name=PROG)
def main():
    """Look inside the LSM engine's files: SSTables, MANIFEST, write-ahead logs.

    Binary keys and values are shown with Python bytes-literal escapes
    (printable ASCII as is, \\\\ \\t \\n \\r, any other byte as \\xNN).

    Exit codes: 0 success; 1 a fault was found or the operation failed; 2 the
    path is missing, is not an SSTable or not a data directory."""


@main.command()
@click.argument("file", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@_friendly
def inspect(file, as_json):
    """Show the footer, blocks, filter and properties of the SSTable FILE.

    Bits per key is the filter's bit array (its size less the probe-count
    byte, times 8) over the distinct user keys of the table's data."""
    table = open_table(file)
    try:
        info = table_info(table)
    finally:
        table.close()
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        _print_info(info)
    if "error" in info:
        raise Failure(info["error"])


@main.command()
@click.argument("file", type=click.Path())
@click.option("--limit", type=click.IntRange(min=0), default=None, metavar="N",
              help="Stop after N entries.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per entry: key, seq, kind, value.")
@_friendly
def dump(file, limit, as_json):
    """Print the entries of the SSTable FILE in order.

    One line per entry: user key, sequence, kind (put or delete) and value,
    separated by tabs (a tab inside a key or value is shown as \\t)."""
    table = open_table(file)
    try:
        for n, (ikey, value) in enumerate(table.entries(check_order=True)):
            if limit is not None and n >= limit:
                break
            key, seq, kind = split_internal_key(ikey)
            kind_name = _KIND_NAMES.get(kind, f"kind-{kind}")
            if as_json:
                click.echo(json.dumps({"key": show(key), "seq": seq, "kind": kind_name,
                                       "value": show(value)}))
            else:
                click.echo(f"{show(key)}\t{seq}\t{kind_name}\t{show(value)}")
    finally:
        table.close()


class Report:
    """Faults and warnings found by verify, printed as they are found."""

    def __init__(self):
        self.faults = 0
        self.warnings = 0
        self.counts = {"tables": 0, "entries": 0, "manifest records": 0, "logs": 0,
                       "log records": 0}

    def fault(self, path, offset, message, warning=False):
        if warning:
            self.warnings += 1
            click.echo(f"WARNING {_where(path, offset)}: {message}")
        else:
            self.faults += 1
            click.echo(f"FAULT {_where(path, offset)}: {message}")

    def warn(self, path, offset, message):
        self.fault(path, offset, message, warning=True)

    def error(self, exc, path, warning=False, note=""):
        """Reports an exception raised while reading path."""
        if isinstance(exc, CorruptionError):
            self.fault(exc.path or path, exc.offset, _bare_message(exc) + note, warning)
        else:
            self.fault(path, None, str(exc) + note, warning)


def verify_table(path, report, meta=None, obsolete=False):
    """Every block checksum, then Table.verify(), then the manifest's record of
    the file.  An obsolete table's problems are only warnings."""
    note = " (table not in the manifest)" if obsolete else ""
    report.counts["tables"] += 1
    try:
        table = Table(path, _table_number(path))
    except NotSupportedError:
        report.fault(path, None, _unsupported(path) + note, obsolete)
        return
    except (RldbError, OSError) as exc:
        report.error(exc, path, obsolete, note)
        return
    try:
        damaged = False
        for i, (offset, size) in enumerate(table.index.handles):
            try:
                table.read_block(offset, size)
            except CorruptionError as exc:
                damaged = True
                message = _bare_message(exc).removeprefix("block: ")
                report.fault(path, offset, f"data block {i} of {size} bytes: {message}{note}",
                             obsolete)
        if damaged:
            return
        try:
            count = table.verify()
        except CorruptionError as exc:
            report.error(exc, path, obsolete, note)
            return
        report.counts["entries"] += count
        if meta is not None:
            props = table.properties
            problems = []
            if table.file_size != meta.size:
                problems.append(f"is {table.file_size} bytes, the manifest says {meta.size}")
            if count != meta.entries:
                problems.append(f"holds {count} entries, the manifest says {meta.entries}")
            smallest, largest = props.get("smallest_key"), props.get("largest_key")
            if smallest != meta.smallest or largest != meta.largest:
                problems.append(
                    f"has keys {show(smallest)} .. {show(largest)}, "
                    f"the manifest says {show(meta.smallest)} .. {show(meta.largest)}")
            for problem in problems:
                report.fault(path, None, f"table {problem}")
    finally:
        table.close()


_RECORD_START = re.compile(rb"(?=.{6}[\x01\x02])", re.DOTALL)  # a FULL or FIRST header


def intact_record_after(path, stop):
    """The offset of the first whole record with good checksums that starts
    anywhere after stop, or None.  read_log only looks for one at the start of a
    later 32 KiB block (and gives up when that block opens with the middle of a
    record), so it takes most damage for a torn tail; this looks at every byte."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    for match in _RECORD_START.finditer(data, stop + 1):
        pos = match.start()
        left = logformat.BLOCK_SIZE - pos % logformat.BLOCK_SIZE
        length = data[pos + 4] | data[pos + 5] << 8
        if left < logformat.HEADER_SIZE or length > left - logformat.HEADER_SIZE:
            continue
        offset, _ = next(logformat._parse(data, pos), (None, None))
        if offset is not None:
            return pos
    return None


def check_log_tail(path, result, report, consequence, note="", obsolete=False):
    """For a log that read_log stopped early: "damaged" (a fault is reported)
    when an intact record follows the damage, else "torn"; None when whole."""
    if not result.dropped_bytes:
        return None
    found = intact_record_after(path, result.stopped_at)
    if found is not None:
        report.fault(path, result.stopped_at,
                     f"damaged ({result.reason}), yet an intact record follows at offset "
                     f"{found}: not a torn tail; {consequence}{note}", obsolete)
        return "damaged"
    return "torn"


class ManifestState:
    def __init__(self):
        self.version = Version()
        self.log_number = 0
        self.next_file = 2
        self.last_seq = 0
        self.complete = True   # False when records after damage were not replayed


def verify_manifest(path, report):
    """Replays the MANIFEST as the engine does; the state, or None when unusable."""
    try:
        result = read_log(path)
    except (RldbError, OSError) as exc:
        report.error(exc, path)
        return None
    state = ManifestState()
    tail = check_log_tail(path, result, report,
                          f"the engine would silently ignore the {result.dropped_bytes} bytes "
                          f"from there and the tables they add")
    state.complete = tail != "damaged"
    if tail == "torn":
        report.warn(path, result.stopped_at,
                    f"torn tail: {result.dropped_bytes} bytes after the last intact record "
                    f"({result.reason}); the engine ignores them")
    if not result.records:
        report.fault(path, 0, "manifest holds no version record")
        return None
    seen_base = False
    for offset, payload in result.records:
        report.counts["manifest records"] += 1
        try:
            edit = VersionEdit.decode(payload)
        except CorruptionError as exc:
            report.fault(path, offset, _bare_message(exc))
            return None
        levels = len(state.version.levels)
        bad = [lv for lv, _ in edit.added + edit.deleted + edit.compact_pointers
               if not isinstance(lv, int) or not 0 <= lv < levels]
        if bad:
            report.fault(path, offset, f"record names level {bad[0]!r}; levels are 0..{levels - 1}")
            return None
        present = state.version.numbers()
        for level, number in edit.deleted:
            if number not in {f.number for f in state.version.levels[level]}:
                report.fault(path, offset, f"record deletes table {number} from level {level}, "
                                           f"which does not hold it")
        moved = {number for _, number in edit.deleted}
        for level, meta in edit.added:
            if meta.number in present and meta.number not in moved:
                report.fault(path, offset, f"record adds table {meta.number} to level {level}, "
                                           f"but it is already live")
        seen_base = seen_base or edit.next_file is not None
        try:
            state.version = state.version.apply(edit)
        except Exception as exc:  # a well-framed record with values of the wrong type
            report.fault(path, offset, f"record cannot be applied ({exc!r})")
            return None
        for field in VersionEdit.FIELDS:
            if getattr(edit, field) is not None:
                setattr(state, field, getattr(edit, field))
    if not seen_base:
        report.fault(path, 0, "manifest lacks its base record (no next_file)")
    try:
        state.version.check()
    except AssertionError as exc:
        report.fault(path, None, f"manifest describes an impossible version: {exc}")
    for _, meta in state.version.files():
        if meta.number >= state.next_file:
            report.fault(path, None, f"live table {meta.number} is not below next_file "
                                     f"{state.next_file}")
    return state


def verify_logs(dirname, numbers, log_number, report):
    """Every write-ahead log: records intact and decodable; a torn tail is only a
    warning unless later live logs follow it (the engine then refuses to open)."""
    live = [n for n in numbers if n >= log_number]
    for number in numbers:
        path = os.path.join(dirname, log_name(number))
        obsolete = number < log_number
        note = " (obsolete log, not replayed)" if obsolete else ""
        report.counts["logs"] += 1
        try:
            result = read_log(path)
        except (RldbError, OSError) as exc:
            report.error(exc, path, obsolete, note)
            continue
        for offset, payload in result.records:
            report.counts["log records"] += 1
            try:
                decode_batch(payload)
            except CorruptionError as exc:
                report.fault(path, offset, f"unreadable write batch ({_bare_message(exc)}){note}",
                             obsolete)
        if check_log_tail(path, result, report,
                          f"the engine would silently drop the {result.dropped_bytes} bytes "
                          f"of writes from there", note, obsolete) == "torn":
            text = (f"torn tail: {result.dropped_bytes} bytes after the last intact record "
                    f"({result.reason})")
            if not obsolete and number != live[-1]:
                report.fault(path, result.stopped_at,
                             f"{text}, and later logs follow it: the engine will not open")
            else:
                report.warn(path, result.stopped_at,
                            f"{text}; dropped when the engine opens{note}")


def _lock_shared(dirname, report):
    """A shared lock on LOCK so that no engine opens meanwhile; a warning when an
    engine holds it now.  The fd to close, or None."""
    path = os.path.join(dirname, LOCK)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
            report.warn(dirname, None, "the database is open in an engine: files may change "
                                       "while they are read, and faults may be spurious")
        return None
    return fd


def check_data_dir(path):
    st = _stat(path, "directory")
    if not stat.S_ISDIR(st.st_mode):
        raise UserError(f"{path}: not a directory, so not a data directory")
    if not os.path.exists(os.path.join(path, CURRENT)):
        raise UserError(f"{path}: not a data directory (it has no CURRENT file)")


def verify_dir(dirname, report):
    lock_fd = _lock_shared(dirname, report)
    try:
        state = None
        try:
            name = read_current(dirname)
        except CorruptionError as exc:
            report.error(exc, os.path.join(dirname, CURRENT))
        except OSError as exc:
            report.error(exc, os.path.join(dirname, CURRENT))
        else:
            manifest = os.path.join(dirname, name)
            if not os.path.isfile(manifest):
                report.fault(os.path.join(dirname, CURRENT), 0,
                             f"CURRENT names {name}, which does not exist")
            else:
                state = verify_manifest(manifest, report)
        live = {}
        if state is not None:
            live = {meta.number: (level, meta) for level, meta in state.version.files()}
        tables, logs = set(), []
        for entry in sorted(os.listdir(dirname)):
            parsed = parse_name(entry)
            if parsed is not None and parsed[0] == "sst":
                tables.add(parsed[1])
            elif parsed is not None and parsed[0] == "log":
                logs.append(parsed[1])
        for number in sorted(live):
            level, meta = live[number]
            path = os.path.join(dirname, table_name(number))
            if number not in tables:
                report.fault(path, None, f"missing: the manifest lists it in level {level}")
                continue
            verify_table(path, report, meta)
        leftover = state is not None and state.complete
        for number in sorted(tables - set(live)):
            path = os.path.join(dirname, table_name(number))
            if leftover:
                report.warn(path, None, "not in the manifest (left over; the engine deletes "
                                        "it when it opens)")
            verify_table(path, report, obsolete=leftover)
        verify_logs(dirname, sorted(logs), state.log_number if state else 0, report)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


@main.command()
@click.argument("path", type=click.Path())
@_friendly
def verify(path):
    """Check the SSTable PATH, or all files of the data directory PATH.

    For a table: the footer, every block checksum, key order, the index and the
    properties.  For a directory (one with CURRENT): the MANIFEST's records and
    the version they build, every .sst against its manifest entry, and every
    write-ahead log.  One line per fault or warning, naming the file and offset
    where known.  Exit code 0 when no fault was found (warnings allowed), 1
    otherwise."""
    report = Report()
    st = _stat(path, "file or directory")
    if stat.S_ISDIR(st.st_mode):
        check_data_dir(path)
        verify_dir(path, report)
    else:
        check_table_file(path)
        verify_table(path, report)
    c = report.counts
    checked = f"{c['tables']} table(s) with {c['entries']} entries"
    if stat.S_ISDIR(st.st_mode):
        checked += (f", {c['manifest records']} manifest record(s), {c['logs']} log(s) with "
                    f"{c['log records']} record(s)")
    verdict = "clean" if not report.faults else f"{report.faults} fault(s)"
    if report.warnings:
        verdict += f", {report.warnings} warning(s)"
    click.echo(f"{path}: {checked}: {verdict}")
    if report.faults:
        sys.exit(1)


def _parse_options(pairs):
    options = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise UserError(f"option {pair!r} is not NAME=VALUE")
        lowered = text.strip().lower()
        if lowered in ("true", "yes", "on"):
            options[name] = True
        elif lowered in ("false", "no", "off"):
            options[name] = False
        else:
            try:
                options[name] = int(text, 0)
            except ValueError:
                options[name] = text  # e.g. compression=none; the engine checks it
    return options


class _Progress:
    """compact()'s progress(done, total) callback drawing a click progress bar."""

    def __init__(self):
        self.bar = None

    def __call__(self, done, total):
        if self.bar is None:
            self.bar = click.progressbar(length=max(total, 1), label="compacting",
                                         file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(max(0, min(done, self.bar.length) - self.bar.pos))

    def close(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _levels(stats):
    return {f"L{level['level']}": level["files"] for level in stats["levels"] if level["files"]}


@main.command()
@click.argument("directory", type=click.Path())
@click.option("--option", "-o", "options", multiple=True, metavar="NAME=VALUE",
              help="An LSM engine option for the compaction, e.g. -o target_file_size=4194304 "
                   "(repeatable).")
@click.option("--json", "as_json", is_flag=True, help="The summary as one JSON object.")
@_friendly
def compact(directory, options, as_json):
    """Fully compact the data directory DIRECTORY.

    Flushes the write-ahead log, then merges every level into the next until
    all data sits in one level.  The engine must not be open elsewhere."""
    check_data_dir(directory)
    opts = {"create_if_missing": False, "background": False}
    opts.update(_parse_options(options))
    from rldb.storage import open_engine

    db = open_engine("lsm", directory, **opts)
    progress = _Progress()
    try:
        before = db.stats()
        started = time.monotonic()
        try:
            result = db.compact(progress=progress)
        finally:
            progress.close()
        seconds = time.monotonic() - started
        after = db.stats()
    finally:
        db.close()
    # LSMEngine.compact() leaves its input tables on disk (the old Versions it
    # holds while it runs keep them "live" when it deletes obsolete files), and
    # only an open, a flush or a later compaction removes them: open once more.
    open_engine("lsm", directory, **opts).close()
    summary = {
        "directory": directory,
        "bytes_in": result["bytes_in"],
        "bytes_out": result["bytes_out"],
        "files_before": before["files"],
        "files_after": after["files"],
        "levels_before": _levels(before),
        "levels_after": _levels(after),
        "tombstones_dropped": after["tombstones_dropped"] - before["tombstones_dropped"],
        "seconds": round(seconds, 3),
    }
    if as_json:
        click.echo(json.dumps(summary))
        return

    def levels(d):
        return ", ".join(f"{k}: {v}" for k, v in d.items()) or "none"

    ratio = ""
    if result["bytes_in"]:
        ratio = f" ({100 * result['bytes_out'] / result['bytes_in']:.1f}%)"
    click.echo(f"compacted {directory} in {seconds:.2f} s")
    click.echo(f"{'bytes in':<19} {summary['bytes_in']}")
    click.echo(f"{'bytes out':<19} {summary['bytes_out']}{ratio}")
    click.echo(f"{'files':<19} {summary['files_before']} -> {summary['files_after']}")
    click.echo(f"{'files per level':<19} {levels(summary['levels_before'])} -> "
               f"{levels(summary['levels_after'])}")
    click.echo(f"{'tombstones dropped':<19} {summary['tombstones_dropped']}")


if __name__ == "__main__":  # python -m rldb.cli.sstable
    main(prog_name=PROG)
