"""Active anti-entropy: replicas of a partition compare their tictac trees
and repair exactly the keys that differ.

One exchange at a time, between this node and one peer, for one partition:
  aae_tree   our branch hashes               -> peer
  aae_leaves the peer's leaves of the branches that differ
  aae_keys   our (key, object hash) in the segments that differ -> peer
  aae_objs   the peer's objects for keys that differ, and the keys it needs
  aae_push   our objects (after merging theirs) for those keys -> peer
  aae_done   how many keys the peer changed
Both sides merge (dvv sync), never overwrite, so an exchange cannot lose a
version.  Exchanges are scheduled round robin over the partitions this node
replicates, one every aae_interval; after one that repaired k keys the next
waits k / aae_rate seconds, which bounds the repair work per second.  The
admin command `repair` queues exchanges now and answers when they are done."""
from collections import deque

from rldb.cluster import commands as c
from rldb.cluster.messages import BadMessage, decode_object
from rldb.cluster.store import object_hash


class AntiEntropy:
    def __init__(self, cfg, host, store, membership, topology, rng, counters, now):
        self.cfg = cfg
        self.node_id = cfg.node_id
        self.host = host
        self.store = store
        self.membership = membership
        self.topology = topology
        self.counters = counters
        self._queue = deque()   # (partition, peer, run id or None)
        self._flight = None     # the exchange in progress
        self._next = now + (rng.uniform(0, cfg.aae_interval) if cfg.aae_interval else 0.0)
        self._cursor = rng.randrange(cfg.partitions)
        self._runs = {}         # run id -> what a `repair` command waits for
        counters.update({"aae_exchanges": 0, "aae_keys_repaired": 0})

    def handlers(self):
        return {"aae_tree": self.on_aae_tree, "aae_leaves": self.on_aae_leaves,
                "aae_keys": self.on_aae_keys, "aae_objs": self.on_aae_objs,
                "aae_push": self.on_aae_push, "aae_done": self.on_aae_done}

    # ---- scheduling -----------------------------------------------------------------------------

    def run(self, now):
        flight = self._flight
        if flight is not None:
            limit = flight["at"] + 2 * self.cfg.request_timeout
            if now < limit:
                self.host.wake(limit)
                return
            self._end(now, 0)  # the peer went quiet: give up this one
        if now < self._next:
            if self._queue or self.cfg.aae_interval:
                self.host.wake(self._next)
            return
        if not self._queue and self.cfg.aae_interval:
            self._schedule(now)
        self._start(now)

    def _schedule(self, now):
        """Queues the next partition this node replicates, with each peer."""
        for _ in range(self.cfg.partitions):
            q = self._cursor
            self._cursor = (q + 1) % self.cfg.partitions
            peers = self._peers(q, now)
            if peers:
                self._queue.extend((q, peer, None) for peer in peers)
                return
        self._next = now + self.cfg.aae_interval

    def _peers(self, q, now):
        old, _ = self.topology.prefs(q)
        if self.node_id not in old:
            return []
        return [n for n in old if n != self.node_id and self.membership.is_up(n, now)]

    def _start(self, now):
        while self._queue:
            q, peer, run = self._queue.popleft()
            if not self.membership.is_up(peer, now) or peer not in self.membership.members:
                self._finish_run(run, 0)
                continue
            op_id = self.host.new_op_id()
            self._flight = {"id": op_id, "q": q, "peer": peer, "run": run, "at": now,
                            "repaired": 0}
            self.host.send(peer, {"t": "aae_tree", "id": op_id, "q": q,
                                  "branch": self.store.tree(q).branch,
                                  "dl": now + self.cfg.request_timeout})
            self.host.wake(now + 2 * self.cfg.request_timeout)
            return

    def _end(self, now, repaired):
        flight, self._flight = self._flight, None
        self.counters["aae_exchanges"] += 1
        self.counters["aae_keys_repaired"] += repaired
        self._finish_run(flight["run"], repaired)
        if repaired or self._queue:
            self._next = now + repaired / self.cfg.aae_rate
        else:
            self._next = now + self.cfg.aae_interval
        self.host.wake(self._next)

    def _finish_run(self, run, repaired):
        state = self._runs.get(run)
        if state is None:
            return
        state["pending"] -= 1
        state["repaired"] += repaired
        if state["pending"] <= 0:
            del self._runs[run]
            self.host.finish(state["token"], c.Ok({"partitions": state["partitions"],
                                                   "exchanges": state["exchanges"],
                                                   "keys_repaired": state["repaired"]}))

    def start_repair(self, token, cmd, now):
        """Admin `repair`: exchanges now for one partition or all of ours."""
        if cmd.partition is not None and not 0 <= cmd.partition < self.cfg.partitions:
            return c.invalid(f"partition must be 0..{self.cfg.partitions - 1}")
        if cmd.rebuild:
            self.store.rebuild()
        parts = [cmd.partition] if cmd.partition is not None else range(self.cfg.partitions)
        jobs = [(q, peer) for q in parts for peer in self._peers(q, now)]
        if cmd.partition is not None and self.node_id not in self.topology.prefs(cmd.partition)[0]:
            return c.invalid(f"this node holds no replica of partition {cmd.partition}")
        if not jobs:
            return c.Ok({"partitions": 0, "exchanges": 0, "keys_repaired": 0})
        run = self.host.new_op_id()
        self._runs[run] = {"token": token, "pending": len(jobs), "repaired": 0,
                           "exchanges": len(jobs), "partitions": len({q for q, _ in jobs})}
        self._queue.extendleft((q, peer, run) for q, peer in reversed(jobs))
        self._next = min(self._next, now)
        self.host.wake(now)
        return None

    # ---- the exchange, our side ----------------------------------------------------------------

    def _current(self, msg):
        flight = self._flight
        if flight is None or flight["id"] != msg["id"] or flight["peer"] != msg["from"]:
            return None
        return flight

    def _segment_pairs(self, q, segments):
        tree = self.store.tree(q)
        return {k: object_hash(d) for k, d in self.store.partition_raw(q)
                if tree.segment_of(k) in segments}

    def on_aae_leaves(self, msg, now):
        flight = self._current(msg)
        if flight is None:
            return
        tree = self.store.tree(flight["q"])
        segments = sorted(int(s) for s, h in msg["leaves"] if tree.leaves[int(s)] != h)
        if msg.get("abort") or not segments:
            self._end(now, 0)
            return
        pairs = self._segment_pairs(flight["q"], set(segments))
        self.host.send(flight["peer"], {"t": "aae_keys", "id": flight["id"], "q": flight["q"],
                                        "segments": segments,
                                        "pairs": [[k, h] for k, h in pairs.items()],
                                        "dl": now + self.cfg.request_timeout})

    def on_aae_objs(self, msg, now):
        flight = self._current(msg)
        if flight is None:
            return
        if not self.topology.is_member(flight["q"]):  # the ring moved it away meanwhile
            self._end(now, 0)
            return
        changed = sum(1 for key, data in msg["objs"]
                      if self.host.apply(key, decode_object(data, key)))
        push = []
        for key in msg["need"]:
            data = self.store.get_raw(key) or self.store.floor_object(key)
            if data is not None:
                push.append([key, data])
        for key, _ in msg["objs"]:
            if key not in msg["need"] and self.store.get_raw(key) is None:
                floor = self.store.floor_object(key)  # theirs merged into our floor: tell them
                if floor is not None:
                    push.append([key, floor])
        if not push:
            self._end(now, changed)
            return
        flight["repaired"] = changed
        self.host.send(flight["peer"], {"t": "aae_push", "id": flight["id"], "q": flight["q"],
                                        "objs": push, "dl": now + self.cfg.request_timeout})

    def on_aae_done(self, msg, now):
        flight = self._current(msg)
        if flight is not None:
            self._end(now, flight["repaired"] + int(msg["repaired"]))

    # ---- the exchange, the peer's side ---------------------------------------------------------

    def on_aae_tree(self, msg, now):
        q = int(msg["q"])
        reply = {"t": "aae_leaves", "id": msg["id"], "leaves": []}
        if not self.topology.is_member(q):
            reply["abort"] = True
        else:
            tree = self.store.tree(q)
            if len(msg["branch"]) != len(tree.branch):
                raise BadMessage("a tree of another shape")
            reply["leaves"] = [[s, h] for s, h in
                               tree.leaves_of(tree.diff_branches(msg["branch"])).items()]
        self.host.send_addr(msg["addr"], reply)

    def on_aae_keys(self, msg, now):
        q = int(msg["q"])
        theirs = {k: h for k, h in msg["pairs"]}
        mine = self._segment_pairs(q, {int(s) for s in msg["segments"]})
        differ = [k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k)]
        objs = [[k, self.store.get_raw(k)] for k in differ if k in mine]
        need = []
        for k in differ:
            if k in theirs and k not in mine:
                floor = self.store.floor_object(k)  # collected here: they should know
                if floor is not None:
                    objs.append([k, floor])
                    continue
            if k in theirs:
                need.append(k)
        self.host.send_addr(msg["addr"], {"t": "aae_objs", "id": msg["id"], "objs": objs,
                                          "need": need})

    def on_aae_push(self, msg, now):
        if not self.topology.is_member(int(msg["q"])):
            return  # the ring moved it away meanwhile; the exchange times out
        changed = sum(1 for key, data in msg["objs"]
                      if self.host.apply(key, decode_object(data, key)))
        self.host.send_addr(msg["addr"], {"t": "aae_done", "id": msg["id"], "repaired": changed})
