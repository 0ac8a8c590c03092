"""The interface every storage engine implements, and the argument checks they share.

Keys and values are bytes.  Keys are never empty; values may be.  An engine is
a context manager; after close() every call raises ClosedError."""
from abc import ABC, abstractmethod

from rldb.errors import ClosedError, InvalidArgumentError


def check_key(key):
    if key.__class__ is not bytes:
        raise InvalidArgumentError(f"keys must be bytes, not {type(key).__name__}")
    if not key:
        raise InvalidArgumentError("keys must not be empty")


def check_value(value):
    if value.__class__ is not bytes:
        raise InvalidArgumentError(f"values must be bytes, not {type(value).__name__}")


def check_bound(name, bound):
    if bound is not None and bound.__class__ is not bytes:
        raise InvalidArgumentError(f"scan {name} must be bytes or None, not {type(bound).__name__}")


class WriteBatch:
    """Puts and deletes applied together by Engine.write_batch: all or none."""

    __slots__ = ("ops",)

    def __init__(self):
        self.ops = []  # ("put", key, value) or ("delete", key, None)

    def put(self, key, value):
        check_key(key)
        check_value(value)
        self.ops.append(("put", key, value))
        return self

    def delete(self, key):
        check_key(key)
        self.ops.append(("delete", key, None))
        return self

    def __len__(self):
        return len(self.ops)


def normalize_batch(ops):
    """A validated list of (kind, key, value) from a WriteBatch or an iterable of
    ("put", key, value) / ("delete", key) tuples.  Raises before anything is applied."""
    if isinstance(ops, WriteBatch):
        return ops.ops
    out = []
    for op in ops:
        if not isinstance(op, tuple) or not op:
            raise InvalidArgumentError(f"batch operations are tuples, not {op!r}")
        kind = op[0]
        if kind == "put" and len(op) == 3:
            check_key(op[1])
            check_value(op[2])
            out.append(op)
        elif kind == "delete" and len(op) == 2:
            check_key(op[1])
            out.append(("delete", op[1], None))
        else:
            raise InvalidArgumentError(
                f"batch operation {op!r}: expected ('put', key, value) or ('delete', key)")
    return out


def check_options(kind, options, defaults):
    """The engine's options, defaults filled in; an unknown name is refused."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise InvalidArgumentError(
            f"unknown option(s) for the {kind} engine: {', '.join(unknown)}; "
            f"known: {', '.join(sorted(defaults))}")
    merged = dict(defaults)
    merged.update(options)
    return merged


def raise_closed(*_args, **_kwargs):
    raise ClosedError("the engine is closed")


class Engine(ABC):
    """A key-value engine: bytes in, bytes out."""

    kind = "abstract"
    supports_scan = True  # False: scan() raises NotSupportedError (no key order)

    @abstractmethod
    def get(self, key):
        """The value stored for key, or None."""

    @abstractmethod
    def put(self, key, value):
        """Store value under key."""

    @abstractmethod
    def delete(self, key):
        """Remove key; deleting a missing key is not an error."""

    @abstractmethod
    def write_batch(self, ops):
        """Apply a WriteBatch (or an iterable of op tuples) atomically."""

    @abstractmethod
    def scan(self, start=None, end=None, reverse=False):
        """(key, value) pairs with start <= key < end, in key order (or reversed)."""

    def flush(self):
        """Make every acknowledged write durable."""

    @abstractmethod
    def close(self):
        """Flush and release resources; later calls raise ClosedError."""

    @abstractmethod
    def stats(self):
        """A dict of figures about the engine."""

    @abstractmethod
    def check(self):
        """Verify every invariant and checksum; raise CorruptionError on the first fault."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
