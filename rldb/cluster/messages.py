"""Every node-to-node message, defined once: its type "t", its fields with
their types and bounds, and the part of the node that handles it.

A message is a map that crosses the network from anyone (command 32 of the
native protocol), so NodeCore checks it against its definition here before
any handler sees it; a handler can then index its fields without guarding
each one.  What can only be checked while handling (a stored object that
does not decode, a tree of another shape) raises BadMessage.  Both count as
bad messages; any other exception in a handler is a bug.

The checks are plain isinstance tests in a loop over the fields, compiled
once per node (the partition bound depends on its configuration).  An int
field takes only an int (not a bool, a subclass of int), a list field a list
or a tuple; fields a message does not define are ignored.  A key is bytes of
0..MAX_KEY: the keys the client doors accept (the Redis door takes an empty
key, and arguments up to 64 MiB), as messages between nodes carry the same
keys.  Where a
handler takes a key or value as text too (the request messages), str
passes as well."""
from dataclasses import dataclass

from rldb.cluster import commands as c
from rldb.cluster import objects
from rldb.cluster.membership import JOINED, LEAVING, LEFT
from rldb.cluster.store import TREE_SEGMENTS
from rldb.errors import CorruptionError

MAX_KEY = 64 << 20     # rldb.net.resp.MAX_BULK: no client key is longer
HASH_BITS = 64         # tree branch and leaf hashes
REPLY_DEPTH = 4        # nesting of errors in a forwarded reply
_LIST = (list, tuple)
_ABSENT = object()
PARTITIONS = object()  # a bound that is the node's partition count


class BadMessage(Exception):
    """A node-to-node message that breaks its definition."""


@dataclass(frozen=True)
class Spec:
    """A value's shape: `doc` says it, make(partitions) gives its check."""
    doc: str
    make: object


def Int(lo=0, hi=None):
    """An int in lo..hi (hi None: no upper bound; PARTITIONS: a partition)."""
    def make(partitions):
        top = partitions - 1 if hi is PARTITIONS else hi
        if top is None:
            return lambda v: v.__class__ is int and v >= lo
        return lambda v: v.__class__ is int and lo <= v <= top
    return Spec(f"int {lo}..{'partitions-1' if hi is PARTITIONS else '' if hi is None else hi}",
                make)


def Bytes(lo=0, hi=None, text=False):
    """bytes (or, with text, str) of lo..hi bytes."""
    types = (bytes, str) if text else bytes

    def make(partitions):
        if hi is None:
            return lambda v: isinstance(v, types) and len(v) >= lo
        return lambda v: isinstance(v, types) and lo <= len(v) <= hi
    return Spec(("bytes|str" if text else "bytes") + (f" {lo}..{hi}" if lo or hi else ""), make)


def Str(*choices):
    """A str (one of choices, if given)."""
    if choices:
        allowed = frozenset(choices)
        return Spec("one of " + "|".join(choices),
                    lambda partitions: lambda v: v.__class__ is str and v in allowed)
    return Spec("str", lambda partitions: lambda v: isinstance(v, str))


def Bool():
    return Spec("bool", lambda partitions: lambda v: v is True or v is False)


def Map():
    """A map whose contents are not checked (figures a node gossips of itself)."""
    return Spec("map", lambda partitions: lambda v: isinstance(v, dict))


def Maybe(spec):
    """spec, or None (nil)."""
    def make(partitions):
        ok = spec.make(partitions)
        return lambda v: v is None or ok(v)
    return Spec(spec.doc + " or nil", make)


def ListOf(item, length=None):
    """A list of items (of exactly `length`, if given; PARTITIONS: one per
    partition)."""
    def make(partitions):
        each = item.make(partitions)
        size = partitions if length is PARTITIONS else length

        def ok(v):
            if not isinstance(v, _LIST) or (size is not None and len(v) != size):
                return False
            for x in v:
                if not each(x):
                    return False
            return True
        return ok
    n = "partitions" if length is PARTITIONS else length
    return Spec(f"[{item.doc}, ...]" + (f" ({n} of them)" if n is not None else ""), make)


