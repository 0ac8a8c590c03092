"""Sloppy quorum, hinted handoff, anti-entropy, ring transitions, leave and
tombstone collection, each on its own in the seeded simulator (rldb.cluster.sim),
where every step can be looked at."""
import pytest

from rldb.cluster import commands as c
from rldb.cluster import dvv, objects
from rldb.cluster.hints import HintStore
from rldb.cluster.sim import Cluster
from rldb.cluster.store import ObjectStore, partition_of
from rldb.storage import open_engine


def cluster(size=4, seed=3, **core):
    cl = Cluster(seed, size=size, n=3, r=2, w=2, partitions=16, core=core)
    assert cl.join_all()
    return cl


def key_with(cl, want):
    """A key whose preference list satisfies want(pref)."""
    some = cl.nodes[cl.up()[0]]
    return next(b"key%d" % i for i in range(10_000) if want(some.preference_list(b"key%d" % i)))


def values(cl, node, key):
    return sorted(objects.live_values(cl.stores[node].get(key)))


# ---- sloppy quorum and hinted handoff ----------------------------------------------------------

def test_a_write_with_a_primary_down_goes_to_a_fallback_with_a_hint():
    cl = cluster(aae_interval=0)
    key = key_with(cl, lambda pref: True)
    primaries = cl.nodes["n1"].preference_list(key)
    fallback = next(n for n in cl.up() if n not in primaries)
    down = primaries[-1]
    cl.crash(down)
    cl.run_for(3.0)  # the failure detector notices
    coordinator = primaries[0]
    assert isinstance(cl.call(coordinator, c.Put(key, b"v1", w=3)), c.Ok), \
        "w=3 is met with the fallback's acknowledgement standing in for the down primary"
    assert cl.nodes[fallback].hints.pending(down) == 1
    assert cl.nodes[fallback].hints.get(down, key) != dvv.EMPTY
    assert values(cl, fallback, key) == [], "a hint is not part of the fallback's own data"
    # pw counts primaries only: with one of three down, pw=3 cannot be met
    reply = cl.call(coordinator, c.Put(key, b"v2", w=2, pw=3))
    assert isinstance(reply, c.Err) and reply.kind == "QuorumNotReached"
    assert isinstance(cl.call(coordinator, c.Put(key, b"v3", w=2, pw=2)), c.Ok)
    reply = cl.call(coordinator, c.Get(key, r=3, pr=3))
    assert isinstance(reply, c.Err) and reply.kind == "QuorumNotReached"
    got = cl.call(coordinator, c.Get(key, r=3))
    assert isinstance(got, c.Ok) and b"v1" in got.value.values
    # the primary comes back: the hint is handed off, then deleted
    cl.start(down)
    cl.run_for(5.0)
    assert b"v1" in values(cl, down, key)
    assert cl.nodes[fallback].hints.pending() == 0
    assert cl.nodes[fallback].counters["hints_delivered"] >= 1


def test_hints_survive_a_restart_of_the_fallback():
    cl = cluster(aae_interval=0)
    key = key_with(cl, lambda pref: True)
    primaries = cl.nodes["n1"].preference_list(key)
    fallback = next(n for n in cl.up() if n not in primaries)
    down = primaries[-1]
    cl.crash(down)
    cl.run_for(3.0)
    assert isinstance(cl.call(primaries[0], c.Put(key, b"hinted", w=3)), c.Ok)
    assert cl.nodes[fallback].hints.pending(down) == 1
    cl.crash(fallback)
    cl.start(fallback)  # same store: the hint is a meta record in the engine
    assert cl.nodes[fallback].hints.pending(down) == 1
    cl.start(down)
    cl.run_for(5.0)
    assert values(cl, down, key) == [b"hinted"]
    assert cl.nodes[fallback].hints.pending() == 0


