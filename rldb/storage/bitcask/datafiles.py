"""The registry of a Bitcask directory's data files: which files exist, their
descriptors and slots in the C file table, which one is active, and the
steps that create, seal, rename and delete them.

The engine (rolls, recovery, close) and the merge (outputs, inputs) change
the set of files only through DataFiles, so that the Python view and the C
file table stay one.  A file is forgotten by the C side before its
descriptor is closed, and only when the keydir no longer points into it (the
callers' rule: a get holds the C read lock across its pread)."""
import errno
import logging
import os
import threading

from rldb._core.bitcask import BC_HEADER, BC_MAX_FILE_SIZE, BC_MAX_VALUE, Bitcask
from rldb._core.keydir import BC_MAX_KEY
from rldb.errors import CorruptionError, StorageIOError
from rldb.storage.bitcask import files as fs
from rldb.storage.directory import fsync_dir

log = logging.getLogger("rldb.bitcask")

ACTIVE, IMMUTABLE, OUTPUT = "active", "immutable", "output"

# No data file can be larger than its largest entry past max_file_size.
_LARGEST_FILE = BC_MAX_FILE_SIZE + BC_HEADER + BC_MAX_KEY + BC_MAX_VALUE


def io_error(exc, what):
    """The StorageIOError for an OSError met while doing `what`."""
    return StorageIOError(exc.errno or errno.EIO, f"{what}: {exc.strerror or exc}")


class DataFile:
    """One data file: its place in the recovery order (rank, id), its slot in
    the C file table, its descriptor, and whether it is the active file, an
    immutable one, or a merge output not yet committed (named *.tmp)."""

    __slots__ = ("rank", "id", "slot", "fd", "state", "hint_fd")

    def __init__(self, rank, file_id, slot, fd, state, hint_fd=-1):
        self.rank, self.id, self.slot, self.fd = rank, file_id, slot, fd
        self.state, self.hint_fd = state, hint_fd

    def data_name(self):
        return fs.data_name(self.rank, self.id) + (fs.TMP if self.state == OUTPUT else "")

    def hint_name(self):
        return fs.hint_name(self.rank, self.id) + (fs.TMP if self.state != IMMUTABLE else "")

    def close_fds(self):
        for d in (self.fd, self.hint_fd):
            if d >= 0:
                os.close(d)
        self.fd = self.hint_fd = -1


