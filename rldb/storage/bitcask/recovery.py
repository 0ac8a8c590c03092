"""Opening a Bitcask directory: the keydir rebuilt from the files on disk.

A committed merge is finished first (merge.finish_manifest), *.tmp files are
deleted, then every data file is loaded in (rank, id) order, from its hint
where the hint is intact and matches the data file's size, else by a scan
that checks every entry's CRC (and writes a new hint).  The newest file the
writer created may end in a torn entry or batch: it is cut back to the last
complete one.  Damage anywhere else raises CorruptionError naming the file
and offset; so does damage followed by intact entries in the newest file,
which a power loss with sync=False can also leave (pages written back out of
order): the open refuses rather than drop entries that may have been
acknowledged (like the LSM engine's wal_recovery="strict")."""
import logging
import os

from rldb._core.bitcask import BC_SCAN_CORRUPT, BC_SCAN_TORN
from rldb.errors import CorruptionError
from rldb.storage.bitcask import files as fs
from rldb.storage.bitcask.merge import finish_manifest
from rldb.storage.directory import LOCK, fsync_dir

log = logging.getLogger("rldb.bitcask")


def holds_database(names):
    """True when a directory listing shows a Bitcask database: its LOCK (an
    empty database has nothing else), a data or hint file, or a MERGE."""
    return any(n in (LOCK, fs.MERGE) or fs.parse_name(n) is not None for n in names)


def recover(files, counters):
    """Loads every data file of files.path into files (a DataFiles, attached
    to its C handle) and sets files.next_id past every id on disk.  counters
    (hints_loaded, hints_rejected, files_scanned, truncated_bytes) grow by
    what was found."""
    path = files.path
    if os.path.exists(files.path_of(fs.MERGE)):
        finish_manifest(path)
    data, hints, ids = [], set(), [0]
    for name in os.listdir(path):
        if name.endswith(fs.TMP):
            # Uncommitted: a merge output, or the hint of the file that
            # was active (it is scanned below).
            fs.unlink(files.path_of(name))
            base = fs.parse_name(name[:-len(fs.TMP)])
            if base is not None:
                ids.append(base[1])
            continue
        parsed = fs.parse_name(name)
        if parsed is None:
            continue
        rank, file_id, kind = parsed
        ids.append(file_id)
        if kind == "data":
            data.append((rank, file_id))
        else:
            hints.add((rank, file_id))
    files.next_id = max(ids) + 1
    for rank, file_id in set(hints) - set(data):
        fs.unlink(files.path_of(fs.hint_name(rank, file_id)))
    written = [file_id for rank, file_id in data if rank == file_id]
    newest = max(written, default=None)  # the file that was active last
    for rank, file_id in sorted(data):
        _load_file(files, counters, rank, file_id, (rank, file_id) in hints, file_id == newest)
    fsync_dir(path)


def _load_file(files, counters, rank, file_id, has_hint, may_be_torn):
    f, size = files.load(rank, file_id)
    if has_hint:
        hint_path = files.path_of(f.hint_name())
        hint = fs.read_file(hint_path)
        why = files.bc.load_hint(f.slot, hint)
        if why is None:
            counters["hints_loaded"] += 1
            return
        if why == "size":
            described = int.from_bytes(hint[-20:-12], "little")
            raise CorruptionError(
                f"the data file is {size} bytes but its hint (intact) was written for "
                f"{described} bytes: the data file was cut short or added to",
                files.path_of(f.data_name()))
        counters["hints_rejected"] += 1
        log.warning("%s: hint ignored (%s); scanning the data file", hint_path, why)
    _scan_file(files, counters, f, size, may_be_torn)


def _zeros(fd, start, end):
    """True when bytes [start, end) of the file are all zero: space that
    sync mode preallocated and a failed truncation left behind."""
    while start < end:
        chunk = os.pread(fd, min(end - start, 1 << 20), start)
        if not chunk or chunk.count(0) != len(chunk):
            return False
        start += len(chunk)
    return True


def _scan_file(files, counters, f, size, may_be_torn):
    """Loads a data file by reading every entry, and writes its hint."""
    bc = files.bc
    path = files.path_of(f.data_name())
    hint_tmp = files.path_of(f.hint_name() + fs.TMP)
    hint_fd = os.open(hint_tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        status, end, bad = bc.scan(f.slot, True, hint_fd)
        counters["files_scanned"] += 1
        if status == BC_SCAN_CORRUPT:
            raise CorruptionError("damaged entry (intact entries follow it)", path, bad)
        if status == BC_SCAN_TORN:
            if not may_be_torn and not _zeros(f.fd, end, size):
                raise CorruptionError("damaged or cut-short entry in a file no longer written",
                                      path, bad)
            log.warning("%s: cut a torn tail of %d bytes at offset %d", path, size - end, end)
            os.ftruncate(f.fd, end)
            os.fsync(f.fd)
            bc.set_file_size(f.slot, end)
            counters["truncated_bytes"] += size - end
        if end == 0:
            files.remove(f)  # nothing in it
            fs.unlink(hint_tmp)
            return
        os.fsync(hint_fd)
        os.rename(hint_tmp, files.path_of(f.hint_name()))
    except BaseException:
        fs.unlink(hint_tmp)
        raise
    finally:
        os.close(hint_fd)
