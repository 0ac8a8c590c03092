"""The node core: every decision a node makes, with no I/O (sans-IO).

The asyncio shell (rldb.net.server) and the simulator (tests) feed it client
commands, peer messages and timer ticks with the current time, and carry out
what it asks for: replies() to clients, messages_to_send() to peers (by
address), and a call to handle_timer() at next_deadline().  Randomness comes
from the rng it is given.  A standalone node is a cluster of one.  When
`stopped` turns true (the node left the cluster) the shell shuts it down.

This module holds the request path: coordinating reads and writes (quorums,
sloppy-quorum stand-ins, read repair, forwarding a write to a replica) and
being a replica (rput, rget, fwd); the per-request state machines are in
coordinator, what a read answers in reads.  The rest of what a node does are parts
it owns and delegates to (as aioquic's QuicConnection does to its recovery
and streams), each with its own state and module:
  topology.Topology         membership, the ring, its transitions, join, leave,
                            the claimant
  handoff.Handoff           hinted handoff and partition transfers
  anti_entropy.AntiEntropy  tictac tree exchanges between replicas
  reaper.Reaper             tombstone collection
  admin.Admin               the admin commands and their views
They act through host.Host (send, wake, op ids, finish a request, apply a
version from elsewhere) and reach one another only where a protocol needs
it, by public methods: handoff, anti-entropy and the reaper read the ring
from the topology, which tells handoff of each ring change (a listener);
admin asks handoff for its transfer rows.

Messages are dicts with a type "t", each defined once in rldb.cluster.messages
(its fields, and the part of the node that handles it); handle_message checks
a message against that definition before its handler runs.  Values that cross
the network (clocks) travel in their stored form, CRC included."""
import heapq
import logging
from collections import OrderedDict
from dataclasses import dataclass

from rldb.cluster import commands as c
from rldb.cluster import context, dvv, messages, objects
from rldb.cluster.admin import Admin
from rldb.cluster.anti_entropy import AntiEntropy
from rldb.cluster.coordinator import ForwardOp, QuorumOp, ReadOp, WriteOp
from rldb.cluster.handoff import Handoff
from rldb.cluster.hints import HintStore
from rldb.cluster.host import Host
from rldb.cluster.membership import Member, Membership
from rldb.cluster.messages import BadMessage, decode_object, reply_from_wire
from rldb.cluster.reads import read_reply
from rldb.cluster.reaper import Reaper
from rldb.cluster.store import partition_of
from rldb.cluster.topology import Topology
from rldb.errors import CorruptionError, InvalidArgumentError, RldbError

log = logging.getLogger("rldb.cluster")
SEEN_FORWARDS = 100_000  # forwarded writes remembered, to drop duplicated deliveries
MAX_HOPS = 2             # a write is forwarded at most this often (rings may disagree)


@dataclass
class CoreConfig:
    node_id: str
    addr: str
    n: int = 1
    r: int = 1
    w: int = 1
    partitions: int = 64
    gossip_interval: float = 0.5
    fanout: int = 2
    request_timeout: float = 5.0
    phi_threshold: float = 8.0
    sloppy_timeout: float = 0.5    # a silent primary gets a stand-in after this
    handoff_rate: float = 20_000   # keys/s to one peer, hints and partition transfers alike
    handoff_batch: int = 256       # keys per handoff message
    aae_interval: float = 0.5      # s between scheduled anti-entropy exchanges (0: off)
    aae_rate: float = 10_000       # keys/s anti-entropy may repair
    tombstone_grace: float = 3600.0  # s a tombstone is kept at least before collection
    forward_timeout: float = 1.25    # s a forward waits for one replica before the next
    floor_retention: float = 86_400.0  # s a collected key's version floor is kept


