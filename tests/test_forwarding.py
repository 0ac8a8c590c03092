"""Forwarded writes and the two kinds of write error, in the seeded
simulator (rldb.cluster.sim) with links that hold what crosses a cut, as TCP
does (cut="hold"), and on the wire.

A write that reaches a node holding no replica of its key goes to one
replica at a time; one that does not take it within forward_timeout is
passed over, and one that gets the forward after its deadline drops it.
When none takes it, the node coordinates the write itself through the
sloppy quorum.  A failed write says whether it was applied nowhere or may
still be applied (docs/consistency.md)."""
import pytest

from rldb.cluster import commands as c
from rldb.cluster import dvv
from rldb.cluster.coordinator import cannot_write, failure, is_indeterminate
from rldb.cluster.sim import Cluster
from rldb.errors import QuorumNotReachedError
from rldb.net import client, codec, resp_server
from rldb.net import protocol as p

NOWHERE = "not applied anywhere (safe to retry)"


def cluster(size=4, seed=1, request_timeout=1.0, cut="hold", **core):
    core = {"forward_timeout": 0.25, "aae_interval": 0, **core}
    cl = Cluster(seed, size=size, n=3, r=2, w=2, partitions=16, cut=cut,
                 request_timeout=request_timeout, core=core)
    assert cl.join_all()
    return cl


def foreign_key(cl, node):
    """A key node holds no replica of, and its preference list."""
    key = next(b"key%d" % i for i in range(10_000)
               if node not in cl.nodes[node].preference_list(b"key%d" % i))
    return key, cl.nodes[node].preference_list(key)


def writers(clock, value):
    """The actors whose dots hold value in clock."""
    return [i for i, _, vals in clock[0] if any(v == value for v, _ in vals)]


def final_values(cl, key, node=None):
    assert cl.settle(30.0)
    reply = cl.call(node or cl.up()[0], c.Get(key, r=3))
    return reply.value.values if isinstance(reply, c.Ok) else []


def applied_nowhere(reply):
    return isinstance(reply, c.Err) and reply.kind == "QuorumNotReached" and \
        not is_indeterminate(reply)


# ---- forwarding -----------------------------------------------------------------------------

def test_a_forward_to_a_cut_off_replica_goes_to_the_next_one():
    cl = cluster()
    key, pref = foreign_key(cl, "n1")
    cl.cut_link("n1", pref[0])          # the first replica asked never hears of it in time
    assert isinstance(cl.call("n1", c.Put(key, b"v1")), c.Ok)
    counters = cl.nodes["n1"].counters
    assert counters["forward_retries"] == 1 and counters["forwards_coordinated"] == 0
    late = [m for _, m in cl.net.held[("n1", pref[0])] if m["t"] == "fwd"]
    assert late, "the forward to the cut-off replica waits on its link"
    expired = cl.nodes[pref[0]].counters["expired_requests"]
    cl.heal()                           # within the link bound: it arrives, past its deadline
    cl.run_for(0.5)
    assert cl.nodes[pref[0]].counters["expired_requests"] >= expired + len(late)
    assert final_values(cl, key) == [b"v1"]
    clocks = [cl.stores[n].get(key) for n in pref]
    assert all(writers(clock, b"v1") == [cl.nodes[pref[1]].actor] for clock in clocks), \
        "applied once, by the replica that took it"


def test_a_forward_that_arrives_after_its_deadline_is_dropped_unread():
    cl = cluster(cut="drop")
    key, pref = foreign_key(cl, "n1")
    sent = []
    send = cl.net.send
    cl.net.send = lambda now, src, dst, msg: (sent.append(dict(msg)), send(now, src, dst, msg))
    assert isinstance(cl.call("n1", c.Put(key, b"v1")), c.Ok)
    fwd = next(m for m in sent if m["t"] == "fwd")
    target = cl.nodes[pref[0]]
    before = dict(target.counters), target.store.get_raw(key)
    for dl, answered in ((cl.now - 0.001, []), (cl.now + 1.0, ["fwd_ack"])):
        fresh = dict(fwd, id=fwd["id"] + 1000, dl=dl)  # a forward this node never saw
        target.handle_message(fresh, cl.now)
        assert [m["t"] for _, m in target.messages_to_send()] == answered
    assert target.counters["expired_requests"] == before[0]["expired_requests"] + 1
    assert target.counters["bad_messages"] == before[0]["bad_messages"]
    assert target.store.get_raw(key) == before[1], "a late forward is not applied"


def test_when_no_replica_takes_it_the_node_coordinates_it_through_the_sloppy_quorum():
    cl = cluster(size=5, request_timeout=2.0)
    key, pref = foreign_key(cl, "n1")
    for node in pref:
        cl.cut_link("n1", node)         # n1 is up, and so is the other fallback
    assert isinstance(cl.call("n1", c.Put(key, b"proxied")), c.Ok)
    counters = cl.nodes["n1"].counters
    assert counters["forwards_coordinated"] == 1 and counters["forward_retries"] == 2
    assert sum(node.hints.pending() for node in cl.nodes.values()) >= 2, \
        "stand-ins keep it as hints for the replicas"
    assert all(not dvv.values(cl.stores[n].get(key)) for n in pref)
    cl.heal()
    assert final_values(cl, key, pref[0]) == [b"proxied"]
    clock = cl.stores[pref[0]].get(key)
    assert len(writers(clock, b"proxied")) == 1
    assert writers(clock, b"proxied")[0].startswith(cl.nodes["n1"].actor + "~"), \
        "the proxy's dot is of an actor of its own"


