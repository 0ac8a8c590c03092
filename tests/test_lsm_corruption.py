"""Damaged LSM files: every fault is reported as a CorruptionError that names
the file, or (for a torn log tail) cleanly dropped; no read ever returns wrong
data; and the parsers of every on-disk structure turn arbitrary bytes into a
result or a clean rldb error, never another exception or a crash.

The helpers below write the formats independently of rldb (from the format
descriptions in rldb/storage/lsm/log.py, batch.py and csrc/block.c), so the
tests can build exactly the damaged files they need."""
import os
import random
import shutil
import struct

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rldb._core.block import BLOCK_TRAILER, block_get, decode_block
from rldb._core.bloom import bloom_build
from rldb._core.checksum import crc32c, mask_crc, unmask_crc
from rldb._core.sstable import FOOTER_SIZE, TABLE_FORMAT, decode_footer
from rldb.errors import CorruptionError, InvalidArgumentError, RldbError
from rldb.storage import open_engine
from rldb.storage.lsm.batch import decode_batch
from rldb.storage.lsm.log import LogWriter, read_log
from rldb.storage.lsm.table import Table

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CLEAN = (CorruptionError, InvalidArgumentError)
LOG_BLOCK = 32768
TABLE_MAGIC = 0x3130747373626472


# ---- independent writers of the formats -----------------------------------------------


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def ikey(user_key, seq, kind=1):
    return user_key + struct.pack("<Q", seq << 8 | kind)


def encode_block(entries, restart_interval=4):
    """A data/index block: prefix-compressed entries, restart array, count."""
    data, restarts, last = bytearray(), [], b""
    for i, (k, v) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(data))
        else:
            while shared < min(len(k), len(last)) and k[shared] == last[shared]:
                shared += 1
        data += varint(shared) + varint(len(k) - shared) + varint(len(v)) + k[shared:] + v
        last = k
    for r in restarts:
        data += struct.pack("<I", r)
    return bytes(data + struct.pack("<I", len(restarts)))


def with_trailer(contents):
    crc = mask_crc(crc32c(contents + b"\x00"))
    return contents + b"\x00" + struct.pack("<I", crc)


def encode_table(data_blocks, filter_block, props_block, index_entries=None, fmt=None):
    """A table file.  data_blocks are lists of (internal key, value) or, as
    (last key, contents) pairs with bytes contents, blocks given raw;
    index_entries default to (last key, handle) of each data block."""
    out, handles = bytearray(), []
    for block in data_blocks:
        if isinstance(block, tuple):
            last_key, contents = block
        else:
            last_key, contents = block[-1][0], encode_block(block)
        handles.append((last_key, varint(len(out)) + varint(len(contents))))
        out += with_trailer(contents)
    h = []
    for contents in (filter_block, props_block,
                     encode_block(handles if index_entries is None else index_entries)):
        h += [len(out), len(contents)]
        out += with_trailer(contents)
    footer = b"".join(struct.pack("<Q", x) for x in h)
    footer += struct.pack("<I", TABLE_FORMAT if fmt is None else fmt)
    footer += struct.pack("<I", mask_crc(crc32c(footer)))
    footer += struct.pack("<Q", TABLE_MAGIC)
    return bytes(out + footer)


def encode_batch(seq, ops):
    out = bytearray(struct.pack("<QI", seq, len(ops)))
    for op in ops:
        if op[0] == "put":
            out += b"\x01" + varint(len(op[1])) + op[1] + varint(len(op[2])) + op[2]
        else:
            out += b"\x00" + varint(len(op[1])) + op[1]
    return bytes(out)


def frame_log(payloads):
    """LevelDB log framing: 7-byte headers, fragments never cross a 32 KiB block."""
    out = bytearray()
    for payload in payloads:
        pos, first = 0, True
        while True:
            left = LOG_BLOCK - len(out) % LOG_BLOCK
            if left < 7:
                out += b"\x00" * left
                left = LOG_BLOCK
            take = min(len(payload) - pos, left - 7)
            last = pos + take == len(payload)
            kind = 1 if first and last else 2 if first else 4 if last else 3
            fragment = payload[pos:pos + take]
            crc = mask_crc(crc32c(bytes([kind]) + fragment))
            out += struct.pack("<IHB", crc, take, kind) + fragment
            pos += take
            first = False
            if last:
                break
    return bytes(out)


def parse_log_extents(data):
    """(start, end, payload) of every record of an intact log, parsed here
    without rldb: where each record's bytes begin and end."""
    records, pos, parts, start = [], 0, [], None
    while pos < len(data):
        left = LOG_BLOCK - pos % LOG_BLOCK
        if left < 7:
            pos += left
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if kind == 0 and length == 0:
            break
        assert unmask_crc(crc) == crc32c(bytes([kind]) + data[pos + 7:pos + 7 + length])
        if kind in (1, 2):
            start = pos
        parts.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):
            records.append((start, pos, b"".join(parts)))
            parts = []
    return records


