"""The node's objects in its local engine, keyed so that one partition's keys
can be listed: storage key = partition (u16 big-endian) + user key.  A
synchronous interface: the asyncio shell and the simulator both call it.

Every write goes through write() or merge(), which keep two in-memory
indexes up to date without reading anything more: a tictac tree per
partition (anti-entropy compares them between replicas) and the set of keys
whose every version is a tombstone (what the reaper may collect).  Both are
rebuilt from a scan when the store opens."""
import struct

import mmh3

from rldb.cluster import dvv, objects
from rldb.cluster.floors import KeyFloors
from rldb.cluster.tictac import TicTacTree
from rldb.errors import NotSupportedError

_PART = struct.Struct(">H")
META_PARTITION = 0xFFFF  # the node's own records (generation, ring, hints, ...)
META = _PART.pack(META_PARTITION)
TREE_SEGMENTS, TREE_WIDTH = 256, 16


def key_hash(key):
    """The key's position on the ring: murmur3 x86 32-bit, unsigned."""
    return mmh3.hash(key, 0, signed=False)


def partition_of(key, partitions):
    """Which of `partitions` (a power of two) equal arcs of the ring holds key."""
    return key_hash(key) * partitions >> 32


def object_hash(data):
    """What a tree records of a stored object: its CRC (the first 4 bytes).
    Equal clocks encode to equal bytes, so replicas agree on it."""
    return bytes(data[:4])


