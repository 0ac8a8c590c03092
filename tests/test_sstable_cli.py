"""rldb-sstable (rldb/cli/sstable.py) against databases built with the LSM engine."""
import codecs
import json
import os
import shutil
import struct

import pytest
from click.testing import CliRunner

from rldb._core.checksum import crc32c, mask_crc
from rldb.cli.sstable import main, show
from rldb.errors import CorruptionError
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


# ---- values written by a node -------------------------------------------------------

BIG = 1_000_000


def node_table(path):
    """A table written through a node's ObjectStore: six keys, each a 1 MB
    value with a short concurrent sibling, one also with a tombstone.  The
    path of the table and the store's raw bytes by storage key."""
    from rldb.cluster import dvv
    from rldb.cluster.store import ObjectStore

    engine = open_engine("lsm", path, memtable_size=64 << 20, background=False)
    store = ObjectStore(engine)
    for i in range(6):
        clock = dvv.update(dvv.new((b"%d" % i * BIG, 1700000000000 + i)), dvv.EMPTY, "node-a")
        clock = dvv.update(dvv.new((b"sibling-%d" % i, 1700000000100)), clock, "node-b")
        if i == 5:
            clock = dvv.update(dvv.new((None, 1700000000200)), clock, "node-c")
        store.put(b"user-%d" % i, clock)
    raw = {store.storage_key(b"user-%d" % i): store.get_raw(b"user-%d" % i) for i in range(6)}
    engine.close()
    open_engine("lsm", path, background=False).close()  # the log replayed into a table
    (table,) = tables(path)
    return table, raw


def test_dump_of_a_node_table_shows_siblings_cut_short(tmp_path):
    table, raw = node_table(tmp_path / "db")
    assert os.path.getsize(table) > 5 * 1024  # 6 MB of values, compressed
    result = run("dump", table)
    assert result.exit_code == 0, result.output
    assert len(result.stdout) < 2000, len(result.stdout)
    lines = result.stdout.splitlines()
    assert len(lines) == 6
    for line in lines:
        key, seq, kind, value = line.split("\t")
        assert unescape(key) in raw and kind == "put"
        i = int(unescape(key)[-1:])
        assert value.startswith("object, %d siblings: " % (3 if i == 5 else 2))
        assert f"{str(i) * 64}... ({BIG} bytes) @{1700000000000 + i}" in value
        assert f"sibling-{i} @1700000000100" in value
        assert ("tombstone @1700000000200" in value) == (i == 5)

    rows = [json.loads(line) for line in run("dump", "--json", table).stdout.splitlines()]
    assert len(rows) == 6
    for row in rows:
        i = int(unescape(row["key"])[-1:])
        by_time = {s["timestamp"]: s for s in row["siblings"]}
        assert by_time[1700000000000 + i] == {"value": f"{str(i) * 64}... ({BIG} bytes)",
                                              "timestamp": 1700000000000 + i, "bytes": BIG}
        assert by_time[1700000000100]["value"] == f"sibling-{i}"
        assert row["value"].endswith(f"... ({len(raw[unescape(row['key'])])} bytes)")


def test_dump_raw_shows_every_byte(tmp_path):
    table, raw = node_table(tmp_path / "db")
    result = run("dump", "--raw", table)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 6
    assert {unescape(line.split("\t")[0]): unescape(line.split("\t")[3])
            for line in lines} == raw
    rows = [json.loads(line) for line in run("dump", "--raw", "--json", table).stdout.splitlines()]
    assert {unescape(r["key"]): unescape(r["value"]) for r in rows} == raw
    assert all("siblings" not in r for r in rows)


def test_dump_cuts_a_long_plain_value(tmp_path):
    path = tmp_path / "db"
    value = bytes(range(256)) * 4
    with open_engine("lsm", path, background=False) as db:
        db.put(b"k" * 100, value)
        db.put(b"short", b"not an object")
    open_engine("lsm", path, background=False).close()
    (table,) = tables(path)
    lines = run("dump", table).stdout.splitlines()
    key, _, _, shown = lines[0].split("\t")
    assert key == show(b"k" * 64) + "... (100 bytes)"
    assert shown == show(value[:64]) + f"... ({len(value)} bytes)"
    assert lines[1].split("\t")[3] == "not an object"
    raw = run("dump", "--raw", table).stdout.splitlines()
    assert unescape(raw[0].split("\t")[3]) == value


# ---- verify agrees with the engine --------------------------------------------------


def wal_db(path):
    """A database whose only data is ~100 KiB of write-ahead log (several 32 KiB
    blocks); the log's path."""
    db = open_engine("lsm", path, memtable_size=1 << 20, background=False)
    for i in range(2000):
        db.put(b"k%05d" % i, b"v" * 30)
    db.close()
    (log,) = [p for p in path.iterdir() if p.suffix == ".log"]
    return log


def faults(result):
    return [line for line in result.stdout.splitlines() if line.startswith("FAULT")]


def test_verify_and_the_engine_both_accept_a_torn_log_tail(tmp_path):
    path = tmp_path / "db"
    log = wal_db(path)
    with open(log, "r+b") as f:
        f.truncate(log.stat().st_size - 5)
    result = run("verify", path)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stdout.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "torn tail" in warnings[0] and str(log) in warnings[0]
    with open_engine("lsm", path, background=False) as db:  # strict recovery opens it
        assert db.get(b"k01998") == b"v" * 30 and db.get(b"k01999") is None
        assert db.stats()["recovery"]["wal_dropped_bytes"] > 0


