"""The node's objects in its local engine, keyed so that one partition's keys
can be listed: storage key = partition (u16 big-endian) + user key.  A
synchronous interface: the asyncio shell and the simulator both call it."""
import struct

import mmh3

from rldb.cluster import dvv, objects
from rldb.errors import NotSupportedError

_PART = struct.Struct(">H")
META_PARTITION = 0xFFFF  # the node's own records (generation, ...)


def key_hash(key):
    """The key's position on the ring: murmur3 x86 32-bit, unsigned."""
    return mmh3.hash(key, 0, signed=False)


def partition_of(key, partitions):
    """Which of `partitions` (a power of two) equal arcs of the ring holds key."""
    return key_hash(key) * partitions >> 32


class ObjectStore:
    def __init__(self, engine, partitions=64):
        self.engine = engine
        self.partitions = partitions

    def storage_key(self, key):
        return _PART.pack(partition_of(key, self.partitions)) + key

    def get(self, key):
        """The key's clock (dvv.EMPTY when absent); CorruptionError if damaged."""
        data = self.engine.get(self.storage_key(key))
        return dvv.EMPTY if data is None else objects.decode(data, key)

    def put(self, key, clock):
        self.engine.put(self.storage_key(key), objects.encode(clock))

    def put_encoded(self, key, data):
        """Stores a clock already in its stored form (objects.encode)."""
        self.engine.put(self.storage_key(key), data)

    def partition_items(self, partition):
        """(key, clock) of every key of a partition (engines with scan only)."""
        start = _PART.pack(partition)
        end = _PART.pack(partition + 1) if partition + 1 < META_PARTITION else _PART.pack(META_PARTITION)
        try:
            for skey, data in self.engine.scan(start, end):
                yield skey[2:], objects.decode(data, skey[2:])
        except NotSupportedError:
            for skey in self.engine.keys():
                if skey[:2] == start:
                    data = self.engine.get(skey)
                    if data is not None:
                        yield skey[2:], objects.decode(data, skey[2:])

    def get_meta(self, name):
        return self.engine.get(_PART.pack(META_PARTITION) + name)

    def put_meta(self, name, value):
        self.engine.put(_PART.pack(META_PARTITION) + name, value)
