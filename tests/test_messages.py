"""The registry of node-to-node messages (rldb.cluster.messages): every type
has its handler, a frame that breaks its definition never reaches one, a
handler's own failure is told apart from a bad message, and the traffic the
nodes produce passes."""
import logging
import random

import msgpack
import pytest

from rldb.cluster import commands as c
from rldb.cluster import messages
from rldb.cluster.messages import MAX_KEY, MESSAGES
from rldb.cluster.node import CoreConfig, NodeCore
from rldb.cluster.sim import Cluster
from rldb.cluster.store import TREE_SEGMENTS, ObjectStore
from rldb.errors import StorageIOError
from rldb.net import protocol, resp
from rldb.storage import open_engine

P = 8  # partitions of the clusters here


def new_node(node_id="solo", partitions=P):
    store = ObjectStore(open_engine("memory"), partitions)
    return NodeCore(CoreConfig(node_id=node_id, addr=node_id, n=3, r=2, w=2,
                               partitions=partitions), store, random.Random(1))


def _call(cl, node, command):
    token = ("t", cl.now, id(command))
    cl.client(node, token, command)
    return cl.wait_for(token, 5.0)


def _traffic():
    """Every frame the nodes of a small seeded cluster send, by type: writes,
    forwards, reads with repair, a node down (hints) and back wiped
    (anti-entropy), tombstones collected, a join, a repair, a leave, and a
    damaged object (the error answers)."""
    frames = {}
    cl = Cluster(11, size=4, n=3, r=2, w=2, partitions=P, core={"tombstone_grace": 1.0})
    send = cl.net.send

    def record(now, src, dst, msg):
        frames.setdefault(msg["t"], []).append(dict(msg))
        send(now, src, dst, msg)
    cl.net.send = record
    assert cl.join_all()
    keys = [b"k%d" % i for i in range(40)]
    for k in keys:
        assert isinstance(_call(cl, "n1", c.Put(k, b"v")), c.Ok)
    for k in keys[:10]:
        got = _call(cl, "n2", c.Get(k, r=3))
        assert isinstance(_call(cl, "n2", c.Delete(k, got.value.context)), c.Ok)
    cl.crash("n3")
    cl.run_for(3.0)
    for k in keys[10:20]:
        _call(cl, "n1", c.Put(k, b"v2", w=3))
        _call(cl, "n1", c.Get(k, r=3))
    cl.start("n3", wipe=True)
    cl.run_for(5.0)
    for k in keys:
        _call(cl, "n4", c.Get(k, r=3))
    cl.add_node("n5")
    cl.run_for(10.0)
    _call(cl, "n2", c.Admin("repair"))
    _call(cl, "n5", c.Admin("leave"))
    cl.run_for(15.0)
    # a replica whose stored object is damaged answers with errors
    key = keys[-1]
    pref = cl.nodes["n1"].preference_list(key)
    store = cl.stores[pref[1]]
    store.engine.put(store.storage_key(key), b"\0" * 9)
    cl.strict = False  # anti-entropy would ship the damaged object: a bad message, rightly
    _call(cl, pref[0], c.Get(key, r=3))
    _call(cl, pref[0], c.Put(key, b"v3", w=3))
    # a transfer batch for a partition the node does not replicate is refused
    for frame in frames["xfer"]:
        node = next((n for n in cl.nodes.values() if not _replicates(n, frame["q"])
                     and frame["v"] <= n.ring_version), None)
        if node is not None:
            node.handle_message(dict(frame, dl=cl.now + 1.0), cl.now)  # replayed, so not late
            for _, msg in node.messages_to_send():
                frames.setdefault(msg["t"], []).append(msg)
            break
    return frames


@pytest.fixture(scope="module")
def traffic():
    return _traffic()


def _replicates(node, q):
    row = node.ring_view()["partitions"][q]
    return node.node_id in row["preference_list"] + (row["next"] or [])


def sample(traffic, t):
    return dict(traffic[t][0])


# ---- the registry and the handlers --------------------------------------------------------------

