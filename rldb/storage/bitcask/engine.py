"""The Bitcask engine (Basho's design: append-only data files, an in-memory
keydir naming every key's newest entry, hint files, merges).

    from rldb.storage import open_engine
    with open_engine("bitcask", "/tmp/db", sync=True) as db:
        db.put(b"k", b"v")

Files and their layouts: files.py and docs/formats.md (section "Bitcask").

Threading model: any number of threads may call any method at once.
- get, put and delete are one C call each (csrc/bitcask_*.c): the C side
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

Recovery on open is recovery.py; the data files and their states are
datafiles.py (DataFiles, shared with the merge).  Each open starts a new
active file."""
import logging
import os
import threading

from rldb._core.bitcask import Bitcask
from rldb.errors import ClosedError, InvalidArgumentError, NotSupportedError
from rldb.storage.bitcask.datafiles import DataFiles, io_error
from rldb.storage.bitcask.merge import MergeAborted, pick_inputs, run_merge
from rldb.storage.bitcask.options import DEFAULTS, validate
from rldb.storage.bitcask.recovery import holds_database, recover
from rldb.storage.directory import fsync_dir, open_directory
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


class BitcaskEngine(Engine):
    """Bitcask: writes appended to the active data file, reads through the
    keydir, rolls of full files, merges; the files themselves are DataFiles."""

    kind = "bitcask"
    supports_scan = False
    DEFAULTS = DEFAULTS

    def __init__(self, path, **options):
        if path is None:
            raise InvalidArgumentError("the bitcask engine needs a directory path")
        self.options = opts = check_options(self.kind, options, DEFAULTS)
        validate(opts)
        self.path = os.fspath(path)
        self._files = DataFiles(self.path)
        self._closed = self._closing = False
        self._broken = None  # the error that left the engine unable to write
        self._merges_disabled = False
        self._merge_error = None
        self._merge_hook = None  # tests: called with the name of each merge step
        self._merge_running = False
        self._roll_lock = threading.Lock()
        self._merge_lock = threading.Lock()
        self._merge_cond = threading.Condition(threading.Lock())
        self._merge_requested = False
        self._merge_thread = None
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._bc = None
        self._dir_lock = open_directory(self.path, self.kind, opts["create_if_missing"],
                                        holds_database)
        try:
            self._bc = Bitcask(opts["max_file_size"], opts["sync"], self._files.locate)
            self._files.attach(self._bc)
            recover(self._files, self._counters)
            self._files.new_active()
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

    # ---- rolling the active file -------------------------------------------------

    def _seal_active(self):
        """Seals the active file (under _roll_lock); a failure leaves the engine
        unable to write."""
        try:
            return self._files.seal_active()
        except OSError as exc:
            self._broken = io_error(exc, f"cannot close data file {self._files.active.data_name()}")
            raise self._broken from None

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
                self._files.new_active()  # also fsyncs the directory: the hint's rename too
            except OSError as exc:
                self._broken = io_error(exc, "cannot create a data file")
                raise self._broken from None
            if old is not None:
                self._files.mark_immutable(old)
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
                stats = run_merge(self._files, self.options, full,
                                  stopping=lambda: self._closing, hook=self._merge_hook,
                                  keydir_uncertain=self._stop_merging)
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
        immutable = self._files.immutable()
        if not immutable:
            return False
        return bool(pick_inputs(immutable, self._files.infos(), self.options, False))

    def _stop_merging(self):
        self._merges_disabled = True

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
                if self._files.active is not None and self._broken is None:
                    old = self._seal_active()
                    if old is not None:
                        self._files.mark_immutable(old)
                fsync_dir(self.path)
        finally:
            self._release_all()
            self.get = self.put = self.delete = self.write_batch = raise_closed

    def _release_all(self):
        if self._bc is not None:
            self._bc.close()
        self._files.close_all()
        self._dir_lock.release()

    def stats(self):
        self._check_open()
        st = self._bc.stats()
        details = self._files.describe()
        data_bytes = sum(d["size"] for d in details)
        live = sum(d["live_bytes"] for d in details)
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
        keydir, the live-byte figures, the keydir's own invariants, then the
        data files (DataFiles.check: every hint against its data file, the
        directory against the files in use).  Waits for a merge in progress
        to finish."""
        self._check_open()
        with self._merge_lock, self._roll_lock:
            self._check_open()
            self._bc.check()
            self._files.check()