class NodeCore:
    def __init__(self, cfg, store, rng, generation=1, now=0.0):
        self.cfg = cfg
        self.node_id = cfg.node_id
        self.store = store
        self.hints = HintStore(store)
        self.rng = rng
        self.actor = self._actor(new=False)
        self.membership = Membership(Member(cfg.node_id, cfg.addr, generation, 0),
                                     cfg.phi_threshold, cfg.gossip_interval)
        self._host = host = Host(cfg.node_id, cfg.addr, self.membership, now, self._apply,
                                 self._renew_actor)
        self._ops = {}
        self._timers = []  # heap of (time, op id): deadlines and sloppy deadlines
        self._next_gossip = now
        self._seen_forwards = OrderedDict()  # (addr, generation, op id) of forwards taken
        self.counters = counters = {
            "forwarded": 0, "read_repairs": 0, "bad_messages": 0, "handler_errors": 0,
            "quorum_failures": 0, "hinted_writes": 0, "relayed_writes": 0}
        args = (cfg, host, store)
        self.topology = topology = Topology(*args, self.hints, self.membership, rng, now)
        self.handoff = Handoff(*args, self.hints, self.membership, topology, counters)
        topology.add_ring_listener(self.handoff.ring_changed)
        self.anti_entropy = AntiEntropy(*args, self.membership, topology, rng, counters, now)
        self.reaper = Reaper(*args, self.hints, self.membership, topology, counters)
        self.admin = Admin(cfg, self.membership, topology, self.handoff, self.anti_entropy,
                           self.hints, counters)
        topology.restore(now)
        self._registry = messages.Registry(cfg.partitions)
        self._dispatch = messages.dispatch_table(self.handler_tables())

    # ---- what the shells drive --------------------------------------------------------------

    def handle_client(self, token, cmd, now, hops=0):
        """Takes a client command (hops: how often peers forwarded it already)."""
        try:
            reply = self._client(token, cmd, now, hops)
        except InvalidArgumentError as exc:
            reply = c.invalid(str(exc))
        except CorruptionError as exc:
            reply = c.internal(f"corrupt data: {exc}")
        except RldbError as exc:
            reply = c.internal(str(exc))
        if reply is not None:
            self._host.finish(token, reply)

    def handle_message(self, msg, now):
        """Takes a peer's message, refused (and counted) unless it is one the
        registry defines (rldb.cluster.messages)."""
        if self._registry.problem(msg) is not None:
            self.counters["bad_messages"] += 1
            return
        try:
            self._dispatch[msg["t"]](msg, now)
        except BadMessage:
            self.counters["bad_messages"] += 1
        except Exception:
            self.counters["handler_errors"] += 1
            log.exception("node %s failed handling %r from %s", self.node_id, msg["t"],
                          msg["from"])

    def handler_tables(self):
        """{part of the node: {message type: its handler}}, as the registry
        names the parts."""
        return {"requests": self._request_handlers(), "topology": self.topology.handlers(),
                "handoff": self.handoff.handlers(), "anti_entropy": self.anti_entropy.handlers(),
                "reaper": self.reaper.handlers()}

    def handle_timer(self, now):
        if now >= self._next_gossip:
            self._gossip_round(now)
            self._next_gossip = now + self.cfg.gossip_interval
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, op_id = heapq.heappop(timers)
            op = self._ops.get(op_id)
            if op is not None:
                self._progress(op, now)
        if now >= self._host.wake_at:
            self._host.wake_at = now + self.cfg.gossip_interval
            self.handoff.run(now)
            self.anti_entropy.run(now)
            self.reaper.run(now)
            self.topology.run_leave(now)

    def _gossip_round(self, now):
        """Heartbeat, the claimant's look at the ring, transfers reported to
        it, then our view to a few peers."""
        self.topology.start_round(now, self.handoff.outgoing_pending())
        self.handoff.report_transfers(now)
        self.topology.send_gossip()

    def summary(self):
        """What the doors show of the node (RESP INFO and DBSIZE): keys it
        stores, hints it holds, and its counters."""
        return {"keys": self.store.live_keys(), "hints_pending": self.hints.pending(),
                **self.counters}

    def requests_in_flight(self):
        """Requests this node coordinates that have not finished yet."""
        return len(self._ops)

    def replies(self):
        out, self._host.replies = self._host.replies, []
        return out

    def messages_to_send(self):
        out, self._host.outbox = self._host.outbox, []
        return out

    def next_deadline(self):
        timers = self._timers
        while timers and timers[0][1] not in self._ops:
            heapq.heappop(timers)  # its op is done
        deadline = min(self._next_gossip, self._host.wake_at)
        return min(deadline, timers[0][0]) if timers else deadline

    def _open(self, op):
        """Registers an op and the times it must be looked at again."""
        self._ops[op.op_id] = op
        heapq.heappush(self._timers, (op.deadline, op.op_id))
        if isinstance(op, QuorumOp):
            heapq.heappush(self._timers, (op.sloppy_at, op.op_id))

    def _actor(self, new):
        """The id this node's dots carry.  A counter is only fresh if the
        node still has every dot it issued, so a node that lost data (a
        wiped store, a partition handed away and deleted) takes a new id
        rather than number new versions like ones it forgot."""
        raw = None if new else self.store.get_meta(b"actor")
        if raw is None:
            raw = f"{self.node_id}.{self.rng.getrandbits(32):08x}".encode()
            self.store.put_meta(b"actor", raw)
        return raw.decode()

    def _renew_actor(self):
        self.actor = self._actor(new=True)

    # ---- the parts' views, as the shells and tools see them ----------------------------------

    @property
    def stopped(self):
        """True once the node left the cluster: the shell shuts it down."""
        return self.topology.stopped

    @property
    def ring_version(self):
        return self.topology.ring_version

    @property
    def owners(self):
        return self.topology.owners

    @property
    def next_owners(self):
        return self.topology.next_owners

    def preference_list(self, key, n=None):
        return self.topology.preference_list(key, n)

    def cluster_state(self, now):
        return self.topology.cluster_state(now)

    def claimant(self, now):
        return self.topology.claimant(now)

    def transfer_plan(self):
        return self.topology.transfer_plan()

    def status_view(self, now):
        return self.admin.status_view(now)

    def ring_view(self):
        return self.admin.ring_view()

    def transfers_view(self):
        return self.admin.transfers_view()

    # ---- client commands --------------------------------------------------------------------

    def _client(self, token, cmd, now, hops):
        if isinstance(cmd, c.Get):
            return self._start_read(token, cmd, now)
        if isinstance(cmd, (c.Put, c.Delete)):
            return self._start_write(token, cmd, now, hops)
        if isinstance(cmd, c.Ping):
            return c.Ok("PONG")
        if isinstance(cmd, c.ClusterState):
            return c.Ok(self.topology.cluster_state(now))
        if isinstance(cmd, c.JoinCluster):
            return self.topology.join(cmd.addr, now)
        if isinstance(cmd, c.Stats):
            return c.Ok({"node_id": self.node_id, **self.counters})
        if isinstance(cmd, c.Admin):
            return self.admin.command(token, cmd, now)
        return c.invalid(f"unknown command {cmd!r}")

    def _quorum(self, value, default, name):
        value = default if value is None else value
        if value > self.cfg.n:
            raise InvalidArgumentError(f"{name}={value} is more than n={self.cfg.n}")
        return value

    def _start_write(self, token, cmd, now, hops):
        q = partition_of(cmd.key, self.cfg.partitions)
        old, new = self.topology.prefs(q)
        members = old + [n for n in new if n not in old] if new else old
        if self.node_id not in members:
            if hops >= MAX_HOPS:
                return c.Err("QuorumNotReached", {
                    "operation": "Forward", "errors": [],
                    "reason": "the nodes do not agree yet on who holds this key; retry"})
            return self._forward(token, cmd, members, now, hops)
        return self._coordinate_write(token, cmd, q, old, new, now)

    def _coordinate_write(self, token, cmd, q, old, new, now):
        w = self._quorum(cmd.w, self.cfg.w, "w")
        pw = self._quorum(cmd.pw, 0, "pw")
        raw = self.store.get_raw(cmd.key)
        current = dvv.EMPTY if raw is None else objects.decode(raw, cmd.key)
        value = cmd.value if isinstance(cmd, c.Put) else None
        if cmd.context is None and (value is None or cmd.overwrite):
            vector = dvv.join(current)  # replaces what this replica saw (a delete, a RESP SET)
        else:
            vector = context.decode(cmd.context)
        clock = dvv.update(dvv.new((value, int(now * 1000)), vector), current, self.actor)
        data = objects.encode(clock)
        self.store.write(cmd.key, data, raw, clock)
        self.handoff.note_local_write(q, cmd.key, clock)
        groups = [old] if new is None or new == old else [old, new]
        if len(groups) == 1 and old == [self.node_id] and w <= 1:
            return c.Ok()  # this node is the only replica and one ack is enough
        op = WriteOp(self._host.new_op_id(), token, cmd.key, groups, w, pw,
                     now + self.cfg.request_timeout, now + self.cfg.sloppy_timeout,
                     "Put" if isinstance(cmd, c.Put) else "Delete", data=data)
        op.record_answer(self.node_id)
        for node in op.primaries:  # a node thought down may be up: it costs one message
            if node != self.node_id:
                self._host.send(node, {"t": "rput", "id": op.op_id, "key": cmd.key, "obj": data,
                                  "v": self.topology.ring_version})
                if not self.membership.is_up(node, now):
                    op.down.add(node)
        self._open(op)
        self._progress(op, now)
        return None

    def _start_read(self, token, cmd, now):
        r = self._quorum(cmd.r, self.cfg.r, "r")
        pr = self._quorum(cmd.pr, 0, "pr")
        old, _ = self.topology.prefs(partition_of(cmd.key, self.cfg.partitions))
        if old == [self.node_id] and r <= 1:
            return read_reply(cmd.key, self.store.get(cmd.key))  # the only replica
        op = ReadOp(self._host.new_op_id(), token, cmd.key, [old], r, pr,
                    now + self.cfg.request_timeout, now + self.cfg.sloppy_timeout)
        for node in old:
            if node == self.node_id:
                op.reply(node, self.store.get(cmd.key))
            else:
                self._host.send(node, {"t": "rget", "id": op.op_id, "key": cmd.key})
                if not self.membership.is_up(node, now):
                    op.down.add(node)
        self._open(op)
        self._progress(op, now)
        return None

    def _forward(self, token, cmd, members, now, hops):
        """A write coordinated by a replica: sent to the first one believed up."""
        target = next((n for n in members if self.membership.is_up(n, now)), members[0])
        op = ForwardOp(self._host.new_op_id(), token, target, now + self.cfg.request_timeout)
        self._open(op)
        fields = {"key": cmd.key, "context": cmd.context, "w": cmd.w, "pw": cmd.pw,
                  "hops": hops + 1}
        if isinstance(cmd, c.Put):
            fields["value"] = cmd.value
            fields["overwrite"] = cmd.overwrite
        self._host.send(target, {"t": "fwd", "id": op.op_id,
                            "gen": self.membership.self_member.generation,
                            "kind": "put" if isinstance(cmd, c.Put) else "delete", **fields})
        self.counters["forwarded"] += 1
        return None

    # ---- progress of requests ---------------------------------------------------------------

    def _progress(self, op, now):
        if isinstance(op, ForwardOp):
            outcome = op.outcome(now)
            if outcome is not None:
                op.answered = True
                if isinstance(outcome, c.Err) and outcome.kind == "QuorumNotReached":
                    self.counters["quorum_failures"] += 1
                self._host.finish(op.token, outcome)
                del self._ops[op.op_id]
            return
        if op.down or op.errors or now >= op.sloppy_at:
            self._stand_ins(op, now)
        outcome = op.outcome(now)
        if outcome is not None:
            op.answered = True
            if isinstance(outcome, c.Err):
                self.counters["quorum_failures"] += 1
            elif isinstance(op, ReadOp):
                outcome = read_reply(op.key, op.merged())
            self._host.finish(op.token, outcome)
        if isinstance(op, ReadOp):
            if op.answered and op.finished(now):
                self._read_repair(op)
                del self._ops[op.op_id]
        elif op.answered and (op.finished() or now >= op.deadline):
            del self._ops[op.op_id]

    def _stand_ins(self, op, now):
        """Asks a fallback for every primary that cannot answer (sloppy quorum)."""
        if now >= op.deadline:
            return
        down = {p for p in op.primaries if not self.membership.is_up(p, now)}
        for primary in op.needing_stand_in(now, down):
            fallback = self._fallback(op, now)
            if fallback is None:
                if primary in op.errors:
                    op.failed.add(primary)
                continue
            op.stand_in[primary] = fallback
            op.standing_for[fallback] = primary
            if isinstance(op, WriteOp):
                self._host.send(fallback, {"t": "rput", "id": op.op_id, "key": op.key,
                                      "obj": op.data, "hint": primary})
            elif fallback == self.node_id:
                op.reply(fallback, self.hints.get(primary, op.key))
            else:
                self._host.send(fallback, {"t": "rget", "id": op.op_id, "key": op.key,
                                      "hint": primary})

    def _fallback(self, op, now):
        """The next node up on the ring after the key's primaries that this
        op has not asked yet (Dynamo's sloppy quorum)."""
        q = partition_of(op.key, self.cfg.partitions)
        primaries = set(op.primaries)
        asked = set(op.standing_for) | set(op.errors)
        order = self.topology.ring_walk(q) + self.membership.joined()
        for node in order:
            if node in primaries or node in asked or not self.membership.is_up(node, now):
                continue
            if node == self.node_id and isinstance(op, WriteOp):
                continue
            return node
        return None

    def _read_repair(self, op):
        stale, merged = op.stale()
        if not stale or merged == dvv.EMPTY:
            return
        data = objects.encode(merged)
        for node in stale:
            self.counters["read_repairs"] += 1
            if node == self.node_id:
                self._apply(op.key, merged)
            else:
                self._host.send(node, {"t": "rput", "id": 0, "key": op.key, "obj": data})

    # ---- being a replica ----------------------------------------------------------------------

    def _apply(self, key, clock):
        """A version for key from elsewhere (a replica write, a hint, a
        transfer, a repair): merged into the store where this node is one of
        the key's replicas; otherwise kept as hints for those that are.
        True when the stored object changed."""
        q = partition_of(key, self.cfg.partitions)
        if self.topology.is_member(q):
            if self.store.merge(key, clock):
                self.handoff.note_local_write(q, key, clock)
                return True
            return False
        self.counters["relayed_writes"] += 1
        for node in self.topology.prefs(q)[0]:
            self.hints.add(node, key, clock)
        return False

    def _request_handlers(self):
        return {"rput": self._on_rput, "rput_ok": self._on_rput_ok, "rput_err": self._on_rput_err,
                "rget": self._on_rget, "rget_ok": self._on_rget_ok, "rget_err": self._on_rget_err,
                "fwd": self._on_fwd, "fwd_reply": self._on_fwd_reply}

    def _on_rput(self, msg, now):
        key = _bytes(msg["key"])
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
                self._host.send_addr(msg["addr"], self.topology.gossip_msg("gossip"))
                raise RldbError("this node's ring is behind the coordinator's")
            else:
                self._apply(key, incoming)
            reply = {"t": "rput_ok", "id": msg["id"]}
        except RldbError as exc:
            reply = {"t": "rput_err", "id": msg["id"], "reason": str(exc)}
        if msg["id"]:
            self._host.send_addr(msg["addr"], reply)

    def _on_rput_ok(self, msg, now):
        op = self._ops.get(msg["id"])
        if isinstance(op, WriteOp):
            op.record_answer(msg["from"])
            self._progress(op, now)

    def _on_rput_err(self, msg, now):
        op = self._ops.get(msg["id"])
        if isinstance(op, WriteOp):
            op.record_failure(msg["from"], msg.get("reason", "error"))
            self._progress(op, now)

    def _on_rget(self, msg, now):
        key = _bytes(msg["key"])
        hint = msg.get("hint")
        try:
            clock = self.hints.get(str(hint), key) if hint is not None else self.store.get(key)
            reply = {"t": "rget_ok", "id": msg["id"], "obj": objects.encode(clock)}
        except RldbError as exc:
            reply = {"t": "rget_err", "id": msg["id"], "reason": str(exc)}
        self._host.send_addr(msg["addr"], reply)

    def _on_rget_ok(self, msg, now):
        op = self._ops.get(msg["id"])
        if isinstance(op, ReadOp):
            op.reply(msg["from"], decode_object(msg["obj"], op.key))
            self._progress(op, now)

    def _on_rget_err(self, msg, now):
        op = self._ops.get(msg["id"])
        if isinstance(op, ReadOp):
            op.record_failure(msg["from"], msg.get("reason", "error"))
            self._progress(op, now)

    def _on_fwd(self, msg, now):
        if msg["kind"] == "put" and "value" not in msg:
            raise BadMessage("a forwarded put without a value")
        # The network may deliver a message twice: a write must get one dot.
        # Op ids restart with the sender, so its generation is part of the name.
        seen = (msg["addr"], msg.get("gen"), msg["id"])
        if seen in self._seen_forwards:
            return
        self._seen_forwards[seen] = now
        while len(self._seen_forwards) > SEEN_FORWARDS:
            self._seen_forwards.popitem(last=False)
        key = _bytes(msg["key"])
        quorum = {"w": msg.get("w"), "pw": msg.get("pw")}
        if msg["kind"] == "put":
            cmd = c.Put(key, _bytes(msg["value"]), msg.get("context"), **quorum,
                        overwrite=bool(msg.get("overwrite")))
        else:
            cmd = c.Delete(key, msg.get("context"), **quorum)
        self.handle_client(("fwd", msg["addr"], msg["id"]), cmd, now, int(msg.get("hops", 1)))

    def _on_fwd_reply(self, msg, now):
        op = self._ops.get(msg["id"])
        if isinstance(op, ForwardOp):
            op.reply = reply_from_wire(msg["reply"])
            self._progress(op, now)


def _bytes(value):
    """A key or value as the request messages carry it (bytes, or str)."""
    return value.encode() if isinstance(value, str) else value
