"""What the LSM engine reads at open, before it writes anything: whether the
directory holds a database, the MANIFEST that CURRENT names, and the
write-ahead logs the MANIFEST does not cover yet, replayed into a memtable.

The engine then writes that memtable to an L0 table, starts a new MANIFEST
and a new log (engine.py, LSMEngine._recover)."""
import logging
import os

from rldb._core.memtable import Memtable
from rldb.errors import CorruptionError
from rldb.storage.lsm.batch import decode_batch
from rldb.storage.lsm.format import CURRENT, log_name, parse_name
from rldb.storage.lsm.log import check_tail_is_last, read_log
from rldb.storage.lsm.version import VersionSet

log = logging.getLogger("rldb.lsm")


def holds_database(names):
    """True when a directory listing shows an LSM database: CURRENT, or any
    log, table or manifest (a directory that has those but no CURRENT is a
    damaged database, reported by load_state, not an empty one)."""
    for name in names:
        if name == CURRENT:
            return True
        parsed = parse_name(name)
        if parsed is not None and parsed[0] != "temp":
            return True
    return False


def load_state(path, strict, counters):
    """(VersionSet, memtable of the logs' writes, their bytes) of the database
    in path; a directory without one gives an empty state.  strict: a damaged
    log with intact records after the damage raises (wal_recovery="strict")
    rather than losing them.  counters["wal_records"] and
    counters["wal_dropped_bytes"] grow by what the replay found."""
    names = os.listdir(path)
    parsed = [(parse_name(n), n) for n in names]
    versions = VersionSet(path)
    if CURRENT in names:
        versions.recover()
    elif any(p is not None and p[0] != "temp" for p, _ in parsed):
        raise CorruptionError("CURRENT is missing but the directory holds database files",
                              os.path.join(path, CURRENT))
    # Files a crash left behind (a table written before its manifest edit)
    # may carry numbers past next_file: never hand those out again.
    numbers = [p[1] for p, _ in parsed if p is not None]
    versions.next_file = max([versions.next_file] + [n + 1 for n in numbers])
    logs = sorted(p[1] for p, _ in parsed
                  if p is not None and p[0] == "log" and p[1] >= versions.log_number)
    mem = Memtable(seed=len(logs) + 1)
    mem_bytes = 0
    last_seq = versions.last_seq
    for i, number in enumerate(logs):
        log_path = os.path.join(path, log_name(number))
        result = read_log(log_path, strict=strict)
        check_tail_is_last(log_path, result, i == len(logs) - 1)
        if result.dropped_bytes:
            log.warning("%s: dropped a torn tail of %d bytes at offset %d (%s)", log_path,
                        result.dropped_bytes, result.stopped_at, result.reason)
            counters["wal_dropped_bytes"] += result.dropped_bytes
        for offset, payload in result.records:
            try:
                seq, ops = decode_batch(payload)
            except CorruptionError as exc:
                raise CorruptionError(str(exc), log_path, offset) from None
            if ops:
                mem.add_batch(seq, ops)
                mem_bytes += sum(len(k) + len(v) for _, k, v in ops)
            last_seq = max(last_seq, seq + len(ops) - 1)
            counters["wal_records"] += 1
    versions.last_seq = last_seq
    return versions, mem, mem_bytes
