"""Writers, readers and scanners on one LSM engine at once, with the
background thread flushing and compacting a tiny memtable underneath them.

Every value names its key, its writer and the writer's step, so a reader can
tell that what it read was written for that key, and that it never reads an
older value of a key after a newer one."""
import random
import threading
import time

import pytest

from rldb.errors import ClosedError
from rldb.storage import open_engine
from tests.lsm_helpers.common import wait_until_idle

OPTIONS = dict(memtable_size=8 << 10, block_size=256, target_file_size=8 << 10,
               level1_max_bytes=32 << 10, background=True)
WRITERS = 3
STEPS = 6000
OWN_KEYS = 300      # per writer
SHARED_KEYS = 100   # written by every writer


def own_key(w, k):
    return b"own%d-%04d" % (w, k)


def shared_key(k):
    return b"shared-%04d" % k


def make_value(key, w, step):
    return key + b"|%d|%06d|" % (w, step) + b"p" * (step % 40)


def parse_value(key, value):
    """(writer, step) encoded in a value; fails if the value is not one written for key."""
    assert value.startswith(key + b"|"), f"{key!r} holds a value written for another key: {value!r}"
    _, w, step, _ = value[len(key):].split(b"|", 3)
    return int(w), int(step)


def writer_plan(w):
    """Writer w's operations, and the final value of each key it alone writes."""
    rng = random.Random(w)
    ops = []
    for step in range(STEPS):
        r = rng.random()
        if r < 0.15:
            ops.append(("delete", own_key(w, rng.randrange(OWN_KEYS)), step))
        elif r < 0.3:
            k = shared_key(rng.randrange(SHARED_KEYS))
            ops.append(("put", k, step))
        elif r < 0.4:
            keys = {own_key(w, rng.randrange(OWN_KEYS)) for _ in range(5)}
            ops.append(("batch", sorted(keys), step))
        else:
            ops.append(("put", own_key(w, rng.randrange(OWN_KEYS)), step))
    return ops


def final_states(plans):
    own, shared_last = {}, {}
    for w, ops in enumerate(plans):
        for kind, key, step in ops:
            if kind == "delete":
                own[key] = None
            elif kind == "batch":
                for k in key:
                    own[k] = make_value(k, w, step)
            elif key.startswith(b"shared"):
                shared_last.setdefault(key, set())
                shared_last[key] = {v for v in shared_last[key] if parse_value(key, v)[0] != w}
                shared_last[key].add(make_value(key, w, step))
            else:
                own[key] = make_value(key, w, step)
    return own, shared_last


@pytest.mark.timeout(240)
@pytest.mark.parametrize("cache", ["default-cache", "tiny-cache"])
def test_writers_readers_and_scanners_at_once(tmp_path, cache):
    options = dict(OPTIONS)
    if cache == "tiny-cache":   # blocks evicted all the time, descriptors too
        options.update(block_cache_size=2048, max_open_files=8)
    db = open_engine("lsm", str(tmp_path / "db"), **options)
    plans = [writer_plan(w) for w in range(WRITERS)]
    errors = []
    done = threading.Event()
    progress = {"reads": 0, "values": 0, "scans": 0}

    def guard(fn):
        def run(*args):
            try:
                fn(*args)
            except BaseException as exc:
                errors.append(exc)
                done.set()
        return run

    @guard
    def writer(w):
        for kind, key, step in plans[w]:
            if done.is_set():
                return
            if kind == "delete":
                db.delete(key)
            elif kind == "batch":
                db.write_batch([("put", k, make_value(k, w, step)) for k in key])
            else:
                db.put(key, make_value(key, w, step))

    @guard
    def reader(r):
        rng = random.Random(100 + r)
        latest = {}   # own key -> highest step seen: reads never go back in time
        while not done.is_set():
            w = rng.randrange(WRITERS)
            if rng.random() < 0.3:
                key = shared_key(rng.randrange(SHARED_KEYS))
            else:
                key = own_key(w, rng.randrange(OWN_KEYS))
            value = db.get(key)
            progress["reads"] += 1
            if value is None:
                continue
            progress["values"] += 1
            vw, step = parse_value(key, value)
            if not key.startswith(b"shared"):
                assert vw == w, f"{key!r} read from writer {vw}: {value!r}"
                assert step >= latest.get(key, -1), \
                    f"{key!r}: read step {step} after step {latest[key]}"
                latest[key] = step

    @guard
    def scanner():
        rng = random.Random(7)
        while not done.is_set():
            reverse = rng.random() < 0.5
            start = rng.choice([None, b"own1", b"own0-0150", b"shared-0050"])
            end = rng.choice([None, b"own2-0100", b"shared", b"zzz"])
            previous = None
            for key, value in db.scan(start, end, reverse=reverse):
                if previous is not None:
                    assert (key < previous) if reverse else (key > previous), \
                        f"scan order broken: {previous!r} then {key!r} (reverse={reverse})"
                assert (start is None or key >= start) and (end is None or key < end)
                parse_value(key, value)
                previous = key
            progress["scans"] += 1

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    others = [threading.Thread(target=reader, args=(r,)) for r in range(2)]
    others.append(threading.Thread(target=scanner))
    for t in writers + others:
        t.start()
    for t in writers:
        t.join()
    done.set()
    for t in others:
        t.join()
    try:
        if errors:
            raise errors[0]
        assert progress["values"] > 100 and progress["scans"] > 0, progress
        own, shared_last = final_states(plans)
        for key, value in own.items():
            assert db.get(key) == value, key
        for key, candidates in shared_last.items():
            assert db.get(key) in candidates, key
        everything = dict(db.scan())
        assert set(everything) == {k for k, v in own.items() if v is not None} | set(shared_last)
        assert all(db.get(k) == v for k, v in everything.items())
        stats = db.stats()
        assert stats["flushes"] > 10 and stats["compactions"] > 0, stats
        wait_until_idle(db)
        db.check()
    finally:
        db.close()


