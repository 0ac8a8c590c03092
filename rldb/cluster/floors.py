"""What a node remembers of the keys whose tombstones it collected: their
floors, and its own dot floor.

A key's floor is its history without values (dvv.vector_clock of the
tombstone collected), kept for floor_retention after the collection: a
version that reaches the key later (a replica write or repair still in
flight, a hint, anti-entropy from a replica that missed the collect order)
merges into the floor, so whatever the tombstone covered stays deleted
instead of coming back into an empty key, and a new write is numbered
above the old history.  Floors live in the node's own records (one per
key), so they survive a restart.

The dot floor is a counter this node's actor has issued no dot above, for
any key (dvv.update's floor): dots of a key that is absent here start above
it.  It is kept in memory and reserved on disk a block at a time, so a
restart skips past every dot issued before it without a write per put."""
import msgpack

from rldb.cluster import dvv

PREFIX = b"floor/"
DOT_FLOOR = b"dot_floor"
RESERVE = 1 << 16     # dots reserved on disk at a time
SWEEP = 256           # floors looked at per sweep step


class KeyFloors:
    """The floors of collected keys, in the object store's own records."""

    def __init__(self, store):
        self.store = store
        self.absorbed = 0      # versions that arrived at a floor and stayed deleted
        self._cursor = None    # where the expiry sweep goes on

    def get(self, key):
        """The key's floor (a clock without values), or None."""
        raw = self.store.get_meta(PREFIX + key)
        if raw is None:
            return None
        _, entries = msgpack.unpackb(raw, raw=False)
        return tuple((i, n, ()) for i, n in entries), ()

    def put(self, key, clock, until_ms):
        """Remembers the history of a key collected now, until until_ms
        (stored as msgpack [until_ms, [[actor, counter], ...]])."""
        entries = [[i, n] for i, n, _ in clock[0]]
        self.store.put_meta(PREFIX + key, msgpack.packb([until_ms, entries], use_bin_type=True))

    def widen(self, key, clock):
        """The floor of key, grown to cover clock too (a history without
        values that arrived at it), for the time it had left."""
        raw = self.store.get_meta(PREFIX + key)
        if raw is not None:
            self.put(key, clock, msgpack.unpackb(raw, raw=False)[0])

    def drop(self, key):
        self.store.delete_meta(PREFIX + key)

    def sweep(self, now_ms):
        """Deletes up to SWEEP floors whose time is over, going on where the
        last sweep stopped; returns how many it deleted."""
        items = self.store.meta_items(PREFIX, SWEEP, after=self._cursor)
        self._cursor = items[-1][0] if len(items) == SWEEP else None
        gone = 0
        for name, raw in items:
            until_ms, _ = msgpack.unpackb(raw, raw=False)
            if until_ms <= now_ms:
                self.store.delete_meta(name)
                gone += 1
        return gone


class DotFloor:
    """The counter this node's actor has issued no dot above."""

    def __init__(self, store, actor):
        self.store = store
        self.reset_actor(actor)

    def reset_actor(self, actor):
        """Starts the dot floor of actor: above every dot reserved for it."""
        raw = self.store.get_meta(DOT_FLOOR)
        stored_actor, reserved = msgpack.unpackb(raw, raw=False) if raw else (None, 0)
        self.actor = actor
        self.dot_floor = reserved if stored_actor == actor else 0
        self._reserved = self.dot_floor
        self._reserve(self.dot_floor)

    def issued(self, clock):
        """Notes the dot the actor just issued in clock."""
        n = dvv.counter(clock, self.actor)
        if n > self.dot_floor:
            self.dot_floor = n
            if n > self._reserved:
                self._reserve(n)

    def _reserve(self, n):
        self._reserved = n + RESERVE
        self.store.put_meta(DOT_FLOOR, msgpack.packb([self.actor, self._reserved]))
