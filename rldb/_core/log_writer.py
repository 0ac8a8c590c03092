"""The log writer (csrc/log_writer.c): records framed in LevelDB's log
format and written to a WAL or MANIFEST, a put also inserted into the
memtable in the same C call."""
from rldb._core.loader import check, ffi, lib

__all__ = ["LogFramer"]


class LogFramer:
    """Frames records in LevelDB's log format and write(2)s them to fd (owned by
    the caller); put() also inserts the op into a memtable, in one C call.
    A failed write raises StorageIOError with the bare errno text: the caller,
    which knows the file, says what failed."""

    __slots__ = ("_w",)

    def __init__(self, fd, file_size):
        w = lib.rldb_log_writer_new(fd, file_size)
        if w == ffi.NULL:
            raise MemoryError("cannot allocate a log writer")
        self._w = ffi.gc(w, lib.rldb_log_writer_free)

    def add(self, payload):
        rc = lib.rldb_log_add(self._w, payload, len(payload))
        if rc:
            check(rc, err=lib.rldb_log_errno(self._w))

    def put(self, memtable, seq, kind, key, value):
        rc = lib.rldb_log_put(self._w, memtable._mt, seq, kind, key, len(key), value, len(value))
        if rc:
            check(rc, err=lib.rldb_log_errno(self._w))

    def written(self):
        return lib.rldb_log_written(self._w)
