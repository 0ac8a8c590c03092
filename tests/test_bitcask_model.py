"""The Bitcask engine against a dict model, its keydir against a dict, and its
behaviour one rule at a time.

The state machine runs with data files of 64 bytes to 2 KiB (a few entries
each), so nearly every step rolls the active file and merges some files; it
closes and reopens the directory now and then (loading hints, or scanning data
files once their hints are gone), and check() (every entry's checksum against
the keydir, live-byte figures, the keydir's own invariants, every hint, the
directory) runs after every step."""
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from rldb._core.keydir import BC_MAX_KEY, KEYDIR_TOMBSTONE, Keydir
from rldb.errors import ClosedError, InvalidArgumentError, NotSupportedError, StorageIOError
from rldb.storage import WriteBatch, engine_kinds, open_engine
from tests.engine_model import EngineMachine, keys, values

SMALL = dict(max_file_size=512, merge_threshold=0.3, merge_small_files=4, background_merge=False)


def bitcask(path, **options):
    return open_engine("bitcask", str(path), **dict(SMALL, **options))


def hint_files(path):
    return sorted(n for n in os.listdir(path) if n.endswith(".hint"))


def data_files(path):
    return sorted(n for n in os.listdir(path) if n.endswith(".data"))


def wait_for_merges(db, timeout=30.0):
    deadline = time.monotonic() + timeout
    while db.stats()["merge_running"] or db._merge_requested:
        assert time.monotonic() < deadline, "the merge thread never went idle"
        time.sleep(0.005)


# ---- the differential state machine ----------------------------------------------------


class BitcaskMachine(EngineMachine):
    supports_scan = False
    supports_reopen = True
    background = False

    def open(self):
        self.dir = tempfile.mkdtemp(prefix="rldb-bitcask-model-")
        self.options = dict(SMALL, background_merge=self.background)
        return open_engine("bitcask", self.dir, **self.options)

    def reopen(self):
        self.engine.close()
        return open_engine("bitcask", self.dir, **self.options)

    @initialize(max_file_size=st.integers(64, 2048), merge_threshold=st.sampled_from([0.1, 0.3, 0.6, 1.0]),
                merge_small_files=st.sampled_from([0, 2, 4]), sync=st.booleans())
    def configure(self, **options):
        """Starts over in an empty directory with options drawn for this run."""
        self.engine.close()
        shutil.rmtree(self.dir)
        self.options.update(options)
        self.engine = open_engine("bitcask", self.dir, **self.options)

    @rule(seed=st.integers(0, 2**32), n=st.integers(1, 150))
    def bulk_write(self, seed, n):
        """Many writes in one step, so that rolls and merges pile up."""
        rnd = random.Random(seed)
        for _ in range(n):
            key = bytes([rnd.randrange(8)]) + rnd.randbytes(rnd.randrange(0, 3))
            if rnd.random() < 0.25:
                self.engine.delete(key)
                self.model.pop(key, None)
            else:
                value = rnd.randbytes(rnd.randrange(0, 65))
                self.engine.put(key, value)
                self.model[key] = value

    @rule(full=st.booleans())
    def merge(self, full):
        self.engine.merge(full=full)
        if full and not self.background:
            # Every immutable file was rewritten with live entries only.
            for f in self.engine.stats()["file_list"]:
                assert f["active"] or f["dead_bytes"] == 0, f

    @rule()
    def flush(self):
        self.engine.flush()

    @rule()
    def keys_and_len(self):
        got = list(self.engine.keys())
        assert len(got) == len(set(got))
        assert set(got) == set(self.model)
        assert len(self.engine) == len(self.model)

    @rule()
    def reopen_without_hints(self):
        """Reopens with every hint deleted: the keydir comes from data scans."""
        self.engine.close()
        for name in hint_files(self.dir):
            os.unlink(os.path.join(self.dir, name))
        self.engine = open_engine("bitcask", self.dir, **self.options)
        recovery = self.engine.stats()["recovery"]
        assert recovery["hints_loaded"] == 0
        wait_for_merges(self.engine)
        # Every data file was scanned and got a new hint (or was merged since).
        assert len(hint_files(self.dir)) == len(data_files(self.dir)) - 1

    @invariant()
    def engine_is_consistent(self):
        self.engine.check()
        stats = self.engine.stats()
        assert stats["keys"] == len(self.model)
        assert stats["live_bytes"] + stats["dead_bytes"] == stats["data_bytes"]

    def teardown(self):
        try:
            self.engine.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class BackgroundBitcaskMachine(BitcaskMachine):
    background = True


