"""The database directory, as both disk engines open and write it.

- open_directory: the create_if_missing rule, then the LOCK file.  As in
  LevelDB and RocksDB, a directory that is missing or holds none of the
  engine's files is a database only with create_if_missing=True (it is then
  created); with False the open is refused, naming the path, and nothing is
  written.
- DirectoryLock: flock(LOCK_EX) on LOCK for as long as an engine has the
  directory, so that a second engine (in this process or another) is refused.
- reader_lock: flock(LOCK_SH) for a tool that only reads (verify), so that
  no engine opens the directory while it reads.
- write_synced, fsync_dir and replace_durably: a file put in place so that a crash leaves
  either the old file or the new one, never a mix and never neither."""
import errno
import fcntl
import os

from rldb.errors import InvalidArgumentError, StorageIOError

LOCK = "LOCK"


def fsync_dir(path):
    """Makes the directory's entries (files created, renamed, deleted) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path, data, mode=os.O_EXCL):
    """Writes all of data to path (O_EXCL: a new file; O_TRUNC: replace its
    content) and fsyncs it; the caller fsyncs the directory."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | mode, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(path, data, tmp=None):
    """Puts data at path atomically and durably: written to tmp (path + ".tmp"
    unless given), fsynced, renamed over path, then the directory fsynced.
    A failure before the rename removes tmp and leaves path as it was."""
    if tmp is None:
        tmp = path + ".tmp"
    try:
        write_synced(tmp, data, os.O_TRUNC)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(os.path.dirname(path) or ".")


class DirectoryLock:
    """An exclusive flock on dirname/LOCK (created if need be), held until
    release().  A directory another engine holds is refused with
    StorageIOError "... is in use by another engine"."""

    __slots__ = ("path", "_fd")

    def __init__(self, dirname):
        self.path = os.path.join(dirname, LOCK)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageIOError(exc.errno, f"cannot open {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise StorageIOError(exc.errno, f"{dirname} is in use by another engine") from None
            raise StorageIOError(exc.errno, f"cannot lock {self.path}: {exc.strerror}") from None
        self._fd = fd

    @property
    def held(self):
        return self._fd is not None

    def release(self):
        """Closes LOCK (which drops the flock); releasing twice does nothing."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def reader_lock(dirname):
    """A shared flock on dirname/LOCK for a reader: (fd to close or None,
    True when an engine holds the directory now).  No LOCK file: (None,
    False), there is nothing to hold."""
    try:
        fd = os.open(os.path.join(dirname, LOCK), os.O_RDONLY)
    except OSError:
        return None, False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        return None, exc.errno in (errno.EWOULDBLOCK, errno.EACCES)
    return fd, False


def open_directory(path, kind, create_if_missing, holds_database):
    """Applies the create_if_missing rule to path and locks it; returns the
    DirectoryLock.  holds_database(names) tells whether a listing of the
    directory shows one of the engine's databases (possibly a damaged one,
    which the engine then reports)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise InvalidArgumentError(f"{path} is not a directory, so it cannot hold a {kind} database")
    if not os.path.isdir(path):
        if not create_if_missing:
            raise InvalidArgumentError(
                f"no {kind} database in {path}: the directory does not exist "
                f"(create_if_missing=False)")
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise StorageIOError(exc.errno, f"cannot create {path}: {exc.strerror}") from None
    elif not create_if_missing:
        try:
            names = os.listdir(path)
        except OSError as exc:
            raise StorageIOError(exc.errno, f"cannot list {path}: {exc.strerror}") from None
        if not holds_database(names):
            raise InvalidArgumentError(
                f"no {kind} database in {path}: the directory holds none "
                f"(create_if_missing=False)")
    return DirectoryLock(path)
