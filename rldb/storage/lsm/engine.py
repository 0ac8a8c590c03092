"""The LSM-tree engine.

Threading model: any number of threads may call any method at once.
- Writers are serialised by one lock that covers the WAL append and the
  memtable insert; with sync=True the fsync happens after that lock is released
  and is shared by every writer whose bytes it covers (group commit).
- Readers take no lock: they read the current (memtable, immutable memtable,
  version) triple, which is replaced as one tuple, and the last sequence, which
  is read first so that everything at or below it is in that triple.
- One background thread flushes the immutable memtable and runs compactions;
  the C merge releases the GIL, so reads on another core go on meanwhile.
  Version changes are logged to the MANIFEST and installed under a mutex.
- Files are deleted only when no live Version (a read in progress holds one)
  names them."""
import errno
import logging
import os
import threading

from rldb._core.kway_merge import Merger
from rldb._core.point_lookup import BlockCache, Levels, SLOW_PATH, TreeView
from rldb._core.memtable import KIND_VALUE, Memtable
from rldb.errors import ClosedError, CorruptionError, InvalidArgumentError, StorageIOError
from rldb.storage.directory import fsync_dir, open_directory
from rldb.storage.engine import Engine, check_bound, check_key, check_options
from rldb.storage.lsm import compaction as compactions
from rldb.storage.lsm import scan as scans
from rldb.storage.lsm.format import log_name, parse_name, table_name
from rldb.storage.lsm.log import LogWriter
from rldb.storage.lsm.options import DEFAULTS, NUM_LEVELS, validate
from rldb.storage.lsm.recovery import holds_database, load_state
from rldb.storage.lsm.table import ReadCounters, Table
from rldb.storage.lsm.table_cache import TableCache
from rldb.storage.lsm.version import VersionEdit, VersionSet
from rldb.storage.lsm.write_path import Background, WritePath

log = logging.getLogger("rldb.lsm")


