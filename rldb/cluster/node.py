"""The node core: every decision a node makes, with no I/O (sans-IO).

The asyncio shell (rldb.net.server) and the simulator (tests) feed it client
commands, peer messages and timer ticks with the current time, and carry out
what it asks for: replies() to clients, messages_to_send() to peers (by
address), and a call to handle_timer() at next_deadline().  Randomness comes
from the rng it is given.  A standalone node is a cluster of one.  When
`stopped` turns true (the node left the cluster) the shell shuts it down.

This module holds the request path: coordinating reads and writes (quorums,
sloppy-quorum stand-ins, read repair, forwarding a write to a replica, and
taking a forward); the per-request state machines are in coordinator, what
a read answers in reads, being a replica in replica.  Any message may
carry a deadline ("dl", wall-clock seconds, as the coordinator set it): one
that arrives later (by more than the clock skew allowed, clock_skew) is
dropped unread and counted (expired_requests), so work that waited out a
partition in a queue is not done after its requester gave up.  The rest of what a node does are parts
it owns and delegates to (as aioquic's QuicConnection does to its recovery
and streams), each with its own state and module:
  topology.Topology         membership, the ring, its transitions, join, leave,
                            the claimant
  handoff.Handoff           hinted handoff and partition transfers
  anti_entropy.AntiEntropy  tictac tree exchanges between replicas
  reaper.Reaper             tombstone collection
  admin.Admin               the admin commands and their views
  replica.Replica           versions from elsewhere, replica writes and reads
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
from collections import Counter
from dataclasses import dataclass

from rldb.cluster import commands as c
from rldb.cluster import context, dvv, messages, objects
from rldb.cluster.admin import Admin
from rldb.cluster.anti_entropy import AntiEntropy
from rldb.cluster.coordinator import QuorumOp, ReadOp, WriteOp, cannot_write, failure
from rldb.cluster.forwarding import ForwardOp, Offers
from rldb.cluster.floors import DotFloor
from rldb.cluster.handoff import Handoff
from rldb.cluster.hints import HintStore
from rldb.cluster.host import Host
from rldb.cluster.membership import Member, Membership
from rldb.cluster.messages import BadMessage, decode_object, reply_from_wire
from rldb.cluster.reads import read_reply
from rldb.cluster.reaper import Reaper
from rldb.cluster.replica import Replica, as_bytes
from rldb.cluster.store import partition_of
from rldb.cluster.topology import Topology
from rldb.errors import CorruptionError, InvalidArgumentError, RldbError

log = logging.getLogger("rldb.cluster")
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
    clock_skew: float = 1.0          # s nodes' clocks may differ: a deadline is late past it


class NodeCore:
    def __init__(self, cfg, store, rng, generation=1, now=0.0):
        self.cfg = cfg
        self.node_id = cfg.node_id
        self.store = store
        self.hints = HintStore(store)
        self.rng = rng
        self.actor = self._actor(new=False)
        self.dot_floor = DotFloor(store, self.actor)
        self.membership = Membership(Member(cfg.node_id, cfg.addr, generation, 0),
                                     cfg.phi_threshold, cfg.gossip_interval)
        self._host = host = Host(cfg.node_id, cfg.addr, self.membership, now, self._apply,
                                 self._renew_actor, self._key_busy)
        self._ops = {}
        self._busy = Counter()  # key -> requests in flight on it
        self._timers = []  # heap of (time, op id): deadlines and sloppy deadlines
        self._next_gossip = now
        self._offers = Offers()  # forwarded writes offered to this node
        self.counters = counters = {
            "forwarded": 0, "read_repairs": 0, "bad_messages": 0, "handler_errors": 0,
            "quorum_failures": 0, "hinted_writes": 0, "relayed_writes": 0,
            "expired_requests": 0, "forward_retries": 0, "forwards_coordinated": 0}
        args = (cfg, host, store)
        self.topology = topology = Topology(*args, self.hints, self.membership, rng, now)
        self.handoff = Handoff(*args, self.hints, self.membership, topology, counters)
        topology.add_ring_listener(self.handoff.ring_changed)
        self.anti_entropy = AntiEntropy(*args, self.membership, topology, rng, counters, now)
        self.reaper = Reaper(*args, self.hints, self.membership, topology, counters)
        self.replica = Replica(*args, self.hints, topology, self.handoff, counters)
        self.admin = Admin(cfg, self.membership, topology, self.handoff, self.anti_entropy,
                           self.hints, counters)
        topology.restore(now)
        self._registry = messages.Registry(cfg.partitions)
        self._dispatch = messages.dispatch_table(self.handler_tables())

    # ---- what the shells drive --------------------------------------------------------------

    def handle_client(self, token, cmd, now, hops=0, end=None):
        """Takes a client command (hops: how often peers forwarded it
        already; end: when its requester gives up, if sooner than ours)."""
        try:
            reply = self._client(token, cmd, now, hops, end)
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
        self._host.now = now
        if self._registry.problem(msg) is not None:
            self.counters["bad_messages"] += 1
            return
        if msg.get("dl", now) < now - self.cfg.clock_skew:
            self.counters["expired_requests"] += 1
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
        return {"requests": self._request_handlers(), "replica": self.replica.handlers(),
                "topology": self.topology.handlers(),
                "handoff": self.handoff.handlers(), "anti_entropy": self.anti_entropy.handlers(),
                "reaper": self.reaper.handlers()}

    def handle_timer(self, now):
        self._host.now = now
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
                **self.figures()}

    def figures(self):
        """The node's counters, with the versions its floors absorbed."""
        return {**self.counters, "floor_absorbed": self.store.floors.absorbed}

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
        self._busy[op.key] += 1
        heapq.heappush(self._timers, (op.deadline, op.op_id))
        if isinstance(op, QuorumOp):
            heapq.heappush(self._timers, (op.sloppy_at, op.op_id))

    def _close(self, op):
        del self._ops[op.op_id]
        self._busy[op.key] -= 1
        if not self._busy[op.key]:
            del self._busy[op.key]

    def _key_busy(self, key):
        return key in self._busy

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
        self.dot_floor.reset_actor(self.actor)

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

    def _client(self, token, cmd, now, hops, end):
        if isinstance(cmd, c.Get):
            return self._start_read(token, cmd, now)
        if isinstance(cmd, (c.Put, c.Delete)):
            return self._start_write(token, cmd, now, hops, end)
        if isinstance(cmd, c.Ping):
            return c.Ok("PONG")
        if isinstance(cmd, c.ClusterState):
            return c.Ok(self.topology.cluster_state(now))
        if isinstance(cmd, c.JoinCluster):
            return self.topology.join(cmd.addr, now)
        if isinstance(cmd, c.Stats):
            return c.Ok({"node_id": self.node_id, **self.figures()})
        if isinstance(cmd, c.Admin):
            return self.admin.command(token, cmd, now)
        return c.invalid(f"unknown command {cmd!r}")

    def _quorum(self, value, default, name):
        value = default if value is None else value
        if value > self.cfg.n:
            raise InvalidArgumentError(f"{name}={value} is more than n={self.cfg.n}")
        return value

    def _start_write(self, token, cmd, now, hops, end=None):
        self._quorum(cmd.w, self.cfg.w, "w")  # refused here, not later on a timer
        self._quorum(cmd.pw, 0, "pw")
        q = partition_of(cmd.key, self.cfg.partitions)
        old, new = self.topology.prefs(q)
        members = old + [n for n in new if n not in old] if new else old
        if self.node_id in members:
            return self._coordinate_write(token, cmd, q, old, new, now, end)
        if hops >= MAX_HOPS:
            return failure("Forward", "the nodes do not agree yet on who holds this key; retry",
                           False)
        targets = [n for n in members if self.membership.is_up(n, now)]
        deadline = min(end or now + self.cfg.request_timeout, now + self.cfg.request_timeout)
        op = ForwardOp(self._host.new_op_id(), token, cmd.key, cmd, hops, targets, deadline,
                       self.membership.self_member.generation)
        self._open(op)
        self._progress(op, now)
        return None

    def _coordinate_write(self, token, cmd, q, old, new, now, end=None, proxy=False):
        """Coordinates a write as one of its replicas (stored here first) or,
        proxy, as a node that holds none of them, when no replica took the
        forward: then the dot is of an actor of its own (this node has no
        history of the key to number it in), and this node may stand in."""
        w = self._quorum(cmd.w, self.cfg.w, "w")
        pw = self._quorum(cmd.pw, 0, "pw")
        groups = [old] if new is None or new == old else [old, new]
        problem = cannot_write(self.membership, groups, w, pw, now)
        if problem is not None:
            return failure("Put" if isinstance(cmd, c.Put) else "Delete", problem, False)
        if proxy:
            raw, current, floored = None, dvv.EMPTY, False
            actor = f"{self.actor}~{self.rng.getrandbits(48):012x}"
        else:
            raw, current, floored = self.store.current(cmd.key)
            actor = self.actor
        value = cmd.value if isinstance(cmd, c.Put) else None
        if cmd.context is None and (value is None or cmd.overwrite):
            vector = dvv.join(current)  # replaces what this replica saw (a delete, a RESP SET)
        else:
            vector = context.decode(cmd.context)
        clock = dvv.update(dvv.new((value, int(now * 1000)), vector), current, actor,
                           self.dot_floor.dot_floor)
        data = objects.encode(clock)
        if not proxy:
            self.dot_floor.issued(clock)
            self.store.write(cmd.key, data, raw, clock, floored)
            self.handoff.note_local_write(q, cmd.key, clock)
            if len(groups) == 1 and old == [self.node_id] and w <= 1:
                return c.Ok()  # this node is the only replica and one ack is enough
        deadline = min(end or now + self.cfg.request_timeout, now + self.cfg.request_timeout)
        op = WriteOp(self._host.new_op_id(), token, cmd.key, groups, w, pw, deadline,
                     now + self.cfg.sloppy_timeout,
                     "Put" if isinstance(cmd, c.Put) else "Delete", data=data, clock=clock,
                     proxy=proxy)
        if not proxy:
            op.record_answer(self.node_id)
        for node in op.primaries:  # a node thought down may be up: it costs one message
            if node != self.node_id:
                self._host.send(node, {"t": "rput", "id": op.op_id, "key": cmd.key, "obj": data,
                                       "v": self.topology.ring_version, "dl": deadline})
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

    def _advance_forward(self, op, now):
        """Offers the write to the next replica when the current one did not
        answer in time; coordinates it here when none is left."""
        if op.answered or op.reply is not None:
            return
        again = op.again(now, self.cfg.forward_timeout)
        if again is not None:
            self._host.send(op.target, again)
            heapq.heappush(self._timers, (op.resend_at, op.op_id))
        if not op.must_move_on(now):
            return
        if op.targets and now < op.deadline:
            if op.tried:
                self.counters["forward_retries"] += 1
            msg = op.next_offer(now, self.cfg.forward_timeout)
            heapq.heappush(self._timers, (op.attempt_at, op.op_id))
            heapq.heappush(self._timers, (op.resend_at, op.op_id))
            self._host.send(op.target, msg)
            self.counters["forwarded"] += 1
            return
        if now >= op.deadline:
            return  # too late to coordinate it here: the op fails
        self._close(op)
        op.answered = True
        cmd = op.cmd
        if cmd.context is None and (isinstance(cmd, c.Delete) or cmd.overwrite):
            reply = failure("Forward", "no replica took the write, and without a context only "
                            "a replica can coordinate it", False)
        else:
            self.counters["forwards_coordinated"] += 1
            q = partition_of(cmd.key, self.cfg.partitions)
            old, new = self.topology.prefs(q)
            reply = self._coordinate_write(op.token, cmd, q, old, new, now, op.deadline, True)
        if reply is not None:
            self._finish(op.token, reply)

    def _finish(self, token, reply):
        if isinstance(reply, c.Err) and reply.kind == "QuorumNotReached":
            self.counters["quorum_failures"] += 1
        self._host.finish(token, reply)

    # ---- progress of requests ---------------------------------------------------------------

    def _progress(self, op, now):
        if isinstance(op, ForwardOp):
            self._advance_forward(op, now)
            outcome = op.outcome(now)
            if outcome is not None:
                op.answered = True
                self._finish(op.token, outcome)
                self._close(op)
            return
        if op.down or op.errors or now >= op.sloppy_at:
            self._stand_ins(op, now)
        outcome = op.outcome(now)
        if outcome is not None:
            op.answered = True
            if isinstance(op, ReadOp) and not isinstance(outcome, c.Err):
                outcome = read_reply(op.key, op.merged())
            self._finish(op.token, outcome)
        if isinstance(op, ReadOp):
            if op.answered and op.finished(now):
                self._read_repair(op, now)
                self._close(op)
        elif op.answered and (op.finished() or now >= op.deadline):
            self._close(op)

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
            if isinstance(op, WriteOp) and fallback == self.node_id:
                self.hints.add(primary, op.key, op.clock)  # a write coordinated as a proxy
                self.counters["hinted_writes"] += 1
                op.record_answer(fallback)
            elif isinstance(op, WriteOp):
                self._host.send(fallback, {"t": "rput", "id": op.op_id, "key": op.key,
                                           "obj": op.data, "hint": primary, "dl": op.deadline})
            elif fallback == self.node_id:
                op.reply(fallback, self.hints.get(primary, op.key))
            else:
                self._host.send(fallback, {"t": "rget", "id": op.op_id, "key": op.key,
                                           "hint": primary, "dl": op.deadline})

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
            if node == self.node_id and isinstance(op, WriteOp) and not op.proxy:
                continue  # it coordinates as a replica, stored already
            return node
        return None

    def _read_repair(self, op, now):
        stale, merged = op.stale()
        if not stale or merged == dvv.EMPTY:
            return
        data = objects.encode(merged)
        for node in stale:
            self.counters["read_repairs"] += 1
            if node == self.node_id:
                self._apply(op.key, merged)
            else:
                self._host.send(node, {"t": "rput", "id": 0, "key": op.key, "obj": data,
                                       "dl": now + self.cfg.request_timeout})

    # ---- being a replica, taking a forward ------------------------------------------------

    def _apply(self, key, clock):
        return self.replica.apply(key, clock)

    def _request_handlers(self):
        return {"rput_ok": self._on_rput_ok,
                "rput_err": self._on_rput_err, "rget_ok": self._on_rget_ok,
                "rget_err": self._on_rget_err, "fwd": self._on_fwd, "fwd_ack": self._on_fwd_ack,
                "fwd_go": self._on_fwd_go, "fwd_reply": self._on_fwd_reply}

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
        """An offer of a write to coordinate for a node that holds no
        replica of it: answered (fwd_ack), and done when told to go."""
        if msg["kind"] == "put" and "value" not in msg:
            raise BadMessage("a forwarded put without a value")
        key = as_bytes(msg["key"])
        quorum = {"w": msg.get("w"), "pw": msg.get("pw")}
        if msg["kind"] == "put":
            cmd = c.Put(key, as_bytes(msg["value"]), msg.get("context"), **quorum,
                        overwrite=bool(msg.get("overwrite")))
        else:
            cmd = c.Delete(key, msg.get("context"), **quorum)
        # Op ids restart with the sender, so its generation is part of the name.
        self._offers.offered((msg["addr"], msg.get("gen"), msg["id"]), cmd,
                             int(msg.get("hops", 1)), msg.get("end"))
        self._host.send_addr(msg["addr"], {"t": "fwd_ack", "id": msg["id"]})

    def _on_fwd_go(self, msg, now):
        token = ("fwd", msg["addr"], msg["id"])
        what = self._offers.go((msg["addr"], msg.get("gen"), msg["id"]), now)
        if what[0] == "start":
            cmd, hops, end = what[1]
            self.handle_client(token, cmd, now, hops, end)
        elif what[0] == "late":
            self._host.finish(token, failure("Forward", "the write came too late", False))
        elif what[0] == "unknown":
            self._host.finish(token, failure("Forward", "this node no longer knows the write "
                                             "(it restarted since)", True))

    def _on_fwd_ack(self, msg, now):
        op = self._ops.get(msg["id"])
        if isinstance(op, ForwardOp) and op.on_ready(msg["from"]):
            self._host.send(op.target, op.go())
            heapq.heappush(self._timers, (op.resend_at, op.op_id))

    def _on_fwd_reply(self, msg, now):
        op = self._ops.get(msg["id"])
        if isinstance(op, ForwardOp):
            op.on_reply(msg["from"], reply_from_wire(msg["reply"]))
            self._progress(op, now)
