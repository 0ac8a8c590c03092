"""Who is in the cluster, gossiped: every node owns its own entry and is the
only one to change it; an entry with a higher (generation, heartbeat) wins a
merge.  Generation grows on every restart, heartbeat on every gossip round.
A node asked to leave marks its entry "leaving" (it stays in the ring while
it hands its partitions off), then "left" once it holds nothing.

Whether a member is up is decided locally by a phi accrual detector fed each
time its heartbeat is seen to grow."""
from dataclasses import dataclass

from rldb.cluster.failure_detector import PhiAccrual

JOINED, LEAVING, LEFT = "joined", "leaving", "left"


@dataclass(frozen=True)
class Member:
    node_id: str
    addr: str
    generation: int
    heartbeat: int
    state: str = JOINED

    def version(self):
        return (self.generation, self.heartbeat)

    def to_list(self):
        return [self.node_id, self.addr, self.generation, self.heartbeat, self.state]

    @classmethod
    def from_list(cls, item):
        node_id, addr, generation, heartbeat, state = item
        if not (isinstance(node_id, str) and isinstance(addr, str) and isinstance(generation, int)
                and isinstance(heartbeat, int) and state in (JOINED, LEAVING, LEFT)):
            raise ValueError(f"malformed member {item!r}")
        return cls(node_id, addr, generation, heartbeat, state)


class Membership:
    def __init__(self, me, phi_threshold=8.0, interval=0.5):
        self.me = me.node_id
        self.members = {me.node_id: me}
        self.interval = interval
        self.phi_threshold = phi_threshold
        self.detectors = {}

    def _detector(self, node_id):
        d = self.detectors.get(node_id)
        if d is None:
            d = self.detectors[node_id] = PhiAccrual(
                self.phi_threshold, first_interval=self.interval,
                acceptable_pause=2 * self.interval)
        return d

    @property
    def self_member(self):
        return self.members[self.me]

    def beat(self):
        """A gossip round of our own: our heartbeat grows."""
        m = self.self_member
        self.members[self.me] = Member(m.node_id, m.addr, m.generation, m.heartbeat + 1, m.state)

    def set_state(self, state):
        m = self.self_member
        self.members[self.me] = Member(m.node_id, m.addr, m.generation, m.heartbeat + 1, state)

    def merge(self, entries, now):
        """Takes a peer's view; returns True when anything changed."""
        changed = False
        for entry in entries:
            if entry.node_id == self.me:
                continue  # only we change our entry
            mine = self.members.get(entry.node_id)
            if mine is None or entry.version() > mine.version():
                self.members[entry.node_id] = entry
                self._detector(entry.node_id).heartbeat(now)
                changed = changed or mine is None or mine.state != entry.state or \
                    mine.addr != entry.addr
        return changed

    def entries(self):
        return list(self.members.values())

    def joined(self):
        """Node ids of members that neither left nor are leaving (up or
        down): the nodes the ring should be spread over."""
        return sorted(n for n, m in self.members.items() if m.state == JOINED)

    def is_up(self, node_id, now):
        if node_id == self.me:
            return True
        m = self.members.get(node_id)
        if m is None or m.state == LEFT:
            return False
        return self._detector(node_id).available(now)

    def phi(self, node_id, now):
        if node_id == self.me:
            return 0.0
        d = self.detectors.get(node_id)
        return d.phi(now) if d is not None else 0.0

    def status(self, node_id, now):
        """The original project's words: Ok, PossiblyOffline, Offline."""
        m = self.members[node_id]
        if m.state == LEFT:
            return "Offline"
        return "Ok" if self.is_up(node_id, now) else "PossiblyOffline"

    def addr(self, node_id):
        return self.members[node_id].addr

    def gossip_targets(self, rng, fanout):
        peers = sorted(n for n, m in self.members.items() if n != self.me and m.state != LEFT)
        if len(peers) <= fanout:
            return peers
        return rng.sample(peers, fanout)
