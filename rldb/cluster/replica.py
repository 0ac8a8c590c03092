"""Being a replica: what a node does with the versions other nodes send it.

Every version from elsewhere (a coordinator's replica write, a stand-in's
hint, a read repair, a transfer, anti-entropy) arrives through apply():
merged into the store where this node replicates the key (through the
key's floor if its tombstone was collected, so what that tombstone covered
stays deleted), kept as hints for the replicas otherwise.  A replica write
that asks for an answer gets one; a read gets this node's copy (or the hint
it holds for a primary)."""
from rldb.cluster import objects
from rldb.cluster.messages import decode_object
from rldb.cluster.store import partition_of
from rldb.errors import RldbError


class Replica:
    def __init__(self, cfg, host, store, hints, topology, handoff, counters):
        self.cfg = cfg
        self.node_id = cfg.node_id
        self.host = host
        self.store = store
        self.hints = hints
        self.topology = topology
        self.handoff = handoff
        self.counters = counters

    def handlers(self):
        return {"rput": self.on_rput, "rget": self.on_rget}

    def apply(self, key, clock):
        """A version for key from elsewhere: True when the stored object changed."""
        q = partition_of(key, self.cfg.partitions)
        if self.topology.is_member(q):
            until_ms = int((self.host.now + self.cfg.floor_retention) * 1000)
            if self.store.merge(key, clock, until_ms):
                self.handoff.note_local_write(q, key, clock)
                return True
            return False
        self.counters["relayed_writes"] += 1
        for node in self.topology.prefs(q)[0]:
            self.hints.add(node, key, clock)
        return False

    def on_rput(self, msg, now):
        key = as_bytes(msg["key"])
        incoming = decode_object(msg["obj"], key)
        hint = msg.get("hint")
        try:
            if hint is not None and hint != self.node_id:
                self.hints.add(str(hint), key, incoming)
                self.counters["hinted_writes"] += 1
            elif msg.get("v", 0) > self.topology.ring_version and \
                    not self.topology.is_member(partition_of(key, self.cfg.partitions)):
                # the coordinator knows a newer ring, where we are a replica:
                # not acknowledged (a stand-in takes it), and we ask for that ring
                self.host.send_addr(msg["addr"], self.topology.gossip_msg("gossip"))
                raise RldbError("this node's ring is behind the coordinator's")
            else:
                self.apply(key, incoming)
            reply = {"t": "rput_ok", "id": msg["id"]}
        except RldbError as exc:
            reply = {"t": "rput_err", "id": msg["id"], "reason": str(exc)}
        if msg["id"]:
            self.host.send_addr(msg["addr"], reply)

    def on_rget(self, msg, now):
        key = as_bytes(msg["key"])
        hint = msg.get("hint")
        try:
            clock = self.hints.get(str(hint), key) if hint is not None else self.store.get(key)
            reply = {"t": "rget_ok", "id": msg["id"], "obj": objects.encode(clock)}
        except RldbError as exc:
            reply = {"t": "rget_err", "id": msg["id"], "reason": str(exc)}
        self.host.send_addr(msg["addr"], reply)


def as_bytes(value):
    """A key or value as the request messages carry it (bytes, or str)."""
    return value.encode() if isinstance(value, str) else value