class LSMEngine(Engine):
    """The LSM tree: opening, reads, background flushes and compactions,
    closing, stats and checks; writes go to its WritePath (write_path.py)."""

    kind = "lsm"
    DEFAULTS = DEFAULTS

    def __init__(self, path, **options):
        if path is None:
            raise InvalidArgumentError("the lsm engine needs a directory path")
        self.options = opts = check_options(self.kind, options, DEFAULTS)
        validate(opts)
        self.path = os.fspath(path)
        self._state = self._view = self._writes = None
        self._closing = False
        self._bg_error = None
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._compaction_lock = threading.Lock()
        self._pending_outputs = set()
        self._counters = {"flush_bytes": 0, "compaction_bytes": 0,
                          "compaction_read_bytes": 0, "flushes": 0, "compactions": 0,
                          "trivial_moves": 0, "tombstones_dropped": 0, "versions_dropped": 0}
        self.recovery = {"wal_records": 0, "wal_dropped_bytes": 0}
        self._dir_lock = open_directory(self.path, self.kind, opts["create_if_missing"],
                                        holds_database)
        self._read_counters = ReadCounters()
        self._cache = BlockCache(opts["block_cache_size"])
        self._tables = TableCache(self.path, opts["max_open_files"], self._cache,
                                  self._read_counters)
        try:
            self._recover()
        except BaseException:
            self._dir_lock.release()
            raise
        self._worker = None
        if opts["background"]:
            self._worker = threading.Thread(target=self._background_loop,
                                            name=f"rldb-lsm-{os.path.basename(self.path)}",
                                            daemon=True)
            self._worker.start()
        self._schedule()

    # ---- opening --------------------------------------------------------------

    def _recover(self):
        versions, mem, mem_bytes = load_state(
            self.path, self.options["wal_recovery"] == "strict", self.recovery)
        self._versions = versions
        last_seq = versions.last_seq
        edit = VersionEdit(last_seq=last_seq)
        if mem_bytes or mem.usage()[1]:
            number = versions.new_file_number()
            meta = self._write_memtable(mem, number)
            if meta is not None:
                edit.add(0, meta)
        new_log = versions.new_file_number()
        edit.log_number = new_log
        # The new manifest is a snapshot including this edit: until CURRENT
        # points at it, the old manifest and logs still describe the database.
        versions.current = versions.current.apply(edit)
        versions.live.add(versions.current)
        versions.log_number = new_log
        versions.start_manifest()
        mem = Memtable(seed=new_log)
        background = Background(
            cond=self._cond, inline=not self.options["background"], schedule=self._schedule,
            work=self._do_background_work, raise_error=self._raise_bg_error,
            flush_pending=self._flush_pending, retire=self._retire_memtable,
            new_log=self._new_log, wait_flushed=self._wait_for_imm)
        self._writes = WritePath(self._new_wal(new_log), mem, last_seq, self.options, background)
        self._imm = None
        self._set_state(mem, None, versions.current)
        self._delete_obsolete()

    def _set_state(self, mem, imm, version):
        """Installs what readers see: one tuple for scans, one view for gets."""
        version = self._with_native(version)
        state = (mem, imm, version)
        self._view = TreeView(mem, imm, version.native, self._cache,
                                    self._tables.load_block, state)
        self._state = state
        self._writes.l0_files = len(version.levels[0])

    def _retire_memtable(self, mem):
        """With the mutex held (the write path's switch): the current
        memtable becomes the immutable one, to be flushed; mem the current."""
        current, _, version = self._state
        self._imm = current
        self._set_state(mem, current, version)

    def _flush_pending(self):
        return self._imm is not None

    def _with_native(self, version):
        """Attaches the C view of version's tables that point lookups use."""
        if version.native is None:
            native = Levels()
            for level, f in version.files():
                native.add(level, self._tables.get(f).meta, f.smallest, f.largest)
            version.native = native
        return version

    def _new_wal(self, number):
        wal = LogWriter(os.path.join(self.path, log_name(number)), number)
        fsync_dir(self.path)
        return wal

    def _new_log(self):
        return self._new_wal(self._versions.new_file_number())

    def _write_memtable(self, mem, number):
        """Writes a memtable to table `number`; None when it held nothing."""
        self._pending_outputs.add(number)
        merger = Merger(1, compact=True)
        merger.set_memtable(0, mem)
        metas = compactions.build_tables(merger, [lambda: None], self.path, lambda: number,
                                         self.options, 1 << 62)
        return metas[0] if metas else None

    # ---- background work ------------------------------------------------------

    def _schedule(self):
        if self._worker is not None:
            with self._cond:
                self._cond.notify_all()
        elif not self._closing:
            self._do_background_work()

    def _needs_work(self):
        return self._imm is not None or (
            self._state is not None
            and compactions.needs_compaction(self._versions.current, self.options))

    def _background_loop(self):
        while True:
            with self._cond:
                while not self._closing and not self._needs_work() and self._bg_error is None:
                    self._cond.wait()
                if self._bg_error is not None or (self._closing and self._imm is None):
                    return
            try:
                self._background_step()
            except BaseException as exc:  # keep the error for writers to see
                log.exception("background work failed in %s", self.path)
                with self._cond:
                    self._bg_error = exc
                    self._cond.notify_all()
                return

    def _do_background_work(self):
        while self._needs_work() and not self._closing:
            self._background_step()

    def _background_step(self):
        if self._imm is not None:
            self._flush_imm()
        else:
            with self._compaction_lock:
                c = compactions.pick(self._versions.current, self.options,
                                     self._versions.compact_pointers)
                if c is not None:
                    self._run_compaction(c)

    def _raise_bg_error(self):
        if self._bg_error is not None:
            raise StorageIOError(errno.EIO, f"background work failed: {self._bg_error}")

    def _flush_imm(self):
        imm = self._imm
        number = self._versions.new_file_number()
        meta = self._write_memtable(imm, number)
        edit = VersionEdit(log_number=self._writes.wal.number, last_seq=self._writes.last_seq)
        if meta is not None:
            edit.add(0, meta)
            self._counters["flush_bytes"] += meta.size
        with self._cond:
            version = self._versions.log_and_apply(edit)
            self._pending_outputs.discard(number)
            self._imm = None
            self._set_state(self._state[0], None, version)
            self._counters["flushes"] += 1
            self._cond.notify_all()
            self._delete_obsolete()

    def _wait_for_imm(self):
        """Returns once the immutable memtable (if any) is in a table."""
        if self._worker is None:
            if self._imm is not None:
                self._flush_imm()
            return
        with self._cond:
            self._cond.notify_all()
            while self._imm is not None and self._bg_error is None:
                self._cond.wait(0.1)
        self._raise_bg_error()

    def _flush_imm_if_pending(self):
        if self._imm is not None:
            self._flush_imm()

    def _run_compaction(self, c, allow_move=True):
        versions = self._versions
        if allow_move and c.is_trivial_move():
            edit = VersionEdit()
            f = c.inputs[0]
            edit.delete(c.level, f.number)
            edit.add(c.output_level, f)
            edit.compact_pointers.append((c.level, f.largest))
            with self._cond:
                version = versions.log_and_apply(edit)
                self._set_state(self._state[0], self._state[1], version)
                self._counters["trivial_moves"] += 1
                self._cond.notify_all()
            return

        def new_number():
            n = versions.new_file_number()
            self._pending_outputs.add(n)
            return n

        # Between output tables the background thread flushes a waiting
        # memtable, so that writers are not stalled behind a long compaction.
        in_worker = threading.current_thread() is self._worker
        between = self._flush_imm_if_pending if in_worker else None
        edit, metas, merge_stats = compactions.run(
            c, self._tables.get, self.path, new_number, self.options, between)
        edit.compact_pointers.append((c.level, max(f.largest for f in c.inputs)))
        with self._cond:
            version = versions.log_and_apply(edit)
            self._set_state(self._state[0], self._state[1], version)
            for meta in metas:
                self._pending_outputs.discard(meta.number)
            self._counters["compactions"] += 1
            self._counters["compaction_bytes"] += sum(m.size for m in metas)
            self._counters["compaction_read_bytes"] += c.input_bytes()
            self._counters["tombstones_dropped"] += merge_stats["tombstones_dropped"]
            self._counters["versions_dropped"] += merge_stats["versions_dropped"]
            self._cond.notify_all()
            self._delete_obsolete()

    def _delete_obsolete(self):
        """Removes files no live version needs (called with the mutex held or at open)."""
        versions = self._versions
        # List first: a file created after the listing is not considered, and
        # one created before it was registered (pending or in a version) first.
        names = os.listdir(self.path)
        live = versions.live_numbers() | self._pending_outputs
        for name in names:
            parsed = parse_name(name)
            if parsed is None:
                continue
            kind, number = parsed
            obsolete = (
                (kind == "sst" and number not in live)
                or (kind == "log" and number < versions.log_number)
                or (kind == "manifest" and number != versions.manifest_number)
                or kind == "temp")
            if obsolete:
                if kind == "sst":
                    self._tables.evict(number)
                self._remove(name, keep=kind == "sst" and versions.torn_tail)

    def _remove(self, name, keep=False):
        """Deletes a file; with keep, moves it to lost/ instead (after a damaged
        manifest, an unnamed table may hold data the lost edit pointed to)."""
        path = os.path.join(self.path, name)
        try:
            if keep:
                os.makedirs(os.path.join(self.path, "lost"), exist_ok=True)
                os.replace(path, os.path.join(self.path, "lost", name))
                log.warning("%s: kept unreferenced table in lost/ (the manifest had a torn "
                            "tail)", path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            pass

    def compact(self, progress=None):
        """A full manual compaction: flushes the memtable, then merges every
        level into the next until all data sits in one level.  progress(done,
        total) is called with input bytes after each step."""
        self._check_open()
        self._writes.switch_memtable()
        total = sum(f.size for _, f in self._versions.current.files())
        done = 0
        with self._compaction_lock:
            for level in range(NUM_LEVELS - 1):
                version = self._versions.current
                if not version.levels[level]:
                    continue
                if level > 0 and not any(version.levels[lv] for lv in range(level + 1, NUM_LEVELS)):
                    break  # everything already sits in this one level
                c = compactions.setup(version, level, version.levels[level])
                del version  # let the old version go, so its files can be deleted
                done += c.input_bytes()
                self._run_compaction(c, allow_move=False)
                if progress is not None:
                    progress(min(done, total), total)
        with self._cond:
            self._delete_obsolete()
        if progress is not None:
            progress(total, total)
        return {"bytes_in": total, "bytes_out": sum(f.size for _, f in self._versions.current.files())}

    # ---- writing: the WritePath's --------------------------------------------------

    def put(self, key, value):
        self._writes.put(key, value)

    def delete(self, key):
        self._writes.delete(key)

    def write_batch(self, ops):
        self._writes.write_batch(ops)

    def flush(self):
        """Makes every acknowledged write durable (fsync of the log)."""
        self._check_open()
        self._writes.sync()

    # ---- reading ----------------------------------------------------------------

    def get(self, key):
        if key.__class__ is not bytes or not key:
            check_key(key)
        snapshot = self._writes.last_seq
        view = self._view
        if view is None:
            raise ClosedError("the engine is closed")
        found = view.get(key, snapshot)
        if found is SLOW_PATH:
            found = self._get_slow(*view.state, key, snapshot)
        if found is None or found[0] != KIND_VALUE:
            return None
        return found[1]

    def _get_slow(self, mem, imm, version, key, snapshot):
        """The same lookup in Python, for values longer than the C path's buffer."""
        found = mem.get(key, snapshot)
        if found is None and imm is not None:
            found = imm.get(key, snapshot)
        if found is None:
            for f in version.candidates(key):
                found = self._tables.get(f).get(key, snapshot)
                if found is not None:
                    break
        return found

    def scan(self, start=None, end=None, reverse=False):
        check_bound("start", start)
        check_bound("end", end)
        snapshot = self._writes.last_seq
        state = self._state
        if state is None:
            raise ClosedError("the engine is closed")
        mem, imm, version = state
        if start is not None and end is not None and start >= end:
            return iter(())
        return scans.iterate(mem, imm, version, snapshot, self._tables.get, start, end, reverse)

    # ---- closing, stats, checks -------------------------------------------------------

    def _check_open(self):
        if self._state is None:
            raise ClosedError("the engine is closed")

    def close(self):
        if not self._writes.refuse_writes(self._stop_background):
            return
        if self._worker is not None:
            self._worker.join()
        self._writes.close_log()
        self._versions.close()
        self._state = self._view = None
        self._tables.clear()
        self._dir_lock.release()

    def _stop_background(self):
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def stats(self):
        self._check_open()
        version = self._versions.current
        c = dict(self._counters)
        levels = [{"level": i, "files": len(files), "bytes": sum(f.size for f in files)}
                  for i, files in enumerate(version.levels)]
        mem, imm, _ = self._state
        writes = self._writes
        cache = self._cache.stats()
        return {
            "engine": self.kind,
            "levels": levels,
            "files": sum(len(files) for files in version.levels),
            "bytes": sum(level["bytes"] for level in levels),
            "memtable_bytes": mem.usage()[0],
            "immutable_memtable": imm is not None,
            "last_sequence": writes.last_seq,
            "user_bytes_written": writes.user_bytes,
            "flush_bytes_written": c["flush_bytes"],
            "compaction_bytes_written": c["compaction_bytes"],
            "write_amplification": ((c["flush_bytes"] + c["compaction_bytes"]) / writes.user_bytes
                                    if writes.user_bytes else 0.0),
            "flushes": c["flushes"],
            "compactions": c["compactions"],
            "trivial_moves": c["trivial_moves"],
            "tombstones_dropped": c["tombstones_dropped"],
            "pending_compaction_bytes": compactions.pending_compaction_bytes(version, self.options),
            "stall_seconds": round(writes.stall_seconds, 6),
            "slowdowns": writes.slowdowns,
            "bloom_useful": cache["bloom_useful"] + self._read_counters.bloom_useful,
            "bloom_false_positive": (cache["bloom_false_positive"]
                                     + self._read_counters.bloom_false_positive),
            "block_cache": {k: cache[k] for k in ("capacity", "bytes", "blocks", "hits",
                                                  "misses", "evictions")},
            "tables": len(self._tables),
            "open_files": len(self._tables.files),
            "wal_syncs": writes.wal.syncs,
            "recovery": dict(self.recovery),
        }

    def check(self):
        """Verifies the manifest against the files, every block checksum, the
        order of keys in every table and across each level, and the memtables."""
        self._check_open()
        with self._cond:  # no version is installed meanwhile
            mem, imm, version = self._state
            replay = VersionSet(self.path)
            replay.recover()
            on_disk = {f.number for _, f in replay.current.files()}
            if on_disk != version.numbers() or version is not self._versions.current:
                raise CorruptionError("the manifest on disk disagrees with the version in memory",
                                      self.path)
        mem.check()
        if imm is not None:
            imm.check()
        version.check()
        for level, f in version.files():
            path = os.path.join(self.path, table_name(f.number))
            if not os.path.exists(path):
                raise CorruptionError(f"table {f.number} of level {level} is missing", path)
            size = os.path.getsize(path)
            if size != f.size:
                raise CorruptionError(f"table {f.number} is {size} bytes, manifest says {f.size}", path)
            table = Table(path, f.number)
            try:
                count = table.verify()
                props = table.properties
                if count != f.entries or props.get("smallest_key") != f.smallest \
                        or props.get("largest_key") != f.largest:
                    raise CorruptionError(f"table {f.number} does not match its manifest entry", path)
            finally:
                table.close()
        self._cache.check()