class ObjectStore:
    def __init__(self, engine, partitions=64):
        self.engine = engine
        self.partitions = partitions
        self.trees = {}        # partition -> TicTacTree of (key, object hash)
        self.tombstones = {}   # partition -> set of keys whose versions are all tombstones
        self.objects = 0       # keys stored, tombstones included
        self.floors = KeyFloors(self)  # histories of the keys whose tombstones were collected
        self.rebuild()

    def storage_key(self, key):
        return _PART.pack(partition_of(key, self.partitions)) + key

    def tree(self, partition):
        t = self.trees.get(partition)
        if t is None:
            t = self.trees[partition] = TicTacTree(TREE_SEGMENTS, TREE_WIDTH)
        return t

    # ---- objects ----------------------------------------------------------------------------

    def get_raw(self, key):
        return self.engine.get(self.storage_key(key))

    def get(self, key):
        """The key's clock (dvv.EMPTY when absent); CorruptionError if damaged."""
        data = self.get_raw(key)
        return dvv.EMPTY if data is None else objects.decode(data, key)

    def current(self, key):
        """(stored bytes or None, the clock to build a write on, whether that
        clock is a floor): an absent key's clock is its floor, if it has
        one, so that a new write is numbered above the history its
        collected tombstone covered."""
        raw = self.get_raw(key)
        if raw is not None:
            return raw, objects.decode(raw, key), False
        floor = self.floors.get(key)
        return (None, floor, True) if floor is not None else (None, dvv.EMPTY, False)

    def write(self, key, data, old, clock, floored=False):
        """Stores clock, encoded as data, over `old` (the bytes it replaces,
        or None).  floored: the key had a floor, which the clock now carries,
        so the floor goes."""
        p = partition_of(key, self.partitions)
        self.engine.put(_PART.pack(p) + key, data)
        if floored:
            self.floors.drop(key)
        self._index(key, old, data, clock, p)

    def put(self, key, clock):
        self.write(key, objects.encode(clock), self.get_raw(key), clock)

    def merge(self, key, incoming, floor_until_ms=None):
        """Merges a clock into the stored one; returns True when that changed
        what is stored.  A merge that leaves nothing live (a floor from a
        replica that collected the key, meeting the tombstone or the floor
        here) keeps only the history, as the key's floor (until
        floor_until_ms): the tombstone is collected here too."""
        old, current, floored = self.current(key)
        merged = dvv.sync(current, incoming)
        if merged == current:
            if floored and dvv.size(incoming):
                self.floors.absorbed += 1  # all of it was collected: it stays deleted
            return False
        if dvv.size(merged) or floor_until_ms is None:
            self.write(key, objects.encode(merged), old, merged, floored)
            return True
        if floored:
            self.floors.widen(key, merged)
            return False
        if old is not None:
            self.engine.delete(self.storage_key(key))
            self._index(key, old, None)
        self.floors.put(key, merged, floor_until_ms)
        return old is not None

    def floor_object(self, key):
        """The key's floor encoded as a stored object (a clock without
        values), for anti-entropy to hand a replica that still holds what
        it covers; None if the key has none."""
        floor = self.floors.get(key)
        return None if floor is None else objects.encode(floor)

    def remove_tombstone(self, key, expected_hash):
        """Deletes the key if every version of it is a tombstone and its
        object still hashes to expected_hash (the reaper's compare-and-
        delete); returns the clock it deleted, or None."""
        old = self.get_raw(key)
        if old is None or object_hash(old) != expected_hash or \
                key not in self.tombstones.get(partition_of(key, self.partitions), ()):
            return None
        clock = objects.decode(old, key)
        self.engine.delete(self.storage_key(key))
        self._index(key, old, None)
        return clock

    def live_keys(self):
        """Keys stored whose versions are not all tombstones."""
        return self.objects - sum(len(keys) for keys in self.tombstones.values())

    def _index(self, key, old, new, clock=None, p=None):
        self.objects += (new is not None) - (old is not None)
        if p is None:
            p = partition_of(key, self.partitions)
        if old is None or new is None or old[:4] != new[:4]:
            self.tree(p).update(key, None if old is None else object_hash(old),
                                None if new is None else object_hash(new))
        dead = self.tombstones.setdefault(p, set())
        if new is not None and objects.is_deleted(clock or objects.decode(new, key)):
            dead.add(key)
        else:
            dead.discard(key)

    # ---- partitions -------------------------------------------------------------------------

    def partition_raw(self, partition, after=None, limit=None):
        """(key, stored bytes) of a partition's keys in order, from the first
        key after `after`, at most limit of them."""
        start = _PART.pack(partition) + (after + b"\x00" if after is not None else b"")
        end = _PART.pack(partition + 1)
        out = []
        for skey, data in self._scan(start, end):
            out.append((skey[2:], data))
            if limit is not None and len(out) >= limit:
                break
        return out

    def drop_partition(self, partition, limit=None):
        """Deletes up to limit keys of a partition this node no longer
        replicates; returns how many it deleted (0 once it is empty)."""
        items = self.partition_raw(partition, limit=limit)
        for key, _ in items:
            self.engine.delete(self.storage_key(key))
        if len(items) < (limit or len(items) + 1):
            self.objects -= len(items)
            self.trees.pop(partition, None)
            self.tombstones.pop(partition, None)
        else:
            for key, data in items:
                self._index(key, data, None)
        return len(items)

    def held_partitions(self):
        return sorted(p for p, t in self.trees.items() if t.root() or self.tombstones.get(p))

    def rebuild(self):
        """The trees and tombstone sets from a scan of every partition."""
        self.trees, self.tombstones, self.objects = {}, {}, 0
        for skey, data in self._scan(_PART.pack(0), META):
            self._index(skey[2:], None, data)

    def check(self):
        """Raises AssertionError unless the trees and tombstone sets match
        what a fresh scan gives."""
        pairs, dead = {}, {}
        for skey, data in self._scan(_PART.pack(0), META):
            key = skey[2:]
            p = partition_of(key, self.partitions)
            pairs.setdefault(p, {})[key] = object_hash(data)
            if objects.is_deleted(objects.decode(data, key)):
                dead.setdefault(p, set()).add(key)
        if self.objects != sum(len(keys) for keys in pairs.values()):
            raise AssertionError(f"{self.objects} objects counted, "
                                 f"{sum(len(keys) for keys in pairs.values())} found")
        for p in set(pairs) | set(self.trees):
            self.tree(p).check(pairs.get(p, {}))
            if self.tombstones.get(p, set()) != dead.get(p, set()):
                raise AssertionError(f"partition {p}: tombstone set differs from a scan")

    # ---- the node's own records -------------------------------------------------------------

    def get_meta(self, name):
        return self.engine.get(META + name)

    def put_meta(self, name, value):
        self.engine.put(META + name, value)

    def delete_meta(self, name):
        self.engine.delete(META + name)

    def meta_items(self, prefix, limit=None, after=None):
        """(name, value) of the records whose name starts with prefix (and,
        with after, comes after that name)."""
        out = []
        start = META + (prefix if after is None else after + b"\x00")
        for skey, data in self._scan(start, _after_prefix(META + prefix)):
            out.append((skey[2:], data))
            if limit is not None and len(out) >= limit:
                break
        return out

    def _scan(self, start, end):
        try:
            yield from self.engine.scan(start, end)
        except NotSupportedError:  # bitcask: no order on disk, sort the keydir's keys
            for skey in sorted(k for k in self.engine.keys() if start <= k < end):
                data = self.engine.get(skey)
                if data is not None:
                    yield skey, data


def _after_prefix(prefix):
    """The least key greater than every key that starts with prefix."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1])
