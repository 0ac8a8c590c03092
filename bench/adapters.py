"""One small adapter per store, all with the same methods, so a new engine is one class.

    open(path)            open the store kept in directory `path`, creating it if needed
    put(key, value)       one write, no sync (the store's ordinary write)
    get(key)              the value or None
    scan(start, count)    read `count` entries in key order from the first key >= start; returns how many
    prepare_sync()        switch to durable writes (untimed; may reopen the store)
    sync_put(key, value)  one write that is on stable storage when it returns
    close()
    reopen()              close and open again from the same directory
    disk_bytes()          bytes the directory takes on disk, like `du` (None for in-memory stores)

put and get are bound in open() straight to the store's own callables wherever its
API allows (db.get, dict.__setitem__, ...), so that the timed loops measure the
store and not a layer of adapter code.  Where a peer needs a transaction or a
statement around each operation, the adapter wraps it in a small function.

`persistent = False` marks in-memory stores: reopen, sync_put and bytes on disk
are n/a for them, and reopen() keeps the same object.  `sync_note` says what
sync_put means for the store."""
import ast
import importlib.util
import os
import sqlite3
from itertools import islice

from rldb.errors import InvalidArgumentError
from rldb.storage import engine_class, engine_kinds, open_engine

# rldb kinds that keep nothing on disk (a new in-memory kind must be listed here).
IN_MEMORY_KINDS = {"memory"}


class Adapter:
    name = "?"
    module = None  # the package the store needs, checked by available()
    persistent = True
    can_scan = True
    sync_note = ""

    path = None

    @classmethod
    def available(cls):
        return cls.module is None or importlib.util.find_spec(cls.module) is not None

    def open(self, path):
        raise NotImplementedError

    def put(self, key, value):  # replaced in open()
        raise NotImplementedError

    def get(self, key):  # replaced in open()
        raise NotImplementedError

    def scan(self, start, count):
        raise NotImplementedError(f"{self.name} cannot scan")

    def prepare_sync(self):
        pass

    def sync_put(self, key, value):
        raise NotImplementedError

    def close(self):
        raise NotImplementedError

    def reopen(self):
        if self.persistent:
            self.close()
            self.open(self.path)

    def disk_bytes(self):
        if not self.persistent:
            return None
        total = os.lstat(self.path).st_blocks
        for root, dirs, files in os.walk(self.path):
            for name in dirs + files:
                total += os.lstat(os.path.join(root, name)).st_blocks
        return total * 512  # st_blocks counts 512-byte units, as du does

    def drop_cache(self):
        drop_cache(self.path)


