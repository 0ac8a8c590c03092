"""Forwarded writes: a write that reaches a node holding no replica of its
key is coordinated by a replica, asked in two steps so that it is never
applied twice.

The forwarding node (ForwardOp) offers the write to one replica at a time
(fwd).  A replica that can take it says so (fwd_ack) and waits; only the
first replica to answer is told to go (fwd_go), and only a replica told to
go coordinates the write.  A replica that does not answer within the
forward timeout is passed over for the next one: it was never told to go,
so it will not apply the write, however late the offer reached it.  When no
replica answers, the forwarding node coordinates the write itself (through
the sloppy quorum).  A lost message is covered by sending again: the offer
until it is answered, the go until the reply comes.

The outcome says what happened: once a replica was told to go, a failure is
indeterminate (it may have applied the write); before that, nothing was
applied anywhere.  The replica's side (Offers) remembers the offers it
answered, so a repeated offer or go is answered again and done once."""
from collections import OrderedDict
from dataclasses import dataclass, field

from rldb.cluster import commands as c
from rldb.cluster.coordinator import is_indeterminate, quorum_failure

ACCEPT_SHARE = 0.75   # of the forward timeout: how late a replica may still take an offer
RESEND_SHARE = 0.25   # of the forward timeout: how often an offer (or a go) is sent again
MAX_OFFERS = 100_000  # offers a replica remembers (the oldest go first)


@dataclass
class ForwardOp:
    op_id: int
    token: object
    key: bytes
    cmd: object
    hops: int
    targets: list            # replicas still to offer it to, in order
    deadline: float
    generation: int = 0      # ours: op ids restart with us, so offers name it
    target: str = None       # the replica offered it now (or told to go)
    tried: list = field(default_factory=list)
    attempt_at: float = 0.0  # the target must answer the offer by then
    resend_at: float = 0.0   # when the offer (or the go) is sent again
    offer: dict = None
    go_sent: bool = False    # the target was told to go: it may apply the write
    errors: dict = field(default_factory=dict)
    reply: object = None
    answered: bool = False

    def next_offer(self, now, timeout):
        """The offer to the next target."""
        self.target, self.go_sent = self.targets.pop(0), False
        self.tried.append(self.target)
        self.attempt_at = min(now + timeout, self.deadline)
        self.resend_at = now + timeout * RESEND_SHARE
        cmd = self.cmd
        msg = {"t": "fwd", "id": self.op_id, "gen": self.generation,
               "kind": "put" if isinstance(cmd, c.Put) else "delete", "key": cmd.key,
               "context": cmd.context, "w": cmd.w, "pw": cmd.pw, "hops": self.hops + 1,
               "dl": now + timeout * ACCEPT_SHARE, "end": self.deadline}
        if isinstance(cmd, c.Put):
            msg["value"] = cmd.value
            msg["overwrite"] = cmd.overwrite
        self.offer = msg
        return msg

    def go(self):
        return {"t": "fwd_go", "id": self.op_id, "gen": self.generation, "dl": self.deadline}

    def on_ready(self, node):
        """True when node's answer to the offer makes it the one to go."""
        if node != self.target or self.go_sent or self.reply is not None:
            return False
        self.go_sent = True
        return True

    def again(self, now, timeout):
        """The offer, or the go, sent again when it is time; else None."""
        if self.target is None or self.reply is not None or now < self.resend_at:
            return None
        if self.go_sent:
            if now >= self.deadline:
                return None
            message = self.go()
        elif now < self.offer["dl"]:
            message = dict(self.offer)
        else:
            return None
        self.resend_at = now + timeout * RESEND_SHARE
        return message

    def on_reply(self, node, reply):
        """The reply of the target told to go: the answer, unless it says it
        applied nothing, which passes the write on to the next target."""
        if node != self.target or not self.go_sent or self.reply is not None:
            return
        if isinstance(reply, c.Err) and reply.kind == "QuorumNotReached" and \
                not is_indeterminate(reply):
            self.errors[node] = reply.fields.get("reason", "failed")
            self.target, self.go_sent = None, False
            return
        self.reply = reply

    def must_move_on(self, now):
        """True when there is no target now, or it did not answer the offer in time."""
        if self.target is None:
            return True
        if not self.go_sent and now >= self.attempt_at:
            self.errors[self.target] = "did not answer the offer in time"
            self.target = None
            return True
        return False

    def outcome(self, now):
        if self.answered:
            return None
        if self.reply is not None:
            return self.reply
        if now >= self.deadline:
            errors = self.errors or {self.target: "no reply before the deadline"}
            return quorum_failure("Forward", 1, 0, errors, True, self.go_sent)
        return None


class Offers:
    """The offers a replica answered: (sender address, its generation, op
    id) -> [the command, hops, end] until told to go, then None."""

    def __init__(self):
        self._offers = OrderedDict()

    def offered(self, name, cmd, hops, end):
        """Records an offer; False when it was offered before."""
        if name in self._offers:
            return False
        self._offers[name] = [cmd, hops, end]
        while len(self._offers) > MAX_OFFERS:
            self._offers.popitem(last=False)
        return True

    def go(self, name, now):
        """What to do when told to go: ("start", (command, hops, end)), or
        ("done",) when it went before, ("late",) when its end passed before
        it started (it never will), ("unknown",) when this node does not
        remember the offer (it restarted since, or forgot it): it may have
        applied it."""
        if name not in self._offers:
            return ("unknown",)
        entry = self._offers[name]
        if entry is None:
            return ("done",)
        self._offers[name] = None  # the command (and its value) is no longer needed
        cmd, hops, end = entry
        if end is not None and end < now:
            return ("late",)
        return ("start", (cmd, hops, end))
