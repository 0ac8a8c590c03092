"""The timed phases, in the order they run, and one engine's store carried through them.

A phase is a Step: an untimed setup run before every round, a target that runs
the whole phase once per round, and the number of operations in a round.  The
pytest tests hand a Step to benchmark.pedantic(target, setup=setup, rounds=k,
iterations=1); the script times it with time_rounds().  Either way the figure is
the median round.

    load        N puts of the present keys, in a seeded shuffled order, into an empty store
    reopen      open the store from its directory after a close (the close untimed, the
                store's files dropped from the page cache); bytes on disk are measured then
    get         N gets of random present keys
    get_absent  N gets of random absent keys that fall inside the key range
    scan        20 forward scans of 10,000 entries from random present keys (ops = entries)
    sync_put    1,000 overwrites, each durable before it returns

Each phase can run alone: it first brings the store to the state it needs
(loaded, then closed, dropped from the page cache and reopened), untimed."""
import os
import shutil
import time
from typing import Callable, NamedTuple, Optional

PHASES = ("load", "reopen", "get", "get_absent", "scan", "sync_put")


class Step(NamedTuple):
    setup: Optional[Callable[[], None]]
    target: Callable[[], None]
    ops: int


def select_phases(names_csv=None):
    """The phases to run, always in PHASES order: all of them, or those listed (comma-separated)."""
    if not names_csv:
        return list(PHASES)
    names = [n.strip() for n in names_csv.split(",") if n.strip()]
    unknown = [n for n in names if n not in PHASES]
    if unknown:
        raise ValueError(f"unknown phase(s) {', '.join(unknown)}; phases: {', '.join(PHASES)}")
    return [p for p in PHASES if p in names]


def time_rounds(step, rounds):
    """Seconds per round, timed like benchmark.pedantic with iterations=1."""
    times = []
    for _ in range(rounds):
        if step.setup is not None:
            step.setup()
        start = time.perf_counter()
        step.target()
        times.append(time.perf_counter() - start)
    return times


class EngineRun:
    """One adapter, its data directories under `root`, and the state of its store."""

    def __init__(self, adapter, workload, root):
        self.adapter = adapter
        self.name = adapter.name
        self.wl = workload
        self.root = root
        self.generation = 0
        self.path = None
        self.is_open = self.loaded = self.reopened = self.verified = False
        self.disk_bytes = None

    def step(self, phase):
        """The Step for phase, or None where the phase is n/a for this store."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; phases: {', '.join(PHASES)}")
        return getattr(self, "_" + phase)()

    def close(self):
        if self.is_open:
            self.adapter.close()
            self.is_open = False
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)

    # -- the phases

    def _load(self):
        pairs = self.wl.load_pairs

        def target():
            put = self.adapter.put
            for key, value in pairs:
                put(key, value)
            self.loaded = True

        return Step(self._fresh, target, len(pairs))

    def _reopen(self):
        if not self.adapter.persistent:
            return None
        self._ensure_loaded()

        def setup():
            self._close_cold()
            self.is_open = self.reopened = True  # the target, which runs next, opens it

        return Step(setup, lambda: self.adapter.open(self.path), 1)

    def _get(self):
        return self._gets(self.wl.get_keys)

    def _get_absent(self):
        return self._gets(self.wl.absent_keys)

    def _gets(self, keys):
        self._ensure_reopened()

        def target():
            get = self.adapter.get
            for key in keys:
                get(key)

        return Step(None, target, len(keys))

    def _scan(self):
        if not self.adapter.can_scan:
            return None
        self._ensure_reopened()
        starts, count = self.wl.scan_starts, self.wl.scan_len

        def target():
            scan = self.adapter.scan
            for start in starts:
                got = scan(start, count)
                if got != count:
                    raise AssertionError(f"{self.name}: a scan read {got} entries, not {count}")

        return Step(None, target, len(starts) * count)

    def _sync_put(self):
        if not self.adapter.persistent:
            return None
        self._ensure_reopened()
        self.adapter.prepare_sync()
        pairs = self.wl.sync_pairs

        def target():
            sync_put = self.adapter.sync_put
            for key, value in pairs:
                sync_put(key, value)

        return Step(None, target, len(pairs))

    # -- getting the store into the state a phase needs (all untimed)

    def _fresh(self):
        """An empty store in a new directory (the previous one is removed)."""
        self.close()
        self.generation += 1
        self.path = os.path.join(self.root, f"{self.name}-{self.generation}")
        os.makedirs(self.path)
        self.adapter.open(self.path)
        self.is_open = True
        self.loaded = self.reopened = self.verified = False
        self.disk_bytes = None

    def _close_cold(self):
        """Close the store and drop its files from the page cache.  On the first close
        after a load, open and close it once more before measuring its bytes on disk,
        so that every store is measured at rest (LevelDB, for one, turns its log into
        a table only when it next opens)."""
        self.adapter.close()
        self.is_open = False
        if self.disk_bytes is None:
            self.adapter.open(self.path)
            self.adapter.close()
            self.disk_bytes = self.adapter.disk_bytes()
        self.adapter.drop_cache()

    def _ensure_loaded(self):
        if not self.loaded:
            load = self._load()
            load.setup()
            load.target()

    def _ensure_reopened(self):
        self._ensure_loaded()
        if not self.reopened:
            if self.adapter.persistent:
                self._close_cold()
                self.adapter.open(self.path)
                self.is_open = True
            self.reopened = True
        if not self.verified:
            self._verify()

    def _verify(self):
        """Read a sample back: the load must have kept every value, and absent keys must stay absent."""
        present, absent = self.wl.sample_checks()
        get = self.adapter.get
        wrong = sum(get(key) != value for key, value in present)
        found = sum(get(key) is not None for key in absent)
        if wrong or found:
            raise AssertionError(
                f"{self.name}: after reopen {wrong} of {len(present)} sampled keys read back wrong "
                f"and {found} of {len(absent)} absent keys were found")
        self.verified = True
