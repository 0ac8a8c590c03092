"""Per-request state machines of a coordinating node: quorum writes and
reads with a sloppy quorum.  They only count replies and decide; NodeCore
sends, receives and picks the fallbacks.

Each op has intended replicas (the primaries of the key's preference list).
A primary that is down, fails, or stays silent past the sloppy deadline gets
a stand-in: a fallback node that answers on its behalf (and, for a write,
keeps a hint to hand the value on).  A stand-in's answer counts for the
primary it stands in for toward w or r, as in Riak; pw and pr count only
answers of the primaries themselves.

During a ring transition a write has two groups of primaries (the old and
the new preference list) and needs w from each, so that the data is on a
quorum of whichever list ends up in charge.

A write that fails says which of two things happened (docs/consistency.md):
it was applied nowhere, so a retry is a new write, or its outcome is
unknown (its reason starts with "Indeterminate"): it may still become
visible.  Once the coordinator stored it, or sent it to anyone, a failure is
indeterminate."""
from dataclasses import dataclass, field

from rldb.cluster import commands as c
from rldb.cluster import dvv


@dataclass
class QuorumOp:
    op_id: int
    token: object
    key: bytes
    groups: list          # lists of primaries; the op needs `need` from each
    need: int             # w or r
    need_primary: int     # pw or pr
    deadline: float
    sloppy_at: float      # a silent primary gets a stand-in from then on
    operation: str = "Put"
    answered_by: dict = field(default_factory=dict)   # primary -> node that answered for it
    errors: dict = field(default_factory=dict)        # node -> reason
    failed: set = field(default_factory=set)          # primaries nobody can answer for
    stand_in: dict = field(default_factory=dict)      # primary -> fallback asked for it
    standing_for: dict = field(default_factory=dict)  # fallback -> primary
    answered: bool = False
    down: set = field(default_factory=set)  # primaries believed down when it started

    @property
    def primaries(self):
        out = []
        for g in self.groups:
            out.extend(n for n in g if n not in out)
        return out

    def for_whom(self, node):
        """The primary an answer from node counts for (None if unasked)."""
        if node in self.standing_for:
            return self.standing_for[node]
        return node if node in self.primaries else None

    def record_answer(self, node):
        primary = self.for_whom(node)
        if primary is not None:
            # a primary's own answer outranks a stand-in's
            if node == primary or primary not in self.answered_by:
                self.answered_by[primary] = node
        return primary

    def record_failure(self, node, reason):
        self.errors.setdefault(node, reason)
        primary = self.for_whom(node)
        if primary is not None and self.stand_in.get(primary) == node:
            del self.stand_in[primary]  # that stand-in is spent; another may be asked
        return primary

    def needing_stand_in(self, now, down):
        """Primaries without an answer that have failed, are down (by the
        failure detector) or stayed silent past sloppy_at, and have no live
        stand-in yet."""
        return [p for p in self.primaries
                if p not in self.answered_by and p not in self.failed and p not in self.stand_in
                and (p in self.errors or p in down or now >= self.sloppy_at)]

    def outcome(self, now):
        """The reply once decided, else None (reads return "read")."""
        if self.answered:
            return None
        own = {p for p, n in self.answered_by.items() if p == n}
        if all(len(self.answered_by.keys() & set(g)) >= self.need and
               len(own & set(g)) >= self.need_primary for g in self.groups):
            return self.success()
        lost_primary = set(self.failed) | {p for p in self.errors if p in self.primaries}
        impossible = any(len(g) - len(self.failed & set(g)) < self.need or
                         len(g) - len(lost_primary & set(g)) < self.need_primary
                         for g in self.groups)
        if impossible or now >= self.deadline:
            got = min(len(self.answered_by.keys() & set(g)) for g in self.groups)
            return quorum_failure(self.operation, self.need, got,
                                  _with_silent(self.errors, self.primaries, self.answered_by),
                                  now >= self.deadline, self.indeterminate)
        return None

    indeterminate = False  # a failed read changed nothing

    def success(self):
        return c.Ok()


@dataclass
class WriteOp(QuorumOp):
    """A put or delete: the new clock (data, encoded) goes to every primary."""
    data: bytes = b""
    clock: object = None
    proxy: bool = False    # coordinated by a node that holds no replica of the key
    indeterminate = True   # stored by its coordinator, or sent, before it failed

    def finished(self):
        return all(p in self.answered_by or p in self.failed for p in self.primaries)


@dataclass
class ReadOp(QuorumOp):
    """A get: asks every primary, answers after r replies, then keeps
    collecting until all replied (or the deadline) to repair stale replicas."""
    operation: str = "Get"
    replies: dict = field(default_factory=dict)   # node -> clock

    def success(self):
        return "read"

    def reply(self, node, clock):
        if self.record_answer(node) is not None:
            self.replies[node] = clock

    def merged(self):
        clock = dvv.EMPTY
        for other in self.replies.values():
            clock = dvv.sync(clock, other)
        return clock

    def finished(self, now):
        return now >= self.deadline or all(
            p in self.replies or p in self.failed or p in self.errors for p in self.primaries)

    def stale(self):
        """Primaries that answered themselves with a copy that differs from
        the merge of all replies (a stand-in's copy is a hint; it is handed
        on by hinted handoff, not repaired here)."""
        merged = self.merged()
        return [node for node, clock in self.replies.items()
                if node in self.primaries and clock != merged], merged


def _with_silent(errors, targets, answered):
    """The replicas' errors, plus one for each that did not answer at all."""
    out = dict(errors)
    for node in targets:
        if node not in answered and node not in out:
            out[node] = "no reply before the deadline"
    return out


INDETERMINATE = "Indeterminate: "


def cannot_write(membership, groups, w, pw, now):
    """Why a write cannot reach its quorum even with stand-ins, judged
    before anything is stored (so the failure applied nothing), or None."""
    up = max(1, sum(1 for n in membership.joined() if membership.is_up(n, now)))
    if up < w:
        return f"{w} replica(s) needed, {up} node(s) up"
    for g in groups:
        primaries_up = sum(1 for n in g if membership.is_up(n, now))
        if primaries_up < pw:
            return f"{pw} primary replica(s) needed, {primaries_up} up"
    return None


def quorum_failure(operation, needed, got, errors, timed_out, indeterminate=False):
    why = "deadline passed" if timed_out else "too many replicas failed"
    reason = f"{operation}: {needed} replica(s) needed, {got} answered ({why})"
    return failure(operation, reason, indeterminate, [
        c.Err("Internal", {"reason": f"{node}: {err}"}) for node, err in sorted(errors.items())])


def failure(operation, reason, indeterminate, errors=()):
    """A QuorumNotReached error: indeterminate, or applied nowhere (say so)."""
    if indeterminate:
        reason = f"{INDETERMINATE}{reason}; the write may still be applied"
    elif operation in ("Put", "Delete", "Forward"):
        reason = f"{reason}; not applied anywhere (safe to retry)"
    return c.Err("QuorumNotReached", {"operation": operation, "reason": reason,
                                      "errors": list(errors)})


def is_indeterminate(reply):
    return isinstance(reply, c.Err) and \
        str(reply.fields.get("reason", "")).startswith(INDETERMINATE)
