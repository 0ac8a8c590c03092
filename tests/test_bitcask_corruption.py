"""Damaged Bitcask files: a flipped byte in a value is reported by get as a
CorruptionError naming the file and offset; a damaged hint is ignored and its
data file scanned; a torn tail of the newest data file (a crash) is cut back to
the last complete entry or batch; damage anywhere else refuses the open with
the file and offset; no read ever returns wrong data; the scanner and the hint
loader turn arbitrary bytes into a result or a clean error, never a crash.

The helpers below read and write the formats independently of rldb (from
docs/formats.md, section "Bitcask", with crcmod as the reference CRC-32C)."""
import os
import random
import struct

import crcmod.predefined
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rldb.errors import CorruptionError
from rldb.storage import open_engine
from rldb.storage.bitcask.files import parse_name

crc32c = crcmod.predefined.mkCrcFun("crc-32c")
HEADER = struct.Struct("<IQIIB")        # crc, timestamp, key size, value size, flags
HINT = struct.Struct("<IIIHB")          # offset, value size, timestamp (seconds), key size, flags
TRAILER = struct.Struct("<QQQI")        # count, data size, magic, crc
HINT_MAGIC = int.from_bytes(b"RLDBHINT", "little")
TOMB, BATCH = 1, 2
QUIET = dict(max_file_size=600, merge_threshold=1.0, merge_small_files=0, background_merge=False)
FUZZ = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# ---- the formats, independently ----------------------------------------------------------


def entry(key, value, flags=0, ts=1_700_000_000_000_000):
    body = struct.pack("<QIIB", ts, len(key), len(value), flags) + key + value
    return struct.pack("<I", crc32c(body)) + body


def parse_entry(data, pos):
    """(key, value, flags, end) of a valid entry at pos, else None."""
    if pos + 21 > len(data):
        return None
    crc, _ts, klen, vlen, flags = HEADER.unpack_from(data, pos)
    end = pos + 21 + klen + vlen
    if (not 1 <= klen <= 65535 or flags & ~3 or vlen > 2**31 - 1 or (flags & TOMB and vlen)
            or end > len(data) or crc32c(data[pos + 4:end]) != crc):
        return None
    return data[pos + 21:pos + 21 + klen], data[pos + 21 + klen:end], flags, end


def entries(data):
    out, pos = [], 0
    while (e := parse_entry(data, pos)) is not None:
        out.append((pos,) + e)
        pos = e[3]
    return out


def hint_for(data):
    """The hint rldb writes for a data file: one record per entry, back to back."""
    out, n = bytearray(), 0
    for pos, key, value, flags, _end in entries(data):
        seconds = HEADER.unpack_from(data, pos)[1] // 1_000_000
        out += HINT.pack(pos, len(value), seconds, len(key), flags & TOMB) + key
        n += 1
    out += struct.pack("<QQQ", n, len(data), HINT_MAGIC)
    return bytes(out + struct.pack("<I", crc32c(bytes(out))))


def reference_open(data):
    """What opening a directory whose only (newest) data file holds data must
    give: ("corrupt", offset) or (contents, valid end)."""
    contents, pending, pos, end = {}, [], 0, 0
    while pos < len(data):
        e = parse_entry(data, pos)
        if e is None:
            if any(parse_entry(data, p) for p in range(pos + 1, len(data) - 20)):
                return "corrupt", pos
            break
        pending.append(e)
        pos = e[3]
        if not e[2] & BATCH:
            for key, value, flags, _ in pending:
                if flags & TOMB:
                    contents.pop(key, None)
                else:
                    contents[key] = value
            pending, end = [], pos
    return contents, end


# ---- helpers on real stores --------------------------------------------------------------


def data_files(path):
    """(name, rank, id) of the data files, oldest first."""
    out = [(n,) + parse_name(n)[:2] for n in os.listdir(path) if n.endswith(".data")]
    return sorted(out, key=lambda t: (t[1], t[2]))


