"""Seeded simulations of a cluster under message delay, loss, duplication,
reordering, partitions and crashes (rldb.cluster.sim), checked against what
the clients were told.

The oracle: every value written is unique.  A write made with a context from a
read supersedes exactly the values that read returned.  After healing and a
final read of every key from all replicas:
- an acknowledged value is there, or some write superseded it (transitively);
- no value superseded by an acknowledged write is back;
- no value appears twice, none that was never written;
- the replicas of every key hold the same clock once read repair has run;
- a write answered "applied nowhere" (QuorumNotReached, not indeterminate)
  never shows up in any read, and supersedes nothing.
A quarter of the seeds cut links as TCP does under an iptables partition
(cut="hold": what crosses a cut arrives late at the heal, unless the link
reset), with the forward timeout a real node takes (a quarter of the
request timeout).  A failing seed's schedule is printed, to replay with
SEED=... ."""
import os
import random

import pytest

from rldb.cluster import commands as c
from rldb.cluster import dvv, ring
from rldb.cluster.coordinator import is_indeterminate
from rldb.cluster.sim import Cluster
from rldb.cluster.store import partition_of

RUNS = int(os.environ.get("SIM_RUNS", "200"))
TOTALS = {"runs": 0, "ops": 0, "crashes": 0, "wiped": 0, "partitions": 0, "joins": 0,
          "leaves": 0, "dropped": 0, "duplicated": 0, "hints_delivered": 0,
          "aae_keys_repaired": 0, "keys_transferred": 0, "tombstones_reaped": 0,
          "hold_runs": 0, "held": 0, "reset": 0, "released": 0, "expired_requests": 0,
          "applied_nowhere": 0, "forward_retries": 0, "forwards_coordinated": 0}


class Oracle:
    def __init__(self):
        self.written = {}      # value -> key
        self.supersedes = {}   # value (or delete token) -> values it superseded
        self.acked = set()
        self.acked_at = {}     # value -> virtual time its acknowledgement came
        self.strict = set()    # values written with pw = w (on w primaries)
        self.nowhere = set()   # writes (values, delete tokens) answered "applied nowhere"
        self.seen = set()      # every value any read returned

    def answered(self, write, reply):
        """Notes a failed write's reply: one that applied nowhere."""
        if isinstance(reply, c.Err) and reply.kind == "QuorumNotReached" and \
                not is_indeterminate(reply):
            self.nowhere.add(write)

    def read(self, values):
        self.seen.update(values)
        back = self.nowhere & set(values)
        assert not back, f"writes answered applied nowhere are visible: {sorted(back)}"

    def must_see(self, key, before):
        """Values of key acknowledged by w primaries before `before` that
        nothing superseded: every read with pr = r issued after that must
        return them (R + W > N over primaries).  A sloppy write may sit on
        fallbacks only, so it promises nothing until hints are handed off."""
        return {v for v, t in self.acked_at.items()
                if t < before and v in self.strict and self.written.get(v) == key
                and not self.dominated(v)}

    def dominated(self, value):
        """Values superseded by some write attempt (not one applied nowhere)."""
        return any(value in sup for w, sup in self.supersedes.items() if w not in self.nowhere)

    def dominated_by_acked(self, value):
        return any(value in sup for w, sup in self.supersedes.items() if w in self.acked)