def drop_cache(path):
    """Ask the kernel to evict a closed store's files (everything under path)
    from the page cache (fsync first: only clean pages can be dropped).  No
    root needed."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


class RldbAdapter(Adapter):
    """Any rldb engine, through open_engine(kind, path, **options)."""

    def __init__(self, kind, name=None, **options):
        self.kind = kind
        self.name = name or kind
        self.options = options
        self.persistent = kind not in IN_MEMORY_KINDS
        self.can_scan = engine_class(kind).supports_scan
        self.sync_note = ("put() on an engine opened with sync=True if it takes that option, "
                          "else put() then flush()")

    def open(self, path, **extra):
        self.path = path
        self.db = open_engine(self.kind, path, **{**self.options, **extra})
        self.get = self.db.get
        self.put = self.db.put

    def scan(self, start, count):
        it = self.db.scan(start=start)
        n = len(list(islice(it, count)))
        close = getattr(it, "close", None)
        if close is not None:
            close()
        return n

    def prepare_sync(self):
        self.close()
        try:
            self.open(self.path, sync=True)
        except InvalidArgumentError:  # the engine has no sync option
            self.open(self.path)
            put, flush = self.db.put, self.db.flush

            def sync_put(key, value):
                put(key, value)
                flush()

            self.sync_put = sync_put
            self.sync_note = "put() then flush() (the engine has no sync option)"
        else:
            self.sync_put = self.db.put
            self.sync_note = "put() on an engine opened with sync=True"

    def close(self):
        self.db.close()


class Rocksdict(Adapter):
    name = module = "rocksdict"
    sync_note = "put with WriteOptions.sync = True: the WAL is fsynced before put returns"

    def open(self, path):
        from rocksdict import BlockBasedOptions, Options, Rdict, WriteOptions

        self.path = path
        opts = Options(raw_mode=True)  # bytes keys and values, stored as they are
        opts.create_if_missing(True)
        table = BlockBasedOptions()
        table.set_bloom_filter(10, False)  # 10 bits per key, full filters
        opts.set_block_based_table_factory(table)
        # The default column family's options are named again: an existing database
        # otherwise reopens with a default table factory, i.e. without the bloom filter.
        self.db = Rdict(path, opts, column_families={"default": opts})  # WAL on, sync off
        self.get = self.db.get
        self.put = self.db.put
        self._sync = WriteOptions()
        self._sync.sync = True

    def scan(self, start, count):
        return len(list(islice(self.db.items(from_key=start), count)))

    def sync_put(self, key, value):
        self.db.put(key, value, self._sync)

    def close(self):
        self.db.close()


class Plyvel(Adapter):
    name = module = "plyvel"
    sync_note = "put(sync=True): LevelDB fsyncs its log before put returns"

    def open(self, path):
        import plyvel

        self.path = path
        self.db = plyvel.DB(path, create_if_missing=True, bloom_filter_bits=10)
        self.get = self.db.get
        self.put = self.db.put  # sync=False, the default

    def scan(self, start, count):
        it = self.db.iterator(start=start)
        try:
            return len(list(islice(it, count)))
        finally:
            it.close()

    def sync_put(self, key, value):
        self.db.put(key, value, sync=True)

    def close(self):
        self.db.close()


class Lmdb(Adapter):
    """One write transaction per put and one read transaction per get: each call
    stands alone, as the other stores' put and get do."""

    name = module = "lmdb"
    sync_note = ("a write transaction per put in an environment opened with sync=True: "
                 "each commit fsyncs the data and the meta page")
    MAP_SIZE = 1 << 34  # address space only; the file grows as needed

    def open(self, path, sync=False):
        import lmdb

        self.path = path
        # sync=False: commits do not fsync (unlike a WAL store, an OS crash may then
        # lose or corrupt recent transactions)
        self.env = lmdb.open(path, map_size=self.MAP_SIZE, sync=sync)
        begin = self.env.begin

        def get(key):
            with begin() as txn:
                return txn.get(key)

        def put(key, value):
            with begin(write=True) as txn:
                txn.put(key, value)

        self.get, self.put = get, put

    def scan(self, start, count):
        with self.env.begin() as txn:
            cursor = txn.cursor()
            if not cursor.set_range(start):
                return 0
            return len(list(islice(cursor.iternext(), count)))

    def prepare_sync(self):
        self.close()
        self.open(self.path, sync=True)
        self.sync_put = self.put

    def close(self):
        self.env.close()


class Sqlite(Adapter):
    """stdlib sqlite3 in autocommit mode: every put is its own transaction."""

    name = module = "sqlite3"
    PRAGMAS = (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",  # WAL: a commit does not fsync; checkpoints do
        "PRAGMA cache_size=-8192",  # 8 MiB page cache, like LevelDB's default block cache
    )
    sync_note = "PRAGMA synchronous=FULL in WAL mode, a commit per put: each commit fsyncs the WAL"

    def open(self, path):
        self.path = path
        self.conn = sqlite3.connect(os.path.join(path, "kv.sqlite"), isolation_level=None)
        for pragma in self.PRAGMAS:
            self.conn.execute(pragma)
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB) WITHOUT ROWID")
        execute = self.conn.execute

        def get(key):
            row = execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            return None if row is None else row[0]

        def put(key, value):
            execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))

        self.get, self.put = get, put

    def scan(self, start, count):
        return len(self.conn.execute(
            "SELECT key, value FROM kv WHERE key >= ? ORDER BY key LIMIT ?", (start, count)).fetchall())

    def prepare_sync(self):
        self.conn.execute("PRAGMA synchronous=FULL")
        self.sync_put = self.put

    def close(self):
        self.conn.close()