def test_every_type_has_its_handler_and_every_handler_is_in_the_registry():
    node = new_node()
    tables = node.handler_tables()
    assert set(tables) == {m.handler for m in MESSAGES.values()}
    for name, handlers in tables.items():
        assert set(handlers) == {t for t, m in MESSAGES.items() if m.handler == name}, name
    table = node._dispatch
    assert set(table) == set(MESSAGES)
    assert all(table[t] == handler for handlers in tables.values() for t, handler in handlers.items())
    parts = {"requests": node, "topology": node.topology, "handoff": node.handoff,
             "anti_entropy": node.anti_entropy, "reaper": node.reaper, "replica": node.replica}
    for name, handlers in tables.items():
        assert all(h.__self__ is parts[name] for h in handlers.values()), name
    # no handler method of any part is left out of the table
    bound = {(id(h.__self__), h.__func__) for h in table.values()}
    for part in list(parts.values()) + [node.admin]:
        for attr in dir(type(part)):
            if attr.startswith(("on_", "_on_")):
                assert (id(part), getattr(type(part), attr)) in bound, \
                    f"{type(part).__name__}.{attr} is not in the table"


def test_a_handler_table_that_disagrees_with_the_registry_is_refused():
    node = new_node()
    parts = node.handler_tables()
    del parts["reaper"]["reap"]
    with pytest.raises(AssertionError, match="no handler"):
        messages.dispatch_table(parts)
    parts = node.handler_tables()
    parts["requests"]["reap"] = parts["reaper"].pop("reap")
    with pytest.raises(AssertionError, match="reaper"):
        messages.dispatch_table(parts)


def test_the_key_bound_is_the_client_doors():
    """Replica messages take every key a client door accepts (the Redis
    door's longest argument, and its empty key), so no write a client could
    make fails between the nodes."""
    assert MAX_KEY == resp.MAX_BULK >= protocol.MAX_FRAME


# ---- malformed frames never reach a handler ------------------------------------------------------

OWNERS = ["n1"] * P
# field name -> values of a wrong type or out of bounds, for every field of the registry
BAD = {
    "from": [5, None, b"n1"],
    "addr": [5, None, ["n1"]],
    "dl": ["1", None, True, -1.0, float("nan"), float("inf"), 1e12],
    "end": ["1", None, -1, float("nan")],
    "id": ["1", True, 1.0, None, -1],
    "key": [5, None, ["k"], b"k" * (MAX_KEY + 1)],
    "obj": ["x", 5, None],
    "hint": [5, b"n1"],
    "v": ["1", True, None, -1],
    "reason": [5, None],
    "gen": ["1", -1, True],
    "kind": ["upsert", 5, None],
    "value": [5, ["v"]],
    "context": ["ctx", 5],
    "w": ["2", -1, True],
    "pw": ["2", -1, 1.5],
    "overwrite": [1, "yes"],
    "hops": [None, -1, "1"],
    "reply": [[], "ok", ["err"], ["err", 5, {}], ["err", "Internal", []],
              ["err", "Internal", {"errors": [[]]}]],
    "members": [5, None, [["n1", "n1", 1, 1, "weird"]], [["n1", "n1", -1, 0, "joined"]],
                [["n1", "n1", 1, 1]], [["n1", 5, 1, 1, "joined"]], [["n1", "n1", True, 1, "joined"]]],
    "member": [5, ["n1", "n1", 1, 1, "weird"], ["n1", "n1", 1, "1", "joined"]],
    "ring": [5, None, [1], [1, ["n1"] * (P - 1)], [True, OWNERS], [-1, OWNERS],
             [1, OWNERS, ["n1"] * (P + 1)], [1, OWNERS, None, None], [1, [5] * P]],
    "info": [5, {"n1": [1]}, {"n1": [1, 5]}, {"n1": ["1", {}]}, {5: [1, {}]}],
    "done": [5, [[P, "n1"]], [[-1, "n1"]], [["0", "n1"]], [[0, 5]], [[0]]],
    "for": [5, None],
    "items": [5, None, [[b"k"]], [[b"k", "obj"]], [["k", b"obj"]]],
    "last": [1, "yes", None],
    "q": ["0", True, None, -1, P],
    "branch": [5, [-1], [1 << 64], ["x"]],
    "leaves": [5, [[TREE_SEGMENTS, 0]], [[-1, 0]], [[0]], [[0, -1]]],
    "abort": [1, "yes"],
    "segments": [5, [-1], [TREE_SEGMENTS], ["0"]],
    "pairs": [5, [[5, b"h"]], [[b"k", 5]], [[b"k"]]],
    "objs": [5, [[5, b"o"]], [[b"k", None]]],
    "need": [5, [None], [5], [b"k" * (MAX_KEY + 1)]],
    "repaired": [-1, "3", None],
    "hash": [5, "h", None],
    "ok": [1, "yes", None],
}


