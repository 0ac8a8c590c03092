"""Handing data on: hinted handoff and ownership transfers, both in
acknowledged batches at a bounded rate.

Hints: a fallback delivers the hints it holds for a primary once the
failure detector sees that primary up, one batch in flight per primary,
and deletes each hint only after the primary acknowledged it (and only if
it did not grow meanwhile).  A leaving node hands the hints it still holds
for primaries that are down to another member; hints for a node that left
go to the key's current replicas.

Transfers: during a ring transition each (partition, target) this node
must send is streamed in key order from a cursor that is saved after every
acknowledged batch, so a transfer resumes where it stopped after a crash of
either side (a batch delivered twice merges to the same result).  A
finished transfer is reported to the claimant until the ring flips.  After
a flip, partitions this node no longer replicates are deleted in batches,
a few gossip rounds later (so that reads from nodes still on the old ring
find the data).

The ring is the Topology's: Handoff reads it, adopts the ring a transfer
brings, reports to the claimant through it, and is told of every change
(ring_changed, registered as a listener)."""
import msgpack

from rldb.cluster import objects
from rldb.cluster.membership import JOINED, LEAVING, LEFT
from rldb.cluster.messages import decode_object

MAX_TRANSFERS = 4      # partition transfers in flight at once
DROP_ROUNDS = 4        # gossip rounds between a flip and deleting what moved away
DROP_BATCH = 1000


