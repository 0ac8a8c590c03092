"""rldb-sstable: look inside the LSM engine's files (layouts in docs/formats.md).

    rldb-sstable inspect 000012.sst [--json]         footer, blocks, filter, properties
    rldb-sstable dump 000012.sst [--limit N] [--raw] every entry, in order
    rldb-sstable verify 000012.sst | DATA_DIR        checksums, order, manifest, logs
    rldb-sstable compact DATA_DIR                    full manual compaction

The reading and checking is rldb.storage.lsm.inspect and .verify, on the
engine's own readers; this module parses arguments and prints.

Binary keys and values are shown with Python bytes-literal escapes: printable
ASCII as is, a backslash as \\\\, tab / newline / carriage return as \\t \\n \\r,
any other byte as \\xNN (codecs.escape_decode turns the text back into bytes).
dump shows the first PREVIEW bytes of a longer key or value, then "..." and
its length; --raw shows every byte.  A value a node wrote (a stored object:
a version clock) is shown as its siblings.

Exit codes: 0 success; 1 a fault was found or the operation failed; 2 the path
is missing, is not an SSTable or not a data directory (or another usage error)."""
import dataclasses
import functools
import json
import os
import sys
import time

import click

from rldb._version import __version__
from rldb.cluster import dvv, objects
from rldb.errors import CorruptionError, InvalidArgumentError, RldbError
from rldb.storage.lsm import inspect as inspection
from rldb.storage.lsm.finding import FAULT, Finding
from rldb.storage.lsm.options import CHOICES
from rldb.storage.lsm.table import BLOCK_TRAILER
from rldb.storage.lsm.verify import check_data_dir, verify_path

PROG = "rldb-sstable"
PREVIEW = 64  # bytes of a key or value dump shows before "..."


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


def preview(data, raw=False):
    """show(data), cut after PREVIEW bytes (then "..." and the full length)."""
    if raw or len(data) <= PREVIEW:
        return show(data)
    return f"{show(data[:PREVIEW])}... ({len(data)} bytes)"


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
    """The command line names something the command cannot use: one line, exit 2."""

    exit_code = 2

    def show(self, file=None):
        click.echo(f"{PROG}: error: {self.message}", err=True)


class Failure(click.ClickException):
    """The file is damaged or the operation failed: one line, exit code 1."""

    exit_code = 1

    def show(self, file=None):
        click.echo(f"{PROG}: error: {self.message}", err=True)


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
        except InvalidArgumentError as exc:
            raise UserError(str(exc)) from None
        except CorruptionError as exc:
            raise Failure(str(Finding.from_error(exc)) if exc.path else str(exc)) from None
        except (RldbError, OSError) as exc:
            raise Failure(Finding.from_error(exc).message if isinstance(exc, OSError)
                          else str(exc)) from None

    return wrapper


