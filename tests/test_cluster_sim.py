"""Seeded simulations of a cluster under message delay, loss, duplication,
reordering, partitions and crashes (rldb.cluster.sim), checked against what
the clients were told.

The oracle: every value written is unique.  A write made with a context from a
read supersedes exactly the values that read returned.  After healing and a
final read of every key from all replicas:
- an acknowledged value is there, or some write superseded it (transitively);
- no value superseded by an acknowledged write is back;
- no value appears twice, none that was never written;
- the replicas of every key hold the same clock once read repair has run.
A failing seed's schedule is printed, to replay with SEED=... ."""
import os
import random

import pytest

from rldb.cluster import commands as c
from rldb.cluster import dvv, ring
from rldb.cluster.sim import Cluster

RUNS = int(os.environ.get("SIM_RUNS", "200"))
TOTALS = {"runs": 0, "ops": 0, "crashes": 0, "partitions": 0, "dropped": 0, "duplicated": 0}


class Oracle:
    def __init__(self):
        self.written = {}      # value -> key
        self.supersedes = {}   # value (or delete token) -> values it superseded
        self.acked = set()
        self.acked_at = {}     # value -> virtual time its acknowledgement came

    def must_see(self, key, before):
        """Values of key acknowledged before `before` that nothing superseded:
        with R + W > N every read issued after that must return them."""
        return {v for v, t in self.acked_at.items()
                if t < before and self.written.get(v) == key and not self.dominated(v)}

    def dominated(self, value):
        """Values superseded by some write attempt, transitively."""
        return any(value in sup for sup in self.supersedes.values())

    def dominated_by_acked(self, value):
        return any(value in sup for w, sup in self.supersedes.items() if w in self.acked)


def simulate(seed, ops=60, runs=None):
    rng = random.Random(seed)
    size = rng.choice([3, 4, 5])
    cl = Cluster(seed, size=size, n=3, r=2, w=2, partitions=16,
                 delay=(0.001, rng.choice([0.005, 0.02, 0.08])),
                 drop=rng.choice([0.0, 0.01, 0.05]), duplicate=rng.choice([0.0, 0.02]))
    if runs is not None:
        runs.append(cl)
    cl.join_all()
    nodes = cl.up()
    owners = cl.nodes[nodes[0]].owners
    assert all(cl.nodes[n].owners == owners for n in nodes), "rings did not converge"
    ring.check(owners, nodes, 3)
    keys = [b"k%d" % i for i in range(4)]
    oracle = Oracle()
    crashed = set()
    pending = {}  # token -> value written (or a delete's token, or None for a get)
    issued = {}   # token of a get -> (key, time issued)
    counter = 0
    for i in range(ops):
        roll = rng.random()
        if roll < 0.04 and len(crashed) < 1:
            victim = rng.choice(cl.up())
            cl.crash(victim)
            crashed.add(victim)
            TOTALS["crashes"] += 1
        elif roll < 0.07 and crashed:
            name = crashed.pop()
            cl.start(name)
        elif roll < 0.09:
            cl.partition(rng.sample(nodes, rng.randint(1, len(nodes) - 1)))
            TOTALS["partitions"] += 1
        elif roll < 0.13:
            cl.heal()
        node = rng.choice(cl.up())
        key = rng.choice(keys)
        counter += 1
        value = b"v%d-%d" % (seed, counter)
        kind = rng.choice(["put", "rmw", "rmw", "get", "del"])
        if kind in ("rmw", "del"):
            token = ("read", counter)
            cl.client(node, token, c.Get(key))
            got = cl.wait_for(token, 3.0)
            if node not in cl.nodes:
                continue
            read = got.value.values if isinstance(got, c.Ok) else []
            ctx = got.value.context if isinstance(got, c.Ok) else None
            if isinstance(got, c.Ok):
                assert len(set(read)) == len(read), f"duplicate siblings {read}"
                assert all(v in oracle.written for v in read), f"phantom value in {read}"
            token = (kind, counter)
            if kind == "rmw":
                oracle.written[value] = key
                oracle.supersedes[value] = set(read)
                cl.client(node, token, c.Put(key, value, ctx))
            else:
                if ctx is None:
                    continue
                oracle.supersedes[("del", counter)] = set(read)
                cl.client(node, token, c.Delete(key, ctx))
            pending[token] = value if kind == "rmw" else ("del", counter)
        elif kind == "put":
            token = ("put", counter)
            oracle.written[value] = key
            oracle.supersedes[value] = set()
            cl.client(node, token, c.Put(key, value))
            pending[token] = value
        else:
            token = ("get", counter)
            issued[token] = (key, cl.now)
            cl.client(node, token, c.Get(key))
            pending[token] = None
        cl.run_for(rng.uniform(0.0, 0.05))
        for token in list(pending):
            reply = cl.replies.get(token)
            if reply is not None:
                w = pending.pop(token)
                if isinstance(reply, c.Ok) and w is not None:
                    oracle.acked.add(w)
                    oracle.acked_at[w] = cl.now
                if token[0] == "get" and isinstance(reply, (c.Ok, c.Err)) and (
                        isinstance(reply, c.Ok) or reply.kind == "NotFound"):
                    vals = reply.value.values if isinstance(reply, c.Ok) else []
                    assert len(set(vals)) == len(vals), f"duplicate siblings {vals}"
                    assert all(v in oracle.written for v in vals), f"phantom value in {vals}"
                    key, at = issued[token]
                    missing = oracle.must_see(key, at) - set(vals)
                    assert not missing, f"a read of {key} missed acknowledged {sorted(missing)}"
    TOTALS["ops"] += ops
    # heal everything (a healthy network loses nothing), restart the crashed
    # with their data, let it settle
    cl.heal()
    cl.net.drop = cl.net.duplicate = 0.0
    for name in crashed:
        cl.start(name)
    cl.run_for(5.0)
    for token in list(pending):
        reply = cl.replies.get(token)
        if isinstance(reply, c.Ok) and pending[token] is not None:
            oracle.acked.add(pending[token])
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
    for value, key in oracle.written.items():
        if value in oracle.acked and value not in final[key]:
            assert oracle.dominated(value), f"acknowledged {value} of {key} lost"
        if value in final[key]:
            assert not oracle.dominated_by_acked(value), f"{value} of {key} came back"
    for key, vals in final.items():
        assert all(oracle.written.get(v) == key for v in vals), f"phantom value under {key}"
    cl.run_for(2.0)  # read repair lands
    for key in keys:
        pref = cl.nodes[cl.up()[0]].preference_list(key)
        clocks = [cl.stores[n].get(key) for n in pref]
        assert all(clk == clocks[0] for clk in clocks), f"replicas of {key} differ after repair"
        dvv.check(clocks[0])
    TOTALS["runs"] += 1
    TOTALS["dropped"] += cl.net.stats["dropped"]
    TOTALS["duplicated"] += cl.net.stats["duplicated"]
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
