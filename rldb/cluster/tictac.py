"""Tictac merkle trees for active anti-entropy (after Riak's tictac AAE).

A tree hashes a set of (key, object hash) pairs.  Each key falls in one of
`segments` leaves; a leaf's hash is the XOR of its pairs' 64-bit hashes, so a
write updates it in O(1) without reading anything else (XOR out the old pair,
XOR in the new).  Leaves are grouped `width` to a branch, branches XOR up to
the root.  Two replicas compare roots, then branch hashes, then the leaves of
differing branches, and only then exchange the keys of differing leaves."""
import mmh3

MASK = (1 << 64) - 1


def pair_hash(key, object_hash):
    """The 64-bit hash a (key, object hash) pair contributes to its leaf."""
    return mmh3.hash64(key + b"\x00" + object_hash, 0x7ac7ac, signed=False)[0]


class TicTacTree:
    def __init__(self, segments=1024, width=32):
        if segments % width or segments & (segments - 1):
            raise ValueError("segments must be a power of two and a multiple of width")
        self.segments = segments
        self.width = width
        self.leaves = [0] * segments
        self.branch = [0] * (segments // width)

    def segment_of(self, key):
        return mmh3.hash(key, 0x5e9, signed=False) & (self.segments - 1)

    def _flip(self, key, h):
        s = self.segment_of(key)
        self.leaves[s] ^= h
        self.branch[s // self.width] ^= h

    def insert(self, key, object_hash):
        self._flip(key, pair_hash(key, object_hash))

    def remove(self, key, object_hash):
        self._flip(key, pair_hash(key, object_hash))  # XOR is its own inverse

    def update(self, key, old_hash, new_hash):
        """A write: old_hash is None when the key was absent, new_hash when
        it was deleted."""
        h = 0
        if old_hash is not None:
            h = pair_hash(key, old_hash)
        if new_hash is not None:
            h ^= pair_hash(key, new_hash)
        if h:
            self._flip(key, h)

    def root(self):
        r = 0
        for b in self.branch:
            r ^= b
        return r

    def diff_branches(self, other_branches):
        return [i for i, (a, b) in enumerate(zip(self.branch, other_branches)) if a != b]

    def leaves_of(self, branches):
        """{segment: hash} for the leaves of the given branches (what a peer sends)."""
        return {s: self.leaves[s] for b in branches
                for s in range(b * self.width, (b + 1) * self.width)}

    def diff_segments(self, other):
        """Segments whose hashes differ, found the way two replicas would:
        root, then branches, then the leaves of differing branches."""
        if self.root() == other.root():
            return []
        branches = self.diff_branches(other.branch)
        theirs = other.leaves_of(branches)
        return sorted(s for s, h in self.leaves_of(branches).items() if theirs[s] != h)

    def check(self, pairs):
        """Raises AssertionError unless the tree is exactly the hash of pairs
        ({key: object hash}): the rebuild-from-scan check."""
        fresh = TicTacTree(self.segments, self.width)
        for key, h in pairs.items():
            fresh.insert(key, h)
        if fresh.leaves != self.leaves or fresh.branch != self.branch:
            raise AssertionError("tree does not match its keys")


def differing_keys(tree_a, pairs_a, tree_b, pairs_b):
    """The keys whose (presence or object hash) differ between two replicas,
    looking only at the keys of segments whose hashes differ."""
    out = set()
    for s in tree_a.diff_segments(tree_b):
        keys = {k for k in pairs_a if tree_a.segment_of(k) == s} | \
               {k for k in pairs_b if tree_b.segment_of(k) == s}
        out |= {k for k in keys if pairs_a.get(k) != pairs_b.get(k)}
    return out
