"""Verification of an SSTable or of a whole LSM data directory, by the
engine's own rules, as a Report of Findings.

The MANIFEST is replayed by version.replay_manifest, the replay opening does;
logs are read by log.read_log under the engine's wal_recovery rule and
log.check_tail_is_last; tables are read through Table.  So a FAULT is what the
engine would refuse (when it opens, on a read, or in check()), and a WARNING
is what it accepts or repairs when it opens (a torn tail it drops, a file it
deletes).  Nothing is written: a shared lock on LOCK keeps an engine from
opening meanwhile."""
import os
import stat
from dataclasses import dataclass, field

from rldb.errors import CorruptionError, InvalidArgumentError, RldbError
from rldb.storage.directory import reader_lock
from rldb.storage.lsm.batch import decode_batch
from rldb.storage.lsm.finding import FAULT, WARNING, Finding, bare_message
from rldb.storage.lsm.format import CURRENT, log_name, parse_name, table_name
from rldb.storage.lsm.inspect import check_table_file, stat_path, table_number
from rldb.storage.lsm.log import check_tail_is_last, read_log
from rldb.storage.lsm.options import CHOICES
from rldb.storage.lsm.table import Table
from rldb.storage.lsm.version import replay_manifest


@dataclass
class Report:
    """What verification found, in the order found; listener(finding), when
    set, sees each one as it is found (a tool prints them as they come)."""
    kind: str = "table"   # "table" or "directory": what was verified
    findings: list = field(default_factory=list)
    counts: dict = field(default_factory=lambda: {
        "tables": 0, "entries": 0, "manifest records": 0, "logs": 0, "log records": 0})
    listener: object = field(default=None, repr=False, compare=False)

    @property
    def faults(self):
        return sum(1 for f in self.findings if f.severity == FAULT)

    @property
    def warnings(self):
        return sum(1 for f in self.findings if f.severity == WARNING)

    @property
    def clean(self):
        return self.faults == 0

    def add(self, finding):
        self.findings.append(finding)
        if self.listener is not None:
            self.listener(finding)

    def fault(self, path, offset, message, warning=False):
        self.add(Finding(WARNING if warning else FAULT, path, offset, message))

    def warn(self, path, offset, message):
        self.fault(path, offset, message, warning=True)

    def error(self, exc, path, warning=False, note=""):
        """Records an exception raised while reading path."""
        self.add(Finding.from_error(exc, path, WARNING if warning else FAULT, note))


# ---- one table --------------------------------------------------------------------


def verify_table(path, report=None, meta=None, obsolete=False):
    """Every block checksum, then Table.verify() (key order, index,
    properties), then the manifest's record of the file (meta).  An obsolete
    table's problems are only warnings: the engine deletes it."""
    report = report if report is not None else Report()
    note = " (table not in the manifest)" if obsolete else ""
    report.counts["tables"] += 1
    try:
        table = Table(path, table_number(path))
    except (RldbError, OSError) as exc:
        report.error(exc, path, obsolete, note)
        return report
    try:
        damaged = False
        for i, (offset, size) in enumerate(table.index.handles):
            try:
                table.block(i)
            except CorruptionError as exc:
                damaged = True
                message = bare_message(exc).removeprefix("block: ")
                report.fault(path, offset, f"data block {i} of {size} bytes: {message}{note}",
                             obsolete)
        if damaged:
            return report
        try:
            count = table.verify()
        except CorruptionError as exc:
            report.error(exc, path, obsolete, note)
            return report
        report.counts["entries"] += count
        if meta is not None:
            _compare_with_manifest(table, count, meta, report)
    finally:
        table.close()
    return report


def _compare_with_manifest(table, count, meta, report):
    """What engine.check() compares: size, entries and key range."""
    props = table.properties
    if table.file_size != meta.size:
        report.fault(table.path, None, f"table is {table.file_size} bytes, the manifest says "
                                       f"{meta.size}")
    if count != meta.entries:
        report.fault(table.path, None, f"table holds {count} entries, the manifest says "
                                       f"{meta.entries}")
    smallest, largest = props.get("smallest_key"), props.get("largest_key")
    if smallest != meta.smallest or largest != meta.largest:
        report.fault(table.path, None, f"table has keys {smallest!r} .. {largest!r}, the "
                                       f"manifest says {meta.smallest!r} .. {meta.largest!r}")


# ---- the MANIFEST -----------------------------------------------------------------


def verify_manifest(dirname, report):
    """Replays the MANIFEST as opening does; its ManifestState, or None when
    the engine would refuse it (the reason is a fault).  Edits the replay
    accepts but that make no sense (deleting a table the level does not hold)
    are warnings."""
    current = os.path.join(dirname, CURRENT)
    records = []

    def observe(before, offset, edit):
        records.append(offset)
        where, version = before.path, before.version
        held = {(level, f.number) for level, f in version.files()}
        for level, number in edit.deleted:
            if (level, number) not in held:
                report.warn(where, offset, f"record deletes table {number} from level {level}, "
                                           f"which does not hold it")
        moved = {number for _, number in edit.deleted}
        live = version.numbers()
        for level, meta in edit.added:
            if meta.number in live and meta.number not in moved:
                report.warn(where, offset, f"record adds table {meta.number} to level {level}, "
                                           f"but it is already live")

    try:
        state = replay_manifest(dirname, observe)
    except (RldbError, OSError) as exc:
        report.counts["manifest records"] += len(records)
        report.error(exc, current, note=": the engine will not open")
        return None
    report.counts["manifest records"] += len(records)
    read = state.read
    if read.dropped_bytes:
        report.warn(state.path, read.stopped_at,
                    f"torn tail: {read.dropped_bytes} bytes after the last intact record "
                    f"({read.reason}); the engine ignores them")
    for _, meta in state.version.files():
        if meta.number >= state.next_file:
            report.warn(state.path, None, f"live table {meta.number} is not below next_file "
                                          f"{state.next_file}")
    return state