_MODEL_SETTINGS = settings(max_examples=30, stateful_step_count=50, deadline=None,
                           suppress_health_check=[HealthCheck.too_slow,
                                                  HealthCheck.filter_too_much])

TestBitcaskInlineAgainstModel = BitcaskMachine.TestCase
TestBitcaskInlineAgainstModel.settings = _MODEL_SETTINGS
TestBitcaskBackgroundAgainstModel = BackgroundBitcaskMachine.TestCase
TestBitcaskBackgroundAgainstModel.settings = settings(_MODEL_SETTINGS, max_examples=15,
                                                      stateful_step_count=40)


# ---- the keydir against a dict --------------------------------------------------------


class KeydirMachine(RuleBasedStateMachine):
    """The C keydir alone: puts, replacements, removals (which leave holes in
    the arena until it is compacted) and growth, against a dict."""

    def __init__(self):
        super().__init__()
        self.kd = Keydir()
        self.model = {}

    records = st.tuples(st.integers(0, 2**32 - 2), st.integers(0, 2**32 - 1),
                        st.sampled_from([0, 1, 100, KEYDIR_TOMBSTONE]), st.integers(0, 2**32 - 1))
    kd_keys = st.binary(min_size=1, max_size=3) | st.binary(min_size=1, max_size=300)

    @rule(key=kd_keys, rec=records)
    def put(self, key, rec):
        assert self.kd.put(key, *rec) == self.model.get(key)
        self.model[key] = rec

    @rule(key=kd_keys)
    def remove(self, key):
        assert self.kd.remove(key) == self.model.pop(key, None)

    @rule(data=st.data())
    def remove_existing(self, data):
        if self.model:
            key = data.draw(st.sampled_from(sorted(self.model)))
            assert self.kd.remove(key) == self.model.pop(key)

    @rule(seed=st.integers(0, 2**32), n=st.integers(1, 2000), removals=st.floats(0, 1))
    def bulk(self, seed, n, removals):
        rnd = random.Random(seed)
        for i in range(n):
            key = rnd.randbytes(rnd.choice([1, 2, 16]))
            if rnd.random() < removals:
                assert self.kd.remove(key) == self.model.pop(key, None)
            else:
                rec = (i, i * 7, rnd.choice([5, KEYDIR_TOMBSTONE]), i)
                self.kd.put(key, *rec)
                self.model[key] = rec

    @rule(key=kd_keys)
    def get(self, key):
        assert self.kd.get(key) == self.model.get(key)

    @invariant()
    def consistent(self):
        self.kd.check()
        usage = self.kd.usage()
        assert usage["count"] == len(self.model)
        assert usage["tombstones"] == sum(r[2] == KEYDIR_TOMBSTONE for r in self.model.values())
        assert dict(self.kd.items()) == self.model


TestKeydirAgainstDict = KeydirMachine.TestCase
TestKeydirAgainstDict.settings = settings(max_examples=30, stateful_step_count=30, deadline=None)


def test_keydir_refuses_bad_keys():
    kd = Keydir()
    with pytest.raises(InvalidArgumentError):
        kd.put(b"", 1, 2, 3, 4)
    with pytest.raises(InvalidArgumentError):
        kd.put(b"k" * (BC_MAX_KEY + 1), 1, 2, 3, 4)
    kd.put(b"k" * BC_MAX_KEY, 1, 2, 3, 4)
    assert kd.get(b"k" * BC_MAX_KEY) == (1, 2, 3, 4)
    kd.check()


# ---- one behaviour at a time -----------------------------------------------------------


def test_registered_and_scan_is_refused_with_a_pointer_to_lsm(tmp_path):
    assert "bitcask" in engine_kinds()
    with bitcask(tmp_path) as db:
        db.put(b"a", b"1")
        with pytest.raises(NotSupportedError, match="lsm"):
            db.scan()
        with pytest.raises(NotSupportedError, match="no order"):
            db.scan(b"a", b"b", reverse=True)
        assert list(db.keys()) == [b"a"]