def flip(path, offset, mask=0x40):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ mask]))


def files(path, suffix):
    return sorted(n for n in os.listdir(path) if n.endswith(suffix))


def assert_names(exc, path):
    name = os.path.basename(path)
    assert name in str(exc), f"{exc!r} does not name {name}"


# ---- damaged tables --------------------------------------------------------------------


@pytest.fixture(scope="module")
def table_db(tmp_path_factory):
    """A closed database whose data all sits in tables, and its contents."""
    path = str(tmp_path_factory.mktemp("tables") / "db")
    rng = random.Random(7)
    model = {}
    db = open_engine("lsm", path, background=False, memtable_size=32 << 10, block_size=256,
                     target_file_size=16 << 10, level1_max_bytes=64 << 10)
    for i in range(3000):
        k = b"key%05d" % rng.randrange(2500)
        if i % 9 == 0:
            db.delete(k)
            model.pop(k, None)
        else:
            model[k] = k + b"=" + rng.randbytes(rng.randrange(60))
            db.put(k, model[k])
    db.compact()
    db.close()
    # One more open and close: whatever obsolete file is left goes, so every
    # .sst in the directory is a live table.
    open_engine("lsm", path, background=False).close()
    return path, model


def _regions(path):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(size - FOOTER_SIZE)
        footer = f.read()
    filter_off, filter_size, props_off, props_size, index_off, index_size = \
        decode_footer(footer, size)
    trailer = BLOCK_TRAILER
    return {
        "data": (0, filter_off),
        "filter": (filter_off, filter_off + filter_size + trailer),
        "properties": (props_off, props_off + props_size + trailer),
        "index": (index_off, index_off + index_size + trailer),
        "footer": (size - FOOTER_SIZE, size),
    }


@pytest.mark.parametrize("where", ["start", "middle", "end", "random1", "random2"])
@pytest.mark.parametrize("region", ["data", "filter", "properties", "index", "footer"])
def test_flipped_byte_in_a_table_is_reported_never_read(table_db, tmp_path, region, where):
    src, model = table_db
    path = str(tmp_path / "db")
    shutil.copytree(src, path)
    tables = files(path, ".sst")
    victim = os.path.join(path, max(tables, key=lambda n: os.path.getsize(os.path.join(path, n))))
    lo, hi = _regions(victim)[region]
    assert hi > lo
    offset = {"start": lo, "middle": (lo + hi) // 2, "end": hi - 1,
              "random1": random.Random(region).randrange(lo, hi),
              "random2": random.Random(region + "2").randrange(lo, hi)}[where]
    flip(victim, offset)

    try:
        db = open_engine("lsm", path, background=False)
    except CorruptionError as exc:   # opening may read the table already
        assert_names(exc, victim)
        return
    try:
        errors = 0
        for key, value in model.items():
            try:
                got = db.get(key)
            except CorruptionError as exc:
                assert_names(exc, victim)
                errors += 1
                continue
            assert got == value, f"{key!r}: read {got!r}, stored {value!r}"
        for i in range(0, 2500, 7):   # deleted and never written keys stay absent
            key = b"key%05d" % i
            if key not in model:
                try:
                    assert db.get(key) is None
                except CorruptionError as exc:
                    assert_names(exc, victim)
        assert errors > 0, "no read noticed the damaged table"
        with pytest.raises(CorruptionError) as info:
            list(db.scan())
        assert_names(info.value, victim)
        with pytest.raises(CorruptionError) as info:
            db.check()
        assert_names(info.value, victim)
    finally:
        db.close()


def test_table_missing_from_the_directory(table_db, tmp_path):
    src, model = table_db
    path = str(tmp_path / "db")
    shutil.copytree(src, path)
    victim = os.path.join(path, files(path, ".sst")[0])
    os.unlink(victim)
    try:
        db = open_engine("lsm", path, background=False)
    except RldbError as exc:
        assert_names(exc, victim)
        return
    try:
        with pytest.raises(CorruptionError) as info:
            db.check()
        assert_names(info.value, victim)
        failures = 0
        for key, value in model.items():
            try:
                assert db.get(key) == value
            except RldbError as exc:   # never a silent None for a key that is stored
                assert_names(exc, victim)
                failures += 1
        assert failures > 0
    finally:
        db.close()


def test_truncated_table_is_reported(table_db, tmp_path):
    src, model = table_db
    for cut in (0, 10, 63, 64, 500, -1, -64, -65):
        path = str(tmp_path / f"db{cut}")
        shutil.copytree(src, path)
        victim = os.path.join(path, files(path, ".sst")[-1])
        size = os.path.getsize(victim)
        os.truncate(victim, cut if cut >= 0 else size + cut)
        try:
            db = open_engine("lsm", path, background=False)
        except CorruptionError as exc:
            assert_names(exc, victim)
            continue
        try:
            with pytest.raises(CorruptionError) as info:
                db.check()
            assert_names(info.value, victim)
            for key, value in model.items():
                try:
                    assert db.get(key) == value
                except CorruptionError as exc:
                    assert_names(exc, victim)
        finally:
            db.close()