def newest(path):
    return max((t for t in data_files(path) if t[1] == t[2]), key=lambda t: t[2])[0]


def hint_of(name):
    return name[:-5] + ".hint"


def flip(path, offset, mask=0x40):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ mask]))


def build(path, n=120, **options):
    """A closed store of several files; its contents."""
    model = {}
    with open_engine("bitcask", str(path), **dict(QUIET, **options)) as db:
        for i in range(n):
            k = b"key%03d" % (i % 90)
            if i % 11 == 5:
                db.delete(k)
                model.pop(k, None)
            else:
                model[k] = b"value-%d-" % i + bytes([i % 256]) * 20
                db.put(k, model[k])
    return model


def contents(db):
    return {k: db.get(k) for k in db.keys()}


def where(path, key):
    """(data file name, offset) of key's newest entry, by reading the files."""
    found = None
    for name, _rank, _id in data_files(path):
        for pos, k, _v, _f, _e in entries((path / name).read_bytes()):
            if k == key:
                found = (name, pos)
    return found


# ---- data files --------------------------------------------------------------------------


def test_format_matches_the_independent_reader(tmp_path):
    model = build(tmp_path)
    seen = {}
    for name, _rank, _id in data_files(tmp_path):
        data = (tmp_path / name).read_bytes()
        assert entries(data)[-1][-1] == len(data)  # every byte is in an entry
        assert (tmp_path / hint_of(name)).read_bytes() == hint_for(data)
        for _pos, key, value, flags, _ in entries(data):
            if flags & TOMB:
                seen.pop(key, None)
            else:
                seen[key] = value
    assert seen == model


def test_flipped_value_byte_fails_get_with_file_and_offset(tmp_path):
    model = build(tmp_path)
    victim = b"key050"
    name, pos = where(tmp_path, victim)
    flip(tmp_path / name, pos + 21 + len(victim) + 3)   # inside the value
    db = open_engine("bitcask", str(tmp_path), **QUIET)  # the hint is intact: opens
    with pytest.raises(CorruptionError) as info:
        db.get(victim)
    assert info.value.path == str(tmp_path / name) and info.value.offset == pos
    assert str(tmp_path / name) in str(info.value) and f"offset {pos}" in str(info.value)
    for k, v in model.items():
        if k != victim:
            assert db.get(k) == v
    with pytest.raises(CorruptionError) as info:
        db.check()
    assert info.value.path == str(tmp_path / name) and info.value.offset == pos
    with pytest.raises(CorruptionError) as info:
        db.merge(full=True)   # a merge reads it too, and stops
    assert info.value.path == str(tmp_path / name)
    assert {k: db.get(k) for k in model if k != victim} == {k: v for k, v in model.items()
                                                            if k != victim}
    db.close()


@pytest.mark.parametrize("field", ["crc", "key size", "flags", "key"])
def test_damage_in_an_older_file_without_a_hint_refuses_open(tmp_path, field):
    build(tmp_path)
    name = data_files(tmp_path)[1][0]
    os.unlink(tmp_path / hint_of(name))
    pos = entries((tmp_path / name).read_bytes())[2][0]
    flip(tmp_path / name, pos + {"crc": 0, "key size": 12, "flags": 20, "key": 22}[field],
         mask=0x04)
    with pytest.raises(CorruptionError) as info:
        open_engine("bitcask", str(tmp_path), **QUIET)
    assert info.value.path == str(tmp_path / name) and info.value.offset == pos
    assert not os.path.exists(tmp_path / (hint_of(name) + ".tmp"))


