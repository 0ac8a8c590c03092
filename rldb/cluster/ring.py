"""The ring: Q fixed partitions and which node owns each.

A key belongs to partition key_hash(key) * Q >> 32 (rldb.cluster.store).  Its
preference list is the owner of that partition followed by the owners of the
next partitions around the ring, skipping nodes already taken, until N
distinct nodes are found (Dynamo's definition).  The claim function keeps
every node within one partition of the others and places a node's partitions
at least N apart where it can, so that a walk rarely needs to skip; it moves
only the partitions a membership change requires."""
from collections import Counter


def balanced_targets(partitions, nodes):
    """How many partitions each node should own: within one of each other.
    The extra partitions go to the nodes first in sorted order."""
    nodes = sorted(nodes)
    base, extra = divmod(partitions, len(nodes))
    return {node: base + (1 if i < extra else 0) for i, node in enumerate(nodes)}


def _spacing_ok(owners, index, node, n):
    q = len(owners)
    return all(owners[(index + d) % q] != node for d in range(-(n - 1), n) if d)


def initial(partitions, nodes, n):
    """A fresh ring: partition i to the i-th node round robin, which spaces
    every node's partitions len(nodes) apart."""
    nodes = sorted(nodes)
    owners = [nodes[i % len(nodes)] for i in range(partitions)]
    return _fix_wrap(owners, n)


def _fix_wrap(owners, n):
    """Round robin may put a node twice within n at the wrap-around; swap
    such partitions with others where both places end up well spaced."""
    q = len(owners)
    for i in range(q):
        if _spacing_ok(owners, i, owners[i], n):
            continue
        for j in range(q):
            a, b = owners[i], owners[j]
            if a == b:
                continue
            owners[i], owners[j] = b, a
            if _spacing_ok(owners, i, b, n) and _spacing_ok(owners, j, a, n):
                break
            owners[i], owners[j] = a, b
    return owners


def claim(owners, nodes, n):
    """The new owners after membership became `nodes`: partitions of nodes
    that left go to others, and nodes above their target give partitions to
    those below it; nothing else moves."""
    nodes = sorted(set(nodes))
    if not nodes:
        raise ValueError("a ring needs at least one node")
    owners = list(owners)
    q = len(owners)
    targets = balanced_targets(q, nodes)
    load = Counter(o for o in owners if o in targets)
    # Who gives: nodes that left give everything; others what is above target.
    # Which targets get the extra partitions is chosen to move the least.
    targets = _targets_close_to(load, q, nodes)
    orphans = [i for i, o in enumerate(owners) if o not in targets]
    surplus = {node: load[node] - targets[node] for node in nodes if load[node] > targets[node]}
    needy = {node: targets[node] - load[node] for node in nodes if targets[node] > load[node]}
    # Orphans of nodes that left go first (they must move); then partitions of
    # nodes above target go to those below, taken where the taker ends up
    # well spaced, walking the ring in order so that takers spread around it.
    _assign(owners, orphans, needy, n)
    _take_well_spaced(owners, surplus, needy, n)
    rest = []
    for node, count in surplus.items():
        # give away the partitions where the node is worst spaced first
        mine = [i for i, o in enumerate(owners) if o == node]
        mine.sort(key=lambda i: _spacing_ok(owners, i, node, n))
        rest.extend(mine[:count])
    _assign(owners, rest, needy, n)
    return owners


def _assign(owners, indices, needy, n):
    """Gives each partition of indices to a node still below target,
    preferring one that is well spaced there."""
    for i in indices:
        candidates = [node for node, want in needy.items() if want > 0]
        well_spaced = [node for node in candidates if _spacing_ok(owners, i, node, n)]
        pick = min(well_spaced or candidates, key=lambda node: (-needy[node], node))
        owners[i] = pick
        needy[pick] -= 1


def _take_well_spaced(owners, surplus, needy, n):
    """Moves partitions from nodes above target to nodes below it where the
    taker has none of its own within n - 1, in ring order, so that takers
    spread around the ring instead of taking one stretch of it; updates both
    counts.  What this cannot place is left to the caller."""
    for i in range(len(owners)):
        giver = owners[i]
        if surplus.get(giver, 0) <= 0:
            continue
        takers = [node for node, want in needy.items()
                  if want > 0 and _spacing_ok(owners, i, node, n)]
        if not takers:
            continue
        pick = min(takers, key=lambda node: (-needy[node], node))
        owners[i] = pick
        needy[pick] -= 1
        surplus[giver] -= 1


def _targets_close_to(load, partitions, nodes):
    """Balanced targets (within one) that keep the current loads where they
    can: the nodes already holding more get the extra partitions."""
    base, extra = divmod(partitions, len(nodes))
    ranked = sorted(nodes, key=lambda node: (-load[node], node))
    return {node: base + (1 if i < extra else 0) for i, node in enumerate(ranked)}


def preference_list(owners, partition, n):
    """The first n distinct nodes walking the ring from partition."""
    out = []
    q = len(owners)
    for step in range(q):
        node = owners[(partition + step) % q]
        if node not in out:
            out.append(node)
            if len(out) == n:
                break
    return out


def moves(before, after):
    """Partitions whose owner changed: [(partition, old, new)]."""
    return [(i, a, b) for i, (a, b) in enumerate(zip(before, after)) if a != b]


def check(owners, nodes, n):
    """Raises AssertionError unless loads are within one and every preference
    list holds min(n, len(nodes)) distinct nodes."""
    load = Counter({node: 0 for node in nodes})
    load.update(owners)
    if set(load) != set(nodes):
        raise AssertionError(f"owners {sorted(load)} are not all among {sorted(nodes)}")
    if max(load.values()) - min(load.values()) > 1:
        raise AssertionError(f"loads differ by more than one: {dict(load)}")
    want = min(n, len(set(owners)))
    for p in range(len(owners)):
        pref = preference_list(owners, p, n)
        if len(pref) != want or len(set(pref)) != want:
            raise AssertionError(f"partition {p}: preference list {pref}")
