"""Membership, the ring, and how the ring changes: the node's Topology.

The ring is (version, owners, next).  Only the claimant (the lowest id among
joined members that are up) changes it.  When the members change, it does
not move partitions at once: it sets `next`, the ring it wants, and the
ring is in transition.  During a transition writes go to the preference
lists of both rings (and need w in each), reads to the old one, and every
node that drops out of a partition's list streams its copy to the nodes
that come in (rldb.cluster.handoff, told of every ring change by the
listener it registers here).  Each source reports its finished transfers
to the claimant (transfers_done), which flips the ring (owners = next) when
all are done.  After a flip, nodes delete the partitions they no longer
replicate.

A leaving node marks itself "leaving": the claimant plans a ring without
it, and once the flip leaves it nothing (and its hints are handed on) it
marks itself "left" and stops."""
import msgpack

from rldb.cluster import commands as c
from rldb.cluster import ring
from rldb.cluster.membership import JOINED, LEAVING, LEFT, Member
from rldb.cluster.store import partition_of

INFO_EVERY = 5.0  # s between refreshes of this node's engine size (stats may scan)


class Topology:
    def __init__(self, cfg, host, store, hints, membership, rng, now):
        self.cfg = cfg
        self.node_id = cfg.node_id
        self.host = host
        self.store = store
        self.hints = hints
        self.membership = membership
        self.rng = rng
        self.ring_version = 1
        self.owners = ring.initial(cfg.partitions, [self.node_id], cfg.n)
        self.next_owners = None
        self.flipped_at = now         # when the ring last flipped (partitions drop after it)
        self.stopped = False          # the node left the cluster: the shell shuts it down
        self._pref_cache = {}
        self._joining = None          # the address we are joining through, until it answers
        self._reports = set()         # claimant: (partition, source, target) transfers done
        self._stop_at = None
        self._info = {}               # node -> (heartbeat, info dict) as gossiped
        self._info_at = -INFO_EVERY
        self._engine_bytes = (0, None)  # (data bytes, memtable bytes or None)
        self._listeners = []

    def add_ring_listener(self, listener):
        """listener(now) is called after every change of the ring."""
        self._listeners.append(listener)

    def handlers(self):
        return {"gossip": self.on_gossip, "gossip_reply": self.on_gossip_reply,
                "join": self.on_join, "xfer_done": self.on_xfer_done}

    # ---- views ------------------------------------------------------------------------------

    @property
    def tick(self):
        return self.membership.self_member.heartbeat

    def prefs(self, q):
        """The preference lists of partition q: (current, next or None)."""
        got = self._pref_cache.get(q)
        if got is None:
            old = ring.preference_list(self.owners, q, self.cfg.n)
            new = ring.preference_list(self.next_owners, q, self.cfg.n) \
                if self.next_owners is not None else None
            got = self._pref_cache[q] = (old, new)
        return got

    def is_member(self, q):
        """True when this node keeps partition q's objects (in the current or
        next preference list)."""
        old, new = self.prefs(q)
        return self.node_id in old or (new is not None and self.node_id in new)

    def preference_list(self, key, n=None):
        return ring.preference_list(self.owners, partition_of(key, self.cfg.partitions),
                                    n or self.cfg.n)

    def ring_walk(self, q):
        """Nodes in ring order from partition q, each once."""
        out = []
        count = len(self.owners)
        for step in range(count):
            node = self.owners[(q + step) % count]
            if node not in out:
                out.append(node)
        return out

    def cluster_state(self, now):
        m = self.membership
        return [{"addr": member.addr, "status": m.status(node_id, now), "tick": member.heartbeat}
                for node_id, member in sorted(m.members.items())]

    def claimant(self, now):
        up = [n for n in self.membership.joined() if self.membership.is_up(n, now)]
        return up[0] if up else None

    def transfer_plan(self):
        """Every (partition, source, target) the current transition needs:
        each node leaving a partition's list sends it to each node coming in."""
        if self.next_owners is None:
            return []
        out = []
        for q in range(self.cfg.partitions):
            old, new = self.prefs(q)
            for src in old:
                if src not in new:
                    out.extend((q, src, dst) for dst in new if dst not in old)
        return out

    def info(self, node_id):
        """What node_id last gossiped of itself (hints, handoffs, bytes)."""
        return self._info.get(node_id, (0, {}))[1]

    # ---- what survives a restart ---------------------------------------------------------------

    def restore(self, now):
        """The ring and members this node last knew, so that a restarted node
        rejoins as it was instead of starting alone."""
        raw = self.store.get_meta(b"cluster")
        if raw is None:
            return
        try:
            state = msgpack.unpackb(raw, raw=False)
            version, owners, nxt = state["ring"]
            members = [Member.from_list(m) for m in state["members"]]
            me = state.get("self_state", JOINED)
        except Exception:
            return  # a damaged record: start alone, gossip brings the rest
        if len(owners) == self.cfg.partitions and (nxt is None or len(nxt) == len(owners)):
            self._set_ring(version, owners, nxt, now, persist=False)
        self.membership.merge([m for m in members if m.node_id != self.node_id], now)
        if me == LEAVING:
            self.membership.set_state(LEAVING)

    def _persist(self):
        self.store.put_meta(b"cluster", msgpack.packb(
            {"ring": [self.ring_version, self.owners, self.next_owners],
             "members": [m.to_list() for m in self.membership.entries()],
             "self_state": self.membership.self_member.state}, use_bin_type=True))

    def _set_ring(self, version, owners, nxt, now, persist=True):
        flipped = nxt is None and self.next_owners is not None or owners != self.owners
        self.ring_version, self.owners, self.next_owners = version, owners, nxt
        self._pref_cache = {}
        self._reports = set()
        if flipped:
            self.flipped_at = now
        for listener in self._listeners:
            listener(now)
        if persist:
            self._persist()

    # ---- gossip -------------------------------------------------------------------------------

    def start_round(self, now, handoffs):
        """A gossip round's first half: our heartbeat grows, a join not yet
        answered is sent again, our figures (handoffs: transfers still to
        finish) are refreshed, and the claimant looks at the ring."""
        self.membership.beat()
        if self._joining is not None:
            self._send_join(self._joining)  # the last one may have been lost
        self.refresh_info(now, handoffs)
        self._maybe_claim(now)

    def send_gossip(self):
        """A gossip round's second half: our view to a few peers."""
        for node in self.membership.gossip_targets(self.rng, self.cfg.fanout):
            self.host.send(node, self.gossip_msg("gossip"))

    def refresh_info(self, now, handoffs):
        if now - self._info_at >= INFO_EVERY:
            self._info_at = now
            try:
                self._engine_bytes = engine_bytes(self.store.engine.stats())
            except Exception:
                self._engine_bytes = (-1, -1)
        data, memtable = self._engine_bytes
        self._info[self.node_id] = (self.tick, {
            "hints": self.hints.pending(), "handoffs": handoffs, "data_bytes": data,
            "memtable_bytes": memtable})

    def gossip_msg(self, kind):
        return {"t": kind, "members": [m.to_list() for m in self.membership.entries()],
                "ring": [self.ring_version, self.owners, self.next_owners],
                "info": {n: [hb, info] for n, (hb, info) in self._info.items()}}

    def on_gossip(self, msg, now):
        self._take_gossip(msg, now)
        self.host.send_addr(msg["addr"], self.gossip_msg("gossip_reply"))

    def on_gossip_reply(self, msg, now):
        self._take_gossip(msg, now)
        if self._joining is not None and self.ring_version > 0:
            self._joining = None

    def _take_gossip(self, msg, now):
        changed = self.membership.merge([Member.from_list(m) for m in msg["members"]], now)
        for node, (hb, info) in (msg.get("info") or {}).items():
            if node != self.node_id and isinstance(info, dict) and \
                    hb > self._info.get(node, (-1, None))[0]:
                self._info[node] = (hb, info)
        if not self.take_ring(msg["ring"], now) and changed:
            self._persist()
        if changed:
            self._maybe_claim(now)

    def take_ring(self, item, now):
        """Adopts a ring [version, owners, next] from a peer (checked by the
        message registry) if it is newer (or, at the same version, wins the
        tie); True when it did."""
        version, owners, nxt = (list(item) + [None])[:3]  # [version, owners] is settled
        if version > self.ring_version or (
                version == self.ring_version and [owners, nxt] != [self.owners, self.next_owners]
                and repr([owners, nxt]) > repr([self.owners, self.next_owners])):
            self._set_ring(version, owners, nxt, now)
            return True
        return False

    # ---- join and leave -----------------------------------------------------------------------

    def join(self, addr, now):
        """Joins the cluster the node at addr belongs to: our ring gives way
        to theirs, and their claimant gives us partitions."""
        if addr == self.cfg.addr:
            return c.invalid("a node cannot join itself")
        self.ring_version = 0
        self._joining = addr
        self._send_join(addr)
        return c.Ok()

    def _send_join(self, addr):
        self.host.send_addr(addr, {"t": "join", "member": self.membership.self_member.to_list()})

    def on_join(self, msg, now):
        if self.membership.merge([Member.from_list(msg["member"])], now):
            self._persist()
        self._maybe_claim(now)
        self.host.send_addr(msg["addr"], self.gossip_msg("gossip_reply"))

    def leave(self, now):
        """Starts leaving: the claimant moves our partitions to the others."""
        others = [n for n in self.membership.joined() if n != self.node_id]
        if not others:
            return c.invalid("the only node of a cluster cannot leave it")
        if self.membership.self_member.state == JOINED:
            self.membership.set_state(LEAVING)
            self._persist()
            for node in others:
                self.host.send(node, self.gossip_msg("gossip"))
        return c.Ok("leaving")

    def run_leave(self, now):
        """A leaving node that holds nothing any more says so, then stops."""
        state = self.membership.self_member.state
        if state == LEAVING and self.node_id not in self.owners and self.next_owners is None \
                and not self.hints.pending() and not self.store.held_partitions():
            self.membership.set_state(LEFT)
            self._persist()
            for node in self.membership.gossip_targets(self.rng, len(self.membership.members)):
                self.host.send(node, self.gossip_msg("gossip"))
            self._stop_at = now + 2 * self.cfg.gossip_interval
        if self._stop_at is not None and now >= self._stop_at:
            self.stopped = True
        if self._stop_at is not None:
            self.host.wake(self._stop_at)

    # ---- the claimant ---------------------------------------------------------------------------

    def _maybe_claim(self, now):
        """The claimant plans a new ring when the joined members changed, and
        flips to it once every transfer is reported done.  The claim is
        deterministic and leaves a balanced ring as it is, so two claimants
        agree."""
        if self.ring_version == 0 or self.claimant(now) != self.node_id:
            return
        if self.next_owners is None:
            target = ring.claim(self.owners, self.membership.joined(), self.cfg.n)
            if target != self.owners:
                self._set_ring(self.ring_version + 1, self.owners, target, now)
            return
        plan = self.transfer_plan()
        if all(t in self._reports for t in plan):
            self._set_ring(self.ring_version + 1, self.next_owners, None, now)

    def transfers_done(self, source, done, now):
        """The claimant hears that source finished sending each (partition,
        target) of done (its own report, or one from xfer_done)."""
        self._reports.update((q, source, dst) for q, dst in done)
        self._maybe_claim(now)

    def on_xfer_done(self, msg, now):
        if msg["v"] != self.ring_version or self.next_owners is None:
            return
        self.transfers_done(msg["from"], [(int(q), str(dst)) for q, dst in msg["done"]], now)


def engine_bytes(stats):
    """(bytes of stored data, bytes of the memtable or None) from an engine's
    stats: tables (lsm), data files (bitcask) or the data itself (memory);
    only the LSM has a memtable, whose bytes are its arena, not data."""
    data = stats.get("bytes", stats.get("data_bytes", 0))
    memtable = stats.get("memtable_bytes")
    return int(data), None if memtable is None else int(memtable)