def test_damage_mid_newest_file_refuses_open_but_a_damaged_last_entry_is_a_torn_tail(tmp_path):
    model = build(tmp_path)
    with open_engine("bitcask", str(tmp_path), **QUIET) as db:  # a newest file of 5 entries
        for i in range(5):
            model[b"new%d" % i] = b"n" * 20
            db.put(b"new%d" % i, b"n" * 20)
    name = newest(tmp_path)
    os.unlink(tmp_path / hint_of(name))   # as after a crash: the active file has no hint
    data = (tmp_path / name).read_bytes()
    es = entries(data)
    assert len(es) == 5
    flip(tmp_path / name, es[1][0] + 25)
    with pytest.raises(CorruptionError) as info:
        open_engine("bitcask", str(tmp_path), **QUIET)
    assert info.value.offset == es[1][0] and info.value.path == str(tmp_path / name)
    flip(tmp_path / name, es[1][0] + 25)  # repaired
    flip(tmp_path / name, es[-1][0] + 25)
    with open_engine("bitcask", str(tmp_path), **QUIET) as db:
        assert db.stats()["recovery"]["truncated_bytes"] == len(data) - es[-1][0]
        lost = es[-1][1]
        got = contents(db)
        assert {k: v for k, v in got.items() if k != lost} == {k: v for k, v in model.items()
                                                               if k != lost}
        db.check()
    assert os.path.getsize(tmp_path / name) == es[-1][0]


@pytest.mark.parametrize("cut", [1, 10, 21, 30])
def test_torn_tail_of_the_newest_file_is_cut(tmp_path, cut):
    model = build(tmp_path)
    with open_engine("bitcask", str(tmp_path), **QUIET) as db:
        db.put(b"last", b"L" * 40)
    name = newest(tmp_path)
    os.unlink(tmp_path / hint_of(name))
    size = os.path.getsize(tmp_path / name)
    os.truncate(tmp_path / name, size - cut)   # cut inside the last entry
    with open_engine("bitcask", str(tmp_path), **QUIET) as db:
        assert contents(db) == model
        assert db.stats()["recovery"]["truncated_bytes"] == 21 + 4 + 40 - cut
        db.check()
        db.put(b"after", b"a")
    with open_engine("bitcask", str(tmp_path), **QUIET) as db:
        assert contents(db) == {**model, b"after": b"a"}


def test_a_torn_batch_is_dropped_whole(tmp_path):
    model = build(tmp_path)
    batch = [("put", b"b%d" % i, b"x" * 30) for i in range(4)] + [("delete", b"key001")]
    with open_engine("bitcask", str(tmp_path), **QUIET) as db:
        db.write_batch(batch)
    name = newest(tmp_path)
    os.unlink(tmp_path / hint_of(name))
    data = (tmp_path / name).read_bytes()
    es = entries(data)
    assert [e[3] & BATCH for e in es[-5:]] == [BATCH] * 4 + [0]
    os.truncate(tmp_path / name, es[-1][0] + 3)  # four entries complete, the fifth cut
    with open_engine("bitcask", str(tmp_path), **QUIET) as db:
        assert contents(db) == model
        assert db.stats()["recovery"]["truncated_bytes"] == es[-1][0] + 3 - es[-5][0]
        db.check()


def test_a_truncated_older_file_is_corruption(tmp_path):
    build(tmp_path)
    name = data_files(tmp_path)[0][0]
    size = os.path.getsize(tmp_path / name)
    os.truncate(tmp_path / name, size - 5)
    with pytest.raises(CorruptionError, match=f"{size - 5} bytes.*hint.*{size} bytes") as info:
        open_engine("bitcask", str(tmp_path), **QUIET)   # its intact hint says otherwise
    assert info.value.path == str(tmp_path / name)
    os.unlink(tmp_path / hint_of(name))
    with pytest.raises(CorruptionError) as info:
        open_engine("bitcask", str(tmp_path), **QUIET)
    assert info.value.path == str(tmp_path / name)
    assert info.value.offset == entries((tmp_path / name).read_bytes())[-1][-1]


