"""Deletes stay deleted after their tombstones are collected, and a write
made after a collection is never lost: the scenarios of
docs/consistency.md "Deletes and tombstones", in the seeded simulator with
links that hold what crosses a cut as TCP does (cut="hold").

Each checks, all along and at the end, that no node ever holds again a
value an acknowledged delete covered (a zombie), and that later writes
survive.  The grace is short (0.5 s, under the 2 s link bound) so that a
version older than the tombstone can still be on a link when it is
collected: what the floors (a collected key's history, floors.KeyFloors),
the deadlines requests carry and the dot floor (floors.DotFloor) are for."""
import pytest

from rldb.cluster import commands as c
from rldb.cluster import dvv, objects
from rldb.cluster.sim import Cluster
from rldb.cluster.store import ObjectStore, partition_of
from rldb.storage import open_engine

GRACE = 0.5


def cluster(seed=1, cut="hold", **core):
    core = {"tombstone_grace": GRACE, "aae_interval": 0, "forward_timeout": 0.25, **core}
    cl = Cluster(seed, size=3, n=3, r=2, w=2, partitions=16, request_timeout=1.0, cut=cut,
                 core=core)
    assert cl.join_all()
    return cl


def setup(cl):
    """A key and its replicas, the first of which (the reaper) comes first."""
    some = cl.nodes["n1"]
    key = b"floored"
    return key, some.preference_list(key)


def live(cl, node, key):
    return sorted(objects.live_values(cl.stores[node].get(key)))


def run_watching(cl, seconds, key, gone, until=None):
    """Runs the cluster, checking at every step that no node holds a value
    of `gone` (deleted by an acknowledged delete); stops early once until()."""
    end = cl.now + seconds
    while cl.now < end:
        cl.run_for(0.02)
        for name in cl.nodes:
            back = set(live(cl, name, key)) & set(gone)
            assert not back, f"{name} holds {sorted(back)} again at {cl.now:.2f}"
        if until is not None and until():
            return True
    return until is None


def collected(cl, key, nodes):
    return all(cl.stores[n].get_raw(key) is None and cl.stores[n].floors.get(key) is not None
               for n in nodes)


def final_read(cl, key):
    assert cl.settle(30.0)
    reply = cl.call(cl.up()[0], c.Get(key, r=3))
    values = reply.value.values if isinstance(reply, c.Ok) else []
    assert all(live(cl, n, key) == sorted(values) for n in cl.nodes), "replicas differ"
    return values


def write_then_delete(cl, key, coordinator, value=b"v200"):
    """An acknowledged write and an acknowledged delete with the context
    read after it; returns that context."""
    assert isinstance(cl.call(coordinator, c.Put(key, value)), c.Ok)
    got = cl.call(coordinator, c.Get(key))
    assert isinstance(got, c.Ok) and got.value.values == [value]
    assert isinstance(cl.call(coordinator, c.Delete(key, got.value.context)), c.Ok)
    return got.value.context


def late_replica_write(cl):
    """Scenario a up to the collection: a coordinator's replica write to one
    replica waits on a cut link while the key is written, deleted, handed to
    that replica by anti-entropy, and collected everywhere."""
    key, (reaper, coordinator, late) = setup(cl)
    cl.cut_link(coordinator, late)
    ctx = write_then_delete(cl, key, coordinator)
    held = [m["t"] for _, m in cl.net.held[(coordinator, late)]]
    assert "rput" in held, "the replica write to the cut-off replica is on its link"
    assert live(cl, late, key) == [], "the late replica has not seen v200"
    q = partition_of(key, 16)
    cl.call(reaper, c.Admin("repair", partition=q), 10.0)  # the tombstone reaches `late`
    assert objects.is_deleted(cl.stores[late].get(key))
    assert run_watching(cl, 3.0, key, [b"v200"], lambda: collected(cl, key, cl.up()))
    assert sum(node.counters["tombstones_reaped"] for node in cl.nodes.values()) == 3
    return key, (reaper, coordinator, late), ctx


# ---- a. a replica write that arrives after the collection ------------------------------------

@pytest.mark.parametrize("heal_after", [0.0, 2.5], ids=["delivered-late", "link-reset"])
def test_a_late_replica_write_does_not_bring_a_collected_value_back(heal_after):
    cl = cluster()
    key, (_, coordinator, late), _ = late_replica_write(cl)
    node = cl.nodes[late]
    before = node.counters["expired_requests"], node.store.floors.absorbed
    run_watching(cl, heal_after, key, [b"v200"])
    cl.heal()
    assert run_watching(cl, 2.0, key, [b"v200"])
    if heal_after == 0.0:   # within the link bound: v200 arrives, past its deadline or at the floor
        after = node.counters["expired_requests"], node.store.floors.absorbed
        assert after[0] > before[0] or after[1] > before[1]
        assert cl.net.stats["released"] > 0
    else:                   # the link waited past its bound: reset, v200 is gone with it
        assert cl.net.stats["reset"] > 0
    assert final_read(cl, key) == []
    assert all(cl.stores[n].get_raw(key) is None for n in cl.nodes)