class Handoff:
    def __init__(self, cfg, host, store, hints, membership, topology, counters):
        self.cfg = cfg
        self.node_id = cfg.node_id
        self.host = host
        self.store = store
        self.hints = hints
        self.membership = membership
        self.topology = topology
        self.counters = counters
        self._hint_flight = {}   # target -> (op id, items, sent at)
        self._hint_next = {}     # target -> earliest time of its next batch
        self._xfer_flight = {}   # (partition, target) -> (op id, last key, last?, sent at, count)
        self._xfer_next = {}     # target -> earliest time of its next batch
        self._xfer_sent = {}     # (partition, target) -> keys acknowledged (progress)
        self.transfers = self._load_transfers()  # persisted: ring version, cursors, done
        counters.update({"hints_delivered": 0, "keys_transferred": 0,
                         "keys_received": 0, "keys_dropped": 0})

    def handlers(self):
        return {"hints": self.on_hints, "hints_ok": self.on_hints_ok, "xfer": self.on_xfer,
                "xfer_ok": self.on_xfer_ok, "xfer_no": self.on_xfer_no}

    # ---- transfer state -------------------------------------------------------------------------

    def _load_transfers(self):
        state = {"v": None, "cursor": {}, "done": set()}
        raw = self.store.get_meta(b"xfer")
        if raw is not None:
            try:
                obj = msgpack.unpackb(raw, raw=False)
                state = {"v": obj["v"], "cursor": {(q, d): k for q, d, k in obj["cursor"]},
                         "done": {(q, d) for q, d in obj["done"]}}
            except Exception:
                pass  # a damaged record: the transfers start over, which is safe
        return state

    def _save_transfers(self):
        x = self.transfers
        self.store.put_meta(b"xfer", msgpack.packb(
            {"v": x["v"], "cursor": [[q, d, k] for (q, d), k in x["cursor"].items()],
             "done": [[q, d] for q, d in x["done"]]}, use_bin_type=True))

    def ring_changed(self, now):
        """The Topology's listener: a new ring starts its transfers afresh."""
        if self.transfers["v"] != self.topology.ring_version:
            self.transfers = {"v": self.topology.ring_version, "cursor": {}, "done": set()}
            self._xfer_sent = {}
        self._xfer_flight = {}
        self.host.wake(now)

    def outgoing_transfers(self):
        return [(q, dst) for q, src, dst in self.topology.transfer_plan() if src == self.node_id]

    def outgoing_pending(self):
        return sum(1 for t in self.outgoing_transfers()
                   if t not in self.transfers["done"] or self.hints.pending_in(t[1], t[0]))

    def transfer_rows(self):
        """One row per outgoing transfer (what the admin command shows)."""
        return [{"partition": q, "to": dst, "keys_sent": self._xfer_sent.get((q, dst), 0),
                 "done": (q, dst) in self.transfers["done"],
                 "in_flight": (q, dst) in self._xfer_flight}
                for q, dst in self.outgoing_transfers()]

    # ---- the background job ---------------------------------------------------------------------

    def run(self, now):
        for target in self.hints.targets():
            self._deliver_hints(target, now)
        if self.topology.next_owners is not None:
            self._run_transfers(now)
        else:
            self._drop_partitions(now)

    def note_local_write(self, q, key, clock):
        """A write this node applied to a partition it is handing away: the
        nodes taking it over get it as a hint too, in case the write came
        from a coordinator that does not know of the transition yet."""
        if self.topology.next_owners is None:
            return
        old, new = self.topology.prefs(q)
        if self.node_id in old and self.node_id not in new:
            for dst in new:
                if dst not in old:
                    self.hints.add(dst, key, clock)

    # ---- hinted handoff -------------------------------------------------------------------------

    def _deliver_hints(self, target, now):
        flight = self._hint_flight.get(target)
        if flight is not None:
            if now - flight[2] < self.cfg.request_timeout:
                return
            del self._hint_flight[target]  # lost on the way: send it again
        at = self._hint_next.get(target, 0.0)
        if now < at:
            self.host.wake(at)
            return
        member = self.membership.members.get(target)
        if target == self.node_id or member is None or member.state == LEFT or (
                member.state == LEAVING and target not in self.topology.owners
                and target not in (self.topology.next_owners or ())):
            self._rehome_hints(target, now)  # it holds no partition any more
            return
        via = target
        if not self.membership.is_up(target, now):
            if self.membership.self_member.state == JOINED:
                return  # wait for it to come back
            via = next((n for n in self.membership.joined() if n not in (target, self.node_id)
                        and self.membership.is_up(n, now)), None)
            if via is None:
                return
        items = self.hints.batch(target, self.cfg.handoff_batch)
        if items:
            op_id = self.host.new_op_id()
            self._hint_flight[target] = (op_id, items, now)
            self.host.send(via, {"t": "hints", "id": op_id, "for": target,
                                 "items": [[k, d] for k, d in items],
                                 "dl": now + self.cfg.request_timeout})

    def _rehome_hints(self, target, now):
        """Hints for a node that is gone (or for this node): to the key's
        replicas as the ring has them now."""
        items = self.hints.batch(target, self.cfg.handoff_batch)
        for key, data in items:
            clock = objects.decode(data, key)
            if target == self.node_id:
                self.host.apply(key, clock)
                continue
            for node in self.topology.preference_list(key):
                if node == self.node_id:
                    self.host.apply(key, clock)
                else:
                    self.hints.add(node, key, clock)
        self.hints.delivered(target, items)
        if items:
            self.host.wake(now)

    def on_hints(self, msg, now):
        target = str(msg["for"])
        for key, data in msg["items"]:
            clock = decode_object(data, key)
            if target == self.node_id:
                self.host.apply(key, clock)
            else:
                self.hints.add(target, key, clock)  # kept for a primary on a leaving node's behalf
        self.host.send_addr(msg["addr"], {"t": "hints_ok", "id": msg["id"], "for": target})

    def on_hints_ok(self, msg, now):
        target = str(msg["for"])
        flight = self._hint_flight.get(target)
        if flight is None or flight[0] != msg["id"]:
            return
        del self._hint_flight[target]
        self.counters["hints_delivered"] += self.hints.delivered(target, flight[1])
        self._hint_next[target] = now + len(flight[1]) / self.cfg.handoff_rate
        self._deliver_hints(target, now)
        if self.topology.next_owners is not None and not self.hints.pending(target):
            self.report_transfers(now)

    # ---- ownership transfers --------------------------------------------------------------------

    def _run_transfers(self, now):
        flights = 0
        for q, dst in self.outgoing_transfers():
            if (q, dst) in self.transfers["done"]:
                continue
            flight = self._xfer_flight.get((q, dst))
            if flight is not None:
                if now - flight[3] < self.cfg.request_timeout:
                    flights += 1
                    continue
                del self._xfer_flight[(q, dst)]  # lost: send that batch again
            if flights >= MAX_TRANSFERS:
                break
            if not self.membership.is_up(dst, now):
                continue
            at = self._xfer_next.get(dst, 0.0)
            if now < at:
                self.host.wake(at)
                continue
            self._send_transfer(q, dst, now)
            flights += 1

    def _send_transfer(self, q, dst, now):
        cursor = self.transfers["cursor"].get((q, dst))
        items = self.store.partition_raw(q, after=cursor, limit=self.cfg.handoff_batch)
        last = len(items) < self.cfg.handoff_batch
        op_id = self.host.new_op_id()
        self._xfer_flight[(q, dst)] = (op_id, items[-1][0] if items else cursor, last, now,
                                       len(items))
        t = self.topology
        self.host.send(dst, {"t": "xfer", "id": op_id, "v": t.ring_version, "q": q,
                             "ring": [t.ring_version, t.owners, t.next_owners],
                             "items": [[k, d] for k, d in items], "last": last,
                             "dl": now + self.cfg.request_timeout})

    def on_xfer(self, msg, now):
        # The target may not have heard of the transition yet (gossip is
        # slower than the stream): the batch brings the ring with it.
        if msg["v"] > self.topology.ring_version and "ring" in msg:
            self.topology.take_ring(msg["ring"], now)
        q = int(msg["q"])
        if not self.topology.is_member(q):
            # applied here the keys would only be relayed on: refuse the
            # batch, the sender sends it again later
            self.host.send_addr(msg["addr"], {"t": "xfer_no", "id": msg["id"], "q": q})
            return
        for key, data in msg["items"]:
            self.host.apply(key, decode_object(data, key))
        self.counters["keys_received"] += len(msg["items"])
        self.host.send_addr(msg["addr"], {"t": "xfer_ok", "id": msg["id"], "q": msg["q"]})

    def on_xfer_no(self, msg, now):
        name = (int(msg["q"]), msg["from"])
        flight = self._xfer_flight.get(name)
        if flight is not None and flight[0] == msg["id"]:
            del self._xfer_flight[name]
            self._xfer_next[name[1]] = now + self.cfg.gossip_interval
            self.host.wake(now + self.cfg.gossip_interval)

    def on_xfer_ok(self, msg, now):
        name = (int(msg["q"]), msg["from"])
        flight = self._xfer_flight.get(name)
        if flight is None or flight[0] != msg["id"]:
            return
        del self._xfer_flight[name]
        _, last_key, last, _, count = flight
        self.counters["keys_transferred"] += count
        self._xfer_sent[name] = self._xfer_sent.get(name, 0) + count
        if last:
            self.transfers["done"].add(name)
        elif last_key is not None:
            self.transfers["cursor"][name] = last_key
        self._save_transfers()
        self._xfer_next[name[1]] = now + count / self.cfg.handoff_rate
        if last:
            self.report_transfers(now)
        self._run_transfers(now)

    def report_transfers(self, now):
        """Tells the claimant which of our transfers are done (again each
        gossip round until the ring flips: a report may be lost)."""
        if self.topology.next_owners is None:
            return
        # a write that reached us after the stream passed its key is a hint
        # for the target; the transfer is only whole once those are delivered
        done = sorted(t for t in self.transfers["done"] if not self.hints.pending_in(t[1], t[0]))
        if not done:
            return
        claimant = self.topology.claimant(now)
        if claimant == self.node_id:
            self.topology.transfers_done(self.node_id, done, now)
        elif claimant is not None:
            self.host.send(claimant, {"t": "xfer_done", "v": self.topology.ring_version,
                                      "done": [[q, d] for q, d in done]})

    def _drop_partitions(self, now):
        at = self.topology.flipped_at + DROP_ROUNDS * self.cfg.gossip_interval
        if now < at:
            self.host.wake(at)
            return
        for q in self.store.held_partitions():
            if not self.topology.is_member(q):
                self.counters["keys_dropped"] += self.store.drop_partition(q, DROP_BATCH)
                self.host.renew_actor()  # what it dropped held dots of ours
                self.host.wake(now)
                return