def test_zero_length_files(tmp_path):
    model = build(tmp_path)
    # A zero-length newest file without a hint (a crash right after a roll): empty.
    with open_engine("bitcask", str(tmp_path), **QUIET) as db:
        db.put(b"x", b"1")
    name = newest(tmp_path)
    os.unlink(tmp_path / hint_of(name))
    os.truncate(tmp_path / name, 0)
    with open_engine("bitcask", str(tmp_path), **QUIET) as db:
        assert contents(db) == model
        db.check()
    assert not os.path.exists(tmp_path / name)
    # A zero-length hint: not valid, so the data file is scanned.
    target = data_files(tmp_path)[0][0]
    os.truncate(tmp_path / hint_of(target), 0)
    with open_engine("bitcask", str(tmp_path), **QUIET) as db:
        assert db.stats()["recovery"]["hints_rejected"] == 1
        assert contents(db) == model
    assert os.path.getsize(tmp_path / hint_of(target)) > 0   # written anew
    # A zero-length older data file whose hint is intact: data was lost.
    os.truncate(tmp_path / target, 0)
    with pytest.raises(CorruptionError) as info:
        open_engine("bitcask", str(tmp_path), **QUIET)
    assert info.value.path == str(tmp_path / target)


# ---- hint files --------------------------------------------------------------------------


