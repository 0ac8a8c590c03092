"""rldb.storage.lsm.inspect and .verify called directly: the plain data they
return, and that they judge files by the engine's own rules."""
import os
import shutil

import pytest

from rldb._core.sstable import FOOTER_SIZE, TABLE_FORMAT, decode_footer
from rldb.errors import CorruptionError, InvalidArgumentError
from rldb.storage import open_engine
from rldb.storage.lsm import inspect, verify
from rldb.storage.lsm.finding import FAULT, WARNING, Finding
from rldb.storage.lsm.log import check_tail_is_last, read_log
from rldb.storage.lsm.table import Table
from rldb.storage.lsm.version import VersionSet, replay_manifest

OPTIONS = dict(memtable_size=4096, block_size=256, target_file_size=2048,
               l0_compaction_trigger=2, level1_max_bytes=4096, background=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("lib") / "db"
    db = open_engine("lsm", path, **OPTIONS)
    for i in range(500):
        db.put(b"key%05d" % i, b"value-%d" % i * 4)
    for i in range(0, 500, 9):
        db.delete(b"key%05d" % i)
    db.close()
    for _ in range(2):  # the first open replays the log (and may compact), the second
        open_engine("lsm", path, **OPTIONS).close()  # deletes what that left behind
    return str(path)


@pytest.fixture
def db(built, tmp_path):
    copy = tmp_path / "db"
    shutil.copytree(built, copy)
    return str(copy)


def tables(path):
    return sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".sst"))


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))


def test_table_info_is_what_the_table_holds(built):
    table_path = max(tables(built), key=os.path.getsize)
    table = inspect.open_table(table_path)
    try:
        info = inspect.table_info(table)
        rows = list(inspect.entries(table))
    finally:
        table.close()
    size = os.path.getsize(table_path)
    with open(table_path, "rb") as f:
        f.seek(size - FOOTER_SIZE)
        handles = decode_footer(f.read(), size)
    footer = info.footer
    assert (footer.filter.offset, footer.filter.size, footer.properties.offset,
            footer.properties.size, footer.index.offset, footer.index.size) == handles
    assert footer.format_version == info.format_version == TABLE_FORMAT
    assert footer.magic == b"rdbsst01"
    assert info.file_size == size and info.error is None
    assert info.data_blocks.count == info.index_entries >= 2
    assert sum(info.data_blocks.types.values()) == info.data_blocks.count
    assert info.entries == len(rows)
    assert info.tombstones == sum(1 for r in rows if r.kind == "delete")
    assert info.filter.distinct_keys == len({r.key for r in rows})
    assert info.smallest_key == rows[0].key and info.largest_key == rows[-1].key
    assert all(r.value == b"" for r in rows if r.kind == "delete")
    assert all(r.value.startswith(b"value-") for r in rows if r.kind == "put")


def test_entries_limit(built):
    table = inspect.open_table(tables(built)[0])
    try:
        assert len(list(inspect.entries(table, 3))) == 3
        assert list(inspect.entries(table, 0)) == []
        with pytest.raises(InvalidArgumentError):
            inspect.entries(table, -1)  # refused at once, not on iteration
    finally:
        table.close()


def test_table_info_names_a_damaged_block_instead_of_raising(db):
    table_path = max(tables(db), key=os.path.getsize)
    flip(table_path, 20)
    table = inspect.open_table(table_path)
    try:
        info = inspect.table_info(table)
        with pytest.raises(CorruptionError) as exc:
            list(inspect.entries(table))
    finally:
        table.close()
    assert info.error == Finding(FAULT, table_path, 0, info.error.message)
    assert "checksum" in info.error.message
    assert info.filter.distinct_keys is None and info.data_blocks.uncompressed_bytes is None
    assert exc.value.path == table_path and exc.value.offset == 0