def simulate(seed, ops=60, runs=None):
    rng = random.Random(seed)
    size = rng.choice([3, 4, 5])
    strict = rng.random() < 0.5  # pw = pr = 2 (primaries only) or a sloppy quorum
    quorum = {"pw": 2} if strict else {}
    hold = seed % 4 == 1  # not drawn from rng: the other seeds run as they always did
    cl = Cluster(seed, size=size, n=3, r=2, w=2, partitions=16,
                 delay=(0.001, rng.choice([0.005, 0.02, 0.08])),
                 drop=rng.choice([0.0, 0.01, 0.05]), duplicate=rng.choice([0.0, 0.02]),
                 cut="hold" if hold else "drop", core={"forward_timeout": 0.25} if hold else None)
    if runs is not None:
        runs.append(cl)
    assert cl.join_all(), "rings did not converge"
    nodes = cl.up()
    owners = cl.nodes[nodes[0]].owners
    ring.check(owners, nodes, 3)
    keys = [b"k%d" % i for i in range(4)]
    oracle = Oracle()
    crashed = set()
    wiped = joined = left = False
    leaver = None
    pending = {}  # token -> value written (or a delete's token, or None for a get)
    issued = {}   # token of a get -> (key, time issued)
    counter = 0
    for i in range(ops):
        roll = rng.random()
        if roll < 0.04 and not crashed and len(cl.up()) > 3:
            victim = rng.choice(cl.up())
            cl.crash(victim)
            crashed.add(victim)
            TOTALS["crashes"] += 1
        elif roll < 0.07 and crashed:
            name = crashed.pop()
            wipe = not wiped and rng.random() < 0.3  # its disk lost: anti-entropy restores it
            wiped = wiped or wipe
            TOTALS["wiped"] += wipe
            if wipe and name == leaver:
                cl.add_node(name)  # it was leaving: with its disk gone it joins anew
            else:
                cl.start(name, wipe=wipe)
        elif roll < 0.09:
            everyone = sorted(cl.started)
            cl.partition(rng.sample(everyone, rng.randint(1, len(everyone) - 1)))
            TOTALS["partitions"] += 1
        elif roll < 0.13:
            cl.heal()
        elif roll < 0.15 and not joined:
            joined = True
            cl.add_node(f"n{len(cl.started) + 1}")
            TOTALS["joins"] += 1
        elif roll < 0.17 and not left and not crashed and len(cl.up()) >= 4:
            left = True
            leaver = rng.choice(cl.up())
            cl.leave(leaver)
            TOTALS["leaves"] += 1
        node = rng.choice(cl.up())
        key = rng.choice(keys)
        counter += 1
        value = b"v%d-%d" % (seed, counter)
        kind = rng.choice(["put", "rmw", "rmw", "get", "del"])
        if kind in ("rmw", "del"):
            token = ("read", counter)
            cl.client(node, token, c.Get(key, pr=2 if strict else None))
            got = cl.wait_for(token, 3.0)
            if node not in cl.nodes:
                continue
            read = got.value.values if isinstance(got, c.Ok) else []
            ctx = got.value.context if isinstance(got, c.Ok) else None
            if isinstance(got, c.Ok):
                assert len(set(read)) == len(read), f"duplicate siblings {read}"
                assert all(v in oracle.written for v in read), f"phantom value in {read}"
                oracle.read(read)
            token = (kind, counter)
            if kind == "rmw":
                oracle.written[value] = key
                oracle.supersedes[value] = set(read)
                cl.client(node, token, c.Put(key, value, ctx, **quorum))
            else:
                if ctx is None:
                    continue
                oracle.supersedes[("del", counter)] = set(read)
                cl.client(node, token, c.Delete(key, ctx, **quorum))
            pending[token] = value if kind == "rmw" else ("del", counter)
        elif kind == "put":
            token = ("put", counter)
            oracle.written[value] = key
            oracle.supersedes[value] = set()
            cl.client(node, token, c.Put(key, value, **quorum))
            pending[token] = value
        else:
            token = ("get", counter)
            issued[token] = (key, cl.now)
            cl.client(node, token, c.Get(key, pr=2 if strict else None))
            pending[token] = None
        cl.run_for(rng.uniform(0.0, 0.05))
        for token in list(pending):
            reply = cl.replies.get(token)
            if reply is not None:
                w = pending.pop(token)
                oracle.answered(w, reply)
                if isinstance(reply, c.Ok) and w is not None:
                    oracle.acked.add(w)
                    oracle.acked_at[w] = cl.now
                    if strict:
                        oracle.strict.add(w)
                if token[0] == "get" and isinstance(reply, (c.Ok, c.Err)) and (
                        isinstance(reply, c.Ok) or reply.kind == "NotFound"):
                    vals = reply.value.values if isinstance(reply, c.Ok) else []
                    assert len(set(vals)) == len(vals), f"duplicate siblings {vals}"
                    assert all(v in oracle.written for v in vals), f"phantom value in {vals}"
                    oracle.read(vals)
                    key, at = issued[token]
                    missing = oracle.must_see(key, at) - set(vals)
                    assert not missing, f"a read of {key} missed acknowledged {sorted(missing)}"
    TOTALS["ops"] += ops
    # heal everything (a healthy network loses nothing), restart the crashed
    # with their data, and let hints, transfers and anti-entropy finish
    cl.heal()
    cl.net.drop = cl.net.duplicate = 0.0
    for name in crashed:
        cl.start(name)
    assert cl.settle(120.0), "the cluster did not settle: " + str(
        {n: (node.hints.pending(), node.next_owners is not None) for n, node in cl.nodes.items()})
    for token in list(pending):
        reply = cl.replies.get(token)
        if pending[token] is not None:
            oracle.answered(pending[token], reply)
        if isinstance(reply, c.Ok) and pending[token] is not None:
            oracle.acked.add(pending[token])
    assert not oracle.nowhere & oracle.seen, \
        f"writes answered applied nowhere were read: {sorted(oracle.nowhere & oracle.seen)}"
    final = {}
    for key in keys:
        for attempt in range(3):  # a reply may still be on its way from before healing
            token = ("final", key, attempt)
            cl.client(cl.up()[0], token, c.Get(key, r=3))
            reply = cl.wait_for(token, 5.0)
            if isinstance(reply, c.Ok) or getattr(reply, "kind", None) == "NotFound":
                break
        assert reply is not None, f"no reply to the final read of {key}"
        assert isinstance(reply, (c.Ok, c.Err)) and (isinstance(reply, c.Ok) or reply.kind == "NotFound"), \
            f"final read of {key}: {reply}"
        final[key] = set(reply.value.values) if isinstance(reply, c.Ok) else set()
        vals = reply.value.values if isinstance(reply, c.Ok) else []
        assert len(vals) == len(set(vals)), f"duplicate siblings for {key}: {vals}"
        oracle.read(vals)
    for value, key in oracle.written.items():
        if value in oracle.acked and value not in final[key]:
            assert oracle.dominated(value), f"acknowledged {value} of {key} lost"
        if value in final[key]:
            assert not oracle.dominated_by_acked(value), f"{value} of {key} came back"
    for key, vals in final.items():
        assert all(oracle.written.get(v) == key for v in vals), f"phantom value under {key}"
    # anti-entropy alone (no more reads) brings every replica to the same tree
    end = cl.now + 30.0
    while cl.trees_agree() and cl.now < end:
        cl.run_for(0.5)
    assert not cl.trees_agree(), f"replicas still differ in partitions {cl.trees_agree()}"
    for name, node in cl.nodes.items():
        assert not node.hints.pending(), f"{name} still holds hints"
        node.store.check()
        node.hints.check()
    for key in keys:
        pref = cl.nodes[cl.up()[0]].preference_list(key)
        clocks = [cl.stores[n].get(key) for n in pref]
        assert all(clk == clocks[0] for clk in clocks), f"replicas of {key} differ"
        dvv.check(clocks[0])
        values = {v for v, _ in dvv.values(clocks[0]) if v is not None}
        assert values == final[key] or not final[key] and not values, \
            f"{key}: replicas hold {values}, the final read gave {final[key]}"
    ring.check(cl.nodes[cl.up()[0]].owners, cl.up(), 3)
    TOTALS["runs"] += 1
    TOTALS["hold_runs"] += hold
    TOTALS["applied_nowhere"] += len(oracle.nowhere)
    for name in ("dropped", "duplicated", "held", "reset", "released"):
        TOTALS[name] += cl.net.stats[name]
    for node in cl.nodes.values():
        for name in ("hints_delivered", "aae_keys_repaired", "keys_transferred",
                     "tombstones_reaped", "expired_requests", "forward_retries",
                     "forwards_coordinated"):
            TOTALS[name] += node.counters[name]
    return cl