def test_flipped_hint_byte_is_ignored_and_the_data_file_scanned(tmp_path):
    model = build(tmp_path)
    name = data_files(tmp_path)[1][0]
    hint = tmp_path / hint_of(name)
    good = hint.read_bytes()
    flip(hint, len(good) // 2)
    with open_engine("bitcask", str(tmp_path), **QUIET) as db:
        rec = db.stats()["recovery"]
        assert rec["hints_rejected"] == 1 and rec["files_scanned"] == 1
        assert contents(db) == model
        db.check()
    assert hint.read_bytes() == good   # rewritten from the scan
    with open_engine("bitcask", str(tmp_path), **QUIET) as db:
        assert db.stats()["recovery"]["files_scanned"] == 0


def test_check_reports_a_hint_damaged_while_open(tmp_path):
    build(tmp_path)
    db = open_engine("bitcask", str(tmp_path), **QUIET)
    name = data_files(tmp_path)[0][0]
    flip(tmp_path / hint_of(name), 30)
    with pytest.raises(CorruptionError) as info:
        db.check()
    assert info.value.path == str(tmp_path / hint_of(name))
    db.close()


@pytest.mark.parametrize("damage", ["gap", "overlap", "short", "count", "past end", "flags"])
def test_hints_that_do_not_describe_their_data_file_are_refused(tmp_path, damage):
    """Checksummed, but wrong: the loader refuses and the data file is scanned."""
    model = build(tmp_path)
    name = data_files(tmp_path)[0][0]
    data = (tmp_path / name).read_bytes()
    records = []
    for pos, key, value, flags, _ in entries(data):
        records.append([pos, len(value), HEADER.unpack_from(data, pos)[1] // 1_000_000, len(key),
                        flags & TOMB, key])
    if damage == "gap":
        del records[1]
    elif damage == "overlap":
        records[2][0] -= 1
    elif damage == "short":
        records.pop()
    elif damage == "past end":
        records[-1][1] += 1
    elif damage == "flags":
        records[0][4] = 4
    count = len(records) + (damage == "count")
    body = b"".join(HINT.pack(*r[:5]) + r[5] for r in records)
    body += struct.pack("<QQQ", count, len(data), HINT_MAGIC)
    (tmp_path / hint_of(name)).write_bytes(body + struct.pack("<I", crc32c(body)))
    with open_engine("bitcask", str(tmp_path), **QUIET) as db:
        assert db.stats()["recovery"]["hints_rejected"] == 1
        assert contents(db) == model


# ---- the merge manifest ------------------------------------------------------------------


def test_a_damaged_merge_manifest_is_reported(tmp_path):
    build(tmp_path)
    (tmp_path / "MERGE").write_bytes(b'{"inputs": [], "outputs": []}\n00000000\n')
    with pytest.raises(CorruptionError, match="manifest") as info:
        open_engine("bitcask", str(tmp_path), **QUIET)
    assert info.value.path == str(tmp_path / "MERGE")


# ---- arbitrary bytes ---------------------------------------------------------------------

ops = st.lists(st.tuples(st.sampled_from(["put", "delete", "batch"]),
                         st.binary(min_size=1, max_size=3), st.binary(max_size=30)),
               min_size=1, max_size=25)


@given(ops=ops, damage=st.sampled_from(["none", "truncate", "flip", "garbage", "zeros", "splice"]),
       where_=st.floats(0, 1), garbage=st.binary(min_size=1, max_size=60))
@FUZZ
def test_open_of_any_newest_file_matches_the_reference(tmp_path_factory, ops, damage, where_,
                                                       garbage):
    """A data file of valid entries (puts, tombstones, batches), damaged one way
    or another, as the newest file of a store without its hint: the open gives
    exactly what the independent reference reader says, or refuses with the
    same offset."""
    data = bytearray()
    for kind, key, value in ops:
        if kind == "batch":
            data += entry(key, value, BATCH) + entry(key + b"b", b"", TOMB | BATCH) + entry(b"z", value)
        else:
            data += entry(key, value) if kind == "put" else entry(key, b"", TOMB)
    at = int(where_ * len(data))
    if damage == "truncate":
        del data[at:]
    elif damage == "flip" and at < len(data):
        data[at] ^= 0x10
    elif damage == "garbage":
        data += garbage
    elif damage == "zeros":
        data += bytes(len(garbage) * 50)
    elif damage == "splice":
        data[at:at] = garbage
    path = tmp_path_factory.mktemp("fuzz")
    (path / "0000000001-0000000001.data").write_bytes(bytes(data))
    expected = reference_open(bytes(data))
    event(f"damage={damage}: " + ("refused" if expected[0] == "corrupt" else
                                  "cut" if expected[1] < len(data) else "whole"))
    if expected[0] == "corrupt":
        with pytest.raises(CorruptionError) as info:
            open_engine("bitcask", str(path), **QUIET)
        assert info.value.offset == expected[1]
        return
    with open_engine("bitcask", str(path), **QUIET) as db:
        assert contents(db) == expected[0]
        db.check()
    if expected[1]:
        assert os.path.getsize(path / "0000000001-0000000001.data") == expected[1]
        assert (path / "0000000001-0000000001.hint").read_bytes() == hint_for(bytes(data[:expected[1]]))


@given(seed=st.integers(0, 2**32), cuts=st.lists(st.integers(0, 10_000), max_size=4),
       flips=st.lists(st.integers(0, 10_000), max_size=4))
@FUZZ
def test_any_damage_to_a_hint_never_changes_what_is_read(tmp_path_factory, seed, cuts, flips):
    path = tmp_path_factory.mktemp("hint")
    rnd = random.Random(seed)
    model = {}
    with open_engine("bitcask", str(path), **QUIET) as db:
        for i in range(rnd.randrange(1, 60)):
            k = b"k%d" % rnd.randrange(20)
            if i and rnd.random() < 0.3:
                db.delete(k)
                model.pop(k, None)
            else:
                model[k] = rnd.randbytes(rnd.randrange(0, 40))
                db.put(k, model[k])
    name = data_files(path)[0][0]
    hint = bytearray((path / hint_of(name)).read_bytes())
    for c in cuts:
        del hint[c % (len(hint) + 1):]
    for f in flips:
        if hint:
            hint[f % len(hint)] ^= 1 << (f % 8)
    (path / hint_of(name)).write_bytes(bytes(hint))
    with open_engine("bitcask", str(path), **QUIET) as db:
        assert contents(db) == model
        db.check()
