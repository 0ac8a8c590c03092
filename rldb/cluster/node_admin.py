"""What the admin commands show (a mixin of NodeCore): status, ring,
transfers; repair lives with anti-entropy and leave with the ring."""
from rldb.cluster import commands as c
from rldb.cluster.membership import LEAVING, LEFT


class AdminMixin:
    def _admin(self, token, cmd, now):
        if cmd.op == "status":
            return c.Ok(self.status_view(now))
        if cmd.op == "ring":
            return c.Ok(self.ring_view())
        if cmd.op == "transfers":
            return c.Ok(self.transfers_view())
        if cmd.op == "repair":
            return self._start_repair(token, cmd, now)
        if cmd.op == "leave":
            return self._leave(now)
        return c.invalid(f"unknown admin command {cmd.op!r}")

    def status_view(self, now):
        """One row per member, as this node sees it; hints, handoffs and
        bytes are what each node last gossiped of itself."""
        self._refresh_info(now)
        rows = []
        for node_id, member in sorted(self.membership.members.items()):
            info = self._info.get(node_id, (0, {}))[1]
            if member.state == LEFT:
                status = "left"
            elif not self.membership.is_up(node_id, now):
                status = "down"
            else:
                status = "leaving" if member.state == LEAVING else "up"
            rows.append({"node": node_id, "addr": member.addr, "status": status,
                         "phi": round(min(max(self.membership.phi(node_id, now), 0.0), 999.0), 2) + 0.0,
                         "partitions": self.owners.count(node_id),
                         "handoffs": info.get("handoffs"), "hints": info.get("hints"),
                         "bytes": info.get("bytes")})
        return {"node": self.node_id, "ring_version": self.ring_version,
                "in_transition": self.next_owners is not None, "nodes": rows}

    def ring_view(self):
        parts = []
        for q in range(self.cfg.partitions):
            old, new = self._prefs(q)
            parts.append({"partition": q, "owner": self.owners[q], "preference_list": old,
                          "next": new})
        return {"version": self.ring_version, "in_transition": self.next_owners is not None,
                "partitions": parts}

    def transfers_view(self):
        """This node's partition transfers and the hints it holds."""
        outgoing = []
        for q, dst in self.outgoing_transfers():
            outgoing.append({"partition": q, "to": dst,
                             "keys_sent": self._xfer_sent.get((q, dst), 0),
                             "done": (q, dst) in self._xfer["done"],
                             "in_flight": (q, dst) in self._xfer_flight})
        return {"ring_version": self.ring_version, "in_transition": self.next_owners is not None,
                "planned": len(self.transfer_plan()), "outgoing": outgoing,
                "hints": {t: self.hints.pending(t) for t in self.hints.targets()},
                "keys_transferred": self.counters["keys_transferred"],
                "keys_received": self.counters["keys_received"]}