@pytest.mark.parametrize("seed", [int(os.environ["SEED"])] if "SEED" in os.environ else range(RUNS))
def test_simulated_cluster_keeps_every_acknowledged_write(seed):
    runs = []
    try:
        simulate(seed, runs=runs)
    except AssertionError:
        print(f"replay with SEED={seed}; the schedule of faults and operations:")
        if runs:
            print(runs[0].schedule())
        raise


def test_zz_report_simulation_counts(capsys):
    with capsys.disabled():
        print(f"\ncluster simulation totals: {TOTALS}")
    assert TOTALS["runs"] > 0 or "SEED" in os.environ


def test_a_restarted_node_can_forward_again():
    """Forwarded writes are deduplicated by sender; a sender that restarts
    numbers its requests from 1 again, and those must not be taken for
    duplicates of the ones before the restart."""
    cl = Cluster(7, size=4, n=1, r=1, w=1, partitions=16)
    assert cl.join_all()
    owners = cl.nodes["n1"].owners
    # a key n1 does not own, so that n1 forwards it
    key = next(b"k%d" % i for i in range(1000)
               if cl.nodes["n1"].preference_list(b"k%d" % i) != ["n1"])
    for round_no in range(2):
        token = ("put", round_no)
        cl.client("n1", token, c.Put(key, b"v%d" % round_no))
        assert isinstance(cl.wait_for(token, 3.0), c.Ok)
        cl.crash("n1")
        cl.start("n1")
        cl.run_for(1.0)
    token = ("get", "last")
    cl.client("n2", token, c.Get(key))
    assert sorted(cl.wait_for(token, 3.0).value.values) == [b"v0", b"v1"]
    assert owners == cl.nodes["n2"].owners