def test_a_hint_that_grew_while_in_flight_is_kept():
    store = ObjectStore(open_engine("memory"), 16)
    hints = HintStore(store)
    first = dvv.update(dvv.new((b"a", 1)), dvv.EMPTY, "x")
    hints.add("n9", b"k", first)
    sent = hints.batch("n9", 10)
    second = dvv.update(dvv.new((b"b", 2)), dvv.EMPTY, "y")
    hints.add("n9", b"k", second)  # merged, not replaced
    assert sorted(objects.live_values(hints.get("n9", b"k"))) == [b"a", b"b"]
    assert hints.delivered("n9", sent) == 0, "the delivered bytes are not what is held now"
    assert hints.pending("n9") == 1 and hints.has_key(b"k")
    assert hints.delivered("n9", hints.batch("n9", 10)) == 1
    assert hints.pending() == 0 and not hints.has_key(b"k")
    hints.check()


def test_hint_counts_are_rebuilt_when_the_store_reopens(tmp_path):
    engine = open_engine("lsm", str(tmp_path / "db"))
    hints = HintStore(ObjectStore(engine, 16))
    for i in range(50):
        hints.add(f"n{i % 3}", b"k%d" % i, dvv.update(dvv.new((b"v", i)), dvv.EMPTY, "a"))
    engine.close()
    again = HintStore(ObjectStore(open_engine("lsm", str(tmp_path / "db")), 16))
    assert again.counts == {"n0": 17, "n1": 17, "n2": 16}
    assert again.pending_in("n0", partition_of(b"k0", 16)) >= 1
    again.check()
    again.store.engine.close()


# ---- anti-entropy ------------------------------------------------------------------------------

def write_keys(cl, count, node="n1"):
    for i in range(count):
        cl.client(node, ("w", i), c.Put(b"k%d" % i, b"v%d" % i))
        cl.run_for(0.001)
    cl.run_for(2.0)
    assert all(isinstance(cl.replies.get(("w", i)), c.Ok) for i in range(count))


def test_anti_entropy_restores_a_wiped_replica_without_any_read():
    cl = cluster(size=3)
    write_keys(cl, 300)
    cl.crash("n3")
    cl.start("n3", wipe=True)
    assert cl.nodes["n3"].store.held_partitions() == []
    end = cl.now + 60
    while cl.trees_agree() and cl.now < end:
        cl.run_for(0.5)
    assert not cl.trees_agree()
    assert all(values(cl, "n3", b"k%d" % i) == [b"v%d" % i] for i in range(300))
    assert sum(node.counters["aae_keys_repaired"] for node in cl.nodes.values()) >= 300
    cl.stores["n3"].check()


def test_repair_command_reports_the_keys_it_repaired():
    cl = cluster(size=3, aae_interval=0)
    write_keys(cl, 200)
    q = partition_of(b"k7", 16)
    in_q = [b"k%d" % i for i in range(200) if partition_of(b"k%d" % i, 16) == q]
    for key in in_q:  # n2 loses one partition's keys behind the store's back... then rebuilds
        cl.stores["n2"].engine.delete(cl.stores["n2"].storage_key(key))
    reply = cl.call("n2", c.Admin("repair", partition=q, rebuild=True), 10.0)
    assert isinstance(reply, c.Ok)
    assert reply.value["keys_repaired"] == len(in_q) and reply.value["exchanges"] == 2
    assert all(values(cl, "n2", key) for key in in_q)
    again = cl.call("n2", c.Admin("repair"), 30.0)
    assert again.value == {"partitions": 16, "exchanges": 32, "keys_repaired": 0}
    bad = cl.call("n2", c.Admin("repair", partition=99))
    assert isinstance(bad, c.Err) and bad.kind == "InvalidRequest"


def test_anti_entropy_merges_concurrent_versions_instead_of_overwriting():
    cl = cluster(size=3, aae_interval=0)
    key = b"both"
    a = dvv.update(dvv.new((b"left", 1)), dvv.EMPTY, "writer-a")
    b = dvv.update(dvv.new((b"right", 2)), dvv.EMPTY, "writer-b")
    cl.stores["n1"].put(key, a)  # two replicas each took a write the other missed
    cl.stores["n2"].put(key, b)
    q = partition_of(key, 16)
    reply = cl.call("n1", c.Admin("repair", partition=q), 10.0)
    assert reply.value["keys_repaired"] >= 2
    assert values(cl, "n1", key) == values(cl, "n2", key) == [b"left", b"right"]
    cl.call("n3", c.Admin("repair", partition=q), 10.0)  # n3 met n1 before n1 had both
    for node in ("n1", "n2", "n3"):
        assert values(cl, node, key) == [b"left", b"right"]
        assert cl.stores[node].get(key) == dvv.sync(a, b)


