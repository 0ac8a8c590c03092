"""Every engine's check() reports a broken invariant as CorruptionError."""
import os

import pytest

from rldb.errors import CorruptionError
from rldb.storage import engine_kinds, open_engine


def _break_memory(db, path):
    db._data[b"k000"] = 7  # a value that is not bytes


def _break_lsm(db, path):
    table = next(n for n in sorted(os.listdir(path)) if n.endswith(".sst"))
    with open(os.path.join(path, table), "ab") as f:
        f.write(b"\0")  # the table no longer has the size its manifest entry says


def _break_bitcask(db, path):
    db._files.active.state = "immutable"  # no active file any more


BREAK = {"memory": _break_memory, "lsm": _break_lsm, "bitcask": _break_bitcask}
OPTIONS = {"memory": {}, "lsm": {"background": False, "memtable_size": 1024},
           "bitcask": {"background_merge": False, "max_file_size": 512}}


def test_every_engine_is_covered():
    assert sorted(BREAK) == engine_kinds()


@pytest.mark.parametrize("kind", sorted(BREAK))
def test_check_raises_corruption_error(tmp_path, kind):
    path = str(tmp_path / "db")
    db = open_engine(kind, path, **OPTIONS[kind])
    try:
        for i in range(200):
            db.put(b"k%03d" % i, b"v" * 20)
        db.check()
        BREAK[kind](db, path)
        with pytest.raises(CorruptionError):
            db.check()
    finally:
        if kind == "bitcask":
            db._files.active.state = "active"
        db.close()
