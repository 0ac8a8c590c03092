"""What a node's parts (topology, handoff, anti-entropy, reaper) may ask of
the node: the one way they act beyond their own state.

The core is sans-IO, so acting means asking: a message to send (to a node
id, resolved through the membership, or to an address), a timer call by a
time (wake), a reply to a client or to the peer that forwarded the request
(finish), a fresh op id, a version from elsewhere to apply, a new actor id,
whether a request on a key is in flight here.
The Host keeps what the shell collects (the outbox, the replies, the time to
wake at); apply, renew_actor and key_busy are the node's own, passed in."""
from rldb.cluster.messages import reply_to_wire


class Host:
    def __init__(self, node_id, addr, membership, now, apply, renew_actor, key_busy):
        self.node_id = node_id
        self.addr = addr
        self.membership = membership
        self.outbox = []      # (address, message)
        self.replies = []     # (token, reply)
        self.wake_at = now    # background work wants a timer call by then
        self.now = now        # the time of the event being handled
        self._next_op = 0
        self._apply = apply
        self._renew_actor = renew_actor
        self._key_busy = key_busy

    def send(self, node_id, msg):
        member = self.membership.members.get(node_id)
        if member is None:
            return  # a ring can name a node before gossip brings its address; deadlines cover it
        msg["from"] = self.node_id
        msg["addr"] = self.addr
        self.outbox.append((member.addr, msg))

    def send_addr(self, addr, msg):
        msg["from"] = self.node_id
        msg["addr"] = self.addr
        self.outbox.append((addr, msg))

    def wake(self, at):
        """Background work (handoff, anti-entropy, ...) wants a timer call at `at`."""
        self.wake_at = min(self.wake_at, at)

    def new_op_id(self):
        self._next_op += 1
        return self._next_op

    def finish(self, token, reply):
        """A reply for a client, or for the peer that forwarded the request."""
        if isinstance(token, tuple) and token and token[0] == "fwd":
            _, addr, op_id = token
            self.send_addr(addr, {"t": "fwd_reply", "id": op_id, "reply": reply_to_wire(reply)})
        else:
            self.replies.append((token, reply))

    def apply(self, key, clock):
        """A version of key from elsewhere (see NodeCore.apply); True when
        the stored object changed."""
        return self._apply(key, clock)

    def key_busy(self, key):
        """True while this node coordinates a request on key."""
        return self._key_busy(key)

    def renew_actor(self):
        """This node deleted data that held its dots: new ones take a new id."""
        self._renew_actor()
