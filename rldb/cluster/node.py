"""The node core: every decision a node makes, with no I/O (sans-IO).

The asyncio shell (rldb.net.server) and the simulator (tests) feed it client
commands, peer messages and timer ticks with the current time, and carry out
what it asks for: replies() to clients, messages_to_send() to peers (by
address), and a call to handle_timer() at next_deadline().  Randomness comes
from the rng it is given.  A standalone node is a cluster of one.

Messages are dicts with a type "t" (see _on_* below); values that cross the
network (clocks) travel in their stored form, CRC included."""
from collections import OrderedDict
from dataclasses import dataclass

import msgpack

from rldb.cluster import commands as c
from rldb.cluster import context, dvv, objects, ring
from rldb.cluster.coordinator import ReadOp, WriteOp
from rldb.cluster.membership import Member, Membership
from rldb.cluster.node_reads import read_reply
from rldb.cluster.store import partition_of
from rldb.errors import CorruptionError, InvalidArgumentError, RldbError


SEEN_FORWARDS = 100_000  # forwarded writes remembered, to drop duplicated deliveries


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


class NodeCore:
    def __init__(self, cfg, store, rng, generation=1, now=0.0):
        self.cfg = cfg
        self.node_id = cfg.node_id
        self.store = store
        self.rng = rng
        self.membership = Membership(Member(cfg.node_id, cfg.addr, generation, 0),
                                     cfg.phi_threshold, cfg.gossip_interval)
        self.ring_version = 1
        self.owners = ring.initial(cfg.partitions, [cfg.node_id], cfg.n)
        self._restore(now)
        self._replies = []
        self._outbox = []
        self._ops = {}
        self._next_op = 0
        self._next_gossip = now
        self._seen_forwards = OrderedDict()  # (addr, generation, op id) of forwards taken
        self._joining = None  # the address we are joining through, until it answers
        self.counters = {"forwarded": 0, "read_repairs": 0, "bad_messages": 0,
                         "quorum_failures": 0}

    # ---- what the shells drive --------------------------------------------------------------

    def handle_client(self, token, cmd, now, forwarded=False):
        """Takes a client command (forwarded: a peer sent it on to this node)."""
        try:
            reply = self._client(token, cmd, now, forwarded)
        except InvalidArgumentError as exc:
            reply = c.invalid(str(exc))
        except CorruptionError as exc:
            reply = c.internal(f"corrupt data: {exc}")
        except RldbError as exc:
            reply = c.internal(str(exc))
        if reply is not None:
            self._finish(token, reply)

    def _finish(self, token, reply):
        """A reply for a client, or for the peer that forwarded the request."""
        if isinstance(token, tuple) and token and token[0] == "fwd":
            _, addr, op_id = token
            self._send_addr(addr, {"t": "fwd_reply", "id": op_id, "reply": _reply_to_wire(reply)})
        else:
            self._replies.append((token, reply))

    def handle_message(self, msg, now):
        handler = getattr(self, "_on_" + str(msg.get("t")), None) if isinstance(msg, dict) else None
        if handler is None or not isinstance(msg.get("addr"), str) or \
                not isinstance(msg.get("from"), str):
            self.counters["bad_messages"] += 1
            return
        try:
            handler(msg, now)
        except (KeyError, TypeError, ValueError, CorruptionError, InvalidArgumentError):
            self.counters["bad_messages"] += 1

    def handle_timer(self, now):
        if now >= self._next_gossip:
            if self._joining is not None:
                self._send_join(self._joining)  # the last one may have been lost
            self._gossip(now)
            self._next_gossip = now + self.cfg.gossip_interval
        for op in list(self._ops.values()):
            self._progress(op, now)

    def replies(self):
        out, self._replies = self._replies, []
        return out

    def messages_to_send(self):
        out, self._outbox = self._outbox, []
        return out

    def next_deadline(self):
        if not self._ops:
            return self._next_gossip
        deadlines = [self._next_gossip] + [op.deadline for op in self._ops.values()]
        return min(deadlines)

    # ---- what survives a restart ---------------------------------------------------------------

    def _restore(self, now):
        """The ring and members this node last knew, so that a restarted node
        rejoins as it was instead of starting alone."""
        raw = self.store.get_meta(b"cluster")
        if raw is None:
            return
        try:
            state = msgpack.unpackb(raw, raw=False)
            version, owners = state["ring"]
            members = [Member.from_list(m) for m in state["members"]]
        except Exception:
            return  # a damaged record: start alone, gossip brings the rest
        if len(owners) == self.cfg.partitions:
            self.ring_version, self.owners = version, owners
        self.membership.merge([m for m in members if m.node_id != self.node_id], now)

    def _persist(self):
        self.store.put_meta(b"cluster", msgpack.packb(
            {"ring": [self.ring_version, self.owners],
             "members": [m.to_list() for m in self.membership.entries()]}, use_bin_type=True))

    # ---- views ------------------------------------------------------------------------------

    @property
    def tick(self):
        return self.membership.self_member.heartbeat

    def preference_list(self, key, n=None):
        return ring.preference_list(self.owners, partition_of(key, self.cfg.partitions),
                                    n or self.cfg.n)

    def cluster_state(self, now):
        m = self.membership
        return [{"addr": member.addr, "status": m.status(node_id, now), "tick": member.heartbeat}
                for node_id, member in sorted(m.members.items())]

    def _send(self, node_id, msg):
        msg["from"] = self.node_id
        msg["addr"] = self.cfg.addr
        self._outbox.append((self.membership.addr(node_id), msg))

    def _send_addr(self, addr, msg):
        msg["from"] = self.node_id
        msg["addr"] = self.cfg.addr
        self._outbox.append((addr, msg))

    def _new_op_id(self):
        self._next_op += 1
        return self._next_op

    # ---- client commands --------------------------------------------------------------------

    def _client(self, token, cmd, now, forwarded):
        if isinstance(cmd, c.Get):
            return self._start_read(token, cmd, now)
        if isinstance(cmd, (c.Put, c.Delete)):
            return self._start_write(token, cmd, now, forwarded)
        if isinstance(cmd, c.Ping):
            return c.Ok("PONG")
        if isinstance(cmd, c.ClusterState):
            return c.Ok(self.cluster_state(now))
        if isinstance(cmd, c.JoinCluster):
            return self._join(cmd.addr, now)
        if isinstance(cmd, c.Stats):
            return c.Ok({"node_id": self.node_id, **self.counters})
        return c.invalid(f"unknown command {cmd!r}")

    def _quorum(self, value, default, name):
        value = default if value is None else value
        if value > self.cfg.n:
            raise InvalidArgumentError(f"{name}={value} is more than n={self.cfg.n}")
        return value

    def _start_write(self, token, cmd, now, forwarded):
        pref = self.preference_list(cmd.key)
        if self.node_id not in pref:
            if not forwarded:
                return self._forward(token, cmd, pref, now)
            # The rings disagree for the moment: coordinate here rather than
            # forward again (the version is kept here too until the rings agree).
            pref = pref + [self.node_id]
        return self._coordinate_write(token, cmd, pref, now)

    def _coordinate_write(self, token, cmd, pref, now):
        w = self._quorum(cmd.w, self.cfg.w, "w")
        current = self.store.get(cmd.key)
        value = cmd.value if isinstance(cmd, c.Put) else None
        if value is None and cmd.context is None:
            vector = dvv.join(current)  # a delete without context: what this replica saw
        else:
            vector = context.decode(cmd.context)
        clock = dvv.update(dvv.new((value, int(now * 1000)), vector), current, self.node_id)
        data = objects.encode(clock)
        self.store.put_encoded(cmd.key, data)
        if len(pref) == 1 and w == 1:
            return c.Ok()  # this node is the only replica and one ack is enough
        op = WriteOp(self._new_op_id(), token, cmd.key, clock, pref, w,
                     now + self.cfg.request_timeout,
                     "Put" if isinstance(cmd, c.Put) else "Delete")
        op.ack(self.node_id)
        for node in pref:
            if node != self.node_id:
                self._send(node, {"t": "rput", "id": op.op_id, "key": cmd.key, "obj": data})
        self._ops[op.op_id] = op
        self._progress(op, now)
        return None

    def _start_read(self, token, cmd, now):
        r = self._quorum(cmd.r, self.cfg.r, "r")
        pref = self.preference_list(cmd.key)
        if pref == [self.node_id] and r == 1:
            return read_reply(cmd.key, self.store.get(cmd.key))  # the only replica
        op = ReadOp(self._new_op_id(), token, cmd.key, pref, r, now + self.cfg.request_timeout)
        for node in pref:
            if node == self.node_id:
                op.reply(node, self.store.get(cmd.key))
            else:
                self._send(node, {"t": "rget", "id": op.op_id, "key": cmd.key})
        self._ops[op.op_id] = op
        self._progress(op, now)
        return None

    def _forward(self, token, cmd, pref, now):
        """A write coordinated by a replica: sent to the first one believed up."""
        target = next((n for n in pref if self.membership.is_up(n, now)), pref[0])
        op = WriteOp(self._new_op_id(), token, cmd.key, None, [target], 1,
                     now + self.cfg.request_timeout, "Forward")
        self._ops[op.op_id] = op
        fields = {"key": cmd.key, "context": cmd.context, "w": cmd.w}
        if isinstance(cmd, c.Put):
            fields["value"] = cmd.value
        self._send(target, {"t": "fwd", "id": op.op_id,
                            "gen": self.membership.self_member.generation,
                            "kind": "put" if isinstance(cmd, c.Put) else "delete", **fields})
        self.counters["forwarded"] += 1
        return None

    def _progress(self, op, now):
        outcome = op.outcome(now)
        if outcome is not None:
            op.answered = True
            if isinstance(outcome, c.Err):
                self.counters["quorum_failures"] += 1
            elif isinstance(op, ReadOp):
                outcome = read_reply(op.key, op.merged())
            elif op.operation == "Forward":
                outcome = op.forwarded_reply
            self._finish(op.token, outcome)
        if isinstance(op, ReadOp):
            if op.answered and op.finished(now):
                self._read_repair(op)
                del self._ops[op.op_id]
        elif op.answered and (op.finished() or now >= op.deadline):
            del self._ops[op.op_id]

    def _read_repair(self, op):
        stale, merged = op.stale()
        if not stale or merged == dvv.EMPTY:
            return
        data = objects.encode(merged)
        for node in stale:
            self.counters["read_repairs"] += 1
            if node == self.node_id:
                self.store.put(op.key, dvv.sync(self.store.get(op.key), merged))
            else:
                self._send(node, {"t": "rput", "id": 0, "key": op.key, "obj": data})

    # ---- replica messages -------------------------------------------------------------------

    def _on_rput(self, msg, now):
        key = _bytes(msg["key"])
        incoming = objects.decode(msg["obj"], key)
        try:
            self.store.put(key, dvv.sync(self.store.get(key), incoming))
            reply = {"t": "rput_ok", "id": msg["id"]}
        except RldbError as exc:
            reply = {"t": "rput_err", "id": msg["id"], "reason": str(exc)}
        if msg["id"]:
            self._send_addr(msg["addr"], reply)

    def _on_rput_ok(self, msg, now):
        op = self._ops.get(msg["id"])
        if isinstance(op, WriteOp):
            op.ack(msg["from"])
            self._progress(op, now)

    def _on_rput_err(self, msg, now):
        op = self._ops.get(msg["id"])
        if isinstance(op, WriteOp):
            op.fail(msg["from"], msg.get("reason", "error"))
            self._progress(op, now)

    def _on_rget(self, msg, now):
        key = _bytes(msg["key"])
        try:
            reply = {"t": "rget_ok", "id": msg["id"], "obj": objects.encode(self.store.get(key))}
        except RldbError as exc:
            reply = {"t": "rget_err", "id": msg["id"], "reason": str(exc)}
        self._send_addr(msg["addr"], reply)

    def _on_rget_ok(self, msg, now):
        op = self._ops.get(msg["id"])
        if isinstance(op, ReadOp):
            op.reply(msg["from"], objects.decode(msg["obj"], op.key))
            self._progress(op, now)

    def _on_rget_err(self, msg, now):
        op = self._ops.get(msg["id"])
        if isinstance(op, ReadOp):
            op.fail(msg["from"], msg.get("reason", "error"))
            self._progress(op, now)

    def _on_fwd(self, msg, now):
        # The network may deliver a message twice: a write must get one dot.
        # Op ids restart with the sender, so its generation is part of the name.
        seen = (msg["addr"], msg.get("gen"), msg["id"])
        if seen in self._seen_forwards:
            return
        self._seen_forwards[seen] = now
        while len(self._seen_forwards) > SEEN_FORWARDS:
            self._seen_forwards.popitem(last=False)
        key = _bytes(msg["key"])
        if msg["kind"] == "put":
            cmd = c.Put(key, _bytes(msg["value"]), msg.get("context"), msg.get("w"))
        else:
            cmd = c.Delete(key, msg.get("context"), msg.get("w"))
        self.handle_client(("fwd", msg["addr"], msg["id"]), cmd, now, forwarded=True)

    def _on_fwd_reply(self, msg, now):
        op = self._ops.get(msg["id"])
        if isinstance(op, WriteOp) and op.operation == "Forward":
            op.forwarded_reply = _reply_from_wire(msg["reply"])
            op.ack(msg["from"])
            self._progress(op, now)

    # ---- membership ---------------------------------------------------------------------------

    def _gossip(self, now):
        self.membership.beat()
        self._maybe_claim(now)
        for node in self.membership.gossip_targets(self.rng, self.cfg.fanout):
            self._send(node, self._gossip_msg("gossip"))

    def _gossip_msg(self, kind):
        return {"t": kind, "members": [m.to_list() for m in self.membership.entries()],
                "ring": [self.ring_version, self.owners]}

    def _on_gossip(self, msg, now):
        self._take_gossip(msg, now)
        self._send_addr(msg["addr"], self._gossip_msg("gossip_reply"))

    def _on_gossip_reply(self, msg, now):
        self._take_gossip(msg, now)
        if self._joining is not None and self.ring_version > 0:
            self._joining = None

    def _take_gossip(self, msg, now):
        changed = self.membership.merge([Member.from_list(m) for m in msg["members"]], now)
        version, owners = msg["ring"]
        if not (isinstance(version, int) and isinstance(owners, list)
                and len(owners) == self.cfg.partitions and all(isinstance(o, str) for o in owners)):
            raise ValueError("malformed ring")
        if version > self.ring_version or (
                version == self.ring_version and owners != self.owners
                and repr(owners) > repr(self.owners)):
            self.ring_version, self.owners = version, owners
            changed = True
        if changed:
            self._persist()

    def _join(self, addr, now):
        """Joins the cluster the node at addr belongs to: our ring gives way
        to theirs, and their claimant gives us partitions."""
        if addr == self.cfg.addr:
            return c.invalid("a node cannot join itself")
        self.ring_version = 0
        self._joining = addr
        self._send_join(addr)
        return c.Ok()

    def _send_join(self, addr):
        self._send_addr(addr, {"t": "join", "member": self.membership.self_member.to_list()})

    def _on_join(self, msg, now):
        if self.membership.merge([Member.from_list(msg["member"])], now):
            self._persist()
        self._maybe_claim(now)
        self._send_addr(msg["addr"], self._gossip_msg("gossip_reply"))

    def _maybe_claim(self, now):
        """The claimant (lowest id among members up) rebalances the ring when
        the joined members changed.  The claim is deterministic and leaves a
        balanced ring as it is, so two claimants agree."""
        joined = self.membership.joined()
        up = [n for n in joined if self.membership.is_up(n, now)]
        if not up or up[0] != self.node_id or self.ring_version == 0:
            return
        owners = ring.claim(self.owners, joined, self.cfg.n)
        if owners != self.owners:
            self.owners = owners
            self.ring_version += 1
            self._persist()


def _bytes(value):
    if isinstance(value, str):
        return value.encode()
    if not isinstance(value, bytes):
        raise TypeError("expected bytes")
    return value


def _reply_to_wire(reply):
    """A write's reply as a forwarded request sends it back: plain lists."""
    if isinstance(reply, c.Ok):
        return ["ok"]
    fields = dict(reply.fields)
    if "errors" in fields:
        fields["errors"] = [_reply_to_wire(e) for e in fields["errors"]]
    return ["err", reply.kind, fields]


def _reply_from_wire(item):
    if item[0] == "ok":
        return c.Ok()
    kind, fields = item[1], dict(item[2])
    if not isinstance(kind, str):
        raise ValueError("malformed reply")
    if "errors" in fields:
        fields["errors"] = [_reply_from_wire(e) for e in fields["errors"]]
    return c.Err(kind, fields)