@pytest.mark.parametrize("kind", ["delete", "resp-set"])
def test_a_write_without_context_that_no_replica_takes_fails_and_is_not_applied(kind):
    cl = cluster(size=5, request_timeout=2.0)
    key, pref = foreign_key(cl, "n1")
    assert isinstance(cl.call(pref[0], c.Put(key, b"kept")), c.Ok)
    cl.run_for(0.5)
    for node in pref:
        cl.cut_link("n1", node)
    command = c.Delete(key) if kind == "delete" else c.Put(key, b"set", overwrite=True)
    reply = cl.call("n1", command)
    assert isinstance(reply, c.Err) and reply.kind == "QuorumNotReached", reply
    assert cl.nodes["n1"].counters["forwards_coordinated"] == 0
    cl.heal()
    cl.run_for(1.0)
    assert final_values(cl, key, pref[0]) == [b"kept"]


# ---- applied nowhere, or indeterminate --------------------------------------------------------

def test_fewer_nodes_up_than_w_is_applied_nowhere():
    cl = cluster(size=3)
    key = b"k"
    cl.crash("n2")
    cl.crash("n3")
    cl.run_for(5.0)                     # the failure detector sees them down
    groups = [cl.nodes["n1"].preference_list(key)]
    assert cannot_write(cl.nodes["n1"].membership, groups, 2, 0, cl.now) is not None
    assert cannot_write(cl.nodes["n1"].membership, groups, 1, 0, cl.now) is None
    sent = cl.net.stats["sent"]
    reply = cl.call("n1", c.Put(key, b"never"))
    assert applied_nowhere(reply) and reply.fields["reason"].endswith(NOWHERE), reply
    assert cl.stores["n1"].get_raw(key) is None and not cl.nodes["n1"].hints.pending()
    assert cl.net.stats["sent"] - sent < 10, "nothing but gossip went out"
    cl.start("n2")
    cl.start("n3")
    assert final_values(cl, key) == []


def test_a_forwarded_write_that_cannot_reach_w_is_applied_nowhere():
    cl = cluster()
    key, pref = foreign_key(cl, "n1")
    for node in pref:
        cl.crash(node)
    cl.run_for(5.0)
    reply = cl.call("n1", c.Put(key, b"never"))
    assert applied_nowhere(reply) and reply.fields["reason"].endswith(NOWHERE), reply
    assert not cl.nodes["n1"].hints.pending()
    for node in pref:
        cl.start(node)
    assert final_values(cl, key) == []


def test_a_quorum_missed_after_the_coordinator_stored_the_write_is_indeterminate():
    cl = cluster(size=3)
    key = b"k"
    cl.partition(["n1"])                # n1 still believes the others up
    reply = cl.call("n1", c.Put(key, b"maybe"))
    assert isinstance(reply, c.Err) and reply.kind == "QuorumNotReached"
    assert is_indeterminate(reply) and reply.fields["reason"].startswith("Indeterminate"), reply
    assert not reply.fields["reason"].endswith(NOWHERE)
    assert dvv.values(cl.stores["n1"].get(key)), "stored by its coordinator"
    cl.heal()
    cl.run_for(1.0)
    cl.call("n2", c.Admin("repair"), 30.0)
    assert final_values(cl, key) == [b"maybe"], "and it may still become visible"


# ---- the error on the wire --------------------------------------------------------------------

@pytest.mark.parametrize("indeterminate", [True, False])
def test_the_doors_say_whether_the_write_may_still_apply(indeterminate):
    reply = failure("Put", "2 replica(s) needed, 1 answered", indeterminate)
    text = resp_server._error(reply)
    assert text.startswith(b"-QUORUM ")
    assert text.startswith(b"-QUORUM Indeterminate: ") == indeterminate
    assert (NOWHERE.encode() in text) != indeterminate
    for cmd_id, parse in ((p.BPUT, p.parse_msgpack), (p.PUT, p.parse_json)):
        frames = p.FrameDecoder().feed(codec.encode_reply(cmd_id, "r1", reply))
        (got_cmd, _, payload), = frames
        assert got_cmd == cmd_id
        with pytest.raises(QuorumNotReachedError) as raised:
            client._raise_for(parse(payload, cmd_id, "r1"))
        assert raised.value.indeterminate == indeterminate


# ---- a replica that restarts after it took a forward -----------------------------------------

def test_a_replica_restarted_after_taking_a_forward_does_not_make_it_apply_twice():
    """It forgot the forward: the forwarder must not take that for "applied
    nowhere" and offer the write to the next replica (a second dot), nor
    tell the client it was applied nowhere while it is stored."""
    cl = cluster(cut="drop")
    key, pref = foreign_key(cl, "n1")
    token = ("put", "once")
    cl.client("n1", token, c.Put(key, b"once"))
    for _ in range(2000):               # until the replica asked has stored it
        cl.run_for(0.0005)
        if dvv.values(cl.stores[pref[0]].get(key)):
            break
    assert dvv.values(cl.stores[pref[0]].get(key)), "the first replica took the forward"
    cl.crash(pref[0])                   # before it could answer; it comes back with its data
    cl.start(pref[0])
    reply = cl.wait_for(token, 5.0)
    values = final_values(cl, key)
    assert reply is not None and not applied_nowhere(reply), reply
    assert values == [b"once"], f"one write, one value: {values} (answered {reply})"


def test_a_forward_with_a_quorum_above_n_is_refused_at_once():
    """Checked where it arrives, so a write no replica takes is never
    coordinated here (on a timer) with a w the node cannot honour."""
    cl = cluster()
    key, _ = foreign_key(cl, "n1")
    cl.partition(["n1"])  # no replica can take the offer
    reply = cl.call("n1", c.Put(key, b"v", w=7), 1.0)
    cl.run_for(2.0)       # past the forward's deadline: nothing fails on a timer
    assert isinstance(reply, c.Err) and reply.kind == "InvalidRequest", reply
    assert "w=7" in reply.fields["reason"]
