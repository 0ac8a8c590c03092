"""The LSM engine killed with SIGKILL at random moments, then reopened.

A child process (tests/helpers/crash_writer.py) writes a deterministic sequence
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
import os
import random
import shutil

import pytest

from rldb.storage import open_engine
from tests.helpers.crash_check import CrashRun, KillPlan

COUNT = 6000
ROUNDS = 4
OPTIONS = dict(memtable_size=4096, block_size=256, target_file_size=4096,
               level1_max_bytes=16384, l0_compaction_trigger=2)
# Alternate between killing after a number of acknowledgements (then up to
# 5 ms into a later operation) and after a random delay; either way the
# child is somewhere in its own work, which with a 4 KiB memtable is mostly
# a flush or a compaction.
KILLS = KillPlan(max_acks=1500, max_delay=0.4, linger=0.005)


@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
@pytest.mark.parametrize("sync", [True, False], ids=["sync", "nosync"])
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_killed_writer_loses_nothing_acknowledged(tmp_path, seed, sync, background):
    options = dict(OPTIONS, sync=sync, background=background)
    rng = random.Random(seed * 1000 + sync * 10 + background)
    path = str(tmp_path / "db")
    run = CrashRun("lsm", path, seed, COUNT, options, KILLS)
    saw_tables = False
    for rnd in run.rounds(ROUNDS, rng):
        db = open_engine("lsm", path, **options)
        try:
            run.check(dict(db.scan()))
            # Point lookups (the C path) agree with the scan, key by key.
            for key, value in run.acknowledged_model(rnd).items():
                got = db.get(key)
                if got != value:   # only the operation in flight may have changed it
                    assert any(step[1] == key for step in rnd.in_flight), (key, value, got)
            db.check()
            saw_tables = saw_tables or db.stats()["files"] > 0
        finally:
            db.close()
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
