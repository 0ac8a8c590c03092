"""Dotted version vector sets (Almeida et al., as in Riak 2.0's dvvset).

A clock is (entries, anonymous): entries is a sorted tuple of
(node id, counter, values) where values holds the live values of the dots
(id, counter), (id, counter - 1), ... newest first; anonymous holds values
without a dot (from merging clocks that were concurrent).  Every write gets a
fresh dot from the node that coordinates it, so siblings never duplicate, a
write carrying a context supersedes exactly the values that context saw, and no
write is ever rejected as stale.

Pure functions over immutable tuples; values are opaque to this module."""

EMPTY = ((), ())


def new(value, context=()):
    """A client's write before it gets a dot: its value and the context
    (a version vector: ((id, counter), ...)) it was based on."""
    return tuple((i, n, ()) for i, n in sorted(context)), (value,)


def _merge_entry(n1, l1, n2, l2):
    # keep the dots of the newer side that the older side has not discarded
    if n1 >= n2:
        return n1, l1[:max(0, n1 - n2 + len(l2))]
    return n2, l2[:max(0, n2 - n1 + len(l1))]


def _sync_entries(e1, e2):
    out, i, j = [], 0, 0
    while i < len(e1) and j < len(e2):
        a, b = e1[i], e2[j]
        if a[0] == b[0]:
            n, values = _merge_entry(a[1], a[2], b[1], b[2])
            out.append((a[0], n, values))
            i += 1
            j += 1
        elif a[0] < b[0]:
            out.append(a)
            i += 1
        else:
            out.append(b)
            j += 1
    out.extend(e1[i:])
    out.extend(e2[j:])
    return tuple(out)


def _greater(e1, e2, strict):
    """True when history e1 covers e2 (strictly, when strict is False at the start)."""
    counters = {i: n for i, n, _ in e1}
    for i, n, _ in e2:
        mine = counters.pop(i, None)
        if mine is None or mine < n:
            return False
        if mine > n:
            strict = True
    return strict or bool(counters)


def less(c1, c2):
    """True when c1's causal history is strictly contained in c2's."""
    return _greater(c2[0], c1[0], False)


def sync(c1, c2):
    """The merge of two clocks (commutative, associative, idempotent)."""
    if c1 == EMPTY:
        return c2
    if c2 == EMPTY:
        return c1
    if less(c1, c2):
        anonymous = c2[1]
    elif less(c2, c1):
        anonymous = c1[1]
    else:
        anonymous = tuple(sorted(set(c1[1]) | set(c2[1]), key=repr))
    return _sync_entries(c1[0], c2[0]), anonymous


def join(clock):
    """The clock's version vector: the context handed to clients."""
    return tuple((i, n) for i, n, _ in clock[0])


def _event(entries, node, value, floor):
    out, done = [], False
    for i, n, values in entries:
        if not done and i == node:
            # live values pin the counter (they are the dots n, n-1, ...); an
            # entry without any may jump to the floor
            out.append((i, n + 1 if values else max(n, floor) + 1, (value,) + values))
            done = True
        elif not done and i > node:
            out.append((node, floor + 1, (value,)))
            out.append((i, n, values))
            done = True
        else:
            out.append((i, n, values))
    if not done:
        out.append((node, floor + 1, (value,)))
    return tuple(out)


def update(client, server, node, floor=0):
    """Applies a client write (from new()) at node against the server's clock:
    values the client's context saw are superseded, the rest stay as siblings.

    floor: a counter the node has issued no dot above (for any key).  A
    node's dot for a key it holds no live value of is numbered above it, so
    that a dot of a key whose history was forgotten (its tombstone
    collected) is never issued twice: a late copy of the old history then
    loses to the new write instead of hiding it."""
    entries, (value,) = client
    synced_entries, anonymous = sync((entries, ()), server)
    return _event(synced_entries, node, value, floor), anonymous


def counter(clock, node):
    """The node's counter in the clock (0 if it has no entry)."""
    for i, n, _ in clock[0]:
        if i == node:
            return n
    return 0


def vector_clock(clock):
    """The clock's history without its values: what a collected key keeps
    (its floor), which every version it covered merges into as nothing."""
    return tuple((i, n, ()) for i, n, _ in clock[0]), ()


def values(clock):
    """Every live value: the anonymous ones, then each node's, newest first."""
    out = list(clock[1])
    for _, _, vals in clock[0]:
        out.extend(vals)
    return out


def size(clock):
    return len(clock[1]) + sum(len(v) for _, _, v in clock[0])


def check(clock):
    """Raises AssertionError when the clock breaks an invariant."""
    entries, anonymous = clock
    ids = [e[0] for e in entries]
    if ids != sorted(set(ids)):
        raise AssertionError(f"entry ids not sorted and unique: {ids}")
    for i, n, vals in entries:
        if not (isinstance(n, int) and n >= len(vals) >= 0):
            raise AssertionError(f"entry {i!r}: counter {n} with {len(vals)} values")
    if not isinstance(anonymous, tuple):
        raise AssertionError("anonymous values not a tuple")
