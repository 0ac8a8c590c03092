"""Tictac trees: the diff equals the brute-force set of differing keys."""
from hypothesis import given, settings
from hypothesis import strategies as st

from rldb.cluster.tictac import TicTacTree, differing_keys

keys = st.binary(min_size=1, max_size=6)
hashes = st.binary(min_size=1, max_size=4)
stores = st.dictionaries(keys, hashes, max_size=60)


def build(pairs, segments=64, width=8):
    tree = TicTacTree(segments, width)
    for k, h in pairs.items():
        tree.insert(k, h)
    return tree


@settings(max_examples=400, deadline=None)
@given(stores, stores, st.sampled_from([(16, 4), (64, 8), (1024, 32)]))
def test_diff_finds_exactly_the_differing_keys(a, b, shape):
    ta, tb = build(a, *shape), build(b, *shape)
    brute = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert differing_keys(ta, a, tb, b) == brute
    assert (ta.root() == tb.root()) == (not brute)


@settings(max_examples=200, deadline=None)
@given(stores, st.lists(st.tuples(keys, st.none() | hashes), max_size=40))
def test_incremental_updates_equal_a_rebuild(start, writes):
    tree = build(start)
    pairs = dict(start)
    for key, new in writes:
        tree.update(key, pairs.get(key), new)
        if new is None:
            pairs.pop(key, None)
        else:
            pairs[key] = new
    tree.check(pairs)
    assert tree.leaves == build(pairs).leaves


def test_identical_replicas_need_no_exchange():
    a = {b"k%d" % i: b"h%d" % i for i in range(500)}
    ta, tb = build(a), build(dict(a))
    assert ta.diff_segments(tb) == []
    b = dict(a)
    b[b"k7"] = b"changed"
    assert differing_keys(ta, a, build(b), b) == {b"k7"}