def Row(*items, least=None):
    """A list of fixed shape: one value per item (the last ones may be left
    out down to `least`)."""
    def make(partitions):
        checks = tuple(s.make(partitions) for s in items)
        most = len(checks)
        fewest = most if least is None else least
        if len(checks) == 2 and fewest == 2:
            a, b = checks
            return lambda v: isinstance(v, _LIST) and len(v) == 2 and a(v[0]) and b(v[1])

        def ok(v):
            if not isinstance(v, _LIST) or not fewest <= len(v) <= most:
                return False
            for check, x in zip(checks, v):
                if not check(x):
                    return False
            return True
        return ok
    return Spec("[" + ", ".join(s.doc for s in items) + "]", make)


def MapOf(key, value):
    def make(partitions):
        k, v = key.make(partitions), value.make(partitions)

        def ok(m):
            if not isinstance(m, dict):
                return False
            for a, b in m.items():
                if not (k(a) and v(b)):
                    return False
            return True
        return ok
    return Spec(f"{{{key.doc}: {value.doc}}}", make)


def _wire_reply_ok(item, depth=0):
    """["ok"] or ["err", kind, fields] (fields' "errors" a list of the same)."""
    if not isinstance(item, _LIST) or not item:
        return False
    if item[0] == "ok":
        return True
    if item[0] != "err" or len(item) != 3 or not isinstance(item[1], str) or \
            not isinstance(item[2], dict):
        return False
    errors = item[2].get("errors", _ABSENT)
    if errors is _ABSENT:
        return True
    return depth < REPLY_DEPTH and isinstance(errors, _LIST) and \
        all(_wire_reply_ok(e, depth + 1) for e in errors)


WIRE_REPLY = Spec('["ok"] or ["err", kind, fields]', lambda partitions: _wire_reply_ok)

# ---- the shapes messages share ----------------------------------------------------------------

OP_ID = Int(0)                       # 0: no answer wanted (a read repair's rput)
VERSION = Int(0)                     # a ring version (0 while joining)
PARTITION = Int(0, PARTITIONS)
SEGMENT = Int(0, TREE_SEGMENTS - 1)
TREE_HASH = Int(0, (1 << HASH_BITS) - 1)
NODE = Str()
KEY = Bytes(0, MAX_KEY)
KEY_OR_TEXT = Bytes(0, MAX_KEY, text=True)
OBJECT = Bytes()                     # a stored object (objects.encode), CRC first
HASH = Bytes()                       # an object hash (store.object_hash)
OWNERS = ListOf(NODE, PARTITIONS)
RING = Row(VERSION, OWNERS, Maybe(OWNERS), least=2)   # [version, owners, next]
MEMBER = Row(NODE, NODE, Int(0), Int(0), Str(JOINED, LEAVING, LEFT))  # Member.to_list()
INFO = Maybe(MapOf(Bytes(text=True), Row(Int(0), Map())))  # node -> [heartbeat, figures]
KEYED_OBJECTS = ListOf(Row(KEY, OBJECT))


@dataclass(frozen=True)
class Field:
    name: str
    spec: Spec
    required: bool = True


def _opt(name, spec):
    return Field(name, spec, required=False)


@dataclass(frozen=True)
class Message:
    t: str
    handler: str      # the part of the node that handles it (see NodeCore.handlers)
    fields: tuple
    doc: str


# the sender, added by every send; and the time after which the message is
# dropped unread (wall-clock seconds, as its sender set it), if it has one
DEADLINE = Spec("seconds", lambda partitions: lambda v: v.__class__ in (int, float)
                and 0 <= v < 1e11)
COMMON = (Field("from", NODE), Field("addr", Str()), _opt("dl", DEADLINE))

_GOSSIP = (Field("members", ListOf(MEMBER)), Field("ring", RING), _opt("info", INFO))

