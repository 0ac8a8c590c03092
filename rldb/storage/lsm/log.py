"""LevelDB's log format, used by the write-ahead log and the MANIFEST.

The file is a run of 32 KiB blocks.  A record is split into fragments that
never cross a block boundary; each fragment has a 7-byte header: masked
CRC-32C (of the type byte and the data), fixed16 length, type (FULL, FIRST,
MIDDLE, LAST).  A block tail shorter than a header is zero-filled.  A crash can
only tear the end of the file; the reader stops there and says how many bytes it
dropped, and refuses a file whose damage is followed by intact records."""
import os
import struct
import threading

from rldb._core.checksum import crc32c, unmask_crc
from rldb._core.log_writer import LogFramer
from rldb.errors import CorruptionError, StorageIOError

BLOCK_SIZE = 32768
HEADER_SIZE = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
_HEADER = struct.Struct("<IHB")
_TYPE_CRC = {t: crc32c(bytes([t])) for t in (FULL, FIRST, MIDDLE, LAST)}


class LogWriter:
    """Appends records to a log file with write(2) from C (so a process crash
    loses nothing written); fsync is separate so that threads can share one
    (group commit: sync_to returns at once when another thread's fsync already
    covered this writer's bytes)."""

    def __init__(self, path, number=None):
        self.path = path
        self.number = number
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            size = os.fstat(self._fd).st_size
        except OSError as exc:
            raise StorageIOError(exc.errno, f"cannot open log {path}: {exc.strerror}") from None
        self._framer = LogFramer(self._fd, size)
        self._synced = size
        self._sync_lock = threading.Lock()
        self.syncs = 0

    @property
    def written(self):
        return self._framer.written()

    def _io_error(self, exc):
        return StorageIOError(exc.errno, f"write to {self.path} failed: {exc.strerror}")

    def add(self, payload):
        """Appends one record; returns the file position after it."""
        try:
            self._framer.add(payload)
        except OSError as exc:
            raise self._io_error(exc) from None
        return self._framer.written()

    def put(self, memtable, seq, kind, key, value):
        """Logs one put or delete and inserts it into memtable, in one C call."""
        try:
            self._framer.put(memtable, seq, kind, key, value)
        except OSError as exc:
            raise self._io_error(exc) from None

    def sync_to(self, position):
        """Returns once every byte before position is on stable storage."""
        if self._synced >= position:
            return
        with self._sync_lock:
            if self._synced >= position or self._fd is None:
                return
            target = self._framer.written()
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                raise StorageIOError(exc.errno, f"fsync of {self.path} failed: {exc.strerror}") from None
            self.syncs += 1
            self._synced = target

    def sync(self):
        self.sync_to(self._framer.written())

    def close(self, sync=True):
        with self._sync_lock:
            if self._fd is None:
                return
            try:
                if sync:
                    os.fdatasync(self._fd)
                    self._synced = self._framer.written()
            finally:
                os.close(self._fd)
                self._fd = None


class LogReadResult:
    """What a log held: the records, and where and why reading stopped early."""

    def __init__(self):
        self.records = []          # (offset, payload)
        self.dropped_bytes = 0
        self.stopped_at = None
        self.reason = None
        self.intact_after = False  # intact records follow the damage: not a torn tail


