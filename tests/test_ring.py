"""Ring and claim properties for Q in {8, 64, 256} and 1..20 nodes."""
from hypothesis import given, settings
from hypothesis import strategies as st

from rldb.cluster import ring

names = st.lists(st.text("abcdefghij", min_size=1, max_size=4), min_size=1, max_size=20,
                 unique=True)


@settings(max_examples=150, deadline=None)
@given(q=st.sampled_from([8, 64, 256]), nodes=names, n=st.integers(1, 5), data=st.data())
def test_claim_keeps_balance_distinct_preference_lists_and_minimal_moves(q, nodes, n, data):
    owners = ring.initial(q, nodes, n)
    ring.check(owners, nodes, n)
    current = list(nodes)
    for _ in range(data.draw(st.integers(1, 4))):
        if len(current) > 1 and data.draw(st.booleans()):
            gone = data.draw(st.sampled_from(current))
            nxt = [x for x in current if x != gone]
        else:
            new = data.draw(st.text("klmnopqrst", min_size=1, max_size=4))
            if new in current:
                continue
            nxt = current + [new]
        after = ring.claim(owners, nxt, n)
        ring.check(after, nxt, n)
        moved = len(ring.moves(owners, after))
        # minimal: a node that left gives exactly its partitions away; a node
        # that joined receives about its share and nothing else moves
        lower_bound = sum(1 for o in owners if o not in nxt)
        load_after = {x: after.count(x) for x in nxt}
        newcomers = [x for x in nxt if x not in current]
        lower_bound += sum(load_after[x] for x in newcomers)
        assert moved == lower_bound, (moved, lower_bound)
        assert ring.claim(after, nxt, n) == after, "claim is not idempotent"
        owners, current = after, nxt


def test_join_moves_only_the_newcomers_share():
    nodes = [f"n{i}" for i in range(4)]
    owners = ring.initial(64, nodes, 3)
    after = ring.claim(owners, nodes + ["n4"], 3)
    moves = ring.moves(owners, after)
    assert len(moves) == after.count("n4") == 13 or len(moves) == after.count("n4") == 12
    assert all(new == "n4" for _, _, new in moves)


def test_leave_moves_only_the_leavers_partitions():
    nodes = [f"n{i}" for i in range(5)]
    owners = ring.initial(64, nodes, 3)
    after = ring.claim(owners, nodes[1:], 3)
    moves = ring.moves(owners, after)
    assert {old for _, old, _ in moves} == {"n0"}
    assert len(moves) == owners.count("n0")


def test_preference_list_walks_past_repeats():
    owners = ["a", "a", "b", "a", "c", "b"]
    assert ring.preference_list(owners, 0, 3) == ["a", "b", "c"]
    assert ring.preference_list(owners, 5, 2) == ["b", "a"]
    assert ring.preference_list(owners, 0, 5) == ["a", "b", "c"]


def test_a_joining_node_takes_partitions_spread_over_the_ring():
    """Taking one stretch of the ring would leave two old nodes in every
    preference list there (and everywhere else); spread picks share the
    replicas out."""
    from collections import Counter
    owners = ring.claim(ring.initial(64, ["a", "b", "c"], 3), ["a", "b", "c", "d"], 3)
    replicas = Counter(x for p in range(64) for x in ring.preference_list(owners, p, 3))
    assert max(replicas.values()) < 64 and min(replicas.values()) > 64 // 2, replicas
