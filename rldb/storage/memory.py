"""The in-memory engine: a SortedDict, so scans work.

It is the reference model in differential tests of the disk engines, and the
engine of simulated cluster nodes.  Writes take a lock so that threads can
share it; get does not, since a single dict lookup is atomic."""
import threading

from sortedcontainers import SortedDict

from rldb.errors import CorruptionError
from rldb.storage.engine import (
    Engine,
    check_bound,
    check_key,
    check_options,
    check_value,
    normalize_batch,
    raise_closed,
)

_SCAN_CHUNK = 256


def _make_get(data):
    """get as a closure over the dict's own get: the common case (a bytes key)
    costs one type test, one length test and one C call."""
    dict_get = data.get

    def get(key):
        if key.__class__ is bytes and key:
            return dict_get(key)
        check_key(key)  # raises with the reason

    return get


class MemoryEngine(Engine):
    """Sorted, in memory, nothing on disk.  `path` is accepted and unused, so
    code can open any engine the same way."""

    kind = "memory"
    DEFAULTS = {}

    def __init__(self, path=None, **options):
        self.options = check_options(self.kind, options, self.DEFAULTS)
        self._data = SortedDict()
        self._lock = threading.Lock()
        self.get = _make_get(self._data)

    def get(self, key):  # replaced per instance in __init__; kept for the interface
        raise NotImplementedError

    def put(self, key, value):
        if key.__class__ is not bytes or not key:
            check_key(key)
        if value.__class__ is not bytes:
            check_value(value)
        with self._lock:
            self._data[key] = value

    def delete(self, key):
        check_key(key)
        with self._lock:
            self._data.pop(key, None)

    def write_batch(self, ops):
        ops = normalize_batch(ops)
        data = self._data
        with self._lock:
            for kind, key, value in ops:
                if kind == "put":
                    data[key] = value
                else:
                    data.pop(key, None)

    def scan(self, start=None, end=None, reverse=False):
        check_bound("start", start)
        check_bound("end", end)
        if self._data is None:
            raise_closed()
        return self._scan(start, end, reverse)

    def _scan(self, start, end, reverse):
        # Chunks are read under the lock; each key is seen with its value at the
        # moment its chunk was read (no snapshot across chunks).
        lo, hi, lo_inclusive, hi_inclusive = start, end, True, False
        while True:
            with self._lock:
                data = self._data
                if data is None:
                    raise_closed()
                chunk = []
                for key in data.irange(lo, hi, (lo_inclusive, hi_inclusive), reverse=reverse):
                    chunk.append((key, data[key]))
                    if len(chunk) == _SCAN_CHUNK:
                        break
            yield from chunk
            if len(chunk) < _SCAN_CHUNK:
                return
            if reverse:
                hi, hi_inclusive = chunk[-1][0], False
            else:
                lo, lo_inclusive = chunk[-1][0], False

    def keys(self):
        """Every key, in order."""
        return (key for key, _ in self.scan())

    def __len__(self):
        if self._data is None:
            raise_closed()
        return len(self._data)

    def flush(self):
        if self._data is None:
            raise_closed()

    def close(self):
        """Drops the data; closing twice is allowed (and does nothing)."""
        with self._lock:
            self._data = None
        self.get = self.put = self.delete = self.write_batch = raise_closed

    def stats(self):
        if self._data is None:
            raise_closed()
        with self._lock:
            data_bytes = sum(len(k) + len(v) for k, v in self._data.items())
        return {"engine": self.kind, "keys": len(self._data), "bytes": data_bytes}

    def check(self):
        if self._data is None:
            raise_closed()
        with self._lock:
            try:
                self._data._check()  # sortedcontainers' own invariants (it asserts)
            except AssertionError as exc:
                raise CorruptionError(f"the sorted dict breaks its invariants ({exc!r})") from None
            for key, value in self._data.items():
                if key.__class__ is not bytes or not key or value.__class__ is not bytes:
                    raise CorruptionError(f"bad entry {key!r}: {value!r}")
