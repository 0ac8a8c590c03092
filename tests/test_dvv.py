"""Dotted version vector sets: merge laws and the update semantics of the
DVV paper (Almeida et al.) as Riak's dvvset implements them."""
from hypothesis import given, settings
from hypothesis import strategies as st

from rldb.cluster import dvv


@st.composite
def histories(draw):
    """Clocks reached by a random run of writes at replicas a, b, c, each with
    a context that saw some earlier state, then some syncs."""
    replicas = {r: dvv.EMPTY for r in "abc"}
    counter = 0
    for _ in range(draw(st.integers(0, 8))):
        r = draw(st.sampled_from("abc"))
        op = draw(st.sampled_from(["write", "blind", "sync"]))
        if op == "sync":
            other = draw(st.sampled_from("abc"))
            replicas[r] = dvv.sync(replicas[r], replicas[other])
            continue
        counter += 1
        ctx = dvv.join(replicas[r]) if op == "write" else ()
        replicas[r] = dvv.update(dvv.new(f"v{counter}", ctx), replicas[r], r)
    return [replicas[r] for r in "abc"]


@settings(max_examples=300, deadline=None)
@given(histories())
def test_sync_is_commutative_associative_idempotent(clocks):
    a, b, c = clocks
    assert dvv.sync(a, b) == dvv.sync(b, a)
    assert dvv.sync(dvv.sync(a, b), c) == dvv.sync(a, dvv.sync(b, c))
    assert dvv.sync(a, a) == a
    assert dvv.sync(a, dvv.EMPTY) == a
    for clock in clocks:
        dvv.check(clock)


@settings(max_examples=300, deadline=None)
@given(histories())
def test_values_never_duplicate(clocks):
    merged = dvv.sync(dvv.sync(clocks[0], clocks[1]), clocks[2])
    vals = dvv.values(merged)
    assert len(vals) == len(set(vals))


def test_concurrent_writes_become_siblings():
    server = dvv.update(dvv.new("v1"), dvv.EMPTY, "a")
    ctx = dvv.join(server)
    # two clients read the same state and write concurrently
    s1 = dvv.update(dvv.new("v2", ctx), server, "a")
    s2 = dvv.update(dvv.new("v3", ctx), s1, "a")
    assert sorted(dvv.values(s2)) == ["v2", "v3"]


def test_write_with_context_supersedes_exactly_what_it_saw():
    s = dvv.update(dvv.new("v1"), dvv.EMPTY, "a")
    seen = dvv.join(s)
    s = dvv.update(dvv.new("v2"), s, "b")          # not seen by the next writer
    s = dvv.update(dvv.new("v3", seen), s, "a")   # supersedes v1 only
    assert sorted(dvv.values(s)) == ["v2", "v3"]
    s = dvv.update(dvv.new("v4", dvv.join(s)), s, "b")
    assert dvv.values(s) == ["v4"]


def test_a_stale_write_is_kept_not_rejected():
    s = dvv.update(dvv.new("v1"), dvv.EMPTY, "a")
    old = dvv.join(s)
    s = dvv.update(dvv.new("v2", old), s, "a")
    s = dvv.update(dvv.new("v3", old), s, "a")      # same old context again
    assert sorted(dvv.values(s)) == ["v2", "v3"]


def test_replicas_converge_by_sync():
    a = dvv.update(dvv.new("x"), dvv.EMPTY, "a")
    b = dvv.update(dvv.new("y"), dvv.EMPTY, "b")
    m1, m2 = dvv.sync(a, b), dvv.sync(b, a)
    assert m1 == m2 and sorted(dvv.values(m1)) == ["x", "y"]
    newer = dvv.update(dvv.new("z", dvv.join(m1)), m1, "b")
    assert dvv.values(dvv.sync(newer, a)) == ["z"]
    assert dvv.less(a, newer) and not dvv.less(newer, a)
