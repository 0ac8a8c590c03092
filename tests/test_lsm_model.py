"""The LSM engine against a dict model, and its behaviour one rule at a time.

The state machine runs with a memtable of a few KiB, tables of a few KiB and
blocks of 64-256 bytes, so that nearly every step flushes, compacts or reads
across several levels; it reopens the directory now and then, and check()
(manifest against files, every block checksum, key order) runs after every
step."""
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, rule

from rldb.errors import ClosedError, InvalidArgumentError, StorageIOError
from rldb.storage import WriteBatch, open_engine
from tests.engine_model import EngineMachine, bounds, keys, model_scan, values

SMALL = dict(memtable_size=2048, block_size=128, target_file_size=2048, level1_max_bytes=4096,
             l0_compaction_trigger=2)


def lsm(path, **options):
    return open_engine("lsm", str(path), **dict(SMALL, **options))


# ---- the differential state machine ----------------------------------------------------


class LSMMachine(EngineMachine):
    supports_reopen = True
    background = False

    def open(self):
        self.dir = tempfile.mkdtemp(prefix="rldb-lsm-model-")
        self.options = dict(SMALL, background=self.background)
        return open_engine("lsm", self.dir, **self.options)

    def reopen(self):
        self.engine.close()
        return open_engine("lsm", self.dir, **self.options)

    @initialize(memtable_size=st.integers(1024, 4096), block_size=st.integers(64, 256),
                target_file_size=st.integers(1024, 4096), level1_max_bytes=st.integers(1024, 8192),
                l0_compaction_trigger=st.integers(1, 4), restart_interval=st.integers(1, 16),
                bloom_bits_per_key=st.sampled_from([0, 1, 10]),
                compression=st.sampled_from(["snappy", "none"]),
                block_cache_size=st.sampled_from([0, 300, 4096, 32 << 20]),
                max_open_files=st.sampled_from([8, 500]))
    def configure(self, **options):
        """Starts over in an empty directory with options drawn for this run
        (a block cache too small for any block sends every lookup down the
        Python path; 8 open files make the descriptor cache churn)."""
        self.engine.close()
        shutil.rmtree(self.dir)
        self.options.update(options)
        self.engine = open_engine("lsm", self.dir, **self.options)

    @rule(start=bounds, end=bounds, reverse=st.booleans(), taken=st.integers(0, 5),
          writes=st.lists(st.tuples(keys, st.none() | values), max_size=40))
    def scan_while_writing(self, start, end, reverse, taken, writes):
        """A scan sees the data as it was when it started, whatever is written
        (and flushed and compacted) while it is being consumed."""
        expected = model_scan(self.model, start, end, reverse)
        it = iter(self.engine.scan(start, end, reverse))
        got = [item for _, item in zip(range(taken), it)]
        for key, value in writes:
            if value is None:
                self.engine.delete(key)
                self.model.pop(key, None)
            else:
                self.engine.put(key, value)
                self.model[key] = value
        got += list(it)
        assert got == expected

    @rule(seed=st.integers(0, 2**32), n=st.integers(1, 250))
    def bulk_write(self, seed, n):
        """Many writes in one step, so that flushes and compactions pile up."""
        rnd = random.Random(seed)
        for _ in range(n):
            key = bytes([rnd.randrange(8)]) + rnd.randbytes(rnd.randrange(0, 3))
            if rnd.random() < 0.2:
                self.engine.delete(key)
                self.model.pop(key, None)
            else:
                value = rnd.randbytes(rnd.randrange(0, 65))
                self.engine.put(key, value)
                self.model[key] = value

    @rule()
    def compact(self):
        self.engine.compact()

    @rule()
    def flush(self):
        self.engine.flush()

    def teardown(self):
        try:
            self.engine.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class BackgroundLSMMachine(LSMMachine):
    background = True


_MODEL_SETTINGS = settings(max_examples=15, stateful_step_count=50, deadline=None,
                           suppress_health_check=[HealthCheck.too_slow,
                                                  HealthCheck.filter_too_much])

TestLSMInlineAgainstModel = LSMMachine.TestCase
TestLSMInlineAgainstModel.settings = _MODEL_SETTINGS
TestLSMBackgroundAgainstModel = BackgroundLSMMachine.TestCase
# Slower per step (check() replays a manifest that grows faster, and the two
# threads share the GIL), so fewer steps.
TestLSMBackgroundAgainstModel.settings = settings(_MODEL_SETTINGS, max_examples=12,
                                                  stateful_step_count=40)


# ---- one behaviour at a time -----------------------------------------------------------


def levels_with_files(db):
    return [level["level"] for level in db.stats()["levels"] if level["files"]]