# ---- b. a write after the collection -------------------------------------------------------

@pytest.mark.parametrize("stale", [False, True], ids=["no-context", "context-before-delete"])
def test_a_write_after_the_collection_stays_and_the_collected_value_stays_gone(stale):
    """v300 is written by the coordinator of v200 and of the delete, whose
    actor's dots the collected history holds: it must number v300 above
    them, or the late v200 (or the tombstone) would hide it."""
    cl = cluster()
    key, (reaper, coordinator, late), ctx = late_replica_write(cl)
    actor = cl.nodes[coordinator].actor
    history = dvv.counter(cl.stores[coordinator].floors.get(key), actor)
    assert history == 2                  # v200 and the tombstone
    assert isinstance(cl.call(coordinator, c.Put(key, b"v300", ctx if stale else None)), c.Ok)
    assert live(cl, coordinator, key) == live(cl, reaper, key) == [b"v300"]
    assert dvv.counter(cl.stores[coordinator].get(key), actor) > history
    cl.heal()                            # the held v200 (and v300) replica writes arrive now
    assert run_watching(cl, 2.0, key, [b"v200"])
    cl.call(late, c.Admin("repair", partition=partition_of(key, 16)), 10.0)
    assert run_watching(cl, 1.0, key, [b"v200"])
    assert final_read(cl, key) == [b"v300"]


# ---- c. a lost collect order ----------------------------------------------------------------

def _collected_but(cl, key, reaper, kept):
    others = [n for n in cl.nodes if n != kept]
    return collected(cl, key, others) and cl.stores[kept].get_raw(key) is not None


def test_a_lost_collect_order_is_sent_again():
    cl = cluster(cut="drop")
    key, (reaper, coordinator, kept) = setup(cl)
    write_then_delete(cl, key, coordinator)
    cl.block(lambda src, dst, msg: msg["t"] == "reap" and dst == kept)
    assert run_watching(cl, 3.0, key, [b"v200"], lambda: _collected_but(cl, key, reaper, kept))
    cl.run_for(1.5)                      # an order resent, and lost again
    resent = cl.nodes[reaper].counters["collect_orders_resent"]
    assert resent >= 1 and cl.stores[kept].get_raw(key) is not None
    cl.heal()                            # the next one gets through
    assert run_watching(cl, 3.0, key, [b"v200"], lambda: collected(cl, key, cl.up()))
    assert cl.nodes[reaper].counters["collect_orders_resent"] > resent
    assert isinstance(cl.call(kept, c.Put(key, b"later")), c.Ok)
    assert final_read(cl, key) == [b"later"]


def _floor_handed_over_by(initiator):
    cl = cluster(cut="drop")
    key, (reaper, coordinator, kept) = setup(cl)
    write_then_delete(cl, key, coordinator)
    cl.block(lambda src, dst, msg: msg["t"] == "reap" and dst == kept)  # never heals
    assert run_watching(cl, 3.0, key, [b"v200"], lambda: _collected_but(cl, key, reaper, kept))
    assert cl.net.stats["cut"] > 0, "the collect orders to it were lost"
    who = {"reaper": reaper, "kept": kept}[initiator]
    cl.call(who, c.Admin("repair", partition=partition_of(key, 16)), 10.0)
    assert run_watching(cl, 1.0, key, [b"v200"], lambda: collected(cl, key, cl.up())), \
        f"{kept} still holds the tombstone after an exchange started by {who}"
    assert isinstance(cl.call(kept, c.Put(key, b"later")), c.Ok)
    assert run_watching(cl, 2.0, key, [b"v200"])
    reply = cl.call(reaper, c.Get(key, r=3))
    assert isinstance(reply, c.Ok) and reply.value.values == [b"later"]


def test_anti_entropy_hands_the_floor_to_a_replica_that_missed_the_collect_order():
    _floor_handed_over_by("kept")


def test_anti_entropy_started_by_the_collector_hands_the_floor_over():
    _floor_handed_over_by("reaper")


# ---- d. a read repair racing the collection -------------------------------------------------

