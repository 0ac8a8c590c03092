"""The database directory both disk engines share (rldb/storage/directory.py):
the create_if_missing rule, the LOCK that refuses a second engine, and the
durable replace that leaves the old file or the new one."""
import errno
import os
import signal
import subprocess
import sys

import pytest

import rldb
from rldb.errors import InvalidArgumentError, StorageIOError
from rldb.storage import directory, open_engine

DISK_ENGINES = ["lsm", "bitcask"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(rldb.__file__)))


def small(kind):
    """Options that keep the engines from starting background work."""
    return {"lsm": {"background": False}, "bitcask": {"background_merge": False}}[kind]


def make_db(kind, path):
    with open_engine(kind, str(path), **small(kind)) as db:
        db.put(b"k", b"v")


# ---- create_if_missing --------------------------------------------------------------


@pytest.mark.parametrize("kind", DISK_ENGINES)
def test_missing_directory_refused_without_create(tmp_path, kind):
    path = tmp_path / "absent"
    with pytest.raises(InvalidArgumentError, match="create_if_missing") as info:
        open_engine(kind, str(path), create_if_missing=False, **small(kind))
    assert str(path) in str(info.value)
    assert "does not exist" in str(info.value)
    assert not path.exists()


@pytest.mark.parametrize("kind", DISK_ENGINES)
def test_missing_directory_created_with_create(tmp_path, kind):
    path = tmp_path / "a" / "b"
    with open_engine(kind, str(path), create_if_missing=True, **small(kind)) as db:
        db.put(b"k", b"v")
    assert path.is_dir()
    with open_engine(kind, str(path), create_if_missing=False, **small(kind)) as db:
        assert db.get(b"k") == b"v"


@pytest.mark.parametrize("kind", DISK_ENGINES)
def test_empty_directory_refused_without_create_and_left_untouched(tmp_path, kind):
    path = tmp_path / "empty"
    path.mkdir()
    (path / "README").write_text("not a database file")
    with pytest.raises(InvalidArgumentError, match="create_if_missing") as info:
        open_engine(kind, str(path), create_if_missing=False, **small(kind))
    assert str(path) in str(info.value)
    assert "holds none" in str(info.value)
    assert sorted(os.listdir(path)) == ["README"]  # not even a LOCK


@pytest.mark.parametrize("kind", DISK_ENGINES)
def test_empty_directory_gets_a_database_with_create(tmp_path, kind):
    path = tmp_path / "empty"
    path.mkdir()
    with open_engine(kind, str(path), create_if_missing=True, **small(kind)) as db:
        db.put(b"k", b"v")
    with open_engine(kind, str(path), create_if_missing=False, **small(kind)) as db:
        assert db.get(b"k") == b"v"


@pytest.mark.parametrize("create", [True, False])
@pytest.mark.parametrize("kind", DISK_ENGINES)
def test_existing_database_opens_either_way(tmp_path, kind, create):
    make_db(kind, tmp_path / "db")
    with open_engine(kind, str(tmp_path / "db"), create_if_missing=create, **small(kind)) as db:
        assert db.get(b"k") == b"v"


@pytest.mark.parametrize("kind", DISK_ENGINES)
def test_an_empty_database_is_still_a_database(tmp_path, kind):
    """Opened and closed with nothing written: create_if_missing=False opens it."""
    with open_engine(kind, str(tmp_path / "db"), **small(kind)):
        pass
    with open_engine(kind, str(tmp_path / "db"), create_if_missing=False, **small(kind)) as db:
        assert db.get(b"k") is None


@pytest.mark.parametrize("create", [True, False])
@pytest.mark.parametrize("kind", DISK_ENGINES)
def test_a_file_is_not_a_directory(tmp_path, kind, create):
    path = tmp_path / "file"
    path.write_bytes(b"x")
    with pytest.raises(InvalidArgumentError, match="not a directory"):
        open_engine(kind, str(path), create_if_missing=create, **small(kind))
    assert path.read_bytes() == b"x"


# ---- the LOCK ------------------------------------------------------------------------


def _refusal(kind, path):
    with pytest.raises(StorageIOError) as info:
        open_engine(kind, str(path), **small(kind))
    return info.value


@pytest.mark.parametrize("kind", DISK_ENGINES)
def test_second_open_of_a_locked_database_is_refused(tmp_path, kind):
    path = tmp_path / "db"
    db = open_engine(kind, str(path), **small(kind))
    db.put(b"k", b"v")
    exc = _refusal(kind, path)
    assert str(exc) == f"[Errno {exc.errno}] {path} is in use by another engine"
    assert exc.errno in (errno.EWOULDBLOCK, errno.EACCES)
    assert db.get(b"k") == b"v"  # the refused open disturbed nothing
    db.close()
    with open_engine(kind, str(path), **small(kind)) as db:
        assert db.get(b"k") == b"v"