def test_values_survive_rolls_merges_and_reopens(tmp_path):
    db = bitcask(tmp_path, max_file_size=300)
    model = {}
    for i in range(2000):
        k = b"k%03d" % (i % 150)
        if i % 7 == 3:
            db.delete(k)
            model.pop(k, None)
        else:
            model[k] = b"v%d" % i * (i % 5)
            db.put(k, model[k])
    stats = db.stats()
    assert stats["rolls"] > 50 and stats["merges"] > 5
    assert stats["keys"] == len(model)
    db.check()
    db.close()
    db = bitcask(tmp_path, max_file_size=300)
    assert {k: db.get(k) for k in model} == model
    assert set(db.keys()) == set(model)
    rec = db.stats()["recovery"]
    assert rec["files_scanned"] == 0 and rec["hints_loaded"] == db.stats()["files"] - 1
    db.check()
    db.close()


def test_every_immutable_file_has_a_hint(tmp_path):
    db = bitcask(tmp_path, max_file_size=200, merge_threshold=1.0, merge_small_files=0)
    for i in range(300):
        db.put(b"key%04d" % i, b"x" * 30)
    names = set(os.listdir(tmp_path))
    data = [n for n in names if n.endswith(".data")]
    assert len(data) > 20
    active = db._files.active.data_name()
    for name in data:
        if name != active:
            assert name[:-5] + ".hint" in names, name
    assert active[:-5] + ".hint.tmp" in names
    db.close()
    assert len(hint_files(tmp_path)) == len(data_files(tmp_path))


def test_reopen_loads_hints_and_falls_back_to_scans(tmp_path):
    db = bitcask(tmp_path, max_file_size=4096, merge_threshold=1.0, merge_small_files=0)
    model = {b"%06d" % i: os.urandom(20) for i in range(3000)}
    for k, v in model.items():
        db.put(k, v)
    db.close()
    db = bitcask(tmp_path, max_file_size=4096)
    rec = db.stats()["recovery"]
    assert rec["hints_loaded"] > 10 and rec["files_scanned"] == 0
    assert all(db.get(k) == v for k, v in model.items())
    db.close()
    for name in hint_files(tmp_path):
        os.unlink(tmp_path / name)
    db = bitcask(tmp_path, max_file_size=4096)
    rec = db.stats()["recovery"]
    assert rec["hints_loaded"] == 0 and rec["files_scanned"] > 10
    assert all(db.get(k) == v for k, v in model.items())
    db.check()
    db.close()
    db = bitcask(tmp_path, max_file_size=4096)  # the scans wrote new hints
    assert db.stats()["recovery"]["files_scanned"] == 0
    db.close()


def test_merge_reclaims_dead_bytes_and_drops_tombstones(tmp_path):
    # merge_threshold=1.0: only files with nothing live merge on their own.
    db = bitcask(tmp_path, max_file_size=1024, merge_threshold=1.0, merge_small_files=0)
    for round_ in range(5):
        for i in range(100):
            db.put(b"k%03d" % i, b"r%d-" % round_ + b"x" * 40)
    for i in range(0, 100, 2):
        db.delete(b"k%03d" % i)
    for i in range(40):
        db.put(b"filler", b"f" * 40)  # rolls the tombstones out of the active file
    before = db.stats()
    assert before["tombstones"] == 50 and before["dead_bytes"] > 0
    merges = before["merges"]
    stats = db.merge(full=True)
    assert stats["tombstones_dropped"] == 50 and stats["tombstones_kept"] == 0
    after = db.stats()
    assert after["tombstones"] == 0
    # Only the active file (not merged) may still hold dead bytes.
    active = [f for f in after["file_list"] if f["active"]][0]
    assert after["dead_bytes"] == active["dead_bytes"]
    assert after["data_bytes"] < before["data_bytes"]
    assert after["merges"] == merges + 1
    db.check()
    db.close()
    db = bitcask(tmp_path)
    for i in range(100):
        assert db.get(b"k%03d" % i) == (None if i % 2 == 0 else b"r4-" + b"x" * 40)
    db.close()