MESSAGES = {m.t: m for m in (
    # the request path: being a replica (Replica), coordinating and forwarding (NodeCore)
    Message("rput", "replica", (Field("id", OP_ID), Field("key", KEY_OR_TEXT),
                                 Field("obj", OBJECT), _opt("hint", Maybe(NODE)),
                                 _opt("v", VERSION)),
            "a replica write (hint: the primary a fallback stands in for; v: the "
            "coordinator's ring version; id 0: a read repair, no answer)"),
    Message("rput_ok", "requests", (Field("id", OP_ID),), "a replica write done"),
    Message("rput_err", "requests", (Field("id", OP_ID), _opt("reason", Str())),
            "a replica write refused"),
    Message("rget", "replica", (Field("id", OP_ID), Field("key", KEY_OR_TEXT),
                                 _opt("hint", Maybe(NODE))), "a replica read"),
    Message("rget_ok", "requests", (Field("id", OP_ID), Field("obj", OBJECT)),
            "a replica's copy"),
    Message("rget_err", "requests", (Field("id", OP_ID), _opt("reason", Str())),
            "a replica read failed"),
    Message("fwd", "requests", (Field("id", OP_ID), _opt("gen", Maybe(Int(0))),
                                Field("kind", Str("put", "delete")), Field("key", KEY_OR_TEXT),
                                _opt("value", Bytes(text=True)), _opt("context", Maybe(Bytes())),
                                _opt("w", Maybe(Int(0))), _opt("pw", Maybe(Int(0))),
                                _opt("overwrite", Maybe(Bool())), _opt("hops", Int(0)),
                                _opt("end", DEADLINE)),
            "a write offered to a replica to coordinate when told to go (value: for a "
            "put; end: when the sender gives up)"),
    Message("fwd_ack", "requests", (Field("id", OP_ID),),
            "a forwarded write this replica can take, if told to go"),
    Message("fwd_go", "requests", (Field("id", OP_ID), _opt("gen", Maybe(Int(0)))),
            "coordinate the forwarded write offered (only one replica is told)"),
    Message("fwd_reply", "requests", (Field("id", OP_ID), Field("reply", WIRE_REPLY)),
            "the reply to a forwarded write"),
    # membership and the ring
    Message("gossip", "topology", _GOSSIP, "members, the ring and per-node figures"),
    Message("gossip_reply", "topology", _GOSSIP, "the answer to gossip or join"),
    Message("join", "topology", (Field("member", MEMBER),), "a node joining through this one"),
    Message("xfer_done", "topology", (Field("v", VERSION),
                                      Field("done", ListOf(Row(PARTITION, NODE)))),
            "transfers a source finished, reported to the claimant"),
    # handoff: hints and partition transfers
    Message("hints", "handoff", (Field("id", OP_ID), Field("for", NODE),
                                 Field("items", KEYED_OBJECTS)), "a batch of hints for `for`"),
    Message("hints_ok", "handoff", (Field("id", OP_ID), Field("for", NODE)),
            "a batch of hints taken"),
    Message("xfer", "handoff", (Field("id", OP_ID), Field("v", VERSION), Field("q", PARTITION),
                                _opt("ring", RING), Field("items", KEYED_OBJECTS),
                                Field("last", Bool())),
            "a batch of a partition transfer, with the sender's ring"),
    Message("xfer_ok", "handoff", (Field("id", OP_ID), Field("q", PARTITION)),
            "a transfer batch taken"),
    Message("xfer_no", "handoff", (Field("id", OP_ID), Field("q", PARTITION)),
            "a transfer batch refused (not a replica yet)"),
    # anti-entropy
    Message("aae_tree", "anti_entropy", (Field("id", OP_ID), Field("q", PARTITION),
                                         Field("branch", ListOf(TREE_HASH))),
            "an exchange starts: our branch hashes"),
    Message("aae_leaves", "anti_entropy", (Field("id", OP_ID),
                                           Field("leaves", ListOf(Row(SEGMENT, TREE_HASH))),
                                           _opt("abort", Maybe(Bool()))),
            "the peer's leaves of the branches that differ"),
    Message("aae_keys", "anti_entropy", (Field("id", OP_ID), Field("q", PARTITION),
                                         Field("segments", ListOf(SEGMENT)),
                                         Field("pairs", ListOf(Row(KEY, HASH)))),
            "our (key, object hash) in the segments that differ"),
    Message("aae_objs", "anti_entropy", (Field("id", OP_ID), Field("objs", KEYED_OBJECTS),
                                         Field("need", ListOf(KEY))),
            "the peer's objects that differ, and the keys it needs"),
    Message("aae_push", "anti_entropy", (Field("id", OP_ID), Field("q", PARTITION),
                                         Field("objs", KEYED_OBJECTS)),
            "our objects for the keys the peer needs"),
    Message("aae_done", "anti_entropy", (Field("id", OP_ID), Field("repaired", Int(0))),
            "the exchange is over: keys the peer changed"),
    # tombstone collection
    Message("reap_q", "reaper", (Field("id", OP_ID), Field("key", KEY), Field("hash", HASH),
                                 Field("v", VERSION)), "may this tombstone go?"),
    Message("reap_a", "reaper", (Field("id", OP_ID), Field("ok", Bool())), "the answer"),
    Message("reap", "reaper", (Field("key", KEY), Field("hash", HASH)),
            "delete this tombstone if it still has this hash (keeping its floor)"),
    Message("reap_ok", "reaper", (Field("key", KEY),), "a collect order carried out (or moot)"),
)}


