"""Hinted handoff's durable half: writes a fallback took for a primary that
was down, kept in the fallback's engine (meta records, so they survive a
restart) until the primary acknowledged them.

A hint is stored under "hint:" + target + NUL + key and holds the merge of
every hinted write for that key: a second hint merges into the first, never
replaces it.  Delivery deletes a hint only if it is still the bytes that
were delivered, so a hint that grew meanwhile stays for the next round."""
from rldb.cluster import dvv, objects
from rldb.cluster.store import partition_of

PREFIX = b"hint:"


def _name(target, key):
    return PREFIX + target.encode() + b"\x00" + key


class HintStore:
    def __init__(self, store):
        self.store = store
        self.counts = {}   # target -> hints pending
        self.keys = {}     # key -> how many targets have a hint for it
        self.by_partition = {}  # (target, partition) -> hints pending
        for name, _ in store.meta_items(PREFIX):
            target, key = _split(name)
            self._count(target, key, 1)

    def _count(self, target, key, delta):
        self.counts[target] = self.counts.get(target, 0) + delta
        if not self.counts[target]:
            del self.counts[target]
        self.keys[key] = self.keys.get(key, 0) + delta
        if not self.keys[key]:
            del self.keys[key]
        name = (target, partition_of(key, self.store.partitions))
        self.by_partition[name] = self.by_partition.get(name, 0) + delta
        if not self.by_partition[name]:
            del self.by_partition[name]

    def add(self, target, key, clock):
        """Keeps clock for target, merged with any hint already held."""
        old = self.store.get_meta(_name(target, key))
        current = dvv.EMPTY if old is None else objects.decode(old, key)
        self.store.put_meta(_name(target, key), objects.encode(dvv.sync(current, clock)))
        if old is None:
            self._count(target, key, 1)

    def get(self, target, key):
        data = self.store.get_meta(_name(target, key))
        return dvv.EMPTY if data is None else objects.decode(data, key)

    def batch(self, target, limit):
        """Up to limit (key, stored bytes) held for target."""
        prefix = PREFIX + target.encode() + b"\x00"
        return [(name[len(prefix):], data) for name, data in self.store.meta_items(prefix, limit)]

    def delivered(self, target, items):
        """Deletes the hints of items ((key, bytes) as sent) that did not
        change since; returns how many it deleted."""
        done = 0
        for key, data in items:
            name = _name(target, key)
            if self.store.get_meta(name) == data:
                self.store.delete_meta(name)
                self._count(target, key, -1)
                done += 1
        return done

    def pending(self, target=None):
        return sum(self.counts.values()) if target is None else self.counts.get(target, 0)

    def pending_in(self, target, partition):
        return self.by_partition.get((target, partition), 0)

    def targets(self):
        return sorted(self.counts)

    def has_key(self, key):
        return key in self.keys

    def check(self):
        """Raises AssertionError unless the counts match the stored hints."""
        counts, keys = {}, {}
        for name, data in self.store.meta_items(PREFIX):
            target, key = _split(name)
            objects.decode(data, key)
            counts[target] = counts.get(target, 0) + 1
            keys[key] = keys.get(key, 0) + 1
        if counts != self.counts or keys != self.keys:
            raise AssertionError(f"hint counts {self.counts} differ from the store's {counts}")


def _split(name):
    target, _, key = name[len(PREFIX):].partition(b"\x00")
    return target.decode(), key