# ---- ring transitions, transfers, leave --------------------------------------------------------

@pytest.mark.parametrize("through", ["n1", "n3"])
def test_a_join_moves_partitions_by_transfer_and_nothing_is_lost(through):
    """Joined through the claimant (n1) or through another node, which
    answers with the old ring: the senders may then stream to the newcomer
    before gossip told it of the transition, and a batch must bring the ring."""
    cl = cluster(size=3, aae_interval=0, handoff_batch=16)
    write_keys(cl, 400)
    cl.add_node("n4", through=through)
    assert cl.settle(60)
    assert not cl.trees_agree(), "transfers alone (anti-entropy is off) made the replicas equal"
    owners = cl.nodes["n1"].owners
    assert {owners.count(n) for n in cl.up()} == {4}
    assert cl.nodes["n4"].counters["keys_received"] > 0
    assert cl.nodes["n4"].counters["relayed_writes"] == 0
    for i in range(400):
        got = cl.call("n4", c.Get(b"k%d" % i, r=3))
        assert isinstance(got, c.Ok) and got.value.values == [b"v%d" % i]
    for name, node in cl.nodes.items():  # no node keeps a partition it no longer replicates
        assert all(node.topology.is_member(q) for q in node.store.held_partitions()), name


def test_a_transfer_resumes_after_its_source_crashes():
    cl = cluster(size=3, aae_interval=0, handoff_batch=8, handoff_rate=200)
    write_keys(cl, 400)
    cl.add_node("n4")
    end = cl.now + 10
    sources = []
    while not sources and cl.now < end:  # partway: some batches acknowledged, not all
        cl.run_for(0.05)
        sources = [n for n in ("n1", "n2", "n3") if cl.nodes[n].handoff.outgoing_pending()
                   and cl.nodes[n].handoff.transfers["cursor"]]
    assert sources, "no transfer was in progress"
    src = sources[0]
    cursors = dict(cl.nodes[src].handoff.transfers["cursor"])
    assert cursors, "no batch was acknowledged before the crash"
    cl.crash(src)
    cl.start(src)
    transfers = cl.nodes[src].handoff.transfers
    assert transfers["cursor"] == cursors or transfers["done"], \
        "the cursor was not kept across the restart"
    assert cl.settle(120)
    for i in range(400):
        got = cl.call("n4", c.Get(b"k%d" % i, r=3))
        assert isinstance(got, c.Ok) and got.value.values == [b"v%d" % i]


def test_writes_during_a_transition_reach_old_and_new_replicas():
    cl = cluster(size=3, aae_interval=0, handoff_rate=100)
    write_keys(cl, 100)
    cl.add_node("n4")
    end = cl.now + 10
    while cl.nodes["n1"].next_owners is None and cl.now < end:
        cl.run_for(0.01)
    assert cl.nodes["n1"].next_owners is not None, "the transition should be going"
    for i in range(100, 200):
        assert isinstance(cl.call("n1", c.Put(b"k%d" % i, b"v%d" % i)), c.Ok)
    assert cl.settle(120)
    for i in range(200):
        pref = cl.nodes["n1"].preference_list(b"k%d" % i)
        assert all(values(cl, n, b"k%d" % i) == [b"v%d" % i] for n in pref), i


def test_leave_hands_everything_off_then_stops():
    cl = cluster(size=4, aae_interval=0)
    write_keys(cl, 300)
    reply = cl.call("n2", c.Admin("leave"))
    assert reply == c.Ok("leaving")
    cl.run_for(30)
    assert "n2" not in cl.nodes, "the node did not stop after leaving"
    assert cl.settle(30)
    owners = cl.nodes["n1"].owners
    assert "n2" not in owners and {owners.count(n) for n in cl.up()} <= {5, 6}
    status = cl.call("n1", c.Admin("status")).value
    assert {r["node"]: r["status"] for r in status["nodes"]}["n2"] == "left"
    for i in range(300):
        got = cl.call("n3", c.Get(b"k%d" % i, r=3))
        assert isinstance(got, c.Ok) and got.value.values == [b"v%d" % i]
    assert cl.call("n1", c.Admin("leave")) == c.Ok("leaving")
    lone = Cluster(5, size=1, n=1, r=1, w=1)
    reply = lone.call("n1", c.Admin("leave"))
    assert isinstance(reply, c.Err) and "only node" in reply.fields["reason"]