def test_every_field_has_bad_values_to_try():
    fields = {f.name for m in MESSAGES.values() for f in messages.COMMON + m.fields}
    assert fields == set(BAD)


def _spied(node):
    calls = []
    node._dispatch = {t: (lambda msg, now, t=t: calls.append(t)) for t in node._dispatch}
    return calls


def _refused(node, calls, frame):
    before = dict(node.counters)
    node.handle_message(frame, 0.0)
    assert calls == [], f"{frame} reached its handler"
    assert node.messages_to_send() == []
    assert node.counters["bad_messages"] == before["bad_messages"] + 1, frame
    assert node.counters["handler_errors"] == before["handler_errors"]


@pytest.mark.parametrize("t", sorted(MESSAGES))
def test_a_malformed_frame_is_refused_before_its_handler(traffic, t):
    node = new_node()
    calls = _spied(node)
    good = sample(traffic, t)
    node.handle_message(good, 0.0)
    assert calls == [t], "the frame as the node sent it passes"
    calls.clear()
    tried = 0
    for field in messages.COMMON + MESSAGES[t].fields:
        if field.required:
            frame = dict(good)
            frame.pop(field.name, None)
            _refused(node, calls, frame)
            tried += 1
        for bad in BAD[field.name]:
            frame = dict(good, **{field.name: bad})
            _refused(node, calls, frame)
            tried += 1
    assert tried >= 5


@pytest.mark.parametrize("frame", [
    None, [1, 2], "rput", {}, {"t": "nonsense", "from": "n1", "addr": "n1"},
    {"t": ["rput"], "from": "n1", "addr": "n1"}, {"t": None, "from": "n1", "addr": "n1"}],
    ids=repr)
def test_a_frame_that_is_no_message_at_all_is_refused(frame):
    node = new_node()
    calls = _spied(node)
    _refused(node, calls, frame)


def test_what_only_the_handler_can_check_is_a_bad_message_too(traffic):
    """A stored object that does not decode, a tree of another shape, a
    forwarded put without its value: refused by the handler (BadMessage),
    counted as bad messages, with nothing sent and nothing logged."""
    node = new_node()
    put = dict(sample(traffic, "fwd"), kind="put")
    put.pop("value", None)
    tree = sample(traffic, "aae_tree")
    tree["q"] = next(q for q in range(P) if _replicates(node, q))
    for frame in (dict(sample(traffic, "rput"), obj=b"\0" * 9),
                  dict(sample(traffic, "hints"), **{"for": "solo", "items": [[b"k", b"\1" * 5]]}),
                  dict(tree, branch=tree["branch"][:-1]), put):
        before = node.counters["bad_messages"]
        node.handle_message(frame, 0.0)
        assert node.counters["bad_messages"] == before + 1, frame["t"]
        assert node.messages_to_send() == []
    assert node.counters["handler_errors"] == 0
    assert node.store.live_keys() == 0


