"""The LSM engine's write path: a put, delete or batch goes into the
write-ahead log and the memtable under one lock, then (sync=True) waits for
an fsync shared with the writers around it (group commit).  A write that
finds the memtable full swaps in a new one and a new log; one that finds L0
crowded is slowed by 1 ms, or stopped until compaction catches up.

WritePath owns what only writers change: the write lock, the log being
written, the memtable being filled, the last sequence (readers read it
first, so it only moves once a write is in the memtable), the memtable byte
counters and the stall counters.  What it needs of the engine's background
work it asks through a Background, built by the engine (engine.py)."""
import threading
import time

from rldb._core.memtable import KIND_DELETE, KIND_VALUE, Memtable
from rldb.errors import ClosedError
from rldb.storage.engine import check_key, check_value, normalize_batch
from rldb.storage.lsm.batch import encode_batch

# Memory a memtable entry costs beyond its key and value (node, links, trailer).
_ENTRY_OVERHEAD = 48


class Background:
    """What the write path may ask of the engine's background work.

    cond: the engine's mutex and condition; the memtable switch happens
      under it, and a stalled writer waits on it for a flush or compaction.
    inline: True when there is no background thread, so a stalled writer
      does the work itself (work()).
    schedule(): wakes the background work (or does it, when inline).
    work(): flushes and compacts until nothing is due (inline only).
    raise_error(): raises the background thread's failure, if it had one.
    flush_pending(): True while the previous memtable is not in a table yet.
    retire(mem): with cond held, makes the current memtable the immutable
      one and mem the current one, for readers.
    new_log(): a new numbered, empty write-ahead log (a LogWriter).
    wait_flushed(): returns once the immutable memtable is in a table."""

    def __init__(self, cond, inline, schedule, work, raise_error, flush_pending,
                 retire, new_log, wait_flushed):
        self.cond = cond
        self.inline = inline
        self.schedule = schedule
        self.work = work
        self.raise_error = raise_error
        self.flush_pending = flush_pending
        self.retire = retire
        self.new_log = new_log
        self.wait_flushed = wait_flushed


class WritePath:
    """put, delete, write_batch and the log sync of LSMEngine, the L0
    slowdown and stop, and the memtable switch."""

    def __init__(self, wal, mem, last_seq, options, background):
        self._lock = threading.Lock()
        self.wal = wal                  # the log being written; replaced at each switch
        self._mem = mem                 # the memtable being filled
        self.last_seq = last_seq
        self._mem_bytes = 0             # estimated memory of self._mem
        self.user_bytes = 0             # keys and values written since open
        self.slowdowns = 0
        self.stall_seconds = 0.0
        self.l0_files = 0               # of the current version; set by the engine
        self._closed = False
        self._sync = options["sync"]
        self._memtable_limit = options["memtable_size"]
        self._slowdown = options["l0_slowdown_trigger"]
        self._stop = options["l0_stop_trigger"]
        self._bg = background

    def put(self, key, value):
        if key.__class__ is not bytes or not key:
            check_key(key)
        if value.__class__ is not bytes:
            check_value(value)
        with self._lock:
            # _before_write, inlined: this is the hot path.
            if self._mem_bytes >= self._memtable_limit or self.l0_files >= self._slowdown:
                self._make_room()
            elif self._closed:
                raise ClosedError("the engine is closed")
            seq = self.last_seq + 1
            wal = self.wal
            wal.put(self._mem, seq, KIND_VALUE, key, value)
            self.last_seq = seq
            size = len(key) + len(value)
            self._mem_bytes += size + _ENTRY_OVERHEAD
            self.user_bytes += size
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
        with self._lock:
            self._before_write()
            seq = self.last_seq + 1
            wal = self.wal
            position = wal.add(encode_batch(seq, ops))
            self._mem.add_batch(seq, ops)
            self.last_seq = seq + len(ops) - 1
            self._mem_bytes += size + _ENTRY_OVERHEAD * len(ops)
            self.user_bytes += size
        if self._sync:
            wal.sync_to(position)

    def _before_write(self):
        """With the write lock held: room in the memtable, or a closed engine."""
        if self._mem_bytes >= self._memtable_limit or self.l0_files >= self._slowdown:
            self._make_room()
        elif self._closed:
            raise ClosedError("the engine is closed")

    def _make_room(self):
        """Called with the write lock held: delays or stops the writer while
        compaction is behind, and swaps in a fresh memtable when it is full."""
        if self._closed:
            raise ClosedError("the engine is closed")
        bg = self._bg
        cond = bg.cond
        delayed = False
        while True:
            bg.raise_error()
            l0 = self.l0_files
            if l0 >= self._slowdown and not delayed and l0 < self._stop:
                # Slow each write a little rather than stop one for seconds.
                delayed = True
                self.slowdowns += 1
                started = time.monotonic()
                bg.schedule()
                time.sleep(0.001)
                self.stall_seconds += time.monotonic() - started
                continue
            if self._mem_bytes < self._memtable_limit:
                return
            with cond:
                if bg.flush_pending() or self.l0_files >= self._stop:
                    if bg.inline:
                        cond.release()
                        try:
                            bg.work()
                        finally:
                            cond.acquire()
                        continue
                    started = time.monotonic()
                    cond.wait(0.1)
                    self.stall_seconds += time.monotonic() - started
                    continue
                self._switch_memtable_locked()
            bg.schedule()
            return

    def _switch_memtable_locked(self):
        """With the write lock and cond held, and no immutable memtable.  The
        new log is in place before the old memtable is handed over, so its
        flush records the new log as the first one to replay."""
        new_wal = self._bg.new_log()
        old_wal = self.wal
        mem = Memtable(seed=new_wal.number)
        self.wal = new_wal
        self._mem = mem
        self._mem_bytes = 0
        self._bg.retire(mem)
        old_wal.close(sync=True)

    def switch_memtable(self):
        """For a manual compaction: with writers held off, the memtable (if
        it holds anything) goes to a table; returns once it is there."""
        with self._lock:
            self._bg.wait_flushed()
            if self._mem.usage()[1]:
                with self._bg.cond:
                    self._switch_memtable_locked()
                self._bg.wait_flushed()

    def sync(self):
        """Makes every acknowledged write durable (fsync of the log)."""
        self.wal.sync()

    def refuse_writes(self, then):
        """Closes the write path to writers; then() runs under the write lock,
        so no write is in progress.  False if it was already closed."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            then()
        return True

    def close_log(self):
        self.wal.close(sync=True)

