"""The Bitcask engine (Basho's design: append-only data files, an in-memory
keydir naming every key's newest entry, hint files, merges).

    from rldb.storage import open_engine
    with open_engine("bitcask", "/tmp/db", sync=True) as db:
        db.put(b"k", b"v")

Files and their layouts: files.py and docs/formats.md (section "Bitcask").

Threading model: any number of threads may call any method at once.
- get, put and delete are one C call each (csrc/bitcask.c): the C side
  serialises appends and keydir changes under its own locks and releases the
  GIL, so other threads read while one writes or waits for an fdatasync; with
  sync=True the writers waiting at once share one fdatasync (group commit).
- A write that finds the active file full rolls it (in Python, under
  _roll_lock): the file is sealed, fdatasynced, its hint completed and renamed
  into place, and a new file becomes active; then the write is tried again.
- Merges run one at a time (_merge_lock) in a background thread, or inline in
  the write that rolled with background_merge=False; see merge.py.
- The C side may only be told to forget a file (and Python then closes its
  descriptor) when the keydir no longer points into it, and a get holds the
  C read lock across its pread, so no read meets a closed descriptor.

Recovery on open: a committed merge is finished (merge.finish_manifest), *.tmp
files are deleted, then every data file is loaded in (rank, id) order, from
its hint where the hint is intact and matches the data file's size, else by a
scan that checks every entry's CRC (and writes a new hint).  The newest file
the writer created may end in a torn entry or batch: it is cut back to the
last complete one.  Damage anywhere else raises CorruptionError naming the
file and offset; so does damage followed by intact entries in the newest file,
which a power loss with sync=False can also leave (pages written back out of
order): the open refuses rather than drop entries that may have been
acknowledged (like the LSM engine's wal_recovery="strict").  Each open then
starts a new active file."""
import errno
import fcntl
import logging
import os
import threading

from rldb import _core
from rldb.errors import ClosedError, CorruptionError, InvalidArgumentError, NotSupportedError
from rldb.errors import StorageIOError
from rldb.storage.bitcask import files as fs
from rldb.storage.bitcask.merge import (
    ACTIVE,
    IMMUTABLE,
    OUTPUT,
    MergeAborted,
    finish_manifest,
    pick_inputs,
    run_merge,
)
from rldb.storage.bitcask.options import DEFAULTS, validate
from rldb.storage.engine import (
    Engine,
    check_key,
    check_options,
    check_value,
    normalize_batch,
    raise_closed,
)

log = logging.getLogger("rldb.bitcask")

_COUNTERS = ("rolls", "merges", "merge_failures", "merge_bytes_read", "merge_bytes_written",
             "tombstones_dropped", "hints_loaded", "hints_rejected", "files_scanned",
             "truncated_bytes")


class DataFile:
    """One data file: its place in the recovery order (rank, id), its slot in
    the C file table, its descriptor, and whether it is the active file, an
    immutable one, or a merge output not yet committed (named *.tmp)."""

    __slots__ = ("rank", "id", "slot", "fd", "state", "hint_fd")

    def __init__(self, rank, file_id, slot, fd, state, hint_fd=-1):
        self.rank, self.id, self.slot, self.fd = rank, file_id, slot, fd
        self.state, self.hint_fd = state, hint_fd

    def data_name(self):
        return fs.data_name(self.rank, self.id) + (fs.TMP if self.state == OUTPUT else "")

    def hint_name(self):
        return fs.hint_name(self.rank, self.id) + (fs.TMP if self.state != IMMUTABLE else "")


def _zeros(fd, start, end):
    """True when bytes [start, end) of the file are all zero: space that
    sync mode preallocated and a failed truncation left behind."""
    while start < end:
        chunk = os.pread(fd, min(end - start, 1 << 20), start)
        if not chunk or chunk.count(0) != len(chunk):
            return False
        start += len(chunk)
    return True


def _io_error(exc, what):
    return StorageIOError(exc.errno or errno.EIO, f"{what}: {exc.strerror or exc}")


