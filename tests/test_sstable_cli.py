"""rldb-sstable (rldb/cli/sstable.py) against databases built with the LSM engine."""
import codecs
import json
import os
import shutil

import pytest
from click.testing import CliRunner

from rldb.cli.sstable import main, show
from rldb.storage import open_engine

# Small memtable, blocks and files so that a few hundred writes make several
# tables in several levels; background=False keeps the layout deterministic.
OPTIONS = dict(memtable_size=4096, block_size=256, target_file_size=2048,
               l0_compaction_trigger=2, level1_max_bytes=4096, background=False)
SPECIAL = {b"\x00bin\xff": b"\x01\x02", b"tab\there\nnewline\\": b"v\x7f\x80 end"}


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def unescape(text):
    return codecs.escape_decode(text.encode("ascii"))[0]


def write_data(path, flush=True):
    """Writes puts, overwrites and deletes; the expected key -> value."""
    model = {}
    db = open_engine("lsm", path, **OPTIONS)
    for i in range(600):
        key, value = b"key%05d" % i, b"value-%d-" % i * 3
        db.put(key, value)
        model[key] = value
    for key, value in SPECIAL.items():
        db.put(key, value)
        model[key] = value
    for i in range(0, 600, 10):
        db.put(b"key%05d" % i, b"new-%d" % i)
        model[b"key%05d" % i] = b"new-%d" % i
    for i in range(3, 600, 7):
        db.delete(b"key%05d" % i)
        model.pop(b"key%05d" % i, None)
    db.close()
    if flush:  # opening replays the WAL into an L0 table: afterwards all data is in tables
        open_engine("lsm", path, **OPTIONS).close()
    return model


def level_files(path):
    db = open_engine("lsm", path, **OPTIONS)
    try:
        return {lv["level"]: lv["files"] for lv in db.stats()["levels"] if lv["files"]}
    finally:
        db.close()


def tables(path):
    return sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".sst"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "db"
    model = write_data(path)
    return str(path), model


@pytest.fixture
def db(built, tmp_path):
    """A private copy of the built database and its model."""
    path, model = built
    copy = tmp_path / "db"
    shutil.copytree(path, copy)
    return str(copy), model


def test_the_database_has_several_tables_in_several_levels(built):
    path, _ = built
    levels = level_files(path)
    assert len(levels) >= 2 and sum(levels.values()) >= 4, levels


def test_inspect_reports_what_the_table_holds(built):
    path, _ = built
    total = tombstones = 0
    for table in tables(path):
        result = run("inspect", "--json", table)
        assert result.exit_code == 0, result.output
        info = json.loads(result.stdout)
        lines = run("dump", table).stdout.splitlines()
        kinds = [line.split("\t")[2] for line in lines]
        assert info["entries"] == len(lines)
        assert info["tombstones"] == kinds.count("delete")
        assert info["format_version"] == 1
        assert info["footer"]["magic"] == "rdbsst01"
        assert info["data_blocks"]["count"] == info["index_entries"] >= 1
        blocks = info["data_blocks"]
        assert blocks["min"] <= blocks["avg"] <= blocks["max"]
        keys = [unescape(line.split("\t")[0]) for line in lines]
        assert info["smallest_key"] == show(keys[0]) and info["largest_key"] == show(keys[-1])
        assert info["filter"]["distinct_keys"] == len(set(keys))
        assert 9.5 <= info["filter"]["bits_per_key"] <= 12, info["filter"]
        assert info["creator"].startswith("rldb ")
        assert os.path.getsize(table) == info["file_size"]
        total += info["entries"]
        tombstones += info["tombstones"]
    written = 600 + len(SPECIAL) + 60 + len(range(3, 600, 7))
    assert 0 < total <= written

    text = run("inspect", tables(path)[0])
    assert text.exit_code == 0
    for label in ("format version", "data blocks", "index entries", "filter", "bits per key",
                  "smallest key", "largest key", "entries", "tombstones", "raw key bytes",
                  "raw value bytes", "creator"):
        assert label in text.stdout


def test_dump_shows_what_was_written(built):
    """The newest entry of each key across all tables is exactly the model."""
    path, model = built
    newest = {}
    for table in tables(path):
        result = run("dump", table)
        assert result.exit_code == 0
        previous = None
        for line in result.stdout.splitlines():
            key, seq, kind, value = line.split("\t")
            key, seq, value = unescape(key), int(seq), unescape(value)
            assert previous is None or previous < key  # one version per key, in order
            previous = key
            if key not in newest or newest[key][0] < seq:
                newest[key] = (seq, kind, value)
    found = {k: v for k, (_, kind, v) in newest.items() if kind == "put"}
    assert found == model
    assert "\\x00bin\\xff\t" in "".join(run("dump", t).stdout for t in tables(path))


def test_dump_limit_and_json(built):
    path, _ = built
    table = tables(path)[-1]
    assert len(run("dump", "--limit", 3, table).stdout.splitlines()) == 3
    assert run("dump", "--limit", 0, table).stdout == ""
    rows = [json.loads(line) for line in run("dump", "--json", table).stdout.splitlines()]
    assert rows and {"key", "seq", "kind", "value"} == set(rows[0])
    assert all(r["kind"] in ("put", "delete") for r in rows)