_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _Main(click.Group):
    """A usage error (a bad option, a missing argument) is one line on
    stderr and exit status 2, like the other errors, not click's usage text."""

    def main(self, *args, standalone_mode=True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except _NO_ARGS as exc:  # no command at all: the help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            click.echo(f"{PROG}: error: {exc.format_message()}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)


# ---- inspect ------------------------------------------------------------------------


def info_json(info):
    """A TableInfo as JSON-ready data (bytes escaped)."""
    data = _jsonable(dataclasses.asdict(info))
    data["footer"]["checksum"] = f"0x{info.footer.checksum:08x}"
    data["footer"]["magic"] = info.footer.magic.decode("ascii", "replace")
    if info.error is None:
        del data["error"]
    else:
        data["error"] = str(info.error)
    return data


def _print_info(info):
    f, b, fl = info.footer, info.data_blocks, info.filter
    types = ", ".join(f"{n} {name}" for name, n in b.types.items()) or "none"
    if b.uncompressed_bytes is not None and b.uncompressed_bytes != b.bytes:
        types += f"; {b.uncompressed_bytes} bytes uncompressed"
    if fl.distinct_keys is not None:
        keys = f"{fl.distinct_keys} distinct keys"
    else:
        keys = f"{info.entries} entries (data unreadable)"
    rows = [
        ("file", info.file),
        ("size", f"{info.file_size} bytes"),
        ("format version", info.format_version),
        ("footer", f"filter {f.filter.offset}+{f.filter.size}, "
                   f"properties {f.properties.offset}+{f.properties.size}, "
                   f"index {f.index.offset}+{f.index.size} (offset+size); "
                   f"checksum 0x{f.checksum:08x}; magic {f.magic.decode('ascii', 'replace')}"),
        ("data blocks", f"{b.count} holding {b.bytes} bytes ({types}); sizes min {b.min} / avg "
                        f"{b.avg} / max {b.max} (as stored, each + {BLOCK_TRAILER}-byte trailer)"),
        ("index entries", info.index_entries),
        ("filter", f"{fl.bytes} bytes, {fl.probes} probes, {fl.bits} bits over {keys}"
                   f" = {fl.bits_per_key} bits per key"),
        ("smallest key", show(info.smallest_key)),
        ("largest key", show(info.largest_key)),
        ("entries", info.entries),
        ("tombstones", info.tombstones),
        ("raw key bytes", f"{info.raw_key_bytes} (internal keys: user key + 8)"),
        ("raw value bytes", info.raw_value_bytes),
        ("creator", info.creator),
    ]
    for label, value in rows:
        click.echo(f"{label:<16} {value}")


@click.group(cls=_Main)
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
    table = inspection.open_table(file)
    try:
        info = inspection.table_info(table)
    finally:
        table.close()
    if as_json:
        click.echo(json.dumps(info_json(info), indent=2))
    else:
        _print_info(info)
    if info.error is not None:
        raise Failure(str(info.error))


# ---- dump ---------------------------------------------------------------------------


def siblings(key, value):
    """The (value, timestamp) versions of a node's stored object (value None
    for a tombstone), or None when value is not a stored object."""
    try:
        return dvv.values(objects.decode(value, key))
    except CorruptionError:
        return None


def _sibling_text(versions):
    parts = [f"tombstone @{ts}" if v is None else f"{preview(v)} @{ts}" for v, ts in versions]
    count = f"{len(versions)} sibling" + ("" if len(versions) == 1 else "s")
    return f"object, {count}: " + ", ".join(parts)


def entry_line(entry, raw=False, as_json=False):
    """One dump line for an inspect.Entry."""
    versions = None if raw or entry.kind != "put" else siblings(entry.key, entry.value)
    if as_json:
        row = {"key": preview(entry.key, raw), "seq": entry.seq, "kind": entry.kind,
               "value": preview(entry.value, raw)}
        if versions is not None:
            row["siblings"] = [{"value": None if v is None else preview(v), "timestamp": ts,
                                "bytes": None if v is None else len(v)} for v, ts in versions]
        return json.dumps(row)
    value = preview(entry.value, raw) if versions is None else _sibling_text(versions)
    return f"{preview(entry.key, raw)}\t{entry.seq}\t{entry.kind}\t{value}"


@main.command()
@click.argument("file", type=click.Path())
@click.option("--limit", type=click.IntRange(min=0), default=None, metavar="N",
              help="Stop after N entries.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per entry: key, seq, kind, value (and a stored "
                   "object's siblings).")
@click.option("--raw", is_flag=True,
              help="Every byte of every key and value, objects not decoded.")
@_friendly
def dump(file, limit, as_json, raw):
    """Print the entries of the SSTable FILE in order.

    One line per entry: user key, sequence, kind (put or delete) and value,
    separated by tabs (a tab inside a key or value is shown as \\t).  A key or
    value longer than 64 bytes is cut there ("..." and its length follow)
    unless --raw; a node's stored object is shown as its siblings, each with
    its timestamp (ms)."""
    table = inspection.open_table(file)
    try:
        for entry in inspection.entries(table, limit):
            click.echo(entry_line(entry, raw, as_json))
    finally:
        table.close()


# ---- verify -------------------------------------------------------------------------


def _print_finding(finding):
    label = "FAULT" if finding.severity == FAULT else "WARNING"
    click.echo(f"{label} {finding}")


@main.command()
@click.argument("path", type=click.Path())
@click.option("--wal-recovery", type=click.Choice(CHOICES["wal_recovery"]), default="strict",
              show_default=True, help="The engine option the logs are judged by.")
@_friendly
def verify(path, wal_recovery):
    """Check the SSTable PATH, or all files of the data directory PATH.

    For a table: the footer, every block checksum, key order, the index and the
    properties.  For a directory (one with CURRENT): the MANIFEST replayed as
    the engine replays it, every .sst against its manifest entry, and every
    write-ahead log read as the engine reads it.  One line per fault (what the
    engine would refuse) or warning (what it drops or deletes when it opens),
    naming the file and offset where known.  Exit code 0 when no fault was
    found (warnings allowed), 1 otherwise."""
    report = verify_path(path, wal_recovery, listener=_print_finding)
    c = report.counts
    checked = f"{c['tables']} table(s) with {c['entries']} entries"
    if report.kind == "directory":
        checked += (f", {c['manifest records']} manifest record(s), {c['logs']} log(s) with "
                    f"{c['log records']} record(s)")
    verdict = "clean" if report.clean else f"{report.faults} fault(s)"
    if report.warnings:
        verdict += f", {report.warnings} warning(s)"
    click.echo(f"{path}: {checked}: {verdict}")
    if not report.clean:
        sys.exit(1)


# ---- compact ------------------------------------------------------------------------


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
