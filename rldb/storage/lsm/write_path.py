"""The LSM engine's write path: a put, delete or batch goes into the
write-ahead log and the memtable under one lock, then (sync=True) waits for
an fsync shared with the writers around it (group commit).  A write that
finds the memtable full swaps in a new one and a new log; one that finds L0
crowded is slowed by 1 ms, or stopped until compaction catches up.

A mixin of LSMEngine (engine.py), which owns the state it uses: _write_lock,
_wal, _state, _last_seq, _mem_bytes, _user_bytes, _cond, _imm, _versions and
the background-work methods."""
import time

from rldb._core.memtable import KIND_DELETE, KIND_VALUE, Memtable
from rldb.errors import ClosedError
from rldb.storage.engine import check_key, check_value, normalize_batch
from rldb.storage.lsm.batch import encode_batch

# Memory a memtable entry costs beyond its key and value (node, links, trailer).
_ENTRY_OVERHEAD = 48


class WritePath:
    """put, delete, write_batch and flush of LSMEngine, and the memtable switch."""
    def put(self, key, value):
        if key.__class__ is not bytes or not key:
            check_key(key)
        if value.__class__ is not bytes:
            check_value(value)
        with self._write_lock:
            self._before_write()
            seq = self._last_seq + 1
            wal = self._wal
            wal.put(self._state[0], seq, KIND_VALUE, key, value)
            self._last_seq = seq
            size = len(key) + len(value)
            self._mem_bytes += size + _ENTRY_OVERHEAD
            self._user_bytes += size
        if self._sync:
            wal.sync_to(wal.written)

    def delete(self, key):
        check_key(key)
        self._write_ops([(KIND_DELETE, key, b"")])

    def write_batch(self, ops):
        ops = [(KIND_VALUE if kind == "put" else KIND_DELETE, key, value or b"")
               for kind, key, value in normalize_batch(ops)]
        if ops:
            self._write_ops(ops)
        elif self._closed:
            raise ClosedError("the engine is closed")

    def _write_ops(self, ops):
        size = sum(len(k) + len(v) for _, k, v in ops)
        with self._write_lock:
            self._before_write()
            seq = self._last_seq + 1
            wal = self._wal
            position = wal.add(encode_batch(seq, ops))
            self._state[0].add_batch(seq, ops)
            self._last_seq = seq + len(ops) - 1
            self._mem_bytes += size + _ENTRY_OVERHEAD * len(ops)
            self._user_bytes += size
        if self._sync:
            wal.sync_to(position)

    def _before_write(self):
        """With the write lock held: room in the memtable, or a closed engine."""
        if self._mem_bytes >= self._memtable_limit or self._l0_slow():
            self._make_room()
        elif self._closed:
            raise ClosedError("the engine is closed")

    def _l0_slow(self):
        return len(self._state[2].levels[0]) >= self._slowdown if self._state else False

    def _make_room(self):
        """Called with the write lock held: delays or stops the writer while
        compaction is behind, and swaps in a fresh memtable when it is full."""
        if self._closed:
            raise ClosedError("the engine is closed")
        delayed = False
        while True:
            self._raise_bg_error()
            l0 = len(self._state[2].levels[0])
            if l0 >= self._slowdown and not delayed and l0 < self.options["l0_stop_trigger"]:
                # Slow each write a little rather than stop one for seconds.
                delayed = True
                self._counters["slowdowns"] += 1
                started = time.monotonic()
                self._schedule()
                time.sleep(0.001)
                self._counters["stall_seconds"] += time.monotonic() - started
                continue
            if self._mem_bytes < self._memtable_limit:
                return
            with self._cond:
                if self._imm is not None or len(self._state[2].levels[0]) >= self.options["l0_stop_trigger"]:
                    if self._worker is None:
                        self._cond.release()
                        try:
                            self._do_background_work()
                        finally:
                            self._cond.acquire()
                        continue
                    started = time.monotonic()
                    self._cond.wait(0.1)
                    self._counters["stall_seconds"] += time.monotonic() - started
                    continue
                self._switch_memtable_locked()
            self._schedule()
            return

    def _switch_memtable_locked(self):
        number = self._versions.new_file_number()
        new_wal = self._new_wal(number)
        old_wal = self._wal
        mem, _, version = self._state
        self._imm = mem
        self._wal = new_wal
        self._mem_bytes = 0
        self._set_state(Memtable(seed=number), mem, version)
        old_wal.close(sync=True)

    def flush(self):
        """Makes every acknowledged write durable (fsync of the log)."""
        self._check_open()
        self._wal.sync()