def _parse(data, start):
    """Yields (offset, payload) from start; stops at the first fault with
    (None, (drop_from, check_from, reason)): what follows drop_from is lost,
    and intact fragments from check_from on mean the damage is not a tail."""
    pos = start
    n = len(data)
    parts = []
    record_start = None
    while pos < n:
        left = BLOCK_SIZE - pos % BLOCK_SIZE
        if left < HEADER_SIZE:
            pos += left
            continue
        if n - pos < HEADER_SIZE:
            yield None, (pos, pos, "truncated fragment header")
            return
        masked, length, kind = _HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0 and masked == 0:
            yield None, (pos, pos, "zero-filled space")
            return
        if length > left - HEADER_SIZE or pos + HEADER_SIZE + length > n:
            yield None, (pos, pos, "fragment runs past its block or the file")
            return
        fragment = data[pos + HEADER_SIZE:pos + HEADER_SIZE + length]
        if kind not in _TYPE_CRC or crc32c(fragment, _TYPE_CRC[kind]) != unmask_crc(masked):
            yield None, (pos, pos, "checksum mismatch")
            return
        if kind in (FULL, FIRST):
            if parts:
                yield None, (record_start, pos, "record missing its last fragment")
                return
            record_start = pos
        elif not parts:
            yield None, (pos, pos, "fragment without a first fragment")
            return
        parts.append(fragment)
        pos += HEADER_SIZE + length
        if kind in (FULL, LAST):
            yield record_start, b"".join(parts)
            parts = []
    if parts:  # the file ends inside a record: a torn tail, nothing after it
        yield None, (record_start, n, "record missing its last fragment")


def _valid_fragment_at(data, pos):
    """True when a fragment with a good checksum starts at pos."""
    if len(data) - pos < HEADER_SIZE or BLOCK_SIZE - pos % BLOCK_SIZE < HEADER_SIZE:
        return False
    masked, length, kind = _HEADER.unpack_from(data, pos)
    if kind not in _TYPE_CRC or length > BLOCK_SIZE - pos % BLOCK_SIZE - HEADER_SIZE:
        return False
    fragment = data[pos + HEADER_SIZE:pos + HEADER_SIZE + length]
    return len(fragment) == length and crc32c(fragment, _TYPE_CRC[kind]) == unmask_crc(masked)


def _intact_data_after(data, pos):
    """True when a fragment with a good checksum starts at or after pos: then
    the damage is in the middle of the log, not a torn tail.  Fragments are
    contiguous, so the candidates are pos itself, where the fragment at pos
    says it ends (a flipped data byte leaves its length intact), every later
    block boundary, and, inside pos's block, where a damaged length hides the
    next fragment, every offset."""
    candidates = [pos]
    if len(data) - pos >= HEADER_SIZE:
        length = _HEADER.unpack_from(data, pos)[1]
        candidates.append(pos + HEADER_SIZE + length)
    candidates.extend(range(pos + 1, min(len(data), (pos // BLOCK_SIZE + 1) * BLOCK_SIZE)))
    block = pos // BLOCK_SIZE + 1
    while block * BLOCK_SIZE < len(data):
        candidates.append(block * BLOCK_SIZE)
        block += 1
    for start in candidates:
        if start % BLOCK_SIZE and BLOCK_SIZE - start % BLOCK_SIZE < HEADER_SIZE:
            start += BLOCK_SIZE - start % BLOCK_SIZE
        if _valid_fragment_at(data, start):
            return True
    return False


def read_log(path, strict=True):
    """Every intact record of the log at path.  A damaged tail is dropped (and
    reported); damage followed by intact records raises CorruptionError when
    strict, and otherwise ends the read there too (keeping a prefix)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise StorageIOError(exc.errno, f"cannot read {path}: {exc.strerror}") from None
    result = LogReadResult()
    for offset, payload in _parse(data, 0):
        if offset is None:
            stop, check_from, reason = payload
            result.intact_after = _intact_data_after(data, check_from)
            if strict and result.intact_after:
                raise CorruptionError(f"log damaged ({reason}) before intact records", path, stop)
            result.stopped_at, result.reason = stop, reason
            result.dropped_bytes = len(data) - stop
            break
        result.records.append((offset, payload))
    return result


def check_tail_is_last(path, result, last):
    """Of a run of write-ahead logs replayed in order, only the last may have
    lost a tail: a crash tears only the log being written, so a dropped tail
    in an earlier one is damage (CorruptionError), whatever wal_recovery says."""
    if result.dropped_bytes and not last:
        raise CorruptionError(f"log damaged ({result.reason}) and later logs exist",
                              path, result.stopped_at)