def test_admin_views():
    cl = cluster(size=3)
    ring_view = cl.call("n1", c.Admin("ring")).value
    assert len(ring_view["partitions"]) == 16 and not ring_view["in_transition"]
    assert all(len(p["preference_list"]) == 3 and p["next"] is None for p in ring_view["partitions"])
    status = cl.call("n1", c.Admin("status")).value
    assert [r["node"] for r in status["nodes"]] == ["n1", "n2", "n3"]
    assert all(r["status"] == "up" and r["hints"] == 0 for r in status["nodes"])
    assert sum(r["partitions"] for r in status["nodes"]) == 16
    transfers = cl.call("n1", c.Admin("transfers")).value
    assert transfers["outgoing"] == [] and transfers["hints"] == {}
    bad = cl.call("n1", c.Admin("dance"))
    assert isinstance(bad, c.Err) and bad.kind == "InvalidRequest"


# ---- tombstone collection -----------------------------------------------------------------------

def test_tombstones_are_collected_after_the_grace_period():
    cl = cluster(size=3, tombstone_grace=5.0)
    write_keys(cl, 20)
    for i in range(10):
        got = cl.call("n1", c.Get(b"k%d" % i))
        assert isinstance(cl.call("n1", c.Delete(b"k%d" % i, got.value.context)), c.Ok)
    cl.run_for(2.0)
    assert all(cl.stores[n].get(b"k0") != dvv.EMPTY for n in ("n1", "n2", "n3")), \
        "collected before the grace period"
    cl.run_for(10.0)
    for n in ("n1", "n2", "n3"):
        assert all(cl.stores[n].get_raw(b"k%d" % i) is None for i in range(10)), n
        assert all(cl.stores[n].get_raw(b"k%d" % i) is not None for i in range(10, 20)), n
        cl.stores[n].check()
    assert isinstance(cl.call("n2", c.Get(b"k0")), c.Err)
    # a new write after the collection is a fresh value, not hidden by the old delete
    assert isinstance(cl.call("n2", c.Put(b"k0", b"again")), c.Ok)
    assert cl.call("n3", c.Get(b"k0")).value.values == [b"again"]


def test_zombie_a_replica_that_missed_the_delete_does_not_bring_the_key_back():
    """Cassandra's zombie: a replica that was away during a delete must not
    resurrect the value after the tombstone is gone elsewhere."""
    cl = cluster(size=3, tombstone_grace=2.0, aae_interval=0)
    key = b"zombie"
    assert isinstance(cl.call("n1", c.Put(key, b"alive")), c.Ok)
    cl.run_for(1.0)
    cl.partition(["n3"])          # n3 keeps the value and misses the delete
    got = cl.call("n1", c.Get(key))
    assert isinstance(cl.call("n1", c.Delete(key, got.value.context)), c.Ok)
    cl.run_for(10.0)              # well past the grace period
    for n in ("n1", "n2"):
        assert cl.stores[n].get_raw(key) is not None, "collected while n3 missed the delete"
    assert values(cl, "n3", key) == [b"alive"]
    cl.heal()
    cl.run_for(3.0)
    reply = cl.call("n1", c.Admin("repair"), 30.0)   # n3 learns of the delete
    assert reply.value["keys_repaired"] >= 1
    cl.run_for(10.0)              # now every replica holds it: collected everywhere
    assert all(cl.stores[n].get_raw(key) is None for n in ("n1", "n2", "n3"))
    again = cl.call("n1", c.Admin("repair"), 30.0)
    assert again.value["keys_repaired"] == 0
    assert isinstance(cl.call("n2", c.Get(key, r=3)), c.Err)