def test_verify_and_the_engine_both_refuse_damage_before_intact_records(tmp_path):
    path = tmp_path / "db"
    log = wal_db(path)
    with open(log, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = run("verify", path)
    assert result.exit_code == 1, result.output
    (fault,) = faults(result)
    with pytest.raises(CorruptionError) as info:
        open_engine("lsm", path, background=False)
    assert info.value.path == str(log)
    assert fault.startswith(f"FAULT {log} offset {info.value.offset}: ")
    assert "before intact records" in fault

    # wal_recovery="prefix" keeps the records before the damage: both accept it
    prefix = run("verify", "--wal-recovery", "prefix", path)
    assert prefix.exit_code == 0, prefix.output
    (warning,) = [line for line in prefix.stdout.splitlines()
                  if line.startswith(f"WARNING {log} offset {info.value.offset}: ")]
    kept = int(warning.split("keeps the ")[1].split()[0])
    with open_engine("lsm", path, background=False, wal_recovery="prefix") as db:
        assert db.stats()["recovery"]["wal_records"] == kept
        assert db.get(b"k01999") is None


def test_verify_and_the_engine_refuse_a_torn_log_that_later_logs_follow(tmp_path):
    path = tmp_path / "db"
    log = wal_db(path)
    later = path / ("%06d.log" % (int(log.stem) + 10))
    shutil.copyfile(log, later)
    with open(log, "r+b") as f:
        f.truncate(log.stat().st_size - 5)
    result = run("verify", path)
    assert result.exit_code == 1, result.output
    (fault,) = faults(result)
    with pytest.raises(CorruptionError, match="later logs exist") as info:
        open_engine("lsm", path, background=False)
    assert fault.startswith(f"FAULT {log} offset {info.value.offset}: ")
    assert "later logs exist" in fault


def test_verify_and_the_engine_agree_on_the_manifest(db):
    path, _ = db
    (name,) = [n for n in os.listdir(path) if n.startswith("MANIFEST-")]
    manifest = os.path.join(path, name)
    size = os.path.getsize(manifest)
    with open(manifest, "ab") as f:  # a torn tail: half a record header
        f.write(b"\x12\x34\x56")
    result = run("verify", path)
    assert result.exit_code == 0, result.output
    assert f"WARNING {manifest} offset {size}: torn tail" in result.stdout
    with open(manifest, "r+b") as f:  # inside the first record: intact ones follow
        f.seek(12)
        byte = f.read(1)
        f.seek(12)
        f.write(bytes([byte[0] ^ 1]))
    result = run("verify", path)
    assert result.exit_code == 1
    with pytest.raises(CorruptionError) as info:
        open_engine("lsm", path, **OPTIONS)
    assert info.value.path == manifest and info.value.offset == 0
    assert f"FAULT {manifest} offset 0: " in result.stdout


# ---- errors -------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["dump", "--limit", "-1", "TABLE"],
    ["dump", "--limit", "many", "TABLE"],
    ["dump"],
    ["inspect", "--bogus", "TABLE"],
    ["verify", "--wal-recovery", "sometimes", "TABLE"],
    ["no-such-command"],
    ["compact", "-o", "target_file_size", "DIR"],
])
def test_a_bad_argument_is_one_line_and_exit_status_2(built, args):
    path, _ = built
    args = [tables(path)[0] if a == "TABLE" else path if a == "DIR" else a for a in args]
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rldb-sstable: error: "), lines


@pytest.mark.parametrize("command", ["inspect", "dump"])
def test_a_corrupt_table_is_one_line_naming_file_and_offset(db, command):
    path, _ = db
    table = max(tables(path), key=os.path.getsize)
    with open(table, "r+b") as f:
        f.seek(20)
        byte = f.read(1)
        f.seek(20)
        f.write(bytes([byte[0] ^ 0x10]))
    result = run(command, table)
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert lines == [f"rldb-sstable: error: {table} offset 0: " + lines[0].split(": ", 3)[3]]
    assert "checksum" in lines[0]


def test_a_table_of_another_format_version(built, tmp_path):
    path, _ = built
    table = str(tmp_path / "000001.sst")
    shutil.copyfile(tables(path)[0], table)
    size = os.path.getsize(table)
    with open(table, "r+b") as f:  # format version 2, with a footer checksum to match
        f.seek(size - 64)
        footer = bytearray(f.read(64))
        footer[48:52] = struct.pack("<I", 2)
        footer[52:56] = struct.pack("<I", mask_crc(crc32c(bytes(footer[:52]))))
        f.seek(size - 64)
        f.write(footer)
    for command in ("inspect", "dump", "verify"):
        result = run(command, table)
        assert result.exit_code == 1, result.output
        text = result.stderr if command != "verify" else result.stdout
        assert f"{table}: table format version 2 is not supported" in text


def test_no_command_shows_the_help():
    result = run()
    assert result.exit_code == 2
    assert "Usage:" in result.output and "verify" in result.output