class Registry:
    """The definitions compiled for a node with `partitions` partitions."""

    def __init__(self, partitions):
        self.checks = {t: tuple((f.name, f.required, f.spec.make(partitions))
                                for f in COMMON + m.fields)
                       for t, m in MESSAGES.items()}

    def problem(self, msg):
        """None when msg is a message as defined, else what is wrong with it."""
        if not isinstance(msg, dict):
            return "not a map"
        t = msg.get("t")
        checks = self.checks.get(t) if isinstance(t, str) else None
        if checks is None:
            return f"unknown type {t!r}"
        for name, required, ok in checks:
            value = msg.get(name, _ABSENT)
            if value is _ABSENT:
                if required:
                    return f"{t}: no {name}"
            elif not ok(value):
                return f"{t}: malformed {name}"
        return None


def dispatch_table(parts):
    """type -> bound handler, from {part name: {type: its handler}};
    raises AssertionError unless they match the registry exactly."""
    table = {}
    for name, handlers in parts.items():
        for t, handler in handlers.items():
            if t not in MESSAGES or MESSAGES[t].handler != name or t in table:
                raise AssertionError(f"{name} handles {t!r}, which the registry gives "
                                     f"to {MESSAGES[t].handler if t in MESSAGES else 'nobody'}")
            table[t] = handler
    missing = sorted(set(MESSAGES) - set(table))
    if missing:
        raise AssertionError(f"no handler for {missing}")
    return table


def decode_object(data, key):
    """A stored object a message carries; BadMessage if it does not decode."""
    try:
        return objects.decode(data, key)
    except CorruptionError as exc:
        raise BadMessage(str(exc)) from None


def reply_to_wire(reply):
    """A write's reply as a forwarded request sends it back: plain lists."""
    if isinstance(reply, c.Ok):
        return ["ok"]
    fields = dict(reply.fields)
    if "errors" in fields:
        fields["errors"] = [reply_to_wire(e) for e in fields["errors"]]
    return ["err", reply.kind, fields]


def reply_from_wire(item):
    """The reply reply_to_wire sent (checked against WIRE_REPLY already)."""
    if item[0] == "ok":
        return c.Ok()
    fields = dict(item[2])
    if "errors" in fields:
        fields["errors"] = [reply_from_wire(e) for e in fields["errors"]]
    return c.Err(item[1], fields)