def test_an_exception_in_a_handler_is_a_handler_error_logged_with_its_traceback(traffic, caplog):
    node = new_node()

    def broken(key):
        raise KeyError("boom: the store lost its index")
    node.store.get = broken  # a bug of the node, not of the message
    frame = dict(sample(traffic, "rget"))
    frame.pop("hint", None)
    with caplog.at_level(logging.ERROR, logger="rldb.cluster"):
        node.handle_message(frame, 0.0)
    assert node.counters["handler_errors"] == 1
    assert node.counters["bad_messages"] == 0
    [record] = [r for r in caplog.records if r.name == "rldb.cluster"]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "rget" in record.getMessage()
    assert "Traceback" in caplog.text and "boom: the store lost its index" in caplog.text
    # a storage error raised where nothing answers it is a handler error too
    node.store.get = ObjectStore.get.__get__(node.store)
    node.store.merge = lambda key, clock: (_ for _ in ()).throw(StorageIOError("disk"))
    node.handle_message(dict(sample(traffic, "hints"), **{"for": "solo"}), 0.0)
    assert node.counters["handler_errors"] == 2 and node.counters["bad_messages"] == 0


# ---- what the nodes send passes -----------------------------------------------------------------

def test_the_traffic_of_a_simulated_cluster_holds_every_type(traffic):
    assert set(traffic) == set(MESSAGES)


@pytest.mark.parametrize("t", sorted(MESSAGES))
def test_frames_as_the_nodes_send_them_pass(traffic, t):
    """Each frame as sent, and as it arrives through msgpack (tuples become
    lists), passes; the sim's nodes refused none (it stops on a refusal)."""
    registry = messages.Registry(P)
    for frame in traffic[t]:
        assert registry.problem(frame) is None, frame
        wire = msgpack.unpackb(msgpack.packb(frame, use_bin_type=True), raw=False)
        assert registry.problem(wire) is None, wire


def test_optional_fields_may_be_left_out_as_senders_do(traffic):
    registry = messages.Registry(P)
    repair = {k: v for k, v in sample(traffic, "rput").items() if k not in ("v", "hint")}
    assert registry.problem(repair) is None  # a read repair's rput: no v, no hint
    gossip = dict(sample(traffic, "gossip"), ring=[3, OWNERS])  # [version, owners] settled
    gossip.pop("info")
    assert registry.problem(gossip) is None
    xfer = dict(sample(traffic, "xfer"))
    xfer.pop("ring")
    assert registry.problem(xfer) is None
    fwd = dict(sample(traffic, "fwd"), context=None, w=None, pw=None)
    assert registry.problem(fwd) is None
    assert registry.problem(dict(fwd, key="text key", kind="delete")) is None


def test_the_simulator_stops_on_a_message_a_node_refuses():
    cl = Cluster(1, size=2, n=2, r=1, w=1, partitions=P)
    cl.net.send(cl.now, "n1", "n2", {"t": "rput", "id": 1, "from": "n1", "addr": "n1"})
    with pytest.raises(AssertionError, match="refused or failed 'rput'"):
        cl.run_for(1.0)


def test_the_protocol_document_lists_the_registry():
    """docs/protocol.md's table of node-to-node messages is the registry:
    the same types, the same fields (optional ones marked ?), the same parts."""
    import pathlib
    import re
    doc = (pathlib.Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
    section = doc[doc.index("### 32 node-to-node messages"):]
    rows = re.findall(r"^\| `(\w+)` \| (.*?) \| (\w+) \|$", section, re.M)
    listed = {t: (fields.split(), handler) for t, fields, handler in rows}
    want = {t: ([f"`{f.name}`" + ("" if f.required else "?") for f in m.fields], m.handler)
            for t, m in MESSAGES.items()}
    assert listed == want


def test_keys_the_redis_door_takes_replicate_in_a_cluster():
    """An empty key and one past the native frame's 1 MiB (RESP allows both)
    reach w replicas and read back, as they did before messages were checked."""
    from rldb.cluster.sim import Cluster
    cl = Cluster(3, size=3, n=3, r=3, w=3, partitions=16)
    assert cl.join_all()
    for token, key in (("empty", b""), ("long", b"k" * (protocol.MAX_FRAME + 10))):
        cl.client("n1", token, c.Put(key, b"v", None))
        assert isinstance(cl.wait_for(token, 3.0), c.Ok), token
        cl.client("n2", token + "-get", c.Get(key))
        assert cl.wait_for(token + "-get", 3.0).value.values == [b"v"], token
    assert all(node.counters["bad_messages"] == 0 for node in cl.nodes.values())