def test_both_engines_refuse_with_the_same_error(tmp_path):
    errors = {}
    for kind in DISK_ENGINES:
        path = tmp_path / kind
        with open_engine(kind, str(path), **small(kind)):
            exc = _refusal(kind, path)
            errors[kind] = (type(exc), exc.errno, str(exc).replace(str(path), "PATH"))
    assert errors["lsm"] == errors["bitcask"]


def test_the_lock_is_one_file_for_both_engines(tmp_path):
    """An engine of the other kind is refused too: the LOCK is shared."""
    path = tmp_path / "db"
    with open_engine("lsm", str(path), **small("lsm")):
        exc = _refusal("bitcask", path)
        assert "in use by another engine" in str(exc)


def test_lock_in_another_process(tmp_path):
    path = str(tmp_path)
    lock = directory.DirectoryLock(path)
    assert lock.held
    code = ("import sys\nfrom rldb.storage.directory import DirectoryLock\n"
            "from rldb.errors import StorageIOError\n"
            "try:\n    DirectoryLock(sys.argv[1])\nexcept StorageIOError as e:\n"
            "    print(e); sys.exit(3)\n")
    proc = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert "in use by another engine" in proc.stdout
    lock.release()
    lock.release()  # twice is allowed
    assert not lock.held
    again = directory.DirectoryLock(path)  # free again
    again.release()


# ---- durable replace ----------------------------------------------------------------


def test_replace_durably_puts_the_new_content(tmp_path):
    path = str(tmp_path / "f")
    directory.replace_durably(path, b"one")
    directory.replace_durably(path, b"two" * 10000)
    with open(path, "rb") as f:
        assert f.read() == b"two" * 10000
    assert os.listdir(tmp_path) == ["f"]


@pytest.mark.parametrize("failing", ["replace", "fsync", "write"])
def test_a_failure_before_the_rename_leaves_the_old_file(tmp_path, monkeypatch, failing):
    path = str(tmp_path / "f")
    tmp = str(tmp_path / "f.new")
    directory.replace_durably(path, b"old", tmp=tmp)

    def fail(*args, **kwargs):
        raise OSError(errno.EIO, f"injected {failing} failure")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError, match="injected"):
        directory.replace_durably(path, b"new", tmp=tmp)
    monkeypatch.undo()
    with open(path, "rb") as f:
        assert f.read() == b"old"
    assert os.listdir(tmp_path) == ["f"]  # the temporary is gone


def test_a_failure_on_a_first_write_leaves_no_file(tmp_path, monkeypatch):
    path = str(tmp_path / "f")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "x")))
    with pytest.raises(OSError):
        directory.replace_durably(path, b"new")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_a_crash_between_write_and_rename_leaves_the_old_file(tmp_path):
    """A process killed after the temporary is written and fsynced, before the
    rename: the file holds the old content, the temporary the new."""
    path = str(tmp_path / "f")
    directory.replace_durably(path, b"old")
    code = ("import os, signal, sys\nfrom rldb.storage import directory\n"
            "os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
            "directory.replace_durably(sys.argv[1], b'new')\n")
    proc = subprocess.run([sys.executable, "-c", code, path], capture_output=True,
                          env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with open(path, "rb") as f:
        assert f.read() == b"old"
    with open(path + ".tmp", "rb") as f:
        assert f.read() == b"new"


def test_lsm_current_survives_a_failed_replace(tmp_path, monkeypatch):
    """CURRENT goes through replace_durably: when the rename fails, it still
    names the old manifest and the database opens with its data."""
    path = str(tmp_path / "db")
    make_db("lsm", path)
    before = open(os.path.join(path, "CURRENT"), "rb").read()
    real_replace = os.replace

    def fail_current(src, dst, *args, **kwargs):
        if os.path.basename(dst) == "CURRENT":
            raise OSError(errno.EIO, "injected")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", fail_current)
    with pytest.raises(OSError, match="injected"):
        open_engine("lsm", path, background=False)  # each open writes a new manifest
    monkeypatch.undo()
    assert open(os.path.join(path, "CURRENT"), "rb").read() == before
    with open_engine("lsm", path, create_if_missing=False, background=False) as db:
        assert db.get(b"k") == b"v"
        db.check()
