"""Which table files make up the database, level by level, and the MANIFEST
that records every change to that set so that a crash leaves it consistent.

A Version is immutable: a flush or compaction describes its change as a
VersionEdit, appends the edit to the MANIFEST (fsync), and only then installs
the Version the edit produces.  CURRENT names the MANIFEST in use; it is
replaced by writing a temporary file, fsyncing it, renaming it over CURRENT
and fsyncing the directory."""
import bisect
import os
import threading
import weakref
from dataclasses import dataclass, field

import msgpack

from rldb.errors import CorruptionError, StorageIOError
from rldb.storage.directory import replace_durably
from rldb.storage.lsm import log
from rldb.storage.lsm.format import CURRENT, manifest_name
from rldb.storage.lsm.options import NUM_LEVELS


@dataclass(frozen=True)
class FileMeta:
    number: int
    size: int
    smallest: bytes   # user keys
    largest: bytes
    entries: int = 0

    def to_list(self):
        return [self.number, self.size, self.smallest, self.largest, self.entries]

    @classmethod
    def from_list(cls, item):
        number, size, smallest, largest, entries = item
        return cls(number, size, bytes(smallest), bytes(largest), entries)


def _require(condition, message):
    if not condition:
        raise CorruptionError(f"version invariant broken: {message}")


class VersionEdit:
    """A change to the file set plus the counters that must survive a crash."""

    FIELDS = ("log_number", "next_file", "last_seq")

    def __init__(self, log_number=None, next_file=None, last_seq=None):
        self.log_number = log_number
        self.next_file = next_file
        self.last_seq = last_seq
        self.added = []        # (level, FileMeta)
        self.deleted = []      # (level, number)
        self.compact_pointers = []  # (level, user key)

    def add(self, level, meta):
        self.added.append((level, meta))

    def delete(self, level, number):
        self.deleted.append((level, number))

    def encode(self):
        record = {name: getattr(self, name) for name in self.FIELDS if getattr(self, name) is not None}
        if self.added:
            record["add"] = [[level] + meta.to_list() for level, meta in self.added]
        if self.deleted:
            record["del"] = [list(d) for d in self.deleted]
        if self.compact_pointers:
            record["ptr"] = [list(p) for p in self.compact_pointers]
        return msgpack.packb(record, use_bin_type=True)

    @classmethod
    def decode(cls, payload):
        try:
            record = msgpack.unpackb(payload, raw=False)
            edit = cls(**{name: record.get(name) for name in cls.FIELDS})
            edit.added = [(item[0], FileMeta.from_list(item[1:])) for item in record.get("add", ())]
            edit.deleted = [(level, number) for level, number in record.get("del", ())]
            edit.compact_pointers = [(level, bytes(key)) for level, key in record.get("ptr", ())]
        except Exception as exc:
            raise CorruptionError(f"unreadable version edit ({exc})") from None
        edit._validate()
        return edit

    def _validate(self):
        for name in self.FIELDS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise CorruptionError(f"version edit field {name} is {value!r}")
        levels = [lv for lv, _ in self.added] + [lv for lv, _ in self.deleted] + \
                 [lv for lv, _ in self.compact_pointers]
        for level in levels:
            if not isinstance(level, int) or not 0 <= level < NUM_LEVELS:
                raise CorruptionError(f"version edit names level {level!r}")
        for _, meta in self.added:
            if not all(isinstance(x, int) and x >= 0 for x in (meta.number, meta.size, meta.entries)):
                raise CorruptionError(f"version edit adds a malformed file {meta!r}")
        for _, number in self.deleted:
            if not isinstance(number, int):
                raise CorruptionError(f"version edit deletes a malformed file number {number!r}")


