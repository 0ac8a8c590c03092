"""The memory engine: against a dict model, argument checks, closing."""
import threading

import pytest
from hypothesis import settings

from rldb.errors import ClosedError, CorruptionError, InvalidArgumentError
from rldb.storage import WriteBatch, engine_kinds, open_engine
from tests.engine_model import EngineMachine


class MemoryMachine(EngineMachine):
    def open(self):
        return open_engine("memory")


TestMemoryAgainstModel = MemoryMachine.TestCase
TestMemoryAgainstModel.settings = settings(max_examples=150, stateful_step_count=60,
                                           deadline=None)


@pytest.fixture
def db():
    with open_engine("memory") as engine:
        yield engine


def test_basic_operations(db):
    assert db.get(b"k") is None
    db.put(b"k", b"v")
    db.put(b"empty", b"")
    assert db.get(b"k") == b"v"
    assert db.get(b"empty") == b""
    db.delete(b"k")
    db.delete(b"never-there")
    assert db.get(b"k") is None
    assert db.stats()["keys"] == 1


@pytest.mark.parametrize("bad", ["str", 1, None, bytearray(b"x"), memoryview(b"x")])
def test_non_bytes_refused_with_clear_message(db, bad):
    with pytest.raises(InvalidArgumentError, match="keys must be bytes"):
        db.put(bad, b"v")
    with pytest.raises(InvalidArgumentError, match="keys must be bytes"):
        db.get(bad)
    with pytest.raises(InvalidArgumentError, match="keys must be bytes"):
        db.delete(bad)
    with pytest.raises(InvalidArgumentError, match="values must be bytes"):
        db.put(b"k", bad)


def test_empty_key_refused(db):
    for call in (lambda: db.put(b"", b"v"), lambda: db.get(b""), lambda: db.delete(b"")):
        with pytest.raises(InvalidArgumentError, match="empty"):
            call()


def test_invalid_argument_is_a_value_error(db):
    with pytest.raises(ValueError):
        db.put("k", b"v")


def test_scan_bounds_and_order(db):
    for i in range(1000):
        db.put(b"%04d" % i, b"v%d" % i)
    got = list(db.scan(b"0100", b"0600"))
    assert [k for k, _ in got] == [b"%04d" % i for i in range(100, 600)]
    rev = list(db.scan(b"0100", b"0600", reverse=True))
    assert rev == got[::-1]
    assert len(list(db.scan())) == 1000
    assert list(db.scan(b"0999")) == [(b"0999", b"v999")]
    assert list(db.scan(b"5", b"1")) == []
    with pytest.raises(InvalidArgumentError):
        list(db.scan("0100"))


def test_write_batch_is_all_or_nothing(db):
    db.put(b"a", b"1")
    with pytest.raises(InvalidArgumentError):
        db.write_batch([("put", b"b", b"2"), ("delete", b"a"), ("put", "bad", b"x")])
    assert db.get(b"a") == b"1" and db.get(b"b") is None
    db.write_batch(WriteBatch().put(b"b", b"2").delete(b"a"))
    assert db.get(b"a") is None and db.get(b"b") == b"2"
    with pytest.raises(InvalidArgumentError):
        db.write_batch([("merge", b"a", b"1")])


def test_closed_engine_refuses_everything():
    db = open_engine("memory")
    db.put(b"k", b"v")
    db.close()
    for call in (lambda: db.get(b"k"), lambda: db.put(b"k", b"v"), lambda: db.delete(b"k"),
                 lambda: list(db.scan()), db.stats, db.check,
                 lambda: db.write_batch([])):
        with pytest.raises(ClosedError):
            call()


def test_context_manager_closes():
    with open_engine("memory") as db:
        db.put(b"k", b"v")
    with pytest.raises(ClosedError):
        db.get(b"k")


def test_open_engine_errors():
    with pytest.raises(InvalidArgumentError, match="unknown storage engine"):
        open_engine("nosuch")
    with pytest.raises(InvalidArgumentError, match="unknown option"):
        open_engine("memory", colour="blue")
    assert "memory" in engine_kinds()


def test_threads_writing_and_reading(db):
    def writer(t):
        for i in range(2000):
            db.put(b"t%d-%05d" % (t, i), b"%d" % i)
            if i % 3 == 0:
                db.delete(b"t%d-%05d" % (t, i))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    scanned = 0
    while any(th.is_alive() for th in threads):
        scanned += sum(1 for _ in db.scan(b"t0", b"t9"))
    for th in threads:
        th.join()
    db.check()
    expected = {b"t%d-%05d" % (t, i) for t in range(4) for i in range(2000) if i % 3}
    assert {k for k, _ in db.scan()} == expected


def test_check_raises_corruption_on_a_bad_entry(db):
    db.put(b"k", b"v")
    db.check()
    db._data[b"bad"] = "not bytes"  # behind the engine's argument checks
    with pytest.raises(CorruptionError, match="bad entry b'bad'"):
        db.check()


def test_check_raises_corruption_when_the_sorted_dict_is_broken(db):
    for i in range(10):
        db.put(b"k%d" % i, b"v")
    dict.__setitem__(db._data, b"unsorted", b"v")  # in the dict, not in its sorted keys
    with pytest.raises(CorruptionError, match="sorted dict") as info:
        db.check()
    assert not isinstance(info.value, AssertionError)