def test_tombstone_kept_while_an_older_unmerged_file_holds_the_key(tmp_path):
    """File A holds victim=old among live keys; file B holds victim's tombstone
    among keys that are all overwritten later, so only B passes the merge
    threshold.  Dropping the tombstone would bring victim back from A."""
    # Entries of 54 bytes in files of at most 1000: a file holds 18 of them.
    opts = dict(max_file_size=1000, merge_small_files=0)
    db = bitcask(tmp_path, merge_threshold=1.0, **opts)   # no merge yet
    db.put(b"victim", b"old")
    for i in range(17):
        db.put(b"a%02d" % i, b"x" * 30)    # file A: victim and live keys
    db.delete(b"victim")                    # file B: the tombstone ...
    for i in range(17):
        db.put(b"b%02d" % i, b"y" * 30)     # ... and keys ...
    for i in range(17):
        db.put(b"b%02d" % i, b"z" * 30)     # ... all overwritten later
    files = db.stats()["file_list"]
    assert len(files) == 3 and files[0]["dead_bytes"] == 30 and files[1]["dead_bytes"] > 800
    db.close()
    db = bitcask(tmp_path, merge_threshold=0.5, **opts)  # merges B alone on open
    st_ = db.stats()
    assert st_["merges"] == 1 and st_["tombstones_dropped"] == 0 and st_["tombstones"] == 1
    assert st_["file_list"][0]["size"] == files[0]["size"]  # A was left out
    assert db.get(b"victim") is None
    db.close()
    db = bitcask(tmp_path, merge_threshold=0.5, **opts)
    assert db.get(b"victim") is None       # not brought back from A
    stats = db.merge(full=True)            # now every older file is in the merge
    assert stats["tombstones_dropped"] == 1
    db.close()
    db = bitcask(tmp_path)
    assert db.get(b"victim") is None and db.stats()["tombstones"] == 0
    db.check()
    db.close()


def test_write_batch_is_all_or_nothing(tmp_path):
    db = bitcask(tmp_path)
    db.put(b"a", b"1")
    with pytest.raises(InvalidArgumentError):
        db.write_batch([("put", b"b", b"2"), ("delete", b"a"), ("put", "bad", b"x")])
    with pytest.raises(InvalidArgumentError):
        db.write_batch([("put", b"b", b"2"), ("put", b"k" * 70000, b"x")])
    assert db.get(b"a") == b"1" and db.get(b"b") is None
    db.write_batch(WriteBatch().put(b"b", b"2").delete(b"a"))
    assert db.get(b"a") is None and db.get(b"b") == b"2"
    big = [("put", b"big%04d" % i, b"%04d" % i * 10) for i in range(200)]  # > max_file_size
    db.write_batch(big + [("delete", b"b")])
    db.write_batch([])
    assert db.get(b"b") is None and db.get(b"big0199") == b"0199" * 10
    db.close()
    db = bitcask(tmp_path)
    assert db.get(b"b") is None and db.get(b"big0000") == b"0000" * 10
    db.check()
    db.close()


def test_readers_never_see_half_a_batch(tmp_path):
    db = bitcask(tmp_path, max_file_size=4096, background_merge=True)
    names = [b"member%02d" % i for i in range(20)]
    stop = threading.Event()
    errors, seen = [], set()

    def writer():
        try:
            for generation in range(400):
                db.write_batch([("put", k, b"gen%05d" % generation) for k in names])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not stop.is_set():
        got = [db.get(k) for k in names]
        if got[0] is not None:
            # Gets are not a snapshot, but generations only move forward.
            gens = [int(v[3:]) for v in got]
            assert gens == sorted(gens), gens
            seen.add(gens[0])
    thread.join()
    assert not errors, errors
    assert len(seen) > 1
    assert db.stats()["merges"] > 0
    db.check()
    db.close()


def test_large_values_take_the_slow_path(tmp_path):
    db = bitcask(tmp_path, max_file_size=100_000)
    model = {b"big%d" % i: os.urandom(7000 * i) for i in range(8)}
    for k, v in model.items():
        db.put(k, v)
    assert all(db.get(k) == v for k, v in model.items())
    db.close()
    db = bitcask(tmp_path)
    assert all(db.get(k) == v for k, v in model.items())
    db.merge(full=True)
    assert all(db.get(k) == v for k, v in model.items())
    db.check()
    db.close()


def test_empty_values_binary_keys_and_limits(tmp_path):
    db = bitcask(tmp_path)
    model = {}
    for i in range(300):
        k = bytes([i % 256, 0, 255]) + b"\x00" * (i % 5)
        model[k] = b"" if i % 2 else bytes(range(i % 50))
        db.put(k, model[k])
    longest = b"L" * BC_MAX_KEY
    db.put(longest, b"v")
    model[longest] = b"v"
    with pytest.raises(InvalidArgumentError, match="65535"):
        db.put(b"L" * (BC_MAX_KEY + 1), b"v")
    with pytest.raises(InvalidArgumentError, match="65535"):
        db.delete(b"L" * (BC_MAX_KEY + 1))
    assert all(db.get(k) == v for k, v in model.items())
    db.close()
    db = bitcask(tmp_path)
    assert all(db.get(k) == v for k, v in model.items())
    db.close()