class Version:
    """The files of every level.  L0 files may overlap and are kept newest
    first; in deeper levels files are disjoint and sorted by key."""

    __slots__ = ("levels", "_largest", "native", "__weakref__")

    def __init__(self, levels=None):
        self.levels = levels or [[] for _ in range(NUM_LEVELS)]
        self._largest = [[f.largest for f in files] for files in self.levels]
        self.native = None  # the C view for point lookups, set by the engine

    def apply(self, edit):
        deleted = set(edit.deleted)
        levels = [[f for f in files if (level, f.number) not in deleted]
                  for level, files in enumerate(self.levels)]
        for level, meta in edit.added:
            levels[level].append(meta)
        levels[0].sort(key=lambda f: f.number, reverse=True)
        for files in levels[1:]:
            files.sort(key=lambda f: f.smallest)
        return Version(levels)

    def files(self):
        for level, files in enumerate(self.levels):
            for f in files:
                yield level, f

    def numbers(self):
        return {f.number for _, f in self.files()}

    def level_bytes(self, level):
        return sum(f.size for f in self.levels[level])

    def candidates(self, key):
        """Files that may hold key, in the order a lookup must visit them."""
        for f in self.levels[0]:
            if f.smallest <= key <= f.largest:
                yield f
        for level in range(1, NUM_LEVELS):
            largest = self._largest[level]
            i = bisect.bisect_left(largest, key)
            if i < len(largest):
                f = self.levels[level][i]
                if f.smallest <= key:
                    yield f

    def overlapping(self, level, smallest, largest):
        """Files of level whose range meets [smallest, largest] (None: unbounded)."""
        return [f for f in self.levels[level]
                if (largest is None or f.smallest <= largest)
                and (smallest is None or f.largest >= smallest)]

    def start_index(self, level, key):
        """The first file of a sorted level that may hold keys >= key."""
        return bisect.bisect_left(self._largest[level], key) if key is not None else 0

    def check(self):
        """Raises CorruptionError when the levels break an invariant."""
        for level, files in enumerate(self.levels):
            for f in files:
                _require(f.smallest <= f.largest, f"file {f.number}: smallest > largest")
            if level == 0:
                numbers = [f.number for f in files]
                _require(numbers == sorted(numbers, reverse=True), "L0 not newest first")
            else:
                for a, b in zip(files, files[1:]):
                    _require(a.largest < b.smallest,
                             f"L{level} files {a.number} and {b.number} overlap or are out of order")
        numbers = [f.number for _, f in self.files()]
        _require(len(numbers) == len(set(numbers)), "a file is in two places")


def write_current(dirname, manifest_number):
    """Points CURRENT at a manifest, atomically and durably."""
    replace_durably(os.path.join(dirname, CURRENT),
                    (manifest_name(manifest_number) + "\n").encode(),
                    tmp=os.path.join(dirname, f"{manifest_number:06d}.dbtmp.tmp"))


def read_current(dirname):
    """The manifest file name CURRENT points to; CorruptionError if garbled."""
    path = os.path.join(dirname, CURRENT)
    try:
        with open(path, "rb") as f:
            raw = f.read(256)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StorageIOError(exc.errno, f"cannot read {path}: {exc.strerror}") from None
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        raise CorruptionError("CURRENT is not text", path, 0) from None
    if not name.endswith("\n") or not name[:-1].startswith("MANIFEST-") \
            or not name[len("MANIFEST-"):-1].isdigit():
        raise CorruptionError(f"CURRENT does not name a manifest ({raw[:40]!r})", path, 0)
    return name[:-1]


@dataclass
class ManifestState:
    """What a MANIFEST says: the version its edits build and the counters."""
    path: str
    number: int
    read: log.LogReadResult     # its records, and where a torn tail was dropped
    version: Version = field(default_factory=Version)
    log_number: int = 0
    next_file: int = 2
    last_seq: int = 0
    compact_pointers: dict = field(default_factory=dict)


