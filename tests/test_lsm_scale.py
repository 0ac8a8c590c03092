"""300,000 keys through the LSM engine with a 256 KiB memtable and small
tables, so that the tree grows several levels deep under the background
thread; then every key, a sample of scans and check(), before and after
reopening."""
import random

import pytest

from rldb.storage import open_engine
from tests.lsm_helpers.common import wait_until_idle

N = 300_000
OPTIONS = dict(memtable_size=256 << 10, target_file_size=64 << 10, level1_max_bytes=256 << 10,
               background=True)


def key(i):
    return b"user%08d" % i


def value(i, generation):
    return b"%d:%d:" % (i, generation) + b"x" * (i % 23)


def expected_state():
    """Generation 0 writes every key, generation 1 overwrites every 7th and
    deletes every 10th (some keys are both: the delete comes last)."""
    state = {i: value(i, 0) for i in range(N)}
    for i in range(0, N, 7):
        state[i] = value(i, 1)
    for i in range(0, N, 10):
        del state[i]
    return state


def verify(db, state, rng):
    for i in range(N):
        assert db.get(key(i)) == state.get(i), i
    for _ in range(40):
        lo = rng.randrange(N)
        hi = min(N, lo + rng.randrange(1, 400))
        want = [(key(i), state[i]) for i in range(lo, hi) if i in state]
        assert list(db.scan(key(lo), key(hi))) == want
        assert list(db.scan(key(lo), key(hi), reverse=True)) == want[::-1]
    head = [(key(i), state[i]) for i in range(0, 1000) if i in state]
    assert list(db.scan(end=key(1000))) == head
    tail = [(key(i), state[i]) for i in range(N - 1000, N) if i in state]
    assert list(db.scan(start=key(N - 1000))) == tail
    assert sum(1 for _ in db.scan()) == len(state)


@pytest.mark.timeout(240)
def test_300k_keys_over_several_levels(tmp_path):
    path = str(tmp_path / "db")
    rng = random.Random(5)
    db = open_engine("lsm", path, **OPTIONS)
    try:
        order = list(range(N))
        rng.shuffle(order)
        for i in order:
            db.put(key(i), value(i, 0))
        batch = []
        for i in range(0, N, 7):
            batch.append(("put", key(i), value(i, 1)))
            if len(batch) == 100:
                db.write_batch(batch)
                batch = []
        db.write_batch(batch)
        for i in range(0, N, 10):
            db.delete(key(i))
        state = expected_state()
        verify(db, state, rng)
        wait_until_idle(db)
        stats = db.stats()
        files = [level["files"] for level in stats["levels"]]
        assert files[1] > 0 and files[2] > 0, f"files per level: {files}"
        assert stats["compactions"] > 0 and stats["flushes"] > 0
        db.check()
    finally:
        db.close()

    db = open_engine("lsm", path, **OPTIONS)
    try:
        files = [level["files"] for level in db.stats()["levels"]]
        assert files[1] > 0 and files[2] > 0, f"files per level after reopening: {files}"
        verify(db, state, rng)
        db.check()
    finally:
        db.close()