class Semidbm(Adapter):
    """An append-only data file and an in-memory dict index; keys are unordered."""

    name = module = "semidbm"
    can_scan = False
    sync_note = "db[key] = value then db.sync(), which fsyncs the data file"

    def open(self, path):
        import semidbm

        self.path = path
        self.db = db = semidbm.open(path, "c")

        def get(key):
            try:
                return db[key]
            except KeyError:
                return None

        self.get = get
        self.put = db.__setitem__

    def sync_put(self, key, value):
        self.db[key] = value
        self.db.sync()

    def close(self):
        self.db.close()


class PlainDict(Adapter):
    """In-memory ceiling: a dict (no order, so no scan)."""

    name = "dict"
    persistent = False
    can_scan = False

    def open(self, path):
        self.path = path
        self.d = {}
        self.get = self.d.get
        self.put = self.d.__setitem__

    def close(self):
        self.d = None


class SortedDictAdapter(Adapter):
    """In-memory ceiling for ordered stores: sortedcontainers.SortedDict, scanned with irange."""

    name = "sorteddict"
    module = "sortedcontainers"
    persistent = False

    def open(self, path):
        from sortedcontainers import SortedDict

        self.path = path
        self.d = SortedDict()
        self.get = self.d.get
        self.put = self.d.__setitem__

    def scan(self, start, count):
        value = self.d.__getitem__
        return len([(key, value(key)) for key in islice(self.d.irange(start), count)])

    def close(self):
        self.d = None


PEERS = (Rocksdict, Plyvel, Lmdb, Sqlite, Semidbm, PlainDict, SortedDictAdapter)
RATIO_PEERS = ("rocksdict", "plyvel")  # every rldb engine is compared with these


def rldb_name(kind):
    """The table name of an rldb kind: the kind itself, unless a peer has that name."""
    return f"rldb-{kind}" if kind in {peer.name for peer in PEERS} else kind


def engine_factories(rldb_options=None):
    """{name: zero-argument adapter factory}, in run order: every rldb kind (from
    engine_kinds(), so new kinds join automatically) and every installed peer, the
    in-memory stores first.  rldb_options maps a kind to the options it is opened with.

    The in-memory stores run first and one after another because their figures are
    the most sensitive to the heap that earlier engines leave behind, and they are
    the ones compared with each other (the memory engine's targets)."""
    rldb_options = rldb_options or {}
    entries = []
    for kind in engine_kinds():
        name = rldb_name(kind)
        factory = (lambda kind=kind, name=name:
                   RldbAdapter(kind, name=name, **rldb_options.get(kind, {})))
        entries.append((name, factory, kind not in IN_MEMORY_KINDS))
    entries += [(peer.name, peer, peer.persistent) for peer in PEERS if peer.available()]
    return {name: factory for name, factory, persistent in sorted(entries, key=lambda e: e[2])}


def missing_peers():
    return [peer.name for peer in PEERS if not peer.available()]


def parse_engine_options(specs):
    """["KIND:NAME=VALUE", ...] -> {kind: {name: value}}; a value is read as a
    Python literal (True, 4096, 'x') and else kept as a string."""
    out = {}
    for spec in specs or ():
        kind, sep, assignment = spec.partition(":")
        name, eq, text = assignment.partition("=")
        if not (sep and eq and kind and name):
            raise ValueError(f"engine option {spec!r}: expected KIND:NAME=VALUE")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        out.setdefault(kind, {})[name] = value
    return out


def select_engines(factories, names_csv=None):
    """The engine names to run, in table order: all of them, or those listed (comma-separated)."""
    if not names_csv:
        return list(factories)
    names = [n.strip() for n in names_csv.split(",") if n.strip()]
    unknown = [n for n in names if n not in factories]
    if unknown:
        raise ValueError(f"unknown engine(s) {', '.join(unknown)}; known: {', '.join(factories)}")
    return [n for n in factories if n in names]
