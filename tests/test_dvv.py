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


# ---- the dot floor and version floors ---------------------------------------------------------

def test_a_fresh_entry_starts_above_the_floor():
    s = dvv.update(dvv.new("v"), dvv.EMPTY, "a", floor=10)
    assert dvv.counter(s, "a") == 11 and dvv.values(s) == ["v"]
    assert dvv.counter(dvv.update(dvv.new("v"), dvv.EMPTY, "a"), "a") == 1  # no floor: from 1
    other = dvv.update(dvv.new("w"), dvv.EMPTY, "b")
    s = dvv.update(dvv.new("v", dvv.join(other)), other, "a", floor=7)  # a new entry among others
    assert dvv.counter(s, "a") == 8 and dvv.counter(s, "b") == 1 and dvv.values(s) == ["v"]
    dvv.check(s)


def test_an_entry_without_live_values_jumps_to_the_floor():
    tomb = dvv.update(dvv.new(None), dvv.update(dvv.new("x"), dvv.EMPTY, "a"), "a")
    history = dvv.vector_clock(tomb)          # ("a", 2) without values
    s = dvv.update(dvv.new("v", dvv.join(history)), history, "a", floor=10)
    assert dvv.counter(s, "a") == 11 and dvv.values(s) == ["v"]
    s = dvv.update(dvv.new("v"), history, "a", floor=1)  # a floor below the history: above it
    assert dvv.counter(s, "a") == 3
    dvv.check(s)


def test_an_entry_with_live_values_stays_contiguous_whatever_the_floor():
    s = dvv.update(dvv.new("x"), dvv.EMPTY, "a")
    s = dvv.update(dvv.new("y"), s, "a", floor=50)  # a sibling of x: x pins the counter
    assert dvv.counter(s, "a") == 2 and sorted(dvv.values(s)) == ["x", "y"]
    dvv.check(s)
    s = dvv.update(dvv.new("z", dvv.join(s)), s, "a", floor=50)  # supersedes both: no live values
    assert dvv.counter(s, "a") == 51 and dvv.values(s) == ["z"]


def test_vector_clock_keeps_the_history_and_drops_the_values():
    s = dvv.update(dvv.new("x"), dvv.EMPTY, "a")
    s = dvv.sync(s, dvv.update(dvv.new("y"), dvv.EMPTY, "b"))
    s = dvv.update(dvv.new("z"), s, "a")
    floor = dvv.vector_clock(s)
    assert floor == ((("a", 2, ()), ("b", 1, ())), ())
    assert dvv.join(floor) == dvv.join(s) and dvv.values(floor) == []
    assert dvv.vector_clock(floor) == floor
    dvv.check(floor)


def test_a_version_a_floor_covers_merges_into_nothing():
    old = dvv.update(dvv.new("v200"), dvv.EMPTY, "a")          # written, then deleted
    tomb = dvv.update(dvv.new(None, dvv.join(old)), old, "a")
    floor = dvv.vector_clock(tomb)                               # the tombstone collected
    for late in (old, tomb, dvv.sync(old, tomb)):                # a late copy of its past
        assert dvv.values(dvv.sync(floor, late)) == []
        assert dvv.sync(floor, late) == dvv.sync(late, floor) == floor
    newer = dvv.update(dvv.new("w"), dvv.EMPTY, "b")            # anything newer stays
    assert dvv.values(dvv.sync(floor, newer)) == ["w"]


def test_a_write_after_a_collection_is_never_hidden_by_a_late_copy():
    old = dvv.update(dvv.new("v200"), dvv.EMPTY, "a")
    seen = dvv.join(old)                                         # a context read before the delete
    tomb = dvv.update(dvv.new(None, seen), old, "a")
    floor = dvv.counter(tomb, "a")
    for ctx in ((), seen):                                       # the key is gone: no history left
        new = dvv.update(dvv.new("v300", ctx), dvv.EMPTY, "a", floor)
        assert dvv.counter(new, "a") > dvv.counter(tomb, "a")
        for late in (old, tomb):
            assert dvv.values(dvv.sync(new, late)) == ["v300"]
    # without the floor, the new dot is the old one again, and the late
    # tombstone hides the new write: what the floor is there for
    reused = dvv.update(dvv.new("v300"), dvv.EMPTY, "a")
    assert dvv.values(dvv.sync(reused, tomb)) == [None]


@settings(max_examples=300, deadline=None)
@given(histories())
def test_a_floor_absorbs_every_clock_it_covers(clocks):
    merged = dvv.sync(dvv.sync(clocks[0], clocks[1]), clocks[2])
    floor = dvv.vector_clock(merged)
    for clock in clocks + [merged]:
        assert dvv.values(dvv.sync(floor, clock)) == []
        assert dvv.values(dvv.sync(clock, floor)) == []
    # a write numbered above the floor survives every one of them
    top = max([dvv.counter(merged, r) for r in "abc"] + [0])
    new = dvv.update(dvv.new("new"), floor, "a", top)
    for clock in clocks:
        assert dvv.values(dvv.sync(new, clock)) == ["new"]
