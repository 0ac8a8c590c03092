"""What the admin commands do: status, ring and transfers are views of the
node's parts; repair is anti-entropy's and leave the topology's."""
from rldb.cluster import commands as c
from rldb.cluster.membership import LEAVING, LEFT


class Admin:
    def __init__(self, cfg, membership, topology, handoff, anti_entropy, hints, counters):
        self.cfg = cfg
        self.node_id = cfg.node_id
        self.membership = membership
        self.topology = topology
        self.handoff = handoff
        self.anti_entropy = anti_entropy
        self.hints = hints
        self.counters = counters

    def command(self, token, cmd, now):
        if cmd.op == "status":
            return c.Ok(self.status_view(now))
        if cmd.op == "ring":
            return c.Ok(self.ring_view())
        if cmd.op == "transfers":
            return c.Ok(self.transfers_view())
        if cmd.op == "repair":
            return self.anti_entropy.start_repair(token, cmd, now)
        if cmd.op == "leave":
            return self.topology.leave(now)
        return c.invalid(f"unknown admin command {cmd.op!r}")

    def status_view(self, now):
        """One row per member, as this node sees it; hints, handoffs,
        data_bytes and memtable_bytes are what each node last gossiped of itself."""
        t = self.topology
        t.refresh_info(now, self.handoff.outgoing_pending())
        rows = []
        for node_id, member in sorted(self.membership.members.items()):
            info = t.info(node_id)
            if member.state == LEFT:
                status = "left"
            elif not self.membership.is_up(node_id, now):
                status = "down"
            else:
                status = "leaving" if member.state == LEAVING else "up"
            rows.append({"node": node_id, "addr": member.addr, "status": status,
                         "phi": round(min(max(self.membership.phi(node_id, now), 0.0), 999.0), 2) + 0.0,
                         "partitions": t.owners.count(node_id),
                         "handoffs": info.get("handoffs"), "hints": info.get("hints"),
                         "data_bytes": info.get("data_bytes"),
                         "memtable_bytes": info.get("memtable_bytes")})
        return {"node": self.node_id, "ring_version": t.ring_version,
                "in_transition": t.next_owners is not None, "nodes": rows}

    def ring_view(self):
        t = self.topology
        parts = []
        for q in range(self.cfg.partitions):
            old, new = t.prefs(q)
            parts.append({"partition": q, "owner": t.owners[q], "preference_list": old,
                          "next": new})
        return {"version": t.ring_version, "in_transition": t.next_owners is not None,
                "partitions": parts}

    def transfers_view(self):
        """This node's partition transfers and the hints it holds."""
        t = self.topology
        return {"ring_version": t.ring_version, "in_transition": t.next_owners is not None,
                "planned": len(t.transfer_plan()), "outgoing": self.handoff.transfer_rows(),
                "hints": {n: self.hints.pending(n) for n in self.hints.targets()},
                "keys_transferred": self.counters["keys_transferred"],
                "keys_received": self.counters["keys_received"]}