def test_a_node_restarts_with_the_generation_a_real_node_takes():
    """The simulator starts a node as the server does (next_generation over
    its store and the clock): a restart with its data counts up from the
    stored generation, a wiped one still starts above it (the time in ms),
    and the peers see it up again either way."""
    cl = Cluster(5, size=3, n=3, r=2, w=2, partitions=16)
    assert cl.join_all()

    def generation():
        return cl.nodes["n2"].membership.self_member.generation
    assert generation() == 1
    cl.crash("n2")
    cl.run_for(1.0)
    cl.start("n2")
    restarted = generation()
    assert restarted == max(2, int(cl.now * 1000)) and restarted > 1
    cl.crash("n2")
    cl.run_for(1.0)
    cl.start("n2", wipe=True)
    assert generation() == int(cl.now * 1000) > restarted
    cl.run_for(3.0)
    assert all(node.membership.is_up("n2", cl.now) for node in cl.nodes.values())
    assert {node.membership.members["n2"].generation for node in cl.nodes.values()} == {generation()}


# ---- the network's cut modes ------------------------------------------------------------------

def _network(**kw):
    from rldb.cluster.sim import Network
    return Network(random.Random(1), delay=(0.01, 0.01), **kw)


def _deliver_all(net):
    out = []
    while net.next_time() is not None:
        out.append(net.pop()[2:])
    return out


def test_a_held_link_delivers_in_order_at_the_heal():
    net = _network(cut_mode="hold")
    net.cut.add(frozenset(("a", "b")))
    for i in range(5):
        net.send(0.1 * i, "a", "b", {"i": i})
    net.send(0.0, "a", "c", {"i": "other"})
    assert [m for *_, m in _deliver_all(net)] == [{"i": "other"}]
    assert net.stats["held"] == 5 and net.stats["cut"] == 0
    net.heal(1.0)
    assert _deliver_all(net) == [("a", "b", {"i": i}) for i in range(5)]
    assert net.stats["released"] == 5 and not net.held and not net.cut


def test_a_link_held_past_its_bound_is_reset():
    net = _network(cut_mode="hold", link_bound=2.0)
    net.cut.add(frozenset(("a", "b")))
    net.send(0.0, "a", "b", {"i": 0})
    net.send(0.5, "b", "a", {"i": 1})
    net.send(2.1, "a", "b", {"i": 2})   # the first waited 2.1 s: that link resets first
    assert net.stats["reset"] == 1 and net.held[("a", "b")] == [(2.1, {"i": 2})]
    net.heal(2.6)                       # b -> a waited 2.1 s too: reset at the heal
    assert _deliver_all(net) == [("a", "b", {"i": 2})]
    assert net.stats["reset"] == 2 and net.stats["released"] == 1


def test_a_dropping_cut_holds_nothing():
    net = _network()
    net.cut.add(frozenset(("a", "b")))
    net.send(0.0, "a", "b", {"i": 0})
    net.heal(0.5)
    assert _deliver_all(net) == [] and net.stats["cut"] == 1 and not net.held


def test_a_crash_resets_the_links_of_the_node():
    cl = Cluster(2, size=3, cut="hold")
    assert cl.join_all()
    cl.partition(["n1"])
    cl.run_for(0.5)                     # gossip piles up on the cut links
    assert any("n1" in pair for pair in cl.net.held)
    cl.crash("n1")
    assert not any("n1" in pair for pair in cl.net.held)
    assert cl.net.stats["reset"] > 0