class BitcaskEngine(Engine):
    kind = "bitcask"
    supports_scan = False
    DEFAULTS = DEFAULTS

    def __init__(self, path, **options):
        if path is None:
            raise InvalidArgumentError("the bitcask engine needs a directory path")
        self.options = opts = check_options(self.kind, options, DEFAULTS)
        validate(opts)
        self.path = os.fspath(path)
        self._files = {}   # slot -> DataFile
        self._by_id = {}   # id -> DataFile
        self._active = None
        self._next_id = 1
        self._closed = self._closing = False
        self._broken = None  # the error that left the engine unable to write
        self._merges_disabled = False
        self._merge_error = None
        self._merge_hook = None  # tests: called with the name of each merge step
        self._merge_running = False
        self._files_lock = threading.Lock()
        self._roll_lock = threading.Lock()
        self._merge_lock = threading.Lock()
        self._merge_cond = threading.Condition(threading.Lock())
        self._merge_requested = False
        self._merge_thread = None
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._lock_fd = None
        self._bc = None
        self._lock_dir()
        try:
            self._bc = _core.Bitcask(opts["max_file_size"], opts["sync"], self._locate)
            self._recover()
            self._new_active()
        except BaseException:
            self._release_all()
            raise
        bc = self._bc
        self.get = bc.make_get(check_key)
        self.put = bc.make_put(check_key, check_value, self._roll)
        self.delete = bc.make_delete(check_key, self._roll)
        if opts["background_merge"]:
            self._merge_thread = threading.Thread(
                target=self._merge_loop, name=f"rldb-bitcask-merge-{os.path.basename(self.path)}",
                daemon=True)
            self._merge_thread.start()
        self._maybe_merge()

    # get, put and delete are replaced per instance by closures over the C
    # calls (see __init__); these stay for the interface.
    def get(self, key):
        raise ClosedError("the engine is closed")

    def put(self, key, value):
        raise ClosedError("the engine is closed")

    def delete(self, key):
        raise ClosedError("the engine is closed")

    # ---- opening --------------------------------------------------------------

    def _lock_dir(self):
        create = self.options["create_if_missing"]
        if not os.path.isdir(self.path):
            if not create:
                raise InvalidArgumentError(f"no database in {self.path} (create_if_missing=False)")
            try:
                os.makedirs(self.path, exist_ok=True)
            except OSError as exc:
                raise _io_error(exc, f"cannot create {self.path}") from None
        elif not create and not os.path.exists(os.path.join(self.path, fs.LOCK)):
            raise InvalidArgumentError(f"no database in {self.path} (create_if_missing=False)")
        fd = os.open(os.path.join(self.path, fs.LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise StorageIOError(exc.errno, f"{self.path} is in use by another engine") from None
            raise
        self._lock_fd = fd

    def _file_path(self, name):
        return os.path.join(self.path, name)

    def _locate(self, file_id, rank):
        """The path of a data file, for error messages."""
        f = self._by_id.get(file_id)
        return self._file_path(f.data_name() if f is not None else fs.data_name(rank, file_id))

    def _register(self, f):
        with self._files_lock:
            self._files[f.slot] = f
            self._by_id[f.id] = f

    def _unregister(self, f):
        # Only if the slot still names f: once the C side has freed it, a roll
        # in another thread may have reused it already.
        with self._files_lock:
            if self._files.get(f.slot) is f:
                del self._files[f.slot]
            if self._by_id.get(f.id) is f:
                del self._by_id[f.id]

    def _recover(self):
        if os.path.exists(self._file_path(fs.MERGE)):
            finish_manifest(self.path)
        data, hints, ids = [], set(), [0]
        for name in os.listdir(self.path):
            if name.endswith(fs.TMP):
                # Uncommitted: a merge output, or the hint of the file that
                # was active (it is scanned below).
                fs.unlink(self._file_path(name))
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
        self._next_id = max(ids) + 1
        for rank, file_id in set(hints) - set(data):
            fs.unlink(self._file_path(fs.hint_name(rank, file_id)))
        written = [file_id for rank, file_id in data if rank == file_id]
        newest = max(written, default=None)  # the file that was active last
        for rank, file_id in sorted(data):
            self._load_file(rank, file_id, (rank, file_id) in hints, file_id == newest)
        fs.fsync_dir(self.path)

    def _load_file(self, rank, file_id, has_hint, may_be_torn):
        path = self._file_path(fs.data_name(rank, file_id))
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise _io_error(exc, f"cannot open {path}") from None
        try:
            size = os.fstat(fd).st_size
            if size > _core.BC_MAX_FILE_SIZE + _core.BC_HEADER + _core.BC_MAX_KEY + _core.BC_MAX_VALUE:
                raise CorruptionError(f"data file of {size} bytes is larger than any bitcask file",
                                      path)
            slot = self._bc.add_file(fd, rank, file_id, size)
        except BaseException:
            os.close(fd)
            raise
        f = DataFile(rank, file_id, slot, fd, IMMUTABLE)
        self._register(f)
        if has_hint:
            hint_path = self._file_path(f.hint_name())
            hint = fs.read_file(hint_path)
            why = self._bc.load_hint(slot, hint)
            if why is None:
                self._counters["hints_loaded"] += 1
                return
            if why == "size":
                described = int.from_bytes(hint[-20:-12], "little")
                raise CorruptionError(
                    f"the data file is {size} bytes but its hint (intact) was written for "
                    f"{described} bytes: the data file was cut short or added to", path)
            self._counters["hints_rejected"] += 1
            log.warning("%s: hint ignored (%s); scanning the data file", hint_path, why)
        self._scan_file(f, size, may_be_torn)

    def _scan_file(self, f, size, may_be_torn):
        """Loads a data file by reading every entry, and writes its hint."""
        path = self._file_path(f.data_name())
        hint_tmp = self._file_path(f.hint_name() + fs.TMP)
        hint_fd = os.open(hint_tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            status, end, bad = self._bc.scan(f.slot, True, hint_fd)
            self._counters["files_scanned"] += 1
            if status == _core.BC_SCAN_CORRUPT:
                raise CorruptionError("damaged entry (intact entries follow it)", path, bad)
            if status == _core.BC_SCAN_TORN:
                if not may_be_torn and not _zeros(f.fd, end, size):
                    raise CorruptionError("damaged or cut-short entry in a file no longer written",
                                          path, bad)
                log.warning("%s: cut a torn tail of %d bytes at offset %d", path, size - end, end)
                os.ftruncate(f.fd, end)
                os.fsync(f.fd)
                self._bc.set_file_size(f.slot, end)
                self._counters["truncated_bytes"] += size - end
            if end == 0:
                self._bc.remove_file(f.slot)  # nothing in it
                self._unregister(f)
                os.close(f.fd)
                fs.unlink(path)
                fs.unlink(hint_tmp)
                return
            os.fsync(hint_fd)
            os.rename(hint_tmp, self._file_path(f.hint_name()))
        except BaseException:
            fs.unlink(hint_tmp)
            raise
        finally:
            os.close(hint_fd)

    def _new_files(self, rank, state, sync_dir):
        """A new data file and its hint file (both created here, removed
        again if anything fails), registered with the C side."""
        with self._files_lock:
            file_id = self._next_id
            self._next_id += 1
        f = DataFile(rank if rank is not None else file_id, file_id, None, -1, state)
        fd = hint_fd = -1
        try:
            fd = os.open(self._file_path(f.data_name()), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            hint_fd = os.open(self._file_path(f.hint_name()), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                              0o644)
            if sync_dir:
                fs.fsync_dir(self.path)  # the file exists before anything in it is acknowledged
            f.slot = self._bc.add_file(fd, f.rank, file_id, 0)
        except BaseException:
            for d in (fd, hint_fd):
                if d >= 0:
                    os.close(d)
            fs.unlink(self._file_path(f.data_name()))
            fs.unlink(self._file_path(f.hint_name()))
            raise
        f.fd, f.hint_fd = fd, hint_fd
        self._register(f)
        return f

    def _new_active(self):
        """Creates the next data file and makes it the active one."""
        f = self._new_files(None, ACTIVE, sync_dir=True)
        self._bc.activate(f.slot, f.hint_fd)
        self._active = f

    def _seal_active(self):
        """No more writes to the active file: fdatasync it, complete its hint
        (or drop the file when it is empty).  Called under _roll_lock; the
        caller marks the file immutable once the C side has another active
        file (until then a merge must not pick it).  Returns the sealed file,
        or None when it was empty and is gone."""
        f = self._active
        hint_ok, size = self._bc.seal()
        hint_tmp = self._file_path(f.hint_name())
        try:
            if size == 0:
                self._bc.remove_file(f.slot)
                self._unregister(f)
                os.close(f.fd)
                os.close(f.hint_fd)
                fs.unlink(self._file_path(f.data_name()))
                fs.unlink(hint_tmp)
                self._active = None
                return None
            os.fdatasync(f.fd)
            if hint_ok:
                os.fsync(f.hint_fd)
            os.close(f.hint_fd)
            f.hint_fd = -1
            if hint_ok:
                os.rename(hint_tmp, self._file_path(fs.hint_name(f.rank, f.id)))
            else:
                log.warning("%s: the hint could not be written; the next open scans the file",
                            hint_tmp)
                fs.unlink(hint_tmp)
        except OSError as exc:
            self._broken = _io_error(exc, f"cannot close data file {f.data_name()}")
            raise self._broken from None
        self._active = None
        return f

    def _roll(self, entry_size):
        """Called by a write that found the active file full (or sealed)."""
        with self._roll_lock:
            if self._closed:
                raise ClosedError("the engine is closed")
            if self._broken is not None:
                raise self._broken
            if not self._bc.needs_roll(entry_size):
                return  # another thread rolled it meanwhile
            old = self._seal_active()
            try:
                self._new_active()  # also fsyncs the directory: the hint's rename too
            except OSError as exc:
                self._broken = _io_error(exc, "cannot create a data file")
                raise self._broken from None
            if old is not None:
                with self._files_lock:
                    old.state = IMMUTABLE
            self._counters["rolls"] += 1
        self._maybe_merge()

    # ---- writing --------------------------------------------------------------

    def write_batch(self, ops):
        ops = normalize_batch(ops)
        if self._closed:
            raise ClosedError("the engine is closed")
        if ops:
            self._bc.write_batch(ops, self._roll)

    def flush(self):
        """Makes every acknowledged write durable (fdatasync of the active file;
        the others were synced when they were rolled or merged)."""
        self._check_open()
        self._bc.sync()

    # ---- reading ----------------------------------------------------------------

    def scan(self, start=None, end=None, reverse=False):
        self._check_open()
        raise NotSupportedError(
            "the bitcask engine keeps keys in a hash table, in no order, so it cannot scan a "
            "range: use keys() for every key in no particular order, or the lsm engine "
            "(open_engine('lsm', path)) for ordered scans")

    def keys(self):
        """Every key, in no particular order (a snapshot taken now)."""
        self._check_open()
        return iter(self._bc.keys())

    def __len__(self):
        self._check_open()
        return self._bc.stats()["keys"]

    # ---- merging ----------------------------------------------------------------

    def merge(self, full=False):
        """Runs a merge now, in this thread: of the files past merge_threshold
        (and the small files, see the merge_small_files option), or of every
        immutable file with full=True (which also drops every tombstone no
        older file needs).  Returns the merge's figures, or None when there
        was nothing to merge."""
        self._check_open()
        return self._merge(full)

    def _merge(self, full):
        with self._merge_lock:
            if self._closing:
                return None
            self._merge_running = True
            try:
                stats = run_merge(self, full)
            except MergeAborted:
                return None
            except BaseException:
                self._counters["merge_failures"] += 1
                raise
            finally:
                self._merge_running = False
            if stats is not None:
                c = self._counters
                c["merges"] += 1
                c["merge_bytes_read"] += stats["bytes_read"]
                c["merge_bytes_written"] += stats["bytes_written"]
                c["tombstones_dropped"] += stats["tombstones_dropped"]
            return stats

    def _merge_wanted(self):
        if self._merges_disabled or self._closing:
            return False
        with self._files_lock:
            immutable = [f for f in self._files.values() if f.state == IMMUTABLE]
        if not immutable:
            return False
        infos = {info["slot"]: info for info in self._bc.files()}
        return bool(pick_inputs(immutable, infos, self.options, False))

    def _maybe_merge(self):
        if not self._merge_wanted():
            return
        if self._merge_thread is not None:
            with self._merge_cond:
                self._merge_requested = True
                self._merge_cond.notify()
        else:
            self._merge(False)

    def _merge_loop(self):
        while True:
            with self._merge_cond:
                while not self._merge_requested and not self._closing:
                    self._merge_cond.wait()
                if self._closing:
                    return
                self._merge_requested = False
            try:
                while self._merge_wanted() and self._merge(False) is not None:
                    pass
            except BaseException as exc:  # keep serving; report in stats()
                log.exception("merge failed in %s; automatic merges stop", self.path)
                self._merge_error = exc
                self._merges_disabled = True

    def _new_output(self, rank):
        """A new merge output, named *.tmp until the merge commits."""
        return self._new_files(rank, OUTPUT, sync_dir=False)

    def _discard_outputs(self, outputs):
        """Forgets merge outputs that were never committed, and deletes them."""
        for f in outputs:
            if self._files.get(f.slot) is f:
                self._unregister(f)
                self._bc.remove_file(f.slot)
            for d in (f.fd, f.hint_fd):
                if d >= 0:
                    os.close(d)
            f.fd = f.hint_fd = -1
            fs.unlink(self._file_path(f.data_name()))
            fs.unlink(self._file_path(f.hint_name()))

    def _rename_output(self, f):
        tmp_data, tmp_hint = f.data_name(), f.hint_name()
        os.rename(self._file_path(tmp_hint), self._file_path(fs.hint_name(f.rank, f.id)))
        os.rename(self._file_path(tmp_data), self._file_path(fs.data_name(f.rank, f.id)))
        f.state = IMMUTABLE

    def _drop_file(self, f):
        """Deletes a merged input: forgotten by the C side first, then closed."""
        self._unregister(f)
        self._bc.remove_file(f.slot)
        os.close(f.fd)
        f.fd = -1
        fs.unlink(self._file_path(f.hint_name()))
        fs.unlink(self._file_path(f.data_name()))

    # ---- closing, stats, checks -------------------------------------------------

    def _check_open(self):
        if self._closed:
            raise ClosedError("the engine is closed")

    def close(self):
        """Stops merging (a merge in progress is abandoned before its commit),
        seals and syncs the active file and writes its hint."""
        with self._roll_lock:
            if self._closed:
                return
            self._closed = True
        with self._merge_cond:
            self._closing = True
            self._merge_cond.notify_all()
        if self._merge_thread is not None:
            self._merge_thread.join()
        with self._merge_lock:  # an inline merge in another thread
            pass
        try:
            with self._roll_lock:
                if self._active is not None and self._broken is None:
                    old = self._seal_active()
                    if old is not None:
                        old.state = IMMUTABLE
                fs.fsync_dir(self.path)
        finally:
            self._release_all()
            self.get = self.put = self.delete = self.write_batch = raise_closed

    def _release_all(self):
        if self._bc is not None:
            self._bc.close()
        with self._files_lock:
            files = list(self._files.values())
            self._files.clear()
        for f in files:
            for d in (f.fd, f.hint_fd):
                if d >= 0:
                    os.close(d)
            f.fd = f.hint_fd = -1
        self._active = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def stats(self):
        self._check_open()
        st = self._bc.stats()
        infos = self._bc.files()
        with self._files_lock:
            by_slot = dict(self._files)
        details = []
        data_bytes = live = 0
        for info in sorted(infos, key=lambda i: (i["rank"], i["id"])):
            f = by_slot.get(info["slot"])
            if f is None or f.state == OUTPUT:
                continue  # a merge output not yet committed
            data_bytes += info["size"]
            live += info["live"]
            details.append({"name": f.data_name(), "active": f.state == ACTIVE,
                            "size": info["size"], "live_bytes": info["live"],
                            "dead_bytes": info["size"] - info["live"]})
        keys = st["keys"]
        c = self._counters
        return {
            "engine": self.kind,
            "keys": keys,
            "tombstones": st["tombstones"],
            "files": len(details),
            "data_bytes": data_bytes,
            "live_bytes": live,
            "dead_bytes": data_bytes - live,
            "keydir_bytes": st["keydir_memory"],
            "keydir_bytes_per_key": st["keydir_memory"] / keys if keys else 0.0,
            "keydir_slots": st["keydir_slots"],
            "merges": c["merges"],
            "merge_running": self._merge_running,
            "merge_failures": c["merge_failures"],
            "merge_error": None if self._merge_error is None else str(self._merge_error),
            "merge_bytes_read": c["merge_bytes_read"],
            "merge_bytes_written": c["merge_bytes_written"],
            "tombstones_dropped": c["tombstones_dropped"],
            "rolls": c["rolls"],
            "syncs": st["syncs"],
            "hint_failures": st["hint_failures"],
            "recovery": {k: c[k] for k in ("hints_loaded", "hints_rejected", "files_scanned",
                                           "truncated_bytes")},
            "file_list": details,
        }

    def check(self):
        """Verifies every entry of every data file (CRC, framing) against the
        keydir, the live-byte figures, the keydir's own invariants, every hint
        file against its data file, and the directory against the files in use.
        Waits for a merge in progress to finish."""
        self._check_open()
        with self._merge_lock, self._roll_lock:
            self._check_open()
            self._bc.check()
            infos = {info["slot"]: info for info in self._bc.files()}
            with self._files_lock:
                files = list(self._files.values())
            if set(infos) != {f.slot for f in files}:
                raise CorruptionError("the C file table and the engine's disagree", self.path)
            active = [f for f in files if f.state == ACTIVE]
            if len(active) != 1 or any(f.state != IMMUTABLE for f in files if f not in active):
                raise CorruptionError("expected one active file and immutable ones", self.path)
            if any(f.id >= active[0].id for f in files if f.rank == f.id and f not in active):
                raise CorruptionError("the active file is not the newest", self.path)
            names = set(os.listdir(self.path))
            for f in files:
                path = self._file_path(f.data_name())
                if f.data_name() not in names:
                    raise CorruptionError("a data file in use is missing", path)
                size = os.fstat(f.fd).st_size
                expected = infos[f.slot]["size"]
                if size != expected and not (f.state == ACTIVE and size > expected):
                    raise CorruptionError(f"data file is {size} bytes, {expected} expected", path)
                if f.state == IMMUTABLE and f.hint_name() in names:
                    hint_path = self._file_path(f.hint_name())
                    try:
                        self._bc.check_hint(f.slot, fs.read_file(hint_path))
                    except CorruptionError as exc:
                        raise CorruptionError(f"hint does not match its data file ({exc})",
                                              hint_path, exc.offset) from None
            in_use = {f.data_name() for f in files}
            for name in names:
                parsed = fs.parse_name(name)
                if parsed is not None and parsed[2] == "data" and name not in in_use:
                    raise CorruptionError("a data file is not in use", self._file_path(name))