# ---- the write-ahead log ------------------------------------------------------------------


@pytest.fixture(scope="module")
def wal_db(tmp_path_factory):
    """A closed database whose writes all sit in one log (the memtable never
    filled), the ops in order (one log record each), and the log's records."""
    path = str(tmp_path_factory.mktemp("wal") / "db")
    rng = random.Random(11)
    ops = []
    db = open_engine("lsm", path, background=False, memtable_size=16 << 20)
    for i in range(400):
        r = rng.random()
        key = b"k%04d" % rng.randrange(300)
        if i in (40, 41, 200):   # records of several fragments, crossing log blocks
            op = [("put", key, rng.randbytes(rng.randrange(40000, 80000)))]
        elif r < 0.7:
            op = [("put", key, rng.randbytes(rng.randrange(300)))]
        elif r < 0.85:
            op = [("delete", key)]
        else:
            op = [("put", b"b%04d" % rng.randrange(300), rng.randbytes(rng.randrange(100)))
                  for _ in range(rng.randrange(2, 6))] + [("delete", key)]
        if len(op) == 1 and op[0][0] == "put":
            db.put(*op[0][1:])
        elif len(op) == 1:
            db.delete(op[0][1])
        else:
            db.write_batch(op)
        ops.append(op)
    db.close()
    logs = [n for n in files(path, ".log") if os.path.getsize(os.path.join(path, n))]
    assert len(logs) == 1, logs
    with open(os.path.join(path, logs[0]), "rb") as f:
        records = parse_log_extents(f.read())
    assert len(records) == len(ops)
    assert not files(path, ".sst")
    return path, logs[0], ops, records


def _state_after(ops):
    model = {}
    for op in ops:
        for step in op:
            if step[0] == "put":
                model[step[1]] = step[2]
            else:
                model.pop(step[1], None)
    return model


