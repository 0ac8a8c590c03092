"""Per-request state machines of a coordinating node: quorum writes and
reads.  They only count replies and decide; NodeCore sends and receives."""
from dataclasses import dataclass, field

from rldb.cluster import commands as c
from rldb.cluster import dvv


@dataclass
class WriteOp:
    """A put or delete: the new clock goes to every replica; done after w acks."""
    op_id: int
    token: object
    key: bytes
    clock: tuple
    targets: list
    w: int
    deadline: float
    operation: str = "Put"
    acks: set = field(default_factory=set)
    errors: dict = field(default_factory=dict)
    answered: bool = False
    forwarded_reply: object = None

    def ack(self, node):
        self.acks.add(node)

    def fail(self, node, reason):
        self.errors.setdefault(node, reason)

    def outcome(self, now):
        """The reply once decided, else None."""
        if self.answered:
            return None
        if len(self.acks) >= self.w:
            return c.Ok()
        impossible = len(self.targets) - len(self.errors) < self.w
        if impossible or now >= self.deadline:
            return quorum_failure(self.operation, self.w, len(self.acks),
                                  _with_silent(self.errors, self.targets, self.acks), now >= self.deadline)
        return None

    def finished(self):
        return len(self.acks) + len(self.errors) >= len(self.targets)


@dataclass
class ReadOp:
    """A get: asks every replica, answers after r replies, then keeps
    collecting until all replied (or the deadline) to repair stale replicas."""
    op_id: int
    token: object
    key: bytes
    targets: list
    r: int
    deadline: float
    replies: dict = field(default_factory=dict)   # node -> clock
    errors: dict = field(default_factory=dict)
    answered: bool = False

    def reply(self, node, clock):
        self.replies[node] = clock

    def fail(self, node, reason):
        self.errors.setdefault(node, reason)

    def merged(self):
        clock = dvv.EMPTY
        for other in self.replies.values():
            clock = dvv.sync(clock, other)
        return clock

    def outcome(self, now):
        if self.answered:
            return None
        if len(self.replies) >= self.r:
            return "read"
        impossible = len(self.targets) - len(self.errors) < self.r
        if impossible or now >= self.deadline:
            return quorum_failure("Get", self.r, len(self.replies),
                                  _with_silent(self.errors, self.targets, self.replies),
                                  now >= self.deadline)
        return None

    def finished(self, now):
        return len(self.replies) + len(self.errors) >= len(self.targets) or now >= self.deadline

    def stale(self):
        """Replicas whose copy differs from the merge of all replies."""
        merged = self.merged()
        return [node for node, clock in self.replies.items() if clock != merged], merged


def _with_silent(errors, targets, answered):
    """The replicas' errors, plus one for each that did not answer at all."""
    out = dict(errors)
    for node in targets:
        if node not in answered and node not in out:
            out[node] = "no reply before the deadline"
    return out


def quorum_failure(operation, needed, got, errors, timed_out):
    why = "deadline passed" if timed_out else "too many replicas failed"
    reason = (f"{operation}: {needed} replica(s) needed, {got} answered ({why})")
    return c.Err("QuorumNotReached", {
        "operation": operation, "reason": reason,
        "errors": [c.Err("Internal", {"reason": f"{node}: {err}"}) for node, err in sorted(errors.items())],
    })