@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
def test_tombstones_hide_older_values_across_flush_and_compaction(tmp_path, background):
    db = lsm(tmp_path, background=background)
    old = {b"key%04d" % i: b"old%04d" % i + b"." * 40 for i in range(600)}
    for k, v in old.items():
        db.put(k, v)
    db.compact()   # the old values now sit in the deepest level
    assert max(levels_with_files(db)) >= 1
    doomed = sorted(old)[::3]
    for k in doomed:
        db.delete(k)
    # The tombstones are in the memtable: they already hide the values.
    assert all(db.get(k) is None for k in doomed)
    # Enough new writes to flush the tombstones and compact them through the
    # levels above the old values (where they must not be dropped yet).
    for i in range(1500):
        db.put(b"filler%05d" % i, b"x" * 30)
    assert all(db.get(k) is None for k in doomed)
    assert db.stats()["compactions"] + db.stats()["trivial_moves"] > 0
    db.compact()
    expected = {k: v for k, v in old.items() if k not in set(doomed)}
    for k in old:
        assert db.get(k) == expected.get(k)
    assert dict(db.scan(b"key", b"kez")) == expected
    db.check()
    db.close()
    db = lsm(tmp_path, background=background)
    assert dict(db.scan(b"key", b"kez")) == expected
    assert all(db.get(k) is None for k in doomed)
    db.close()


def test_tombstone_over_a_value_in_a_deeper_level_survives_upper_compactions(tmp_path):
    db = lsm(tmp_path, background=False, l0_compaction_trigger=1)
    db.put(b"victim", b"old")
    for i in range(400):
        db.put(b"a%05d" % i, b"y" * 40)
    db.compact()
    db.delete(b"victim")
    # Push the tombstone down level by level with small automatic compactions.
    for i in range(2000):
        db.put(b"b%05d" % i, b"z" * 40)
        if i % 250 == 0:
            assert db.get(b"victim") is None
    assert db.get(b"victim") is None
    assert b"victim" not in dict(db.scan())
    db.close()
    db = lsm(tmp_path, background=False)
    assert db.get(b"victim") is None
    db.check()
    db.close()


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
def test_scan_is_a_snapshot_while_writes_flush_and_compact(tmp_path, reverse, background):
    db = lsm(tmp_path, background=background)
    model = {}
    for i in range(0, 2000, 2):
        k = b"%05d" % i
        model[k] = b"first%d" % i
        db.put(k, model[k])
    expected = model_scan(model, b"00100", b"01900", reverse)
    it = db.scan(b"00100", b"01900", reverse=reverse)
    got = [next(it) for _ in range(10)]
    # Overwrite, delete and insert keys ahead of (and behind) the cursor, with
    # enough bytes for many flushes and compactions.
    for i in range(2000):
        k = b"%05d" % i
        if i % 3 == 0:
            db.delete(k)
        else:
            db.put(k, b"second%d" % i + b"-" * 30)
    stats = db.stats()
    assert stats["flushes"] > 5
    got += list(it)
    assert got == expected
    # A scan started now sees the new data.
    assert all(v.startswith(b"second") for _, v in db.scan(b"00100", b"01900"))
    db.close()


def test_reverse_scans_with_bounds(tmp_path):
    db = lsm(tmp_path, background=False)
    model = {}
    for i in range(0, 3000, 3):
        k = b"k%05d" % i
        model[k] = b"v%d" % i
        db.put(k, model[k])
    for i in range(0, 3000, 7):   # some deleted, spread over every level and the memtable
        db.delete(b"k%05d" % i)
        model.pop(b"k%05d" % i, None)
    assert len(levels_with_files(db)) >= 2
    cases = [(None, None), (b"k00300", b"k00600"), (b"k00301", b"k00599"), (None, b"k00010"),
             (b"k02990", None), (b"k00300", b"k00301"), (b"k00300", b"k00300"),
             (b"k00600", b"k00300"), (b"a", b"b"), (b"z", None), (None, b"a"),
             (b"k", b"k00000"), (b"k00000", b"k00001"), (b"k02997", b"k02998")]
    for start, end in cases:
        assert list(db.scan(start, end, reverse=True)) == model_scan(model, start, end, True), \
            (start, end)
        assert list(db.scan(start, end)) == model_scan(model, start, end, False), (start, end)
    db.close()


