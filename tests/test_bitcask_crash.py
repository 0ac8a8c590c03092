"""The Bitcask engine killed with SIGKILL, then reopened.

1. A child process (tests/bitcask_helpers/writer.py) writes a deterministic
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
2. A merge killed at each of its steps (a hook in rldb/storage/bitcask/merge.py
   sends SIGKILL), then at random moments of a large merge: after reopening,
   the contents are exactly what they were before the merge, every file is
   intact (check()), and a merge then completes."""
import json
import os
import random
import select
import signal
import subprocess
import sys
import time

import pytest

import rldb
from rldb.storage import open_engine
from rldb.storage.bitcask.files import parse_name
from tests.bitcask_helpers.writer import operations

WRITER = os.path.join(os.path.dirname(__file__), "bitcask_helpers", "writer.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(rldb.__file__)))
COUNT = 5000
ROUNDS = 3
OPTIONS = dict(sync=True, max_file_size=2048, merge_threshold=0.25, merge_small_files=3)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _read_lines(proc, stop):
    """Lines the child printed until stop(lines) is true, it exits, or 60 s."""
    lines, buf = [], b""
    fd = proc.stdout.fileno()
    started = time.monotonic()
    while not stop(lines):
        assert time.monotonic() - started < 60, "the child made no progress"
        ready, _, _ = select.select([fd], [], [], 0.005)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            *done, buf = buf.split(b"\n")
            lines += done
    return lines, buf


def _run_and_kill(path, seed, start, options, rng, round_no):
    """Starts the writer at operation `start`, kills it with SIGKILL at a
    random moment, and returns (indices it acknowledged, whether it finished)."""
    proc = subprocess.Popen(
        [sys.executable, WRITER, "write", path, str(seed), str(start), str(COUNT),
         json.dumps(options)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    if round_no % 2 == 0:
        target = rng.randrange(1, 1200)
        stop = lambda lines: len(lines) >= target  # noqa: E731
    else:
        deadline = []

        def stop(lines):
            if lines and not deadline:
                deadline.append(time.monotonic() + rng.uniform(0.0, 0.3))
            return bool(deadline) and time.monotonic() >= deadline[0]

    lines, buf = _read_lines(proc, stop)
    proc.send_signal(signal.SIGKILL)
    rest, err = proc.communicate()
    lines += (buf + rest).split(b"\n")
    lines = [line for line in lines if line]
    finished = bool(lines) and lines[-1] == b"done"
    if finished:
        lines.pop()
    else:
        assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")
    indices = [int(line) for line in lines]
    assert indices == list(range(start, start + len(indices))), "acknowledgements out of order"
    return indices, finished


def _apply(model, steps):
    for step in steps:
        if step[0] == "put":
            model[step[1]] = step[2]
        else:
            model.pop(step[1], None)


def _model_at(ops, p):
    model = {}
    for steps in ops[:p]:
        _apply(model, steps)
    return model


def consistent_prefixes(ops, start, model_at_start, state, limit):
    """Every p in [start, limit] such that the state after ops[:p] equals state."""
    model = dict(model_at_start)
    diff = {k for k in set(model) | set(state) if model.get(k) != state.get(k)}
    found = [start] if not diff else []
    for p in range(start, limit):
        for step in ops[p]:
            key = step[1]
            if step[0] == "put":
                model[key] = step[2]
            else:
                model.pop(key, None)
            if model.get(key) == state.get(key):
                diff.discard(key)
            else:
                diff.add(key)
        if not diff:
            found.append(p + 1)
    return found


def _contents(db):
    return {k: db.get(k) for k in db.keys()}


@pytest.mark.parametrize("background", [False, True], ids=["inline-merge", "background-merge"])
@pytest.mark.parametrize("seed", [1, 2])
def test_killed_writer_loses_nothing_acknowledged(tmp_path, seed, background):
    options = dict(OPTIONS, background_merge=background)
    ops = operations(seed, COUNT)
    rng = random.Random(seed * 10 + background)
    path = str(tmp_path / "db")
    start, model = 0, {}
    merged = False
    for round_no in range(ROUNDS):
        acked, finished = _run_and_kill(path, seed, start, options, rng, round_no)
        acknowledged = start + len(acked)   # ops[:acknowledged] were acknowledged
        db = open_engine("bitcask", path, **dict(options, background_merge=False,
                                                 merge_threshold=1.0, merge_small_files=0))
        try:
            state = _contents(db)
            assert len(state) == len(db)
            prefixes = consistent_prefixes(ops, start, model, state, COUNT)
            assert prefixes, (
                f"round {round_no}: the state after the crash is not the state after any "
                f"prefix of the writes ({acknowledged} were acknowledged)")
            assert max(prefixes) >= acknowledged, (
                f"round {round_no}: acknowledged writes lost: the state matches prefixes "
                f"{prefixes[:5]}..{prefixes[-5:]} but {acknowledged} were acknowledged")
            assert min(prefixes) <= acknowledged + 1, (
                f"round {round_no}: writes after the one in flight are present: prefixes "
                f"{prefixes[:5]}, acknowledged {acknowledged}")
            # No deleted key came back: every key absent from the model at the
            # acknowledged prefix is absent, unless the write in flight put it.
            expected = _model_at(ops, acknowledged)
            in_flight = {step[1] for step in ops[acknowledged]} if acknowledged < COUNT else set()
            for key in set(state) - set(expected):
                assert key in in_flight, f"round {round_no}: {key!r} came back"
            db.check()
            stats = db.stats()
            # A merge output has a rank (its inputs') below its own id.
            merged = merged or any(parse_name(n)[0] != parse_name(n)[1]
                                   for n in os.listdir(path) if n.endswith(".data"))
            start = acknowledged if acknowledged in prefixes else acknowledged + 1
            model = _model_at(ops, start)
        finally:
            db.close()
        assert stats["files"] > 1
        if finished:
            break
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
    return subprocess.Popen(
        [sys.executable, WRITER, "merge", path, json.dumps(QUIET), "full" if full else "part",
         step, str(nth)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())


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
        lines, _ = _read_lines(proc, lambda lines: lines[-1:] == [b"merging"])
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
