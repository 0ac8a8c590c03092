"""Tombstone collection: the Reaper.

A delete leaves a tombstone so that replicas that missed it learn of it
instead of bringing the value back.  The first primary of a partition
collects a tombstone once all of this holds:
- it is older than tombstone_grace (by its newest version's timestamp);
- the ring is not in transition, and every member is up (a node that is
  down may hold a hint for the key);
- every member answers a check: it has no hint for the key, and, where it
  is one of the key's primaries, it holds exactly this tombstone (same
  object hash), so none of them missed the delete (Cassandra's zombie);
  and it coordinates no request on the key (whose replica writes or read
  repair could still carry an older version);
- then each primary deletes the key only if its object still has that hash
  (a write that came in meanwhile wins), and keeps its history as the key's
  floor (floors.KeyFloors) for floor_retention: whatever version of the
  tombstone's past arrives later merges into the floor and stays deleted.
The collect order is sent again until every primary confirmed it (or the
floor's time is over), so a lost order or a primary that was down leaves no
tombstone behind for long; one that comes back after the floor's time only
brings a tombstone, which new writes are numbered above (the dot floor).
A hint still held by a fallback blocks the collection, so an old tombstone
handed off later cannot meet a newer value without the tombstone's history
(Riak's doomstone); and new dots are numbered above any a node issued
before (dvv.update's floor), so a value written after a collection is
never taken for one the old tombstone covers.  What stays unsafe, and the
bounds that rule it out, are in docs/consistency.md."""
from rldb.cluster import dvv, objects
from rldb.cluster.membership import LEFT
from rldb.cluster.store import object_hash, partition_of

REAP_SCAN = 200       # tombstones looked at per run
MAX_CHECKS = 64       # collection checks in flight
MAX_ORDERS = 10_000   # collect orders awaiting confirmation


class Reaper:
    def __init__(self, cfg, host, store, hints, membership, topology, counters):
        self.cfg = cfg
        self.node_id = cfg.node_id
        self.host = host
        self.store = store
        self.hints = hints
        self.membership = membership
        self.topology = topology
        self.counters = counters
        self._checks = {}       # op id -> check in flight
        self._keys = set()      # keys with a check in flight
        self._todo = []         # tombstones still to look at in this pass
        self._orders = {}       # key -> collect order some primaries have not confirmed
        counters.update({"tombstones_reaped": 0, "collect_orders_resent": 0})

    def handlers(self):
        return {"reap_q": self.on_reap_q, "reap_a": self.on_reap_a, "reap": self.on_reap,
                "reap_ok": self.on_reap_ok}

    def run(self, now):
        for op_id, check in list(self._checks.items()):
            if now - check["at"] > self.cfg.request_timeout:
                self._drop_check(op_id)
        self._resend_orders(now)
        self.store.floors.sweep(int(now * 1000))
        if self.topology.next_owners is not None or len(self._checks) >= MAX_CHECKS:
            return
        members = [n for n, m in self.membership.members.items() if m.state != LEFT]
        if not all(self.membership.is_up(n, now) for n in members):
            return
        if not self._todo:
            self._todo = [key for q, keys in self.store.tombstones.items()
                          if keys and self.topology.prefs(q)[0][0] == self.node_id
                          for key in keys]
            if not self._todo:
                return
        grace_ms = self.cfg.tombstone_grace * 1000
        others = [n for n in members if n != self.node_id]
        for _ in range(min(REAP_SCAN, len(self._todo))):
            key = self._todo.pop()
            raw = self.store.get_raw(key)
            if raw is None or key in self._keys or self.hints.has_key(key) or \
                    self.host.key_busy(key):
                continue
            clock = objects.decode(raw, key)
            stamps = [ts for v, ts in dvv.values(clock) if v is None]
            if not objects.is_deleted(clock) or not stamps or now * 1000 - max(stamps) < grace_ms:
                continue
            primaries = self.topology.prefs(partition_of(key, self.cfg.partitions))[0]
            if any(p not in self.membership.members for p in primaries):
                continue  # a replica this node has not heard of yet (it just started)
            check = {"key": key, "hash": object_hash(raw), "waiting": set(others), "at": now}
            if not others:
                self._collect(check, now)
                continue
            op_id = self.host.new_op_id()
            self._checks[op_id] = check
            self._keys.add(key)
            for node in others:
                self.host.send(node, {"t": "reap_q", "id": op_id, "key": key,
                                      "hash": check["hash"], "v": self.topology.ring_version,
                                      "dl": now + self.cfg.request_timeout})
            if len(self._checks) >= MAX_CHECKS:
                return
        if self._todo:
            self.host.wake(now)  # more to look at; a new pass waits for the next round

    def _drop_check(self, op_id):
        check = self._checks.pop(op_id)
        self._keys.discard(check["key"])

    def _collect(self, check, now):
        key, expected = check["key"], check["hash"]
        if self.host.key_busy(key):
            return  # a request on it started meanwhile
        others = set()
        for node in self.topology.prefs(partition_of(key, self.cfg.partitions))[0]:
            if node == self.node_id:
                self._remove(key, expected, now)
            else:
                others.add(node)
                self.host.send(node, {"t": "reap", "key": key, "hash": expected})
        if others:
            if len(self._orders) >= MAX_ORDERS:
                self._orders.pop(next(iter(self._orders)))  # the oldest; AAE covers it
            self._orders[key] = {"hash": expected, "waiting": others, "at": now,
                                 "until": now + self.cfg.floor_retention}

    def _remove(self, key, expected, now):
        """Collects the key here: its tombstone goes, its history stays as
        its floor."""
        clock = self.store.remove_tombstone(key, expected)
        if clock is not None:
            until_ms = int((now + self.cfg.floor_retention) * 1000)
            self.store.floors.put(key, dvv.vector_clock(clock), until_ms)
            self.counters["tombstones_reaped"] += 1

    def _resend_orders(self, now):
        for key, order in list(self._orders.items()):
            if not order["waiting"] or now >= order["until"]:
                del self._orders[key]
            elif now - order["at"] >= self.cfg.request_timeout:
                order["at"] = now
                for node in order["waiting"]:
                    self.counters["collect_orders_resent"] += 1
                    self.host.send(node, {"t": "reap", "key": key, "hash": order["hash"]})

    def on_reap_q(self, msg, now):
        key, expected = msg["key"], msg["hash"]
        ok = msg["v"] == self.topology.ring_version and self.topology.next_owners is None \
            and not self.hints.has_key(key) and not self.host.key_busy(key)
        if ok and self.node_id in self.topology.prefs(partition_of(key, self.cfg.partitions))[0]:
            raw = self.store.get_raw(key)
            ok = raw is not None and object_hash(raw) == expected
        self.host.send_addr(msg["addr"], {"t": "reap_a", "id": msg["id"], "ok": ok})

    def on_reap_a(self, msg, now):
        check = self._checks.get(msg["id"])
        if check is None or msg["from"] not in check["waiting"]:
            return
        if not msg["ok"]:
            self._drop_check(msg["id"])
            return
        check["waiting"].discard(msg["from"])
        if not check["waiting"]:
            self._drop_check(msg["id"])
            self._collect(check, now)

    def on_reap(self, msg, now):
        """A collect order: done, or moot (the key changed since), either
        way confirmed."""
        self._remove(msg["key"], msg["hash"], now)
        self.host.send_addr(msg["addr"], {"t": "reap_ok", "key": msg["key"]})

    def on_reap_ok(self, msg, now):
        order = self._orders.get(msg["key"])
        if order is not None:
            order["waiting"].discard(msg["from"])