def test_delete_of_an_absent_key_writes_nothing(tmp_path):
    db = bitcask(tmp_path)
    db.delete(b"never")
    db.put(b"k", b"v")
    db.delete(b"k")
    size = db.stats()["data_bytes"]
    db.delete(b"k")        # already a tombstone
    db.delete(b"never")
    assert db.stats()["data_bytes"] == size
    assert db.stats()["tombstones"] == 1
    db.close()


@pytest.mark.parametrize("bad", ["str", 1, None, bytearray(b"x"), memoryview(b"x")])
def test_non_bytes_refused(tmp_path, bad):
    with bitcask(tmp_path) as db:
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
        assert list(db.keys()) == []


def test_closed_engine_refuses_everything(tmp_path):
    db = bitcask(tmp_path, background_merge=True)
    for i in range(100):
        db.put(b"k%03d" % i, b"v" * 30)
    get, put, delete = db.get, db.put, db.delete  # bound before close, as the bench does
    db.close()
    db.close()
    calls = {
        "get": lambda: db.get(b"k001"), "put": lambda: db.put(b"k", b"v"),
        "delete": lambda: db.delete(b"k001"), "scan": lambda: db.scan(),
        "write_batch": lambda: db.write_batch([("put", b"k", b"v")]),
        "empty batch": lambda: db.write_batch([]), "keys": db.keys, "len": lambda: len(db),
        "stats": db.stats, "check": db.check, "flush": db.flush, "merge": db.merge,
        "stale get": lambda: get(b"k001"), "stale put": lambda: put(b"k", b"v"),
        "stale delete": lambda: delete(b"k001"),
    }
    for name, call in calls.items():
        with pytest.raises(ClosedError):
            call()
            pytest.fail(f"{name} after close did not raise")
    with bitcask(tmp_path) as db:
        assert db.get(b"k") is None and db.get(b"k099") == b"v" * 30


OPTION_ERRORS = [
    ("max_file_size", 0), ("max_file_size", 2**32), ("max_file_size", 1.5), ("max_file_size", True),
    ("merge_threshold", 0), ("merge_threshold", 1.5), ("merge_threshold", "half"),
    ("merge_small_files", 1), ("merge_small_files", -1), ("sync", 1), ("background_merge", None),
    ("create_if_missing", "yes"),
]


@pytest.mark.parametrize("name,value", OPTION_ERRORS)
def test_option_errors_name_the_option(tmp_path, name, value):
    with pytest.raises(InvalidArgumentError, match=name):
        open_engine("bitcask", str(tmp_path / "db"), **{name: value})
    assert not (tmp_path / "db").exists()