def test_write_batch_is_all_or_nothing(tmp_path):
    db = lsm(tmp_path, background=False)
    db.put(b"a", b"1")
    with pytest.raises(InvalidArgumentError):
        db.write_batch([("put", b"b", b"2"), ("delete", b"a"), ("put", "bad", b"x")])
    with pytest.raises(InvalidArgumentError):
        db.write_batch([("put", b"b", b"2"), ("merge", b"a", b"1")])
    with pytest.raises(InvalidArgumentError):
        db.write_batch([("put", b"b", b"2"), ("delete", b"")])
    assert db.get(b"a") == b"1" and db.get(b"b") is None
    db.write_batch(WriteBatch().put(b"b", b"2").delete(b"a"))
    assert db.get(b"a") is None and db.get(b"b") == b"2"
    # A batch bigger than the memtable and than a log block (several fragments).
    big = [("put", b"big%04d" % i, b"%04d" % i * 100) for i in range(200)]
    db.write_batch(big + [("delete", b"b")])
    assert db.get(b"b") is None
    assert [k for k, _ in db.scan(b"big", b"bih")] == [b"big%04d" % i for i in range(200)]
    db.close()
    db = lsm(tmp_path, background=False)
    assert db.get(b"b") is None and db.get(b"big0199") == b"0199" * 100
    db.close()


def test_readers_never_see_half_a_batch(tmp_path):
    db = lsm(tmp_path, background=True)
    names = [b"member%02d" % i for i in range(20)]
    stop = threading.Event()
    seen = []
    errors = []

    def writer():
        try:
            for generation in range(300):
                value = b"gen%05d" % generation + b"." * 20
                db.write_batch([("put", k, value) for k in names])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not stop.is_set():
        snapshot = list(db.scan(b"member", b"membes"))
        if snapshot:
            assert [k for k, _ in snapshot] == names
            generations = {v for _, v in snapshot}
            assert len(generations) == 1, f"a scan saw a batch half applied: {sorted(generations)}"
            seen.append(snapshot[0][1])
    thread.join()
    assert not errors, errors
    assert len(set(seen)) > 1
    db.close()


OPTION_ERRORS = [
    ("memtable_size", 100), ("memtable_size", -1), ("memtable_size", 1.5),
    ("memtable_size", "big"), ("block_size", 10), ("restart_interval", 0),
    ("max_open_files", 1), ("target_file_size", 10), ("l0_compaction_trigger", 0),
    ("level1_max_bytes", 5), ("level_size_ratio", 1), ("bloom_bits_per_key", 65),
    ("sync", 1), ("sync", "yes"), ("background", None), ("create_if_missing", 0),
    ("block_cache_size", -5), ("block_size", True), ("compression", "zstd"),
    ("compression", None), ("wal_recovery", "lenient"), ("wal_recovery", True),
]


@pytest.mark.parametrize("name,value", OPTION_ERRORS)
def test_option_errors_name_the_option(tmp_path, name, value):
    with pytest.raises(InvalidArgumentError, match=name):
        open_engine("lsm", str(tmp_path / "db"), **{name: value})
    assert not (tmp_path / "db").exists()


def test_option_combination_errors(tmp_path):
    with pytest.raises(InvalidArgumentError, match="l0_slowdown_trigger"):
        open_engine("lsm", str(tmp_path), l0_compaction_trigger=9, l0_slowdown_trigger=8)
    with pytest.raises(InvalidArgumentError, match="l0_stop_trigger"):
        open_engine("lsm", str(tmp_path), l0_slowdown_trigger=8, l0_stop_trigger=4)
    with pytest.raises(InvalidArgumentError, match="unknown option.*colour"):
        open_engine("lsm", str(tmp_path), colour="blue")
    with pytest.raises(InvalidArgumentError):
        open_engine("lsm", None)
    # A refused open leaves the directory usable.
    with open_engine("lsm", str(tmp_path)) as db:
        db.put(b"k", b"v")


def test_create_if_missing_false_refuses_a_missing_directory(tmp_path):
    with pytest.raises(InvalidArgumentError, match="create_if_missing"):
        open_engine("lsm", str(tmp_path / "absent"), create_if_missing=False)
    assert not (tmp_path / "absent").exists()
    # An existing directory without a database is refused too, and left empty.
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArgumentError, match="create_if_missing"):
        open_engine("lsm", str(tmp_path / "empty"), create_if_missing=False)
    assert [n for n in os.listdir(tmp_path / "empty") if n != "LOCK"] == []
    # Once a database exists, create_if_missing=False opens it.
    with open_engine("lsm", str(tmp_path / "db")) as db:
        db.put(b"k", b"v")
    with open_engine("lsm", str(tmp_path / "db"), create_if_missing=False) as db:
        assert db.get(b"k") == b"v"