def test_doomstone_an_old_tombstone_held_as_a_hint_does_not_delete_a_newer_value():
    """Riak's doomstone: a fallback still holds an old tombstone as a hint
    when every primary already has the tombstone.  Collecting it then, and
    writing the key again, would let the hint, handed off later, delete the
    newer value (its dots would be numbered from scratch, below the old
    tombstone's).  A pending hint blocks the collection."""
    cl = cluster(size=4, tombstone_grace=1.0, aae_interval=0)
    key = key_with(cl, lambda pref: True)
    primaries = cl.nodes["n1"].preference_list(key)
    fallback = next(n for n in cl.up() if n not in primaries)
    away = primaries[-1]
    assert isinstance(cl.call(primaries[0], c.Put(key, b"old")), c.Ok)
    cl.run_for(1.0)
    cl.crash(away)
    cl.run_for(3.0)
    got = cl.call(primaries[0], c.Get(key))
    assert isinstance(cl.call(primaries[0], c.Delete(key, got.value.context, w=3)), c.Ok)
    assert cl.nodes[fallback].hints.pending(away) == 1   # the tombstone, for `away`
    cl.net.cut.add(frozenset((fallback, away)))          # the hint cannot be handed off
    cl.start(away)
    cl.run_for(3.0)
    assert isinstance(cl.call(primaries[0], c.Get(key, r=3)), c.Err)  # NotFound; repairs `away`
    cl.run_for(1.0)
    tomb = cl.stores[primaries[0]].get_raw(key)
    assert all(cl.stores[n].get_raw(key) == tomb for n in primaries), "primaries disagree"
    assert all(cl.nodes[primaries[0]].membership.is_up(n, cl.now) for n in cl.up())
    cl.run_for(8.0)               # past the grace period, every node up
    assert cl.nodes[fallback].hints.pending(away) == 1
    assert cl.stores[primaries[0]].get_raw(key) is not None, \
        "collected while a hint for the key was pending"
    assert isinstance(cl.call(primaries[0], c.Put(key, b"new")), c.Ok)
    cl.heal()
    cl.run_for(5.0)               # the old tombstone is handed off now
    assert cl.nodes[fallback].hints.pending() == 0
    got = cl.call(primaries[1], c.Get(key, r=3))
    assert isinstance(got, c.Ok) and got.value.values == [b"new"]
    cl.run_for(10.0)              # and collection leaves the newer value alone
    got = cl.call(primaries[1], c.Get(key, r=3))
    assert isinstance(got, c.Ok) and got.value.values == [b"new"]


def test_a_wiped_node_takes_a_new_actor_id():
    """Dots are only fresh if the node still has every one it issued: a node
    that lost its data must not number new versions like the ones it forgot."""
    cl = cluster(size=3)
    before = cl.nodes["n2"].actor
    cl.crash("n2")
    cl.start("n2")
    assert cl.nodes["n2"].actor == before
    cl.crash("n2")
    cl.start("n2", wipe=True)
    assert cl.nodes["n2"].actor != before and cl.nodes["n2"].actor.startswith("n2.")


@pytest.mark.parametrize("seed", range(5))
def test_stores_keep_their_indexes_under_a_random_history(seed):
    cl = cluster(size=4, seed=seed, tombstone_grace=1.0)
    write_keys(cl, 50)
    cl.crash("n4")
    for i in range(0, 50, 3):
        got = cl.call("n1", c.Get(b"k%d" % i))
        cl.call("n1", c.Delete(b"k%d" % i, got.value.context))
    cl.start("n4")
    assert cl.settle(60)
    cl.run_for(10)
    for name, node in cl.nodes.items():
        node.store.check()
        node.hints.check()


def test_a_collection_request_never_deletes_a_live_value():
    cl = cluster(size=3)
    assert isinstance(cl.call("n1", c.Put(b"live", b"v")), c.Ok)
    cl.run_for(1.0)
    raw = cl.stores["n2"].get_raw(b"live")
    cl.nodes["n2"].handle_message({"t": "reap", "key": b"live", "hash": raw[:4],
                                   "from": "n1", "addr": "n1"}, cl.now)
    assert cl.stores["n2"].get_raw(b"live") == raw