def test_open_refusals(tmp_path):
    with pytest.raises(InvalidArgumentError, match="unknown option.*colour"):
        open_engine("bitcask", str(tmp_path), colour="blue")
    with pytest.raises(InvalidArgumentError):
        open_engine("bitcask", None)
    with pytest.raises(InvalidArgumentError, match="create_if_missing"):
        open_engine("bitcask", str(tmp_path / "absent"), create_if_missing=False)
    assert not (tmp_path / "absent").exists()
    path = str(tmp_path / "db")
    db = open_engine("bitcask", path)
    db.put(b"k", b"v")
    with pytest.raises(StorageIOError, match="in use"):
        open_engine("bitcask", path)
    code = ("import sys\nfrom rldb.storage import open_engine\nfrom rldb.errors import StorageIOError\n"
            "try:\n    open_engine('bitcask', sys.argv[1])\nexcept StorageIOError as e:\n"
            "    print('refused', e); sys.exit(3)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__import__("rldb").__file__)))
    proc = subprocess.run([sys.executable, "-c", code, path], capture_output=True,
                          env=dict(os.environ, PYTHONPATH=root), timeout=60)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert db.get(b"k") == b"v"
    db.close()
    with open_engine("bitcask", path, create_if_missing=False) as db:
        assert db.get(b"k") == b"v"


def test_stats_report_files_bytes_keydir_and_merges(tmp_path):
    db = bitcask(tmp_path, max_file_size=2048, merge_threshold=0.5, merge_small_files=0)
    for i in range(1000):
        db.put(b"%012d" % (i % 300), os.urandom(40))
    st = db.stats()
    for name in ("files", "live_bytes", "dead_bytes", "keydir_bytes", "keydir_bytes_per_key",
                 "merges", "tombstones", "rolls", "file_list", "recovery"):
        assert name in st, name
    assert st["keys"] == 300 == len(db)
    assert st["files"] == len(st["file_list"]) == len(data_files(tmp_path))
    assert st["data_bytes"] == sum(f["size"] for f in st["file_list"])
    assert st["live_bytes"] == sum(f["live_bytes"] for f in st["file_list"])
    # Every live key's newest entry is live: 21 header + 12 key + 40 value bytes.
    assert st["live_bytes"] == 300 * (21 + 12 + 40)
    assert st["merges"] > 0 and st["keydir_bytes_per_key"] == st["keydir_bytes"] / 300
    db.close()


def test_sync_writers_share_fsyncs(tmp_path):
    db = bitcask(tmp_path, sync=True, max_file_size=1 << 20)
    barrier = threading.Barrier(8)

    def writer(t):
        barrier.wait()
        for i in range(150):
            db.put(b"t%d-%04d" % (t, i), b"v" * 50)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    syncs = db.stats()["syncs"]
    assert 0 < syncs < 8 * 150, syncs  # group commit: fewer fdatasyncs than writes
    assert len(db) == 8 * 150
    db.check()
    db.close()


def test_sync_preallocation_is_cut_at_close(tmp_path):
    db = bitcask(tmp_path, sync=True, max_file_size=1 << 20)
    for i in range(100):
        db.put(b"k%03d" % i, b"v" * 50)
    active = tmp_path / db._files.active.data_name()
    assert active.stat().st_size > 100 * (21 + 4 + 50)  # zeros ahead of the entries
    db.check()
    db.close()
    assert active.stat().st_size == 100 * (21 + 4 + 50)
    with bitcask(tmp_path) as db:
        assert db.stats()["recovery"]["files_scanned"] == 0
        assert db.get(b"k099") == b"v" * 50


def test_merges_run_while_reads_and_writes_go_on(tmp_path):
    db = bitcask(tmp_path, max_file_size=8192, merge_threshold=0.3, merge_small_files=4,
                 background_merge=True)
    model = {}
    lock = threading.Lock()
    stop = threading.Event()
    errors = []

    def reader():
        rnd = random.Random(1)
        try:
            while not stop.is_set():
                k = b"k%04d" % rnd.randrange(500)
                with lock:
                    expected = model.get(k)
                    got = db.get(k)
                assert got == expected, (k, got, expected)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for th in threads:
        th.start()
    rnd = random.Random(2)
    try:
        for i in range(15000):
            k = b"k%04d" % rnd.randrange(500)
            with lock:
                if rnd.random() < 0.2:
                    db.delete(k)
                    model.pop(k, None)
                else:
                    model[k] = b"%d" % i * 10
                    db.put(k, model[k])
    finally:
        stop.set()
        for th in threads:
            th.join()
    assert not errors, errors
    wait_for_merges(db)
    assert db.stats()["merges"] >= 3
    assert db.stats()["merge_error"] is None
    db.check()
    db.close()
    with bitcask(tmp_path) as db:
        assert {k: db.get(k) for k in model} == model


def test_many_reopens_do_not_pile_up_files(tmp_path):
    for i in range(30):
        with bitcask(tmp_path, max_file_size=1 << 20, merge_small_files=4) as db:
            db.put(b"k%d" % i, b"v")
    assert len(data_files(tmp_path)) <= 6
    with bitcask(tmp_path) as db:
        assert len(db) == 30
        db.check()


@given(ops=st.lists(st.tuples(st.sampled_from(["put", "delete"]), keys, values), max_size=60))
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])
def test_scanned_and_hinted_recovery_agree(tmp_path_factory, ops):
    """The keydir rebuilt from hints equals the one rebuilt from data scans."""
    path = tmp_path_factory.mktemp("agree")
    opts = dict(max_file_size=128, merge_threshold=1.0, merge_small_files=0)
    db = bitcask(path, **opts)
    for kind, k, v in ops:
        db.put(k, v) if kind == "put" else db.delete(k)
    db.close()
    with bitcask(path, **opts) as db:
        hinted = {k: db.get(k) for k in db.keys()}
        hinted_stats = db.stats()
    for name in hint_files(path):
        os.unlink(path / name)
    with bitcask(path, **opts) as db:
        assert {k: db.get(k) for k in db.keys()} == hinted
        st_ = db.stats()
        assert (st_["live_bytes"], st_["tombstones"]) == (hinted_stats["live_bytes"],
                                                          hinted_stats["tombstones"])
        db.check()