def test_a_block_holds_messages_by_type_until_the_heal():
    net = _network(cut_mode="hold")
    net.blocked.append(lambda src, dst, msg: msg["t"] == "reap" and dst == "b")
    net.send(0.0, "a", "b", {"t": "reap"})
    net.send(0.0, "a", "b", {"t": "rput"})
    net.send(0.0, "a", "c", {"t": "reap"})
    assert sorted((d, m["t"]) for _, d, m in _deliver_all(net)) == [("b", "rput"), ("c", "reap")]
    net.heal(0.5)
    assert _deliver_all(net) == [("a", "b", {"t": "reap"})] and not net.blocked


def test_an_unknown_cut_mode_is_refused():
    with pytest.raises(ValueError):
        _network(cut_mode="lose")


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="a node that saw the ring flip writes to the new "
                   "preference list only, while a node that has not heard of the flip (cut "
                   "off) still reads the old list only (NodeCore._start_read takes prefs()[0]): "
                   "pw=2 on the new list and pr=2 on the old one need not overlap (seed 1048 of "
                   "the randomized simulation, since before the tombstone floors)")
def test_a_primary_quorum_read_sees_a_primary_quorum_write_across_a_ring_flip():
    cl = Cluster(1, size=3, n=3, r=2, w=2, partitions=16)
    assert cl.join_all()
    before = cl.nodes["n1"].ring_version
    cl.add_node("n4")
    def flipped():
        return [n for n, node in cl.nodes.items() if n != "n4"
                and node.next_owners is None and node.ring_version != before]
    for _ in range(20_000):              # until the first node flips the ring
        cl.run_for(0.001)
        if flipped():
            break
    flipped = flipped()
    if not flipped or len(flipped) == 3:  # the scenario itself, not what is under test
        pytest.fail("not caught between the first flip and the last")
    cl.partition(flipped + ["n4"])       # the others do not hear of the flip
    cl.run_for(1.0)
    writer = flipped[0]
    reader = next(n for n in cl.nodes if n not in flipped + ["n4"])
    node_w, node_r = cl.nodes[writer], cl.nodes[reader]
    if node_w.next_owners is not None or node_r.next_owners is None:
        pytest.fail("the writer should have flipped, the reader not")
    key = next(k for k in (b"k%d" % i for i in range(10_000))
               if {writer, "n4"} <= set(node_w.topology.prefs(partition_of(k, 16))[0])
               and len(set(node_r.topology.prefs(partition_of(k, 16))[0]) - {writer, "n4"}) >= 2)
    cl.client(writer, "w", c.Put(key, b"acked", pw=2))
    if not isinstance(cl.wait_for("w", 3.0), c.Ok):
        pytest.fail("two primaries of the new list should take the write")
    cl.client(reader, "r", c.Get(key, pr=2))
    reply = cl.wait_for("r", 3.0)
    assert isinstance(reply, c.Err) and reply.kind == "QuorumNotReached" or \
        isinstance(reply, c.Ok) and b"acked" in reply.value.values, \
        f"a pr=2 read after a pw=2 write answered {reply}"


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="a node restarted wiped knows no "
                   "cluster yet and takes a join as a cluster of one: the joiner and it form "
                   "a ring of their own ([n5, n1], version 3, while the cluster is at 7), "
                   "and a pr=2 read there is answered by the two of them (seed 1672 of the "
                   "randomized simulation: a node added through a wiped one)")
def test_a_node_joined_through_a_wiped_member_does_not_read_from_a_ring_of_its_own():
    cl = Cluster(1, size=4, n=3, r=2, w=2, partitions=16)
    assert cl.join_all()
    keys = [b"k%d" % i for i in range(20)]
    for key in keys:
        if not isinstance(cl.call("n2", c.Put(key, b"acked", pw=2)), c.Ok):
            pytest.fail("the cluster should take the writes")
    cl.run_for(1.0)
    cl.crash("n1")
    cl.start("n1", wipe=True)
    cl.partition(["n1", "n5"])           # the wiped node has not heard from its peers yet
    cl.add_node("n5", through="n1")
    cl.run_for(1.0)
    cl.heal()
    for key in keys:
        reply = cl.call("n5", c.Get(key, pr=2))
        assert isinstance(reply, c.Ok) and reply.value.values == [b"acked"] or \
            isinstance(reply, c.Err) and reply.kind == "QuorumNotReached", \
            f"{key}: a pr=2 read after a pw=2 write answered {reply}"