def replay_manifest(dirname, observe=None):
    """Replays the MANIFEST that CURRENT names, as opening the database does
    (and as verification does, so both refuse the same files): a torn tail is
    an edit that never completed and is dropped; any other damage raises
    CorruptionError naming the file and offset.  observe(state, offset, edit),
    when given, sees each edit and the state before it."""
    name = read_current(dirname)
    path = os.path.join(dirname, name)
    if not os.path.exists(path):
        raise CorruptionError(f"CURRENT names {name}, which does not exist", path)
    result = log.read_log(path)
    if not result.records:
        raise CorruptionError("manifest holds no version record", path, 0)
    state = ManifestState(path, int(name.split("-")[1]), result)
    seen_base = False
    for offset, payload in result.records:
        try:
            edit = VersionEdit.decode(payload)
        except CorruptionError as exc:
            raise CorruptionError(str(exc), path, offset) from None
        if observe is not None:
            observe(state, offset, edit)
        seen_base = seen_base or edit.next_file is not None
        state.version = state.version.apply(edit)
        for counter in VersionEdit.FIELDS:
            if getattr(edit, counter) is not None:
                setattr(state, counter, getattr(edit, counter))
        for level, key in edit.compact_pointers:
            state.compact_pointers[level] = key
    if not seen_base:
        raise CorruptionError("manifest lacks its base record", path, 0)
    try:
        state.version.check()
    except CorruptionError as exc:
        raise CorruptionError(f"manifest describes an impossible version ({exc})", path) from None
    return state


class VersionSet:
    """The current Version, the counters, and the MANIFEST they are logged to."""

    MANIFEST_ROLL_BYTES = 4 << 20

    def __init__(self, dirname):
        self.dirname = dirname
        self.current = Version()
        self.next_file = 2
        self.last_seq = 0
        self.log_number = 0
        self.compact_pointers = {}
        self.manifest_number = None
        self._manifest = None
        self.live = weakref.WeakSet()   # versions still referenced (by reads in progress)
        self.torn_tail = 0
        self._number_lock = threading.Lock()
        self.live.add(self.current)

    def new_file_number(self):
        """A number never used before (threads may ask at once)."""
        with self._number_lock:
            n = self.next_file
            self.next_file += 1
            return n

    def recover(self):
        """Loads the state from CURRENT and its manifest."""
        state = replay_manifest(self.dirname)
        self.torn_tail = state.read.dropped_bytes
        self.log_number, self.next_file, self.last_seq = \
            state.log_number, state.next_file, state.last_seq
        self.compact_pointers.update(state.compact_pointers)
        self.manifest_number = state.number
        self._install(state.version)
        return state.read

    def _install(self, version):
        self.current = version
        self.live.add(version)

    def _snapshot_edit(self):
        edit = VersionEdit(self.log_number, self.next_file, self.last_seq)
        for level, f in self.current.files():
            edit.add(level, f)
        edit.compact_pointers = sorted(self.compact_pointers.items())
        return edit

    def start_manifest(self):
        """Writes a new manifest holding the whole current state and points
        CURRENT at it; the old manifest is left for the caller to delete."""
        number = self.new_file_number()
        path = os.path.join(self.dirname, manifest_name(number))
        writer = log.LogWriter(path, number)
        try:
            writer.add(self._snapshot_edit().encode())
            writer.sync()
        except BaseException:
            writer.close(sync=False)
            raise
        write_current(self.dirname, number)
        old = self._manifest
        self._manifest = writer
        self.manifest_number = number
        if old is not None:
            old.close()
        return number

    def log_and_apply(self, edit):
        """Makes edit durable in the manifest, then installs the new version."""
        if edit.next_file is None:
            edit.next_file = self.next_file
        version = self.current.apply(edit)
        version.check()
        self._manifest.add(edit.encode())
        self._manifest.sync()
        # next_file may have grown meanwhile (another thread took numbers):
        # the edit's copy is only for recovery, never wound back here.
        for field in ("log_number", "last_seq"):
            if getattr(edit, field) is not None:
                setattr(self, field, getattr(edit, field))
        for level, key in edit.compact_pointers:
            self.compact_pointers[level] = key
        self._install(version)
        if self._manifest.written > self.MANIFEST_ROLL_BYTES:
            self.start_manifest()
        return version

    def live_numbers(self):
        numbers = set()
        for version in list(self.live):
            numbers |= version.numbers()
        return numbers

    def close(self):
        if self._manifest is not None:
            self._manifest.close()
            self._manifest = None
