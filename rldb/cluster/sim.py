"""A seeded simulation of a cluster of NodeCores: a virtual clock, a network
that delays, drops, duplicates and reorders messages and can be cut into
partitions, and nodes that crash and restart (with their data, or wiped).

A cut either drops what crosses it (cut="drop", the default), or holds it
as a real TCP peer link does under an iptables partition (cut="hold"): the
messages of each (src, dst) pair wait in order and are delivered at the
heal, late, past the deadlines they carry (the core drops those).  A pair
whose oldest held message is older than link_bound (peer_send_timeout) is
reset instead, as the peer pool resets a link that did not drain: all it
held is dropped ("reset" in the stats).  A crash resets the node's links.
A test can also block messages by what they are (block(when)): they are
treated as crossing a cut until the next full heal.
A node (re)starts as a real one does: its generation comes from
generation.next_generation over its store and the (virtual) time.

Everything random comes from one seed, and every fault is logged, so a
failing run can be replayed from its seed and read from its schedule.  The
nodes only exchange messages they produce themselves, so by default (strict)
a message a node refuses or fails to handle stops the run: it is a bug."""
import heapq
import random

from rldb.cluster.generation import next_generation
from rldb.cluster.node import CoreConfig, NodeCore
from rldb.cluster.store import ObjectStore
from rldb.storage import open_engine


class Network:
    def __init__(self, rng, delay=(0.001, 0.02), drop=0.0, duplicate=0.0, cut_mode="drop",
                 link_bound=2.0):
        if cut_mode not in ("drop", "hold"):
            raise ValueError(f"cut mode {cut_mode!r}: drop or hold")
        self.rng = rng
        self.delay = delay
        self.drop = drop
        self.duplicate = duplicate
        self.cut_mode = cut_mode
        self.link_bound = link_bound
        self.queue = []
        self.seq = 0
        self.cut = set()   # frozenset({a, b}) pairs that cannot talk
        self.blocked = []  # when(src, dst, msg) -> True: the message crosses a cut
        self.held = {}     # (src, dst) -> [(time sent, msg), ...] waiting on a cut (hold mode)
        self.stats = {"sent": 0, "dropped": 0, "duplicated": 0, "cut": 0, "held": 0,
                      "reset": 0, "released": 0}

    def send(self, now, src, dst, msg):
        self.stats["sent"] += 1
        if frozenset((src, dst)) in self.cut or any(when(src, dst, msg) for when in self.blocked):
            if self.cut_mode == "drop":
                self.stats["cut"] += 1
                return
            self._expire(now, (src, dst))
            self.held.setdefault((src, dst), []).append((now, msg))
            self.stats["held"] += 1
            return
        if self.rng.random() < self.drop:
            self.stats["dropped"] += 1
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        if copies == 2:
            self.stats["duplicated"] += 1
        for _ in range(copies):
            self.seq += 1
            at = now + self.rng.uniform(*self.delay)
            heapq.heappush(self.queue, (at, self.seq, src, dst, msg))

    def _expire(self, now, pair):
        """Resets the pair's link if its oldest held message waited longer
        than link_bound (checked when it is next used: the same messages
        survive as if a timer had checked all along)."""
        held = self.held.get(pair)
        if held and now - held[0][0] > self.link_bound:
            self.reset(pair)

    def reset(self, pair):
        """Drops everything the (src, dst) link holds."""
        self.stats["reset"] += len(self.held.pop(pair, ()))

    def heal(self, now, pairs=None):
        """Removes the cuts (all of them and every block, or those of pairs:
        frozensets of two names) and delivers what their links held, in
        order, unless a link was reset meanwhile."""
        if pairs is None:
            self.blocked.clear()
            pairs = self.cut | {frozenset(p) for p in self.held}
        pairs = set(pairs)
        self.cut -= pairs
        for pair in sorted(p for p in self.held if frozenset(p) in pairs):
            self._expire(now, pair)
            held = self.held.pop(pair, ())
            at = now + self.rng.uniform(*self.delay) if held else now
            for _, msg in held:  # one time and rising seq: delivered in the order sent
                self.seq += 1
                heapq.heappush(self.queue, (at, self.seq, pair[0], pair[1], msg))
            self.stats["released"] += len(held)

    def next_time(self):
        return self.queue[0][0] if self.queue else None

    def pop(self):
        return heapq.heappop(self.queue)