def test_open_table_tells_not_a_table_from_a_damaged_one(built, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("x" * 200)
    for path in (tmp_path, tmp_path / "missing.sst", text):
        with pytest.raises(InvalidArgumentError, match=str(path)):
            inspect.open_table(path)
    damaged = str(tmp_path / "000009.sst")
    shutil.copyfile(tables(built)[0], damaged)
    flip(damaged, os.path.getsize(damaged) - 30)  # inside the footer, not the magic
    with pytest.raises(CorruptionError, match="bad footer") as exc:
        inspect.open_table(damaged)
    assert exc.value.path == damaged
    assert exc.value.offset == os.path.getsize(damaged) - FOOTER_SIZE


def test_block_compression_reads_the_trailer(tmp_path):
    for compression, expected in (("none", "raw"), ("snappy", "snappy")):
        path = tmp_path / compression
        with open_engine("lsm", path, background=False, compression=compression) as db:
            db.put(b"k", b"a" * 4000)
        open_engine("lsm", path, background=False, compression=compression).close()
        (table_path,) = tables(path)
        table = Table(table_path, 0)
        try:
            assert [table.block_compression(i) for i in range(table.index.count)] == [expected]
        finally:
            table.close()


def test_verify_dir_of_a_clean_database(built):
    seen = []
    report = verify.verify_dir(built, listener=seen.append)
    assert report.kind == "directory" and report.clean
    assert report.findings == seen == []
    assert report.counts["tables"] == len(tables(built))
    assert report.counts["entries"] > 0 and report.counts["manifest records"] >= 1
    assert verify.verify_path(tables(built)[0]).clean


def test_verify_dir_reports_findings_as_data(db):
    victim = max(tables(db), key=os.path.getsize)
    stray = os.path.join(db, "%06d.sst" % 999999)
    shutil.copyfile(victim, stray)  # a whole table the manifest does not name
    flip(victim, 20)
    seen = []
    report = verify.verify_dir(db, listener=seen.append)
    assert report.findings == seen
    assert report.faults == 1 and not report.clean
    (fault,) = [f for f in report.findings if f.severity == FAULT]
    assert (fault.path, fault.offset) == (victim, 0) and "checksum" in fault.message
    assert str(fault) == f"{victim} offset 0: {fault.message}"
    (warning,) = [f for f in report.findings if f.severity == WARNING]
    assert warning.path == stray and "not in the manifest" in warning.message
    os.unlink(victim)
    (gone,) = [f for f in verify.verify_dir(db).findings if f.severity == FAULT]
    assert gone.path == victim and gone.message.startswith("missing: the manifest lists it")


def test_verify_refuses_what_is_not_a_data_directory(tmp_path):
    with pytest.raises(InvalidArgumentError, match="not a data directory"):
        verify.verify_dir(tmp_path)
    with pytest.raises(InvalidArgumentError, match="no such"):
        verify.verify_path(tmp_path / "nowhere")
    with pytest.raises(InvalidArgumentError, match="wal_recovery"):
        verify.verify_dir(tmp_path, wal_recovery="maybe")


def test_replay_manifest_is_what_the_engine_recovers(built):
    seen = []
    state = replay_manifest(built, lambda before, offset, edit: seen.append(offset))
    versions = VersionSet(built)
    versions.recover()
    assert {f.number for _, f in state.version.files()} == versions.current.numbers()
    assert (state.log_number, state.next_file, state.last_seq) == \
        (versions.log_number, versions.next_file, versions.last_seq)
    assert state.number == versions.manifest_number
    assert seen == [offset for offset, _ in state.read.records] and seen


def wal_db(path):
    db = open_engine("lsm", path, memtable_size=1 << 20, background=False)
    for i in range(2000):
        db.put(b"k%05d" % i, b"v" * 30)
    db.close()
    (log,) = [p for p in path.iterdir() if p.suffix == ".log"]
    return str(log)


def test_the_log_rules_verify_shares_with_the_engine(tmp_path):
    log = wal_db(tmp_path / "db")
    size = os.path.getsize(log)
    with open(log, "r+b") as f:
        f.truncate(size - 5)
    torn = read_log(log)
    assert torn.dropped_bytes and not torn.intact_after
    check_tail_is_last(log, torn, last=True)
    with pytest.raises(CorruptionError, match="later logs exist") as exc:
        check_tail_is_last(log, torn, last=False)
    assert (exc.value.path, exc.value.offset) == (log, torn.stopped_at)
    assert verify.verify_dir(tmp_path / "db").clean

    flip(log, 100)
    with pytest.raises(CorruptionError, match="before intact records") as exc:
        read_log(log)
    damaged = read_log(log, strict=False)
    assert damaged.intact_after and damaged.stopped_at == exc.value.offset
    report = verify.verify_dir(tmp_path / "db")
    (fault,) = [f for f in report.findings if f.severity == FAULT]
    assert (fault.path, fault.offset) == (log, exc.value.offset)
    prefix = verify.verify_dir(tmp_path / "db", wal_recovery="prefix")
    assert prefix.clean and any(f.offset == exc.value.offset for f in prefix.findings)