def _cut_points(records, size):
    # A record whose fragments are FIRST, MIDDLE (a whole block), ... LAST.
    multi = next(r for r in records if r[1] > (r[0] // LOG_BLOCK + 2) * LOG_BLOCK)
    first_boundary = (multi[0] // LOG_BLOCK + 1) * LOG_BLOCK
    return {
        "empty": 0,
        "inside-first-header": 3,
        "after-first-record": records[0][1],
        "inside-payload": (records[5][0] + records[5][1]) // 2,
        "record-boundary": records[100][1],
        "one-past-boundary": records[100][1] + 1,
        "inside-header": records[150][0] + 6,
        "first-fragment-only": first_boundary,
        "inside-middle-fragment": first_boundary + 10,
        "first-and-middle-fragments": first_boundary + LOG_BLOCK,
        "last-byte": size - 1,
        "last-header": records[-1][0] + 7,
        "random": random.Random(3).randrange(size),
    }


@pytest.mark.parametrize("point", ["empty", "inside-first-header", "after-first-record",
                                   "inside-payload", "record-boundary", "one-past-boundary",
                                   "inside-header", "first-fragment-only",
                                   "inside-middle-fragment",
                                   "first-and-middle-fragments",
                                   "last-byte", "last-header", "random"])
def test_torn_log_tail_is_dropped_and_the_rest_recovered(wal_db, tmp_path, point):
    src, log_name, ops, records = wal_db
    path = str(tmp_path / "db")
    shutil.copytree(src, path)
    log_path = os.path.join(path, log_name)
    size = os.path.getsize(log_path)
    cut = _cut_points(records, size)[point]
    os.truncate(log_path, cut)
    intact = sum(1 for _, end, _ in records if end <= cut)
    expected = _state_after(ops[:intact])
    db = open_engine("lsm", path, background=False)
    try:
        assert dict(db.scan()) == expected
        for key, value in expected.items():
            assert db.get(key) == value
        db.check()
        db.put(b"after", b"recovery")
    finally:
        db.close()
    # The dropped tail stays dropped, and the database opens again normally.
    db = open_engine("lsm", path, background=False)
    try:
        assert dict(db.scan()) == {**expected, b"after": b"recovery"}
        db.check()
    finally:
        db.close()


def test_read_log_refuses_damage_before_a_block_that_starts_a_record(tmp_path):
    # The first record fills block 0 up to 3 bytes from its end (padding), so
    # block 1 starts with a whole record: damage in block 0 is then plainly not
    # a torn tail.
    payloads = [b"a" * (LOG_BLOCK - 7 - 3), b"second", b"third"]
    data = bytearray(frame_log(payloads))
    assert parse_log_extents(bytes(data))[1][0] == LOG_BLOCK
    data[100] ^= 1
    path = tmp_path / "000007.log"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptionError) as info:
        read_log(str(path))
    assert info.value.path == str(path)
    assert info.value.offset == 0


def test_read_log_drops_a_record_torn_at_a_block_boundary(tmp_path):
    """A record's own complete fragments are not 'intact data after the
    damage': a log torn at a block boundary inside a multi-fragment record is a
    torn tail (a crash can leave the file cut at any page boundary)."""
    payloads = [b"first", b"x" * (3 * LOG_BLOCK)]   # FIRST, MIDDLE, MIDDLE, LAST
    data = frame_log(payloads)
    path = tmp_path / "000009.log"
    path.write_bytes(data[:2 * LOG_BLOCK])           # FIRST and one MIDDLE survive
    result = read_log(str(path))
    assert [p for _, p in result.records] == [b"first"]
    assert result.dropped_bytes == 2 * LOG_BLOCK - 12


def test_prefix_wal_recovery_keeps_the_writes_before_mid_log_damage(wal_db, tmp_path):
    src, log_name, ops, records = wal_db
    path = str(tmp_path / "db")
    shutil.copytree(src, path)
    log_path = os.path.join(path, log_name)
    start, end, _ = records[20]
    flip(log_path, (start + end) // 2)
    with pytest.raises(CorruptionError):
        open_engine("lsm", path, background=False)
    with pytest.raises(InvalidArgumentError, match="wal_recovery"):
        open_engine("lsm", path, background=False, wal_recovery="lenient")
    with open_engine("lsm", path, background=False, wal_recovery="prefix") as db:
        assert dict(db.scan()) == _state_after(ops[:20])
        db.check()
    with open_engine("lsm", path, background=False) as db:   # and stays recovered
        assert dict(db.scan()) == _state_after(ops[:20])


@pytest.mark.parametrize("damaged", ["same-block", "earlier-block"])
def test_damage_before_intact_log_records_is_corruption(wal_db, tmp_path, damaged):
    """Damage followed by intact records is not a torn tail: refusing to open
    beats silently dropping acknowledged writes (wal_recovery="strict")."""
    src, log_name, ops, records = wal_db
    path = str(tmp_path / "db")
    shutil.copytree(src, path)
    log_path = os.path.join(path, log_name)
    start, end, _ = records[20]
    if damaged == "same-block":
        assert records[21][1] < LOG_BLOCK
    else:
        assert records[-1][0] > LOG_BLOCK
    flip(log_path, (start + end) // 2)
    with pytest.raises(CorruptionError) as info:
        db = open_engine("lsm", path, background=False)
        lost = len(_state_after(ops)) - len(list(db.scan()))
        db.close()   # reached only when the damage was not noticed
        pytest.fail(f"recovery dropped {len(ops) - 20} intact records ({lost} keys) silently")
    assert_names(info.value, log_path)


def test_batch_in_a_torn_record_is_all_or_nothing(tmp_path):
    path = str(tmp_path / "db")
    db = open_engine("lsm", path, background=False)
    db.put(b"before", b"1")
    batch = [("put", b"batch%04d" % i, b"%04d" % i * 50) for i in range(400)]
    db.write_batch(batch + [("delete", b"before")])
    db.close()
    log_path = os.path.join(path, [n for n in files(path, ".log")
                                   if os.path.getsize(os.path.join(path, n))][0])
    records = parse_log_extents(open(log_path, "rb").read())
    start, end, _ = records[-1]
    assert end - start > 2 * LOG_BLOCK
    for cut in (start + 100, start + LOG_BLOCK, end - 1):
        copy = str(tmp_path / f"copy{cut}")
        shutil.copytree(path, copy)
        os.truncate(os.path.join(copy, os.path.basename(log_path)), cut)
        with open_engine("lsm", copy, background=False) as db:
            assert list(db.scan()) == [(b"before", b"1")]


# ---- CURRENT and MANIFEST ---------------------------------------------------------------


@pytest.fixture
def closed_db(table_db, tmp_path):
    src, model = table_db
    path = str(tmp_path / "db")
    shutil.copytree(src, path)
    return path


def _open_fails(path, name):
    with pytest.raises(CorruptionError) as info:
        db = open_engine("lsm", path, background=False)
        db.close()
    assert name in str(info.value), f"{info.value} does not name {name}"
    assert info.value.path is not None and name in info.value.path
    return info.value


def test_missing_current_with_database_files(closed_db):
    os.unlink(os.path.join(closed_db, "CURRENT"))
    exc = _open_fails(closed_db, "CURRENT")
    assert "missing" in str(exc)


@pytest.mark.parametrize("content", [b"", b"garbage", b"MANIFEST-000001", b"MANIFEST-\n",
                                     b"MANIFEST-abc\n", b"\xff\xfe\x00\n", b"manifest-000001\n",
                                     b"MANIFEST-000001\nMANIFEST-000002\n"])
def test_garbled_current(closed_db, content):
    with open(os.path.join(closed_db, "CURRENT"), "wb") as f:
        f.write(content)
    _open_fails(closed_db, "CURRENT")


def test_current_naming_a_missing_manifest(closed_db):
    with open(os.path.join(closed_db, "CURRENT"), "wb") as f:
        f.write(b"MANIFEST-987654\n")
    exc = _open_fails(closed_db, "MANIFEST-987654")
    assert "does not exist" in str(exc) or "missing" in str(exc)


def test_manifest_deleted_under_current(closed_db):
    (manifest,) = [n for n in os.listdir(closed_db) if n.startswith("MANIFEST-")]
    os.unlink(os.path.join(closed_db, manifest))
    _open_fails(closed_db, manifest)


def _manifest(path):
    (name,) = [n for n in os.listdir(path) if n.startswith("MANIFEST-")]
    return name, os.path.join(path, name)


def _base_record(path):
    name, mpath = _manifest(path)
    records = parse_log_extents(open(mpath, "rb").read())
    return name, mpath, records


@pytest.mark.parametrize("damage", ["flip-first-record", "empty", "random-bytes", "zeros",
                                    "not-msgpack", "not-a-map", "bad-file-entry",
                                    "no-base-record", "overlapping-level1"])
def test_garbled_manifest(closed_db, damage):
    name, mpath, records = _base_record(closed_db)
    base = msgpack.unpackb(records[0][2], raw=False)
    assert isinstance(base, dict) and "next_file" in base
    rng = random.Random(damage)
    if damage == "flip-first-record":
        flip(mpath, (records[0][0] + records[0][1]) // 2)
        data = None
    elif damage == "empty":
        data = b""
    elif damage == "random-bytes":
        data = rng.randbytes(5000)
    elif damage == "zeros":
        data = b"\x00" * 100
    elif damage == "not-msgpack":
        data = frame_log([b"\xc1\xc1\xc1 not msgpack"])
    elif damage == "not-a-map":
        data = frame_log([msgpack.packb([1, 2, 3])])
    elif damage == "bad-file-entry":
        data = frame_log([msgpack.packb(dict(base, add=[[1, 2]]), use_bin_type=True)])
    elif damage == "no-base-record":
        edit = {k: v for k, v in base.items() if k != "next_file"}
        data = frame_log([msgpack.packb(edit, use_bin_type=True)])
    elif damage == "overlapping-level1":
        entry = [1, 999990, 100, b"a", b"z", 1]
        data = frame_log([msgpack.packb(dict(base, add=[entry, [1, 999991, 100, b"m", b"q", 1]]),
                                        use_bin_type=True)])
    if data is not None:
        with open(mpath, "wb") as f:
            f.write(data)
    _open_fails(closed_db, name)


@pytest.mark.parametrize("level", [7, 99, -1])
def test_manifest_naming_a_level_that_does_not_exist(closed_db, level):
    name, mpath, records = _base_record(closed_db)
    base = msgpack.unpackb(records[0][2], raw=False)
    edit = dict(base, add=[[level, 999990, 100, b"a", b"z", 1]])
    with open(mpath, "wb") as f:
        f.write(frame_log([msgpack.packb(edit, use_bin_type=True)]))
    _open_fails(closed_db, name)


def test_torn_manifest_tail_opens_and_keeps_unreferenced_tables(tmp_path):
    """A torn last manifest record is an edit that never completed: the engine
    opens at the version before it, and moves the tables no version names to
    lost/ instead of deleting them (they may hold the lost edit's data)."""
    path = str(tmp_path / "db")
    db = open_engine("lsm", path, background=False, memtable_size=2048, target_file_size=2048)
    for i in range(400):
        db.put(b"%05d" % i, b"v" * 40)
    db.close()
    tables = set(files(path, ".sst"))
    name, mpath, records = _base_record(path)
    assert len(records) > 2
    start, end, _ = records[-1]
    os.truncate(mpath, (start + end) // 2)
    with open_engine("lsm", path, background=False) as db:
        db.check()
        kept = set(files(path, ".sst"))
        lost = set(os.listdir(os.path.join(path, "lost"))) if os.path.isdir(
            os.path.join(path, "lost")) else set()
        assert tables <= kept | lost, f"deleted after a torn manifest: {tables - kept - lost}"
        for k, v in db.scan():
            assert v == b"v" * 40


def test_damaged_manifest_record_before_intact_ones(tmp_path):
    path = str(tmp_path / "db")
    db = open_engine("lsm", path, background=False, memtable_size=2048, target_file_size=2048)
    for i in range(400):
        db.put(b"%05d" % i, b"v" * 40)
    db.close()
    name, mpath, records = _base_record(path)
    assert len(records) > 3 and records[-1][1] < LOG_BLOCK
    start, end, _ = records[1]
    flip(mpath, (start + end) // 2)
    _open_fails(path, name)


# ---- fuzzing the parsers ------------------------------------------------------------------


def _payloads(seed, count):
    rng = random.Random(seed)
    sizes = [rng.choice([0, 1, 6, 7, 100, rng.randrange(2000), rng.randrange(40000, 70000)])
             for _ in range(count)]
    return [rng.randbytes(n) for n in sizes]


def _read_log_bytes(tmp_path, data):
    path = tmp_path / "fuzz.log"
    path.write_bytes(data)
    try:
        result = read_log(str(path))
    except CorruptionError as exc:
        assert exc.path == str(path)
        return None
    assert result.dropped_bytes >= 0
    for offset, payload in result.records:
        assert 0 <= offset < len(data) and isinstance(payload, bytes)
    return result


@FUZZ
@given(data=st.binary(max_size=3000))
def test_fuzz_read_log_random_bytes(tmp_path, data):
    _read_log_bytes(tmp_path, data)


@FUZZ
@given(seed=st.integers(0, 2**32), count=st.integers(0, 8),
       mutation=st.sampled_from(["none", "flip", "truncate", "splice", "zero"]),
       where=st.floats(0, 1))
def test_fuzz_read_log_damaged_logs(tmp_path, seed, count, mutation, where):
    payloads = _payloads(seed, count)
    data = bytearray(frame_log(payloads))
    at = int(where * max(len(data) - 1, 0))
    if mutation == "flip" and data:
        data[at] ^= 1 << (seed % 8)
    elif mutation == "truncate":
        del data[at:]
    elif mutation == "splice":
        data[at:at] = random.Random(seed).randbytes(seed % 50 + 1)
    elif mutation == "zero":
        data[at:at + 20] = bytes(len(data[at:at + 20]))
    result = _read_log_bytes(tmp_path, bytes(data))
    if mutation == "none":
        assert result is not None and [p for _, p in result.records] == payloads
        assert result.dropped_bytes == 0
    elif mutation == "truncate" and result is not None:
        # A truncated log yields exactly the records that were wholly kept.
        kept = [p for s, e, p in parse_log_extents(frame_log(payloads)) if e <= at]
        assert [p for _, p in result.records] == kept
    elif result is not None:
        # Whatever is returned is a prefix of what was written.
        got = [p for _, p in result.records]
        assert got == payloads[:len(got)]


@settings(FUZZ, max_examples=40)
@given(seed=st.integers(0, 2**32), count=st.integers(0, 12))
def test_log_writer_round_trip(tmp_path, seed, count):
    payloads = _payloads(seed, count)
    path = str(tmp_path / "w.log")
    if os.path.exists(path):
        os.unlink(path)
    writer = LogWriter(path, 1)
    for p in payloads:
        writer.add(p)
    writer.close()
    data = open(path, "rb").read()
    assert data == frame_log(payloads)
    assert [p for _, p in read_log(path).records] == payloads


ops_strategy = st.lists(st.one_of(
    st.tuples(st.just("put"), st.binary(min_size=1, max_size=20), st.binary(max_size=300)),
    st.tuples(st.just("delete"), st.binary(min_size=1, max_size=20))), max_size=10)


@FUZZ
@given(seq=st.integers(0, 2**56 - 1), ops=ops_strategy)
def test_batch_round_trip_and_truncations(seq, ops):
    payload = encode_batch(seq, ops)
    got_seq, got_ops = decode_batch(payload)
    assert got_seq == seq
    assert [(k, key, value) for k, key, value in got_ops] == \
        [(1, op[1], op[2]) if op[0] == "put" else (0, op[1], b"") for op in ops]
    for cut in sorted({0, 1, 11, 12, 13, len(payload) // 2, len(payload) - 1}):
        if cut < len(payload):
            with pytest.raises(CorruptionError):
                decode_batch(payload[:cut])
    with pytest.raises(CorruptionError):
        decode_batch(payload + b"\x00")


@FUZZ
@given(data=st.binary(max_size=400))
def test_fuzz_decode_batch(data):
    try:
        seq, ops = decode_batch(data)
    except CorruptionError:
        return
    for kind, key, value in ops:
        assert kind in (0, 1) and isinstance(key, bytes) and key and isinstance(value, bytes)


@FUZZ
@given(head=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1)),
       body=st.binary(max_size=60))
def test_fuzz_decode_batch_with_plausible_header(head, body):
    data = struct.pack("<QI", head[0], head[1] % 6) + body
    try:
        decode_batch(data)
    except CorruptionError:
        pass


def _block_entries(rng, n):
    keys = sorted({rng.randbytes(rng.randrange(1, 6)) for _ in range(n)})
    entries = []
    for k in keys:
        for seq in sorted(rng.sample(range(1, 50), rng.randrange(1, 3)), reverse=True):
            kind = rng.randrange(2)
            entries.append((ikey(k, seq, kind), rng.randbytes(rng.randrange(20)) if kind else b""))
    return entries


def _call_block(block, key, snapshot):
    try:
        entries = decode_block(block, True)
        assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in entries)
    except CLEAN:
        pass
    try:
        decode_block(block, False)
    except CLEAN:
        pass
    try:
        found = block_get(block, key, snapshot)
    except CLEAN:
        return
    assert found is None or (found[0] in (0, 1) and isinstance(found[1], bytes))


@FUZZ
@given(block=st.binary(max_size=300), key=st.binary(max_size=10),
       snapshot=st.integers(0, 2**64 - 1))
def test_fuzz_block_random_bytes(block, key, snapshot):
    _call_block(block, key, snapshot)


@FUZZ
@given(seed=st.integers(0, 2**32), n=st.integers(1, 30),
       mutation=st.sampled_from(["none", "flip", "truncate", "restarts", "splice"]),
       where=st.floats(0, 1), probe=st.binary(min_size=1, max_size=6))
def test_fuzz_block_damaged(seed, n, mutation, where, probe):
    rng = random.Random(seed)
    entries = _block_entries(rng, n)
    block = bytearray(encode_block(entries, restart_interval=rng.randrange(1, 5)))
    at = int(where * (len(block) - 1))
    if mutation == "flip":
        block[at] ^= 1 << rng.randrange(8)
    elif mutation == "truncate":
        del block[at:]
    elif mutation == "restarts":
        struct.pack_into("<I", block, len(block) - 4, rng.choice([0, 1, 2**31, 2**32 - 1,
                                                                  len(block)]))
    elif mutation == "splice":
        block[at:at] = rng.randbytes(rng.randrange(1, 10))
    block = bytes(block)
    snapshot = rng.choice([0, 10, 25, 2**56 - 1])
    _call_block(block, probe, snapshot)
    if mutation == "none":
        assert decode_block(block, True) == entries
        for user_key in {k[:-8] for k, _ in entries} | {probe}:
            visible = [(struct.unpack("<Q", k[-8:])[0], v) for k, v in entries
                       if k[:-8] == user_key and struct.unpack("<Q", k[-8:])[0] >> 8 <= snapshot]
            expected = None
            if visible:
                trailer, value = visible[0]
                expected = (trailer & 0xFF, value)
            assert block_get(block, user_key, snapshot) == expected


def _open_table_and_read(path, probes):
    """Opens a table, reads probes and every block; a result or a clean error
    (which names the file when opening or verifying fails)."""
    try:
        table = Table(path, 1)
    except CLEAN as exc:
        assert_names(exc, path)
        return None
    try:
        for key in probes:
            try:
                found = table.get(key, 2**56 - 1)
            except CLEAN:
                continue
            assert found is None or (found[0] in (0, 1) and isinstance(found[1], bytes))
        try:
            table.verify()
        except CLEAN as exc:
            assert_names(exc, path)
    finally:
        table.close()
    return table


@FUZZ
@given(data=st.binary(max_size=2000), probes=st.lists(st.binary(min_size=1, max_size=6),
                                                       max_size=5))
def test_fuzz_table_random_bytes(tmp_path, data, probes):
    path = str(tmp_path / "000001.sst")
    with open(path, "wb") as f:
        f.write(data)
    _open_table_and_read(path, probes)


def _valid_table(rng, nblocks=4):
    entries = _block_entries(rng, 12 * nblocks)
    size = max(1, len(entries) // nblocks)
    blocks = [entries[i:i + size] for i in range(0, len(entries), size)]
    user_keys = sorted({k[:-8] for k, _ in entries})
    props = msgpack.packb({"entries": len(entries),
                           "deletions": sum(1 for k, _ in entries if k[-8] == 0),
                           "smallest_key": user_keys[0], "largest_key": user_keys[-1]},
                          use_bin_type=True)
    return blocks, bloom_build(user_keys, 10), props, entries


@FUZZ
@given(seed=st.integers(0, 2**32),
       part=st.sampled_from(["none", "flip", "truncate", "random-data-block", "random-filter",
                             "random-properties", "random-index-keys", "empty-blocks"]),
       where=st.floats(0, 1))
def test_fuzz_table_damaged(tmp_path, seed, part, where):
    rng = random.Random(seed)
    blocks, bloom, props, entries = _valid_table(rng)
    data = encode_table(blocks, bloom, props)
    if part in ("flip", "truncate"):
        data = bytearray(data)
        at = int(where * (len(data) - 1))
        if part == "flip":
            data[at] ^= 1 << rng.randrange(8)
        else:
            del data[at:]
        data = bytes(data)
    elif part == "random-data-block":
        # Checksums intact, contents garbage: the block parser has to cope.
        i = rng.randrange(len(blocks))
        raw = [(b[-1][0], encode_block(b)) for b in blocks]
        raw[i] = (raw[i][0], rng.randbytes(len(raw[i][1])))
        data = encode_table(raw, bloom, props)
    elif part == "random-filter":
        data = encode_table(blocks, rng.randbytes(rng.randrange(0, 40)), props)
    elif part == "random-properties":
        data = encode_table(blocks, bloom, rng.randbytes(rng.randrange(0, 40)))
    elif part == "random-index-keys":
        # Index entries in random order with random keys, handles kept inside the file.
        good = encode_table(blocks, bloom, props)
        index = []
        offset = 0
        for b in blocks:
            size = len(encode_block(b))
            key = rng.choice([rng.randbytes(rng.randrange(0, 12)), b[-1][0], b[0][0]])
            index.append((key, varint(offset) + varint(size)))
            offset += size + BLOCK_TRAILER
        rng.shuffle(index)
        data = encode_table(blocks, bloom, props, index_entries=index)
        assert len(data) >= len(good) - 200
    elif part == "empty-blocks":
        data = encode_table([], b"", b"", index_entries=[])
    path = str(tmp_path / "000001.sst")
    with open(path, "wb") as f:
        f.write(data)
    probes = [k[:-8] for k, _ in entries[:: max(1, len(entries) // 6)]] + [b"\x00", b"\xff" * 3]
    table = _open_table_and_read(path, probes)
    if part == "none":
        assert table is not None
        reopened = Table(path, 1)
        try:
            assert reopened.verify() == len(entries)
            for user_key in {k[:-8] for k, _ in entries}:
                newest = next((k, v) for k, v in entries if k[:-8] == user_key)
                assert reopened.get(user_key, 2**56 - 1) == (newest[0][-8], newest[1])
        finally:
            reopened.close()


@pytest.mark.parametrize("size", [2**62, 2**64 - 1])
def test_index_handle_past_the_end_of_the_table(tmp_path, size):
    """An index entry whose block lies past the end of the file is corruption
    (not an attempt to read or allocate that many bytes)."""
    rng = random.Random(1)
    blocks, bloom, props, entries = _valid_table(rng, nblocks=1)
    key = blocks[0][-1][0]
    data = encode_table(blocks, bloom, props, index_entries=[(key, varint(0) + varint(size))])
    path = str(tmp_path / "000001.sst")
    with open(path, "wb") as f:
        f.write(data)
    user_key = key[:-8]
    with pytest.raises(CorruptionError):
        table = Table(path, 1)
        table.get(user_key, 2**56 - 1)


def test_unreadable_filter_error_names_the_table(tmp_path):
    """A filter block with a good checksum but nonsense contents is reported
    as corruption of that table, with its path."""
    rng = random.Random(3)
    blocks, bloom, props, entries = _valid_table(rng, nblocks=2)
    path = str(tmp_path / "000001.sst")
    with open(path, "wb") as f:   # checksums intact, filter contents nonsense
        f.write(encode_table(blocks, b"\x08\x83b", props))
    try:
        table = Table(path, 1)
    except CorruptionError as exc:   # refusing it at open is fine too
        assert_names(exc, path)
        return
    with pytest.raises(CorruptionError) as info:
        for k, _ in entries:
            table.get(k[:-8], 2**56 - 1)
    assert_names(info.value, path)


@pytest.mark.parametrize("size", [2**62, 2**64 - 1])
def test_engine_reading_a_table_whose_index_points_past_its_end(tmp_path, size):
    """Through the engine: the damaged table is refused at open, or point
    lookups and scans raise CorruptionError naming it (never a MemoryError
    or OverflowError from trying to read the block)."""
    path = str(tmp_path / "db")
    with open_engine("lsm", path, background=False) as db:
        db.put(b"key", b"value")
        db.compact()
    (name,) = files(path, ".sst")
    k = ikey(b"key", 1)
    props = msgpack.packb({"entries": 1, "deletions": 0, "smallest_key": b"key",
                           "largest_key": b"key"}, use_bin_type=True)
    with open(os.path.join(path, name), "wb") as f:
        f.write(encode_table([[(k, b"value")]], bloom_build([b"key"], 10), props,
                             index_entries=[(k, varint(0) + varint(size))]))
    try:
        db = open_engine("lsm", path, background=False)
    except CorruptionError as exc:
        assert_names(exc, name)
        return
    try:
        with pytest.raises(CorruptionError) as info:
            db.get(b"key")
        assert_names(info.value, name)
        with pytest.raises(CorruptionError) as info:
            list(db.scan())
        assert_names(info.value, name)
    finally:
        db.close()


def test_table_of_another_format_version_is_refused(tmp_path):
    rng = random.Random(2)
    blocks, bloom, props, entries = _valid_table(rng, nblocks=2)
    path = str(tmp_path / "000001.sst")
    with open(path, "wb") as f:
        f.write(encode_table(blocks, bloom, props, fmt=TABLE_FORMAT + 1))
    with pytest.raises(RldbError):
        Table(path, 1)