# ---- the write-ahead logs ---------------------------------------------------------


def verify_logs(dirname, numbers, log_number, report, wal_recovery="strict"):
    """Every write-ahead log, read as opening reads it: the logs from
    log_number on are replayed (damage the engine refuses is a fault, a tail
    it drops a warning); older ones it deletes unread (problems are warnings)."""
    live = [n for n in numbers if n >= log_number]
    for number in numbers:
        path = os.path.join(dirname, log_name(number))
        report.counts["logs"] += 1
        if number < log_number:
            _verify_obsolete_log(path, report)
            continue
        try:
            result = read_log(path, strict=wal_recovery == "strict")
        except CorruptionError as exc:
            report.error(exc, path, note=": the engine will not open")
            result = read_log(path, strict=False)  # still check the records before it
        except (RldbError, OSError) as exc:
            report.error(exc, path)
            continue
        else:
            _report_tail(path, result, number == live[-1], report, wal_recovery)
        for offset, payload in result.records:
            report.counts["log records"] += 1
            try:
                decode_batch(payload)
            except CorruptionError as exc:
                report.fault(path, offset, f"unreadable write batch ({bare_message(exc)}): "
                                           f"the engine will not open")


def _report_tail(path, result, last, report, wal_recovery):
    try:
        check_tail_is_last(path, result, last)
    except CorruptionError as exc:
        report.error(exc, path, note=": the engine will not open")
        return
    if not result.dropped_bytes:
        return
    if result.intact_after:  # only under wal_recovery="prefix"
        report.warn(path, result.stopped_at,
                    f"damaged ({result.reason}) before intact records; with wal_recovery="
                    f"{wal_recovery} the engine keeps the {len(result.records)} records before "
                    f"it and drops the {result.dropped_bytes} bytes from there")
    else:
        report.warn(path, result.stopped_at,
                    f"torn tail: {result.dropped_bytes} bytes after the last intact record "
                    f"({result.reason}); dropped when the engine opens")


def _verify_obsolete_log(path, report):
    note = " (obsolete log, not replayed: the engine deletes it when it opens)"
    try:
        result = read_log(path, strict=False)
    except (RldbError, OSError) as exc:
        report.error(exc, path, warning=True, note=note)
        return
    if result.dropped_bytes:
        kind = "damaged before intact records" if result.intact_after else "torn tail"
        report.warn(path, result.stopped_at,
                    f"{kind}: {result.dropped_bytes} bytes dropped ({result.reason}){note}")
    for offset, payload in result.records:
        report.counts["log records"] += 1
        try:
            decode_batch(payload)
        except CorruptionError as exc:
            report.warn(path, offset, f"unreadable write batch ({bare_message(exc)}){note}")


# ---- a data directory -------------------------------------------------------------


def check_data_dir(path):
    """InvalidArgumentError unless path is a directory holding CURRENT."""
    st = stat_path(path, "directory")
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidArgumentError(f"{path}: not a directory, so not a data directory")
    if not os.path.exists(os.path.join(path, CURRENT)):
        raise InvalidArgumentError(f"{path}: not a data directory (it has no CURRENT file)")


def _lock_shared(dirname, report):
    """A shared lock on LOCK so that no engine opens meanwhile; a warning when
    an engine holds it now.  The fd to close, or None."""
    fd, engine_has_it = reader_lock(dirname)
    if engine_has_it:
        report.warn(dirname, None, "the database is open in an engine: files may change "
                                   "while they are read, and faults may be spurious")
    return fd


def verify_dir(dirname, wal_recovery="strict", listener=None):
    """The MANIFEST, every table (live ones against their manifest entry) and
    every write-ahead log of the data directory dirname."""
    if wal_recovery not in CHOICES["wal_recovery"]:
        raise InvalidArgumentError(f"wal_recovery must be one of "
                                   f"{', '.join(CHOICES['wal_recovery'])}, not {wal_recovery!r}")
    dirname = os.fspath(dirname)
    check_data_dir(dirname)
    report = Report(kind="directory", listener=listener)
    lock_fd = _lock_shared(dirname, report)
    try:
        state = verify_manifest(dirname, report)
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
        for number in sorted(tables - set(live)):
            path = os.path.join(dirname, table_name(number))
            if state is not None:  # the engine removes it when it opens
                fate = ("moves it to lost/ (the manifest has a torn tail)"
                        if state.read.dropped_bytes else "deletes it")
                report.warn(path, None, f"not in the manifest (left over; the engine {fate} "
                                        f"when it opens)")
            verify_table(path, report, obsolete=state is not None)
        verify_logs(dirname, logs, state.log_number if state else 0, report, wal_recovery)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)
    return report


def verify_path(path, wal_recovery="strict", listener=None):
    """verify_dir for a directory, else verify_table for an SSTable file
    (InvalidArgumentError when path is neither)."""
    path = os.fspath(path)
    st = stat_path(path, "file or directory")
    if stat.S_ISDIR(st.st_mode):
        return verify_dir(path, wal_recovery, listener)
    check_table_file(path)
    return verify_table(path, Report(kind="table", listener=listener))