def test_a_read_repair_that_arrives_after_the_collection_is_absorbed_by_the_floor():
    cl = cluster()
    key, (reaper, reader, stale) = setup(cl)
    assert isinstance(cl.call(reaper, c.Put(key, b"v200")), c.Ok)
    cl.run_for(0.5)
    cl.partition([stale])                # it keeps v200 and misses the delete
    got = cl.call(reaper, c.Get(key))
    assert isinstance(cl.call(reaper, c.Delete(key, got.value.context)), c.Ok)
    cl.run_for(2.5)                      # past the link bound: what it missed is gone
    cl.heal()
    cl.run_for(0.5)
    assert live(cl, stale, key) == [b"v200"] and cl.stores[reaper].get_raw(key) is not None, \
        "not collected while a replica misses the tombstone"
    cl.block(lambda src, dst, msg: msg["t"] == "rput" and msg["id"] == 0 and src == reader
             and dst == stale)
    reply = cl.call(reader, c.Get(key))  # the replies are in; the repair to `stale` waits
    assert isinstance(reply, c.Err) and reply.kind == "NotFound"
    cl.run_for(0.1)
    assert any(m["t"] == "rput" for _, m in cl.net.held.get((reader, stale), []))
    cl.call(reaper, c.Admin("repair", partition=partition_of(key, 16)), 10.0)
    assert run_watching(cl, 3.0, key, [b"v200"], lambda: collected(cl, key, cl.up()))
    absorbed = cl.stores[stale].floors.absorbed
    cl.heal()                            # the read repair arrives after the collection
    assert run_watching(cl, 1.0, key, [b"v200"])
    assert cl.stores[stale].floors.absorbed > absorbed
    assert cl.nodes[stale].summary()["floor_absorbed"] == cl.stores[stale].floors.absorbed
    assert cl.stores[stale].get_raw(key) is None
    assert final_read(cl, key) == []


# ---- e. a restart right after a collection -----------------------------------------------------

def test_a_restarted_node_keeps_its_floors_and_numbers_new_dots_above_all_it_issued():
    cl = cluster(cut="drop")
    key, (reaper, coordinator, other) = setup(cl)
    node = coordinator
    for i in range(5):                   # dots of this node's actor on other keys too
        assert isinstance(cl.call(node, c.Put(b"other%d" % i, b"x")), c.Ok)
    write_then_delete(cl, key, node)
    cl.run_for(0.5)
    tomb = cl.stores[node].get(key)
    assert run_watching(cl, 3.0, key, [b"v200"], lambda: collected(cl, key, cl.up()))
    actor = cl.nodes[node].actor
    keys = [key] + [b"other%d" % i for i in range(5)]
    issued = max(dvv.counter(cl.stores[node].get(k), actor) for k in keys[1:])
    issued = max(issued, dvv.counter(cl.stores[node].floors.get(key), actor))
    assert issued >= 1
    cl.crash(node)
    cl.start(node)                       # with its data
    assert cl.nodes[node].actor == actor
    assert cl.stores[node].floors.get(key) == dvv.vector_clock(tomb), "the floor survived"
    assert cl.nodes[node].replica.apply(key, tomb) is False, "a late copy stays deleted"
    assert cl.stores[node].floors.absorbed >= 1 and cl.stores[node].get_raw(key) is None
    cl.run_for(2.0)
    for k, value in ((key, b"after"), (b"brand-new", b"fresh")):
        assert isinstance(cl.call(node, c.Put(k, value)), c.Ok)
        assert dvv.counter(cl.stores[node].get(k), actor) > issued, k
    assert run_watching(cl, 1.0, key, [b"v200"])
    assert final_read(cl, key) == [b"after"]


# ---- the store's merge through a floor, on its own ---------------------------------------------

def test_the_store_merges_a_covered_version_into_its_floor_and_keeps_a_newer_one():
    store = ObjectStore(open_engine("memory"), 16)
    old = dvv.update(dvv.new((b"v200", 1)), dvv.EMPTY, "a")
    tomb = dvv.update(dvv.new((None, 2), dvv.join(old)), old, "a")
    store.put(b"k", tomb)
    assert store.remove_tombstone(b"k", store.get_raw(b"k")[:4]) == tomb
    store.floors.put(b"k", dvv.vector_clock(tomb), 10_000)
    for late in (old, tomb):
        assert store.merge(b"k", late, 10_000) is False
    assert store.floors.absorbed == 2 and store.get_raw(b"k") is None
    newer = dvv.update(dvv.new((b"v300", 3)), dvv.EMPTY, "b")
    assert store.merge(b"k", newer, 10_000) is True
    assert objects.live_values(store.get(b"k")) == [b"v300"]
    assert store.floors.get(b"k") is None, "the history now lives under the new value"
    assert dvv.counter(store.get(b"k"), "a") == 2
    store.check()
