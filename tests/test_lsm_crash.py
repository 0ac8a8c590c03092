"""The LSM engine killed with SIGKILL at random moments, then reopened.

A child process (tests/lsm_helpers/writer.py) writes a deterministic sequence
of puts, deletes and batches with a tiny memtable, so that most of its time is
spent in flushes and compactions, and prints the index of every operation the
engine acknowledged.  The parent kills it, reopens the directory and compares
the engine's whole contents with the model after each prefix of the sequence:

- the state must be the state after some prefix (nothing from a later write
  without every earlier one, no deleted key back, no batch half applied);
- that prefix must include every acknowledged operation (with sync=True
  because the log was fsynced, with sync=False because a process crash loses
  nothing that was written to the file, as rldb/storage/lsm/log.py promises);
- it may include at most the one operation that was in flight.
Several kills per directory, so recovery also has to cope with a database that
was itself recovered."""
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest

import rldb
from rldb.storage import open_engine
from tests.lsm_helpers.writer import operations

WRITER = os.path.join(os.path.dirname(__file__), "lsm_helpers", "writer.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(rldb.__file__)))
COUNT = 6000
ROUNDS = 4
OPTIONS = dict(memtable_size=4096, block_size=256, target_file_size=4096,
               level1_max_bytes=16384, l0_compaction_trigger=2)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _run_and_kill(path, seed, start, options, rng, round_no):
    """Starts the writer at operation `start`, kills it with SIGKILL at a
    random moment, and returns (indices it acknowledged, whether it finished)."""
    proc = subprocess.Popen(
        [sys.executable, WRITER, path, str(seed), str(start), str(COUNT), json.dumps(options)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    lines = []
    buf = b""
    fd = proc.stdout.fileno()
    # Alternate between killing after a number of acknowledgements and after a
    # random delay; either way the child is somewhere in its own work, which
    # with a 4 KiB memtable is mostly a flush or a compaction.
    if round_no % 2 == 0:
        target, deadline = rng.randrange(1, 1500), None
    else:
        target, deadline = None, None
    started = time.monotonic()
    while True:
        if target is None and deadline is None and lines:
            deadline = time.monotonic() + rng.uniform(0.0, 0.4)
        if target is not None and len(lines) >= target:
            time.sleep(rng.uniform(0, 0.005))   # somewhere inside a later operation
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        assert time.monotonic() - started < 60, "the writer made no progress"
        ready, _, _ = select.select([fd], [], [], 0.01)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            *done, buf = buf.split(b"\n")
            lines += done
    proc.send_signal(signal.SIGKILL)
    rest, err = proc.communicate()
    buf += rest
    lines += buf.split(b"\n")
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


def _model_at(ops, p):
    model = {}
    for steps in ops[:p]:
        _apply(model, steps)
    return model


@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
@pytest.mark.parametrize("sync", [True, False], ids=["sync", "nosync"])
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_killed_writer_loses_nothing_acknowledged(tmp_path, seed, sync, background):
    options = dict(OPTIONS, sync=sync, background=background)
    ops = operations(seed, COUNT)
    rng = random.Random(seed * 1000 + sync * 10 + background)
    path = str(tmp_path / "db")
    start, model = 0, {}
    saw_tables = False
    for round_no in range(ROUNDS):
        acked, finished = _run_and_kill(path, seed, start, options, rng, round_no)
        acknowledged = start + len(acked)   # ops[:acknowledged] were acknowledged
        db = open_engine("lsm", path, **options)
        try:
            state = dict(db.scan())
            prefixes = consistent_prefixes(ops, start, model, state, COUNT)
            assert prefixes, (
                f"round {round_no}: the state after the crash is not the state after any "
                f"prefix of the writes ({acknowledged} were acknowledged)")
            assert max(prefixes) >= acknowledged, (
                f"round {round_no}: acknowledged writes lost: the state is the one after "
                f"{max(prefixes)} operations, {acknowledged} were acknowledged")
            assert min(prefixes) <= acknowledged + 1, (
                f"round {round_no}: the state is the one after {min(prefixes)} operations, "
                f"but only {acknowledged} were acknowledged and one was in flight")
            assert acknowledged in prefixes or acknowledged + 1 in prefixes, (
                f"round {round_no}: the state matches prefixes {prefixes}, none of them "
                f"{acknowledged} (acknowledged) or {acknowledged + 1} (one in flight)")
            # Point lookups (the C path) agree with the scan, key by key.
            expected = _model_at(ops, acknowledged)
            in_flight = ops[acknowledged] if acknowledged < COUNT else []
            for key, value in expected.items():
                got = db.get(key)
                if got != value:   # only the operation in flight may have changed it
                    assert any(step[1] == key for step in in_flight), (key, value, got)
            db.check()
            saw_tables = saw_tables or db.stats()["files"] > 0
            start = acknowledged if acknowledged in prefixes else acknowledged + 1
            model = _model_at(ops, start)
        finally:
            db.close()
        if finished:
            break
    assert saw_tables, "the writer never got as far as writing a table"


def test_reopen_after_a_crash_that_left_a_table_behind(tmp_path):
    """A crash during recovery, reproduced exactly: the directory as it was
    before an open, plus the table that open wrote before it switched CURRENT
    to its new MANIFEST.  The next recovery must not hand out that table's
    number again (write_table refuses to overwrite a file)."""
    path = str(tmp_path / "db")
    with open_engine("lsm", path, background=False) as db:
        for i in range(100):
            db.put(b"k%03d" % i, b"v%d" % i)
    # The writes are only in the log now (close does not flush the memtable).
    before = str(tmp_path / "before")
    shutil.copytree(path, before)
    with open_engine("lsm", path, background=False) as db:   # recovery writes a table
        pass
    new_tables = set(os.listdir(path)) - set(os.listdir(before))
    new_tables = [n for n in new_tables if n.endswith(".sst")]
    assert new_tables, "recovery wrote no table"
    for name in new_tables:
        shutil.copy(os.path.join(path, name), os.path.join(before, name))
    with open_engine("lsm", before, background=False) as db:
        assert [db.get(b"k%03d" % i) for i in range(100)] == [b"v%d" % i for i in range(100)]
        db.check()
