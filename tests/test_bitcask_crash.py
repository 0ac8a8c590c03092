"""The Bitcask engine killed with SIGKILL, then reopened.

1. A child process (tests/helpers/crash_writer.py) writes a deterministic
   sequence of puts, deletes and batches with sync=True, data files of 2 KiB
   and a low merge threshold, so that it is nearly always rolling a file or
   merging (in the background, or inline in the write that rolled); it prints
   the index of every operation the engine acknowledged.  The parent kills it
   at a random moment, reopens the directory and compares the engine's whole
   contents with the model after each prefix of the sequence: the state must
   be the state after some prefix (no deleted key back, no batch half
   applied) that includes every acknowledged operation and at most the one
   in flight.  Several kills per directory, so recovery also has to cope with
   a database that was itself recovered.
2. A merge killed at each of its steps (tests/bitcask_helpers/merge_child.py
   sets a hook in rldb/storage/bitcask/merge.py that sends SIGKILL), then at
   random moments of a large merge: after reopening, the contents are
   exactly what they were before the merge, every file is intact (check()),
   and a merge then completes."""
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from rldb.storage import open_engine
from rldb.storage.bitcask.files import parse_name
from tests.helpers.crash_check import CrashRun, KillPlan, read_lines, spawn

MERGE_CHILD = Path(__file__).parent / "bitcask_helpers" / "merge_child.py"
COUNT = 5000
ROUNDS = 3
OPTIONS = dict(sync=True, max_file_size=2048, merge_threshold=0.25, merge_small_files=3)
KILLS = KillPlan(max_acks=1200, max_delay=0.3)


def _contents(db):
    return {k: db.get(k) for k in db.keys()}


@pytest.mark.parametrize("background", [False, True], ids=["inline-merge", "background-merge"])
@pytest.mark.parametrize("seed", [1, 2])
def test_killed_writer_loses_nothing_acknowledged(tmp_path, seed, background):
    options = dict(OPTIONS, background_merge=background)
    rng = random.Random(seed * 10 + background)
    path = str(tmp_path / "db")
    run = CrashRun("bitcask", path, seed, COUNT, options, KILLS)
    merged = False
    for rnd in run.rounds(ROUNDS, rng):
        db = open_engine("bitcask", path, **dict(options, background_merge=False,
                                                 merge_threshold=1.0, merge_small_files=0))
        try:
            state = _contents(db)
            assert len(state) == len(db)
            run.check(state)
            # No deleted key came back: every key absent from the model at the
            # acknowledged prefix is absent, unless the write in flight put it.
            expected = run.acknowledged_model(rnd)
            in_flight = {step[1] for step in rnd.in_flight}
            for key in set(state) - set(expected):
                assert key in in_flight, f"round {rnd.number}: {key!r} came back"
            db.check()
            stats = db.stats()
            # A merge output has a rank (its inputs') below its own id.
            merged = merged or any(parse_name(n)[0] != parse_name(n)[1]
                                   for n in os.listdir(path) if n.endswith(".data"))
        finally:
            db.close()
        assert stats["files"] > 1
    assert merged, "no merge output was ever committed: the test did not exercise merges"


# ---- merges killed mid-way ---------------------------------------------------------------

MERGE_STEPS = [("input-copied", 1), ("input-copied", 3), ("outputs-written", 1),
               ("outputs-synced", 1), ("committed", 1), ("manifest-written", 1),
               ("outputs-renamed", 1), ("input-deleted", 1), ("input-deleted", 4), ("done", 1)]
QUIET = dict(max_file_size=1024, merge_threshold=1.0, merge_small_files=0, background_merge=False)


def _fragmented_store(path, seed=7):
    """A store of many small files full of overwritten and deleted keys, and
    its expected contents.  Written with no merge running."""
    rnd = random.Random(seed)
    model = {}
    with open_engine("bitcask", path, **QUIET) as db:
        for i in range(2500):
            key = b"key%04d" % rnd.randrange(300)
            if rnd.random() < 0.3:
                db.delete(key)
                model.pop(key, None)
            elif rnd.random() < 0.1:
                batch = [("put", b"batch%03d" % rnd.randrange(50), b"b%d" % i) for _ in range(3)]
                batch.append(("delete", key))
                db.write_batch(batch)
                for _, k, v in batch[:-1]:
                    model[k] = v
                model.pop(key, None)
            else:
                model[key] = b"%d:" % i + rnd.randbytes(rnd.randrange(0, 60))
                db.put(key, model[key])
        assert db.stats()["files"] > 20
    return model


def _merge_child(path, full, step, nth):
    return spawn(MERGE_CHILD, path, json.dumps(QUIET), "full" if full else "part", step, nth)


def _verify_after_crash(path, model):
    with open_engine("bitcask", path, **QUIET) as db:
        assert _contents(db) == model
        db.check()
        assert not [n for n in os.listdir(path) if n.endswith(".tmp") and ".hint" not in n]
        assert "MERGE" not in os.listdir(path)
        stats = db.merge(full=True)       # the store is still merge-able ...
        assert stats is not None
        assert _contents(db) == model     # ... and the merge loses nothing
        db.check()
    with open_engine("bitcask", path, **QUIET) as db:
        assert _contents(db) == model
        assert db.stats()["tombstones"] == 0


@pytest.mark.parametrize("step,nth", MERGE_STEPS, ids=[f"{s}-{n}" for s, n in MERGE_STEPS])
def test_merge_killed_at_each_step(tmp_path, step, nth):
    path = str(tmp_path / "db")
    model = _fragmented_store(path)
    proc = _merge_child(path, True, step, nth)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, (out, err.decode(errors="replace"))
    if step in ("manifest-written", "outputs-renamed", "input-deleted"):
        assert "MERGE" in os.listdir(path)  # committed: the open finishes the merge
    _verify_after_crash(path, model)


def test_merge_killed_at_random_moments(tmp_path):
    path = str(tmp_path / "db")
    model = _fragmented_store(path, seed=11)
    rng = random.Random(5)
    finished = 0
    for attempt in range(6):
        proc = _merge_child(path, attempt % 2 == 0, "random", 0)
        lines, _ = read_lines(proc, lambda lines: lines[-1:] == [b"merging"])
        time.sleep(rng.uniform(0, 0.08))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
        finished += b"finished" in out
        with open_engine("bitcask", path, **QUIET) as db:
            assert _contents(db) == model
            db.check()
        # Fragment the store again, so the next merge has work to do.
        with open_engine("bitcask", path, **QUIET) as db:
            for i in range(400):
                key = b"key%04d" % rng.randrange(300)
                if i % 3 == 0:
                    db.delete(key)
                    model.pop(key, None)
                else:
                    model[key] = b"again%d" % i
                    db.put(key, model[key])
    assert finished <= 3, f"{finished} of 6 merges finished before the kill"
    _verify_after_crash(path, model)