class DataFiles:
    """Every data file in use, by slot and by id, and the active one.
    attach() the C handle (Bitcask) before anything else."""

    def __init__(self, path):
        self.path = path
        self.bc = None
        self.active = None
        self.next_id = 1   # ids are never reused
        self._lock = threading.Lock()
        self._by_slot = {}
        self._by_id = {}

    def attach(self, bc):
        self.bc = bc

    def path_of(self, name):
        return os.path.join(self.path, name)

    def locate(self, file_id, rank):
        """The path of a data file, for the C side's error messages."""
        f = self._by_id.get(file_id)
        return self.path_of(f.data_name() if f is not None else fs.data_name(rank, file_id))

    # ---- views ------------------------------------------------------------------

    def by_slot(self):
        """slot -> DataFile, a copy."""
        with self._lock:
            return dict(self._by_slot)

    def immutable(self):
        """The immutable files, oldest (rank, id) first."""
        with self._lock:
            files = [f for f in self._by_slot.values() if f.state == IMMUTABLE]
        return sorted(files, key=lambda f: (f.rank, f.id))

    def infos(self):
        """slot -> the C side's figures of the file (id, rank, size, live)."""
        return {info["slot"]: info for info in self.bc.files()}

    def describe(self):
        """The committed files in (rank, id) order, as stats() lists them."""
        by_slot = self.by_slot()
        details = []
        for info in sorted(self.bc.files(), key=lambda i: (i["rank"], i["id"])):
            f = by_slot.get(info["slot"])
            if f is None or f.state == OUTPUT:
                continue  # a merge output not yet committed
            details.append({"name": f.data_name(), "active": f.state == ACTIVE,
                            "size": info["size"], "live_bytes": info["live"],
                            "dead_bytes": info["size"] - info["live"]})
        return details

    # ---- adding and removing -----------------------------------------------------

    def _register(self, f):
        with self._lock:
            self._by_slot[f.slot] = f
            self._by_id[f.id] = f

    def _unregister(self, f):
        """True when f was registered.  Only if the slot still names f: once the
        C side has freed it, a roll in another thread may have reused it."""
        with self._lock:
            registered = self._by_slot.get(f.slot) is f
            if registered:
                del self._by_slot[f.slot]
            if self._by_id.get(f.id) is f:
                del self._by_id[f.id]
        return registered

    def load(self, rank, file_id):
        """(DataFile, size) of an existing data file, registered as immutable
        and known to the C side with nothing in the keydir yet (recovery)."""
        path = self.path_of(fs.data_name(rank, file_id))
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise io_error(exc, f"cannot open {path}") from None
        try:
            size = os.fstat(fd).st_size
            if size > _LARGEST_FILE:
                raise CorruptionError(f"data file of {size} bytes is larger than any bitcask file",
                                      path)
            slot = self.bc.add_file(fd, rank, file_id, size)
        except BaseException:
            os.close(fd)
            raise
        f = DataFile(rank, file_id, slot, fd, IMMUTABLE)
        self._register(f)
        return f, size

    def create(self, rank, state, sync_dir):
        """A new data file and its hint file (both created here, removed again
        if anything fails), registered with the C side.  rank None: the new
        id (a file the writer creates)."""
        with self._lock:
            file_id = self.next_id
            self.next_id += 1
        f = DataFile(rank if rank is not None else file_id, file_id, None, -1, state)
        fd = hint_fd = -1
        try:
            fd = os.open(self.path_of(f.data_name()), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            hint_fd = os.open(self.path_of(f.hint_name()), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                              0o644)
            if sync_dir:
                fsync_dir(self.path)  # the file exists before anything in it is acknowledged
            f.slot = self.bc.add_file(fd, f.rank, file_id, 0)
        except BaseException:
            for d in (fd, hint_fd):
                if d >= 0:
                    os.close(d)
            fs.unlink(self.path_of(f.data_name()))
            fs.unlink(self.path_of(f.hint_name()))
            raise
        f.fd, f.hint_fd = fd, hint_fd
        self._register(f)
        return f

    def remove(self, f):
        """Forgets f (the C side first, if it still knows f), closes it and
        deletes it, its hint before its data.  Removing twice does nothing."""
        if self._unregister(f):
            self.bc.remove_file(f.slot)
        f.close_fds()
        fs.unlink(self.path_of(f.hint_name()))
        fs.unlink(self.path_of(f.data_name()))

    def mark_immutable(self, f):
        with self._lock:
            f.state = IMMUTABLE

    def close_all(self):
        """Closes every descriptor and forgets every file (the C side is closed first)."""
        with self._lock:
            files = list(self._by_slot.values())
            self._by_slot.clear()
            self._by_id.clear()
        for f in files:
            f.close_fds()
        self.active = None

    # ---- the active file -----------------------------------------------------------

    def new_active(self):
        """Creates the next data file and makes it the active one."""
        f = self.create(None, ACTIVE, sync_dir=True)
        self.bc.activate(f.slot, f.hint_fd)
        self.active = f

    def seal_active(self):
        """No more writes to the active file: fdatasync it, complete its hint
        (or delete the file when it is empty).  The caller marks the file
        immutable once the C side has another active file (until then a merge
        must not pick it).  Returns the sealed file, or None when it was empty
        and is gone.  An OSError leaves the file active and unsealed on disk."""
        f = self.active
        hint_ok, size = self.bc.seal()
        if size == 0:
            self.remove(f)
            self.active = None
            return None
        hint_tmp = self.path_of(f.hint_name())
        os.fdatasync(f.fd)
        if hint_ok:
            os.fsync(f.hint_fd)
        os.close(f.hint_fd)
        f.hint_fd = -1
        if hint_ok:
            os.rename(hint_tmp, self.path_of(fs.hint_name(f.rank, f.id)))
        else:
            log.warning("%s: the hint could not be written; the next open scans the file",
                        hint_tmp)
            fs.unlink(hint_tmp)
        self.active = None
        return f

    # ---- merge outputs ---------------------------------------------------------------

    def new_output(self, rank):
        """A new merge output, named *.tmp until the merge commits."""
        return self.create(rank, OUTPUT, sync_dir=False)

    def discard_outputs(self, outputs):
        """Forgets merge outputs that were never committed, and deletes them."""
        for f in outputs:
            self.remove(f)

    def commit_output(self, f):
        """Renames a committed merge output (hint, then data) to its final names."""
        os.rename(self.path_of(f.hint_name()), self.path_of(fs.hint_name(f.rank, f.id)))
        os.rename(self.path_of(f.data_name()), self.path_of(fs.data_name(f.rank, f.id)))
        f.state = IMMUTABLE

    # ---- invariants ------------------------------------------------------------------

    def check(self):
        """Raises CorruptionError unless the registry, the C file table and the
        directory agree: one active file, the newest the writer created, the
        others immutable; every file present with the size the C side knows;
        every hint matching its data file; no data file on disk out of use.
        Call with no roll or merge running."""
        infos = self.infos()
        with self._lock:
            files = list(self._by_slot.values())
            by_id = dict(self._by_id)
        if set(infos) != {f.slot for f in files}:
            raise CorruptionError("the C file table and the engine's disagree", self.path)
        if by_id != {f.id: f for f in files}:
            raise CorruptionError("the data files by id and by slot disagree", self.path)
        if any(infos[f.slot]["id"] != f.id or infos[f.slot]["rank"] != f.rank for f in files):
            raise CorruptionError("a data file's id or rank differs in the C file table",
                                  self.path)
        if files and self.next_id <= max(f.id for f in files):
            raise CorruptionError(f"the next file id {self.next_id} is already in use", self.path)
        active = [f for f in files if f.state == ACTIVE]
        if len(active) != 1 or any(f.state != IMMUTABLE for f in files if f not in active):
            raise CorruptionError("expected one active file and immutable ones", self.path)
        if active[0] is not self.active:
            raise CorruptionError("the active file is not the one writes go to", self.path)
        if any(f.id >= active[0].id for f in files if f.rank == f.id and f not in active):
            raise CorruptionError("the active file is not the newest", self.path)
        names = set(os.listdir(self.path))
        for f in files:
            path = self.path_of(f.data_name())
            if f.data_name() not in names:
                raise CorruptionError("a data file in use is missing", path)
            size = os.fstat(f.fd).st_size
            expected = infos[f.slot]["size"]
            if size != expected and not (f.state == ACTIVE and size > expected):
                raise CorruptionError(f"data file is {size} bytes, {expected} expected", path)
            if f.state == IMMUTABLE and f.hint_name() in names:
                hint_path = self.path_of(f.hint_name())
                try:
                    self.bc.check_hint(f.slot, fs.read_file(hint_path))
                except CorruptionError as exc:
                    raise CorruptionError(f"hint does not match its data file ({exc})",
                                          hint_path, exc.offset) from None
        in_use = {f.data_name() for f in files}
        for name in names:
            parsed = fs.parse_name(name)
            if parsed is not None and parsed[2] == "data" and name not in in_use:
                raise CorruptionError("a data file is not in use", self.path_of(name))