@pytest.mark.timeout(120)
def test_concurrent_writers_of_the_same_keys_with_sync(tmp_path):
    """Group commit: several writers with sync=True share fsyncs; every write
    is readable afterwards and after reopening."""
    db = open_engine("lsm", str(tmp_path / "db"), **dict(OPTIONS, sync=True))
    errors = []

    def writer(w):
        try:
            for i in range(800):
                db.put(b"k%03d" % (i % 200), b"%d:%d" % (w, i))
                db.put(b"w%d-%04d" % (w, i), b"x")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for w in range(4):
        assert sum(1 for _ in db.scan(b"w%d-" % w, b"w%d." % w)) == 800
    for i in range(200):
        got = db.get(b"k%03d" % i)
        assert got is not None and int(got.split(b":")[1]) % 200 == i
    db.close()
    with open_engine("lsm", str(tmp_path / "db"), **OPTIONS) as db:
        assert sum(1 for _ in db.scan(b"w", b"x")) == 3200


def _hammer(db, stop, errors, seconds):
    """Writes until stop is set or `seconds` pass."""
    def run():
        rng = random.Random(1)
        i = 0
        deadline = time.monotonic() + seconds
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                db.put(b"%05d" % rng.randrange(3000), b"%d" % i + b"v" * 30)
                i += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.timeout(120)
def test_check_while_background_work_runs(tmp_path):
    """check() on a healthy database passes while flushes and compactions
    install new versions (before check() held the mutex, it raised 'the
    manifest on disk disagrees with the version in memory' within
    milliseconds here)."""
    db = open_engine("lsm", str(tmp_path / "db"), memtable_size=2048, block_size=128,
                     target_file_size=2048, level1_max_bytes=4096, background=True)
    stop = threading.Event()
    errors = []
    thread = _hammer(db, stop, errors, seconds=3)
    checks = 0
    try:
        while not stop.is_set():
            db.check()
            checks += 1
    finally:
        stop.set()
        thread.join()
    try:
        assert not errors, errors
        assert checks > 10 and db.stats()["compactions"] > 10
    finally:
        db.close()


@pytest.mark.timeout(120)
def test_manual_compaction_while_background_work_runs(tmp_path):
    """compact() on the caller's thread while the background thread flushes
    and compacts: no file number handed out twice, no table deleted under a
    compaction that is writing it, no data lost.  (Both happened: the MANIFEST
    write rewound next_file, and the cleanup took the live set before listing
    the directory.)"""
    path = str(tmp_path / "db")
    model = {}
    for attempt in range(5):
        db = open_engine("lsm", path, memtable_size=4096, block_size=128,
                         target_file_size=2048, level1_max_bytes=8192, background=True)
        stop = threading.Event()
        errors = []

        def writer():
            rng = random.Random(attempt)
            try:
                for i in range(8000):
                    k = b"%05d" % rng.randrange(2000)
                    db.put(k, b"%d-%d" % (attempt, i))
                    model[k] = b"%d-%d" % (attempt, i)
            except BaseException as exc:
                errors.append(exc)
            finally:
                stop.set()

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            while not stop.is_set():
                db.compact()
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()
            thread.join()
        try:
            assert not errors, errors
            for k, v in model.items():
                assert db.get(k) == v, k
            wait_until_idle(db)
            db.check()
        finally:
            db.close()


@pytest.mark.timeout(120)
def test_close_while_threads_read_and_write(tmp_path):
    """close() under load: every other thread ends with ClosedError (or
    finishes), nothing else is raised, and every write acknowledged before
    close is there after reopening."""
    path = str(tmp_path / "db")
    db = open_engine("lsm", path, **OPTIONS)
    acknowledged = [[] for _ in range(3)]
    outcomes = []
    started = threading.Barrier(7)

    def writer(w):
        started.wait()
        try:
            for i in range(1_000_000):
                key = b"w%d-%07d" % (w, i)
                db.put(key, key)
                acknowledged[w].append(key)
        except ClosedError:
            outcomes.append("closed")
        except BaseException as exc:
            outcomes.append(exc)

    def reader(r):
        started.wait()
        rng = random.Random(r)
        try:
            while True:
                w = rng.randrange(3)
                n = len(acknowledged[w])
                if n:
                    key = acknowledged[w][rng.randrange(n)]
                    assert db.get(key) == key
                if r == 1:
                    for _ in db.scan(b"w0-", b"w0-0000100"):
                        pass
        except ClosedError:
            outcomes.append("closed")
        except BaseException as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    threads += [threading.Thread(target=reader, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(0.5)
    db.close()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a thread kept running after close"
    assert outcomes == ["closed"] * 6, outcomes
    assert all(acknowledged), "a writer never got a write through"
    with open_engine("lsm", path, **OPTIONS) as db:
        for keys in acknowledged:
            for key in keys:
                assert db.get(key) == key
        db.check()