def test_second_open_of_a_locked_directory_fails_clearly(tmp_path):
    path = str(tmp_path / "db")
    db = open_engine("lsm", path)
    db.put(b"k", b"v")
    with pytest.raises(StorageIOError, match="in use") as info:
        open_engine("lsm", path)
    assert path in str(info.value)
    # From another process too (the lock is an flock on the LOCK file).
    code = ("import sys\nfrom rldb.storage import open_engine\nfrom rldb.errors import StorageIOError\n"
            "try:\n    open_engine('lsm', sys.argv[1])\nexcept StorageIOError as e:\n"
            "    print('refused', e); sys.exit(3)\nprint('opened')\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__import__("rldb").__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    proc = subprocess.run([sys.executable, "-c", code, path], capture_output=True, env=env,
                          timeout=60)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert b"in use" in proc.stdout
    # The refused opens did not disturb the open engine.
    assert db.get(b"k") == b"v"
    db.put(b"k2", b"v2")
    db.close()
    with open_engine("lsm", path) as db:
        assert db.get(b"k") == b"v" and db.get(b"k2") == b"v2"


@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
def test_closed_engine_refuses_everything(tmp_path, background):
    db = lsm(tmp_path, background=background)
    for i in range(200):
        db.put(b"k%03d" % i, b"v" * 30)
    it = db.scan()
    db.close()
    db.close()   # closing twice is harmless
    calls = {
        "get": lambda: db.get(b"k001"), "put": lambda: db.put(b"k", b"v"),
        "delete": lambda: db.delete(b"k"), "scan": lambda: list(db.scan()),
        "write_batch": lambda: db.write_batch([("put", b"k", b"v")]),
        "stats": db.stats, "check": db.check, "flush": db.flush, "compact": db.compact,
    }
    for name, call in calls.items():
        with pytest.raises(ClosedError):
            call()
            pytest.fail(f"{name} after close did not raise")
    del it
    # Nothing written after close reached the disk.
    with lsm(tmp_path, background=background) as db:
        assert db.get(b"k") is None and db.get(b"k199") == b"v" * 30


def test_empty_write_batch_after_close_raises(tmp_path):
    db = lsm(tmp_path)
    db.close()
    with pytest.raises(ClosedError):
        db.write_batch([])


@pytest.mark.parametrize("bad", ["str", 1, None, bytearray(b"x"), memoryview(b"x")])
def test_non_bytes_refused(tmp_path, bad):
    with lsm(tmp_path) as db:
        with pytest.raises(InvalidArgumentError, match="keys must be bytes"):
            db.put(bad, b"v")
        with pytest.raises(InvalidArgumentError, match="keys must be bytes"):
            db.get(bad)
        with pytest.raises(InvalidArgumentError, match="keys must be bytes"):
            db.delete(bad)
        with pytest.raises(InvalidArgumentError, match="values must be bytes"):
            db.put(b"k", bad)
        with pytest.raises(InvalidArgumentError):
            db.get(b"")
        if bad is not None:
            with pytest.raises(InvalidArgumentError):
                list(db.scan(bad))
        assert list(db.scan()) == []


def test_empty_values_and_binary_keys(tmp_path):
    db = lsm(tmp_path, background=False)
    model = {}
    for i in range(500):
        k = bytes([i % 256, 0, 255]) + b"\x00" * (i % 5)
        model[k] = b"" if i % 2 else bytes(range(i % 50))
        db.put(k, model[k])
    for k, v in model.items():
        assert db.get(k) == v
    db.close()
    db = lsm(tmp_path, background=False)
    assert list(db.scan()) == sorted(model.items())
    db.check()
    db.close()


def test_large_values_cross_blocks_and_log_fragments(tmp_path):
    db = lsm(tmp_path, background=False)
    model = {b"big%d" % i: os.urandom(1000 * i) for i in range(1, 80, 7)}
    for k, v in model.items():
        db.put(k, v)
        db.put(k + b"-small", b"s")
    for k, v in model.items():
        assert db.get(k) == v
    db.close()
    db = lsm(tmp_path, background=False)
    for k, v in model.items():
        assert db.get(k) == v
    db.compact()
    for k, v in model.items():
        assert db.get(k) == v
    db.check()
    db.close()


def test_data_survives_reopen_without_explicit_flush(tmp_path):
    db = lsm(tmp_path, background=True)
    for i in range(3000):
        db.put(b"%06d" % i, b"%d" % (i * i))
    db.close()
    for _ in range(3):
        db = lsm(tmp_path, background=True)
        assert db.get(b"002999") == b"%d" % (2999 * 2999)
        assert len(list(db.scan())) == 3000
        db.close()
    db = lsm(tmp_path, background=False)
    db.check()
    assert db.stats()["last_sequence"] >= 3000
    db.close()
