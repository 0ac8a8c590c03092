"""The Bitcask data-file registry (rldb/storage/bitcask/datafiles.py): its
named steps keep the Python view, the C file table and the directory one,
and check() finds each way they can disagree."""
import os

import pytest

from rldb.errors import CorruptionError
from rldb.storage import open_engine
from rldb.storage.bitcask import files as fs
from rldb.storage.bitcask.datafiles import ACTIVE, IMMUTABLE, OUTPUT

QUIET = dict(max_file_size=300, merge_threshold=1.0, merge_small_files=0, background_merge=False)


@pytest.fixture
def db(tmp_path):
    engine = open_engine("bitcask", str(tmp_path), **QUIET)
    for i in range(40):
        engine.put(b"key%03d" % i, b"v" * 20)
    yield engine
    engine.close()


def registry(db):
    return db._files


def test_a_healthy_registry_passes(db):
    files = registry(db)
    files.check()
    states = sorted(f.state for f in files.by_slot().values())
    assert states.count(ACTIVE) == 1 and states.count(IMMUTABLE) >= 2
    assert [(f.rank, f.id) for f in files.immutable()] == sorted(
        (f.rank, f.id) for f in files.immutable())
    assert files.active.id == max(f.id for f in files.by_slot().values())


def test_outputs_are_named_tmp_until_committed_and_discarded_cleanly(db, tmp_path):
    files = registry(db)
    rank = files.immutable()[-1].rank
    out = files.new_output(rank)
    assert out.state == OUTPUT and out.data_name().endswith(".data.tmp")
    assert os.path.exists(files.path_of(out.data_name()))
    with pytest.raises(CorruptionError, match="one active file"):
        files.check()  # an output outside a merge
    files.discard_outputs([out, out])  # twice: the second does nothing
    assert not os.path.exists(files.path_of(out.data_name()))
    assert not os.path.exists(files.path_of(out.hint_name()))
    files.check()
    db.check()


def test_a_stray_data_file_is_found(db, tmp_path):
    (tmp_path / fs.data_name(999, 999)).write_bytes(b"")
    with pytest.raises(CorruptionError, match="not in use"):
        registry(db).check()
    with pytest.raises(CorruptionError, match="not in use"):
        db.check()


def test_a_missing_data_file_is_found(db, tmp_path):
    victim = registry(db).immutable()[0]
    os.unlink(tmp_path / victim.data_name())
    with pytest.raises(CorruptionError, match="in use is missing"):
        registry(db).check()


def test_two_active_files_are_found(db):
    files = registry(db)
    old = files.immutable()[0]
    old.state = ACTIVE
    with pytest.raises(CorruptionError, match="one active file"):
        files.check()
    files.mark_immutable(old)
    files.check()


def test_an_active_file_the_writes_do_not_go_to_is_found(db):
    files = registry(db)
    active = files.active
    files.active = files.immutable()[0]
    with pytest.raises(CorruptionError, match="writes go to"):
        files.check()
    files.active = active
    files.check()


def test_a_reused_file_id_is_found(db):
    files = registry(db)
    files.next_id = files.active.id
    with pytest.raises(CorruptionError, match="next file id"):
        files.check()


def test_a_file_lost_by_id_is_found(db):
    files = registry(db)
    del files._by_id[files.immutable()[0].id]
    with pytest.raises(CorruptionError, match="by id and by slot"):
        files.check()


def test_a_file_the_registry_forgot_is_found(db):
    files = registry(db)
    f = files.immutable()[0]
    del files._by_slot[f.slot]
    with pytest.raises(CorruptionError, match="C file table"):
        files.check()


def test_a_hint_that_does_not_match_is_found(db, tmp_path):
    f = registry(db).immutable()[0]
    hint = tmp_path / f.hint_name()
    other = tmp_path / registry(db).immutable()[1].hint_name()
    hint.write_bytes(other.read_bytes())
    with pytest.raises(CorruptionError, match="hint does not match") as info:
        registry(db).check()
    assert str(hint) in str(info.value)


def test_a_size_that_differs_from_the_c_side_is_found(db, tmp_path):
    f = registry(db).immutable()[0]
    with open(tmp_path / f.data_name(), "ab") as out:
        out.write(b"\0" * 7)
    with pytest.raises(CorruptionError, match="expected"):
        registry(db).check()


def test_remove_forgets_closes_and_deletes(tmp_path):
    db = open_engine("bitcask", str(tmp_path), **QUIET)
    for i in range(40):
        db.put(b"key%03d" % i, b"v" * 20)
    db.merge(full=True)  # the inputs went through DataFiles.remove
    files = registry(db)
    files.check()
    names = {n for n in os.listdir(tmp_path) if fs.parse_name(n)}
    in_use = {f.data_name() for f in files.by_slot().values()}
    assert {n for n in names if n.endswith(".data")} == in_use
    assert all(db.get(b"key%03d" % i) == b"v" * 20 for i in range(40))
    db.close()
    assert files.by_slot() == {} and files.active is None