class Cluster:
    """Nodes named n1..nk (their address is their name) on a Network."""

    def __init__(self, seed, size=3, n=3, r=2, w=2, partitions=16, request_timeout=1.0,
                 gossip_interval=0.2, core=None, strict=True, cut="drop", link_bound=2.0, **net):
        self.seed = seed
        self.strict = strict
        self.rng = random.Random(seed)
        self.now = 0.0
        self.net = Network(random.Random(self.rng.random()), cut_mode=cut,
                           link_bound=link_bound, **net)
        self.size = size
        self.params = dict(n=n, r=r, w=w, partitions=partitions,
                           request_timeout=request_timeout, gossip_interval=gossip_interval,
                           sloppy_timeout=0.2, aae_interval=0.2, tombstone_grace=5.0,
                           clock_skew=0.0)  # one virtual clock: deadlines are exact
        self.params.update(core or {})
        self.stores = {}
        self.nodes = {}
        self.started = set()  # every node name ever started: partition() cuts them all
        self.replies = {}
        self.log = []
        for i in range(1, size + 1):
            self.start(f"n{i}", wipe=True)

    # ---- nodes --------------------------------------------------------------------------

    def start(self, name, wipe=False):
        if wipe or name not in self.stores:
            self.stores[name] = ObjectStore(open_engine("memory"), self.params["partitions"])
        self.started.add(name)
        cfg = CoreConfig(node_id=name, addr=name, **self.params)
        generation = next_generation(self.stores[name], self.now)
        self.nodes[name] = NodeCore(cfg, self.stores[name], random.Random(self.rng.random()),
                                    generation, self.now)
        self.record("start", name, "wiped" if wipe else "with data")

    def crash(self, name):
        self.nodes.pop(name, None)
        for pair in [p for p in self.net.held if name in p]:
            self.net.reset(pair)  # its sockets are gone, or will answer a reset
        self.record("crash", name)

    def add_node(self, name, through=None):
        """Starts a new node and has it join the cluster through `through`."""
        from rldb.cluster.commands import JoinCluster
        self.start(name, wipe=True)
        through = through or next(n for n in self.up() if n != name)
        self.client(name, ("join", name, self.now), JoinCluster(through))

    def leave(self, name):
        from rldb.cluster.commands import Admin
        self.client(name, ("leave", name, self.now), Admin("leave"))

    def up(self):
        return sorted(self.nodes)

    def record(self, *event):
        self.log.append((round(self.now, 4),) + event)

    def schedule(self):
        """The replayable schedule: every fault and client operation."""
        return "\n".join(" ".join(str(x) for x in e) for e in self.log)

    # ---- driving ------------------------------------------------------------------------

    def client(self, name, token, command):
        self.record("client", name, token, command)
        self.nodes[name].handle_client(token, command, self.now)
        self._collect(name)

    def _collect(self, name):
        node = self.nodes.get(name)
        if node is None:
            return
        for dst, msg in node.messages_to_send():
            self.net.send(self.now, name, dst, msg)
        for token, reply in node.replies():
            self.replies[token] = reply
        if node.stopped:  # it left the cluster
            del self.nodes[name]
            self.record("stopped", name)

    def run_for(self, seconds):
        end = self.now + seconds
        while True:
            t_net = self.net.next_time()
            t_timer = min((n.next_deadline() for n in self.nodes.values()), default=None)
            candidates = [t for t in (t_net, t_timer) if t is not None]
            t = min(candidates) if candidates else end
            if t > end:
                self.now = end
                return
            self.now = max(self.now, t)
            if t_net is not None and t_net <= self.now:
                _, _, src, dst, msg = self.net.pop()
                node = self.nodes.get(dst)
                if node is not None:
                    self._deliver(node, src, dst, msg)
                    self._collect(dst)
            else:
                for name, node in list(self.nodes.items()):
                    if node.next_deadline() <= self.now:
                        node.handle_timer(self.now)
                        self._collect(name)

    def _deliver(self, node, src, dst, msg):
        failures = node.counters["bad_messages"], node.counters["handler_errors"]
        node.handle_message(msg, self.now)
        if self.strict and failures != (node.counters["bad_messages"],
                                        node.counters["handler_errors"]):
            raise AssertionError(f"{dst} refused or failed {msg.get('t')!r} from {src} "
                                 f"(bad_messages, handler_errors were {failures}, now "
                                 f"{node.counters['bad_messages']}, "
                                 f"{node.counters['handler_errors']}): {msg!r:.300}")

    def call(self, name, command, limit=5.0):
        """A client command at node `name`, and its reply (None if none
        came within limit seconds)."""
        token = ("call", self.now, id(command))
        self.client(name, token, command)
        return self.wait_for(token, limit)

    def wait_for(self, token, limit=10.0):
        """Runs until the reply for token comes (or limit seconds pass)."""
        end = self.now + limit
        while token not in self.replies and self.now < end:
            self.run_for(0.01)
        return self.replies.get(token)

    def join_all(self, limit=20.0):
        """Joins every node through the first; runs until all rings agree and
        include everyone (or limit seconds)."""
        from rldb.cluster.commands import JoinCluster
        for name in self.up()[1:]:
            self.client(name, ("join", name), JoinCluster(self.up()[0]))
        end = self.now + limit
        while self.now < end and not self.converged():
            self.run_for(0.1)
        return self.converged()

    def converged(self):
        """Every node has the same ring, not in transition, over every node."""
        rings = {(tuple(node.owners), node.next_owners is None) for node in self.nodes.values()}
        if len(rings) != 1:
            return False
        owners, settled = next(iter(rings))
        return settled and set(owners) >= set(self.up()[:self.params["partitions"]])

    def quiet(self):
        """Converged, with no hints held and no request in flight anywhere."""
        return self.converged() and all(
            not node.hints.pending() and not node.requests_in_flight() and not _holds_foreign(node)
            and all(node.membership.is_up(other, self.now) for other in self.nodes)
            for node in self.nodes.values())

    def settle(self, limit=60.0):
        """Runs until quiet (or limit seconds); returns whether it got there."""
        end = self.now + limit
        while self.now < end and not self.quiet():
            self.run_for(0.2)
        return self.quiet()

    def trees_agree(self):
        """The partitions whose replicas' trees differ (empty when all agree)."""
        bad = []
        some = self.nodes[self.up()[0]]
        for q in range(self.params["partitions"]):
            pref = [n for n in some.topology.prefs(q)[0] if n in self.nodes]
            leaves = {tuple(self.stores[n].tree(q).leaves) for n in pref}
            if len(leaves) > 1:
                bad.append(q)
        return bad

    # ---- faults ---------------------------------------------------------------------------

    def partition(self, group):
        """Cuts every link between group and the rest."""
        group = set(group)
        for a in self.started:
            for b in self.started:
                if (a in group) != (b in group):
                    self.net.cut.add(frozenset((a, b)))
        self.record("partition", sorted(group))

    def cut_link(self, a, b):
        """Cuts the one link between a and b."""
        self.net.cut.add(frozenset((a, b)))
        self.record("cut", a, b)

    def block(self, when):
        """Messages for which when(src, dst, msg) is true cross a cut (held
        or dropped, as the cut mode says) until the next full heal."""
        self.net.blocked.append(when)
        self.record("block", getattr(when, "__name__", "a filter"))

    def heal(self, a=None, b=None):
        """Heals every cut, or only the link between a and b."""
        self.net.heal(self.now, None if a is None else [frozenset((a, b))])
        self.record("heal", *(() if a is None else (a, b)))


def _holds_foreign(node):
    """True when the node still keeps a partition it does not replicate."""
    return any(not node.topology.is_member(q) for q in node.store.held_partitions())
