"""Storage engines behind one interface, usable without the rest of rldb.

    from rldb.storage import open_engine
    with open_engine("lsm", "/tmp/db") as db:
        db.put(b"k", b"v")

Importing this package is light: the disk engines load on first use."""
import importlib

from rldb.errors import InvalidArgumentError
from rldb.storage.engine import Engine, WriteBatch

_ENGINES = {
    "memory": "rldb.storage.memory:MemoryEngine",
    "lsm": "rldb.storage.lsm.engine:LSMEngine",
    "bitcask": "rldb.storage.bitcask.engine:BitcaskEngine",
}


def engine_kinds():
    """The names open_engine accepts."""
    return sorted(_ENGINES)


def engine_class(kind):
    """The class behind a kind name (imported on first use)."""
    target = _ENGINES.get(kind)
    if target is None:
        raise InvalidArgumentError(
            f"unknown storage engine {kind!r}; choose one of {', '.join(engine_kinds())}")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def open_engine(kind, path=None, **options):
    """Open an engine by name: "memory", "lsm" or "bitcask"."""
    return engine_class(kind)(path, **options)


__all__ = ["Engine", "WriteBatch", "open_engine", "engine_class", "engine_kinds"]