def test_verify_a_clean_database_and_table(built):
    path, _ = built
    result = run("verify", path)
    assert result.exit_code == 0, result.output
    assert "clean" in result.stdout and "FAULT" not in result.stdout
    for table in tables(path):
        assert run("verify", table).exit_code == 0


def test_verify_finds_a_flipped_byte_in_a_data_block(db):
    path, _ = db
    table = max(tables(path), key=os.path.getsize)
    info = json.loads(run("inspect", "--json", table).stdout)
    assert info["data_blocks"]["count"] >= 2
    with open(table, "r+b") as f:  # data block 0 starts at offset 0
        f.seek(20)
        byte = f.read(1)
        f.seek(20)
        f.write(bytes([byte[0] ^ 0x10]))
    for target in (path, table):
        result = run("verify", target)
        assert result.exit_code == 1, result.output
        faults = [line for line in result.stdout.splitlines() if line.startswith("FAULT")]
        assert len(faults) == 1
        assert table in faults[0] and "offset 0" in faults[0] and "checksum" in faults[0]
    dumped = run("dump", table)
    assert dumped.exit_code == 1 and table in dumped.stderr


def test_verify_wal_torn_tail_is_a_warning_and_earlier_damage_a_fault(tmp_path):
    path = tmp_path / "db"
    db = open_engine("lsm", path, memtable_size=1 << 20, background=False)
    for i in range(2000):  # about 100 KiB of log: several 32 KiB blocks
        db.put(b"k%05d" % i, b"v" * 30)
    db.close()
    (log,) = [p for p in path.iterdir() if p.suffix == ".log"]
    size = log.stat().st_size
    with open(log, "r+b") as f:
        f.truncate(size - 5)
    result = run("verify", path)
    assert result.exit_code == 0, result.output
    assert "WARNING" in result.stdout and "torn tail" in result.stdout and str(log) in result.stdout

    with open(log, "r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    result = run("verify", path)
    assert result.exit_code == 1, result.output
    assert any(line.startswith("FAULT") and str(log) in line and "offset" in line
               for line in result.stdout.splitlines())


def test_verify_finds_damage_inside_the_manifest(db):
    path, _ = db
    (manifest,) = [n for n in os.listdir(path) if n.startswith("MANIFEST-")]
    data = open(os.path.join(path, manifest), "rb").read()
    assert len(data) > 200
    with open(os.path.join(path, manifest), "r+b") as f:  # inside the first record
        f.seek(12)
        f.write(bytes([data[12] ^ 1]))
    result = run("verify", path)
    assert result.exit_code == 1
    assert f"FAULT {os.path.join(path, manifest)} offset 0" in result.stdout


@pytest.mark.parametrize("command", ["inspect", "dump", "verify"])
def test_a_path_that_is_not_an_sstable(tmp_path, command):
    text = tmp_path / "notes.txt"
    text.write_text("this is a text file, long enough to hold a footer if it were one\n" * 3)
    empty = tmp_path / "empty.sst"
    empty.write_bytes(b"")
    cases = {text: "not an SSTable", empty: "empty file", tmp_path / "missing.sst": "no such file"}
    if command != "verify":
        cases[tmp_path] = "is a directory"
    else:
        cases[tmp_path] = "not a data directory"
    for path, message in cases.items():
        result = run(command, path)
        assert result.exit_code == 2, (path, result.output)
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and message in lines[0] and str(path) in lines[0]


def test_compact_needs_a_data_directory(tmp_path):
    result = run("compact", tmp_path)
    assert result.exit_code == 2 and "not a data directory" in result.stderr
    assert os.listdir(tmp_path) == []  # nothing was created
    result = run("compact", tmp_path / "nowhere")
    assert result.exit_code == 2 and "no such directory" in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_compact_leaves_one_level_and_every_key(db):
    path, model = db
    before = level_files(path)
    assert len(before) >= 2
    result = run("compact", path)
    assert result.exit_code == 0, result.output
    for label in ("bytes in", "bytes out", "files", "compacted"):
        assert label in result.stdout
    after = level_files(path)
    assert len(after) == 1, after
    assert f"{sum(before.values())} -> {sum(after.values())}" in result.stdout
    assert len(tables(path)) == sum(after.values())  # inputs are gone from the disk
    with open_engine("lsm", path, **OPTIONS) as engine:
        assert dict(engine.scan()) == model
        for key, value in model.items():
            assert engine.get(key) == value
    assert run("verify", path).exit_code == 0


def test_compact_json_summary(db):
    path, _ = db
    result = run("compact", "--json", path)
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert summary["bytes_in"] > 0 and summary["bytes_out"] > 0
    assert summary["files_before"] > summary["files_after"] >= 1
    assert len(summary["levels_after"]) == 1


def test_show_is_reversible():
    for data in (b"plain", b"\x00\xff\\\t\n\r'\"", bytes(range(256))):
        text = show(data)
        assert text.isascii() and text.isprintable()
        assert unescape(text) == data
