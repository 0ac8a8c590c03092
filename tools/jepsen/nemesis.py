"""The nemesis: a seeded schedule of faults, alternating with heal periods,
applied to the real processes and network, every step logged.

Faults: partitions (random halves, Jepsen's bridge, one node isolated),
pausing a node (SIGSTOP / SIGCONT), killing one (SIGKILL, restarted at the
heal with the same config and data) and clock skew (an offset in ms written
to the node's offset file, applied with SIGUSR2 where the server handles
it).  The schedule depends on the seed only, so a seed names a run.

Each fault records the nodes it makes faulty: the paused, killed or skewed
node, or, for a partition, every node that cannot reach a majority of the
cluster (itself included).  Availability is reported split by that."""
import asyncio
import random
import time

KINDS = ("partition", "pause", "kill", "skew")
PARTITIONS = ("halves", "bridge", "isolate")


class Fault:
    """One planned fault: kind (e.g. partition-bridge), its nodes and
    groups, and how long it and the heal after it last."""

    def __init__(self, kind, nodes, duration, heal, groups=None, offsets=None):
        self.kind = kind
        self.nodes = nodes      # indexes the fault acts on
        self.duration = duration
        self.heal = heal
        self.groups = groups    # partition: lists of indexes that still see each other
        self.offsets = offsets  # skew: index -> ms

    def faulty(self, count):
        if self.groups is None:
            return sorted(self.nodes)
        majority = count // 2 + 1
        out = []
        for i in range(count):
            reach = set().union(*(set(g) for g in self.groups if i in g)) | {i}
            if len(reach) < majority:
                out.append(i)
        return out

    def describe(self, names):
        if self.groups is not None:
            return " | ".join("{" + ",".join(names[i] for i in g) + "}" for g in self.groups)
        if self.offsets is not None:
            return ", ".join(f"{names[i]} {ms:+d} ms" for i, ms in sorted(self.offsets.items()))
        return ",".join(names[i] for i in self.nodes)


def plan(seed, count, kinds, fault_range=(3.0, 6.0), heal_range=(2.0, 4.0)):
    """An endless seeded iterator of Faults over count nodes."""
    rng = random.Random(f"nemesis-{seed}")
    kinds = list(kinds)
    while True:
        kind = rng.choice(kinds)
        duration = round(rng.uniform(*fault_range), 2)
        heal = round(rng.uniform(*heal_range), 2)
        order = list(range(count))
        rng.shuffle(order)
        if kind == "partition":
            shape = rng.choice(PARTITIONS)
            half = count // 2
            if shape == "halves":
                groups = [sorted(order[:half]), sorted(order[half:])]
            elif shape == "bridge":  # two halves and one node (order[half]) in both
                groups = [sorted(order[:half + 1]), sorted(order[half:])]
            else:
                groups = [[order[0]], sorted(order[1:])]
            yield Fault(f"partition-{shape}", order, duration, heal, groups=groups)
        elif kind == "skew":
            chosen = order[:rng.randint(1, max(1, count // 2))]
            offsets = {i: rng.choice((-1, 1)) * rng.randint(200, 2000) for i in chosen}
            yield Fault("skew", chosen, duration, heal, offsets=offsets)
        else:
            yield Fault(kind, [order[0]], duration, heal)


class Nemesis:
    """Applies a plan to a cluster; log (a list of dicts) and intervals
    are what the report and the plot read."""

    def __init__(self, cluster, history, seed, kinds, fault_range=(3.0, 6.0),
                 heal_range=(2.0, 4.0), say=print):
        self.cluster = cluster
        self.network = cluster.network
        self.history = history
        self.names = [node.name for node in cluster.nodes]
        self.plan = plan(seed, len(cluster.nodes), kinds, fault_range, heal_range)
        self.log = []
        self.intervals = []
        self.say = say
        self.skew_unsupported = set()
        self._current = None

    def note(self, event, **fields):
        entry = {"t": self.history.now(), "wall": time.strftime("%H:%M:%S"), "event": event,
                 **fields}
        self.log.append(entry)
        detail = " ".join(f"{k}={v}" for k, v in fields.items())
        self.say(f"[{entry['wall']} t={entry['t']:7.2f}] nemesis {event} {detail}".rstrip())
        return entry

    async def run(self, until, first_quiet=2.0):
        """Faults until history time `until`.  A fault that would last past
        it is left in place: heal_all(), the final heal, ends it, so that
        the convergence time measures the recovery from a real fault."""
        await asyncio.sleep(first_quiet)
        for fault in self.plan:
            left = until - self.history.now()
            if left < 1.0:
                return
            await self._start(fault)
            if fault.duration >= left:
                await asyncio.sleep(left)
                return
            try:
                await asyncio.sleep(fault.duration)
            finally:
                await self._stop(fault)
            await asyncio.sleep(min(fault.heal, max(0.0, until - self.history.now())))

    async def _start(self, fault):
        nodes = self.cluster.nodes
        began = self.history.now()  # before the fault acts: an op it cuts short falls in it
        if fault.groups is not None:
            await asyncio.to_thread(self.network.isolate, fault.groups)
        elif fault.kind == "pause":
            nodes[fault.nodes[0]].pause()
        elif fault.kind == "kill":
            await asyncio.to_thread(nodes[fault.nodes[0]].kill)
        elif fault.kind == "skew":
            applied = []
            for i, ms in fault.offsets.items():
                if not nodes[i].set_clock_offset(ms):
                    self.skew_unsupported.add(self.names[i])
                    applied.append(f"{self.names[i]}:no")
                else:
                    seen = await self.cluster.clock_offset(nodes[i], ms)
                    applied.append(f"{self.names[i]}:{'yes' if seen == ms else f'reports {seen}'}")
        faulty = [self.names[i] for i in fault.faulty(len(nodes))]
        self._current = {"kind": fault.kind, "start": began, "end": None,
                         "faulty": faulty, "detail": fault.describe(self.names)}
        extra = {"applied": ",".join(applied)} if fault.kind == "skew" else {}
        self._current.update(extra)
        self.note("start", kind=fault.kind, nodes=fault.describe(self.names),
                  faulty=",".join(faulty) or "-", **extra)

    async def _stop(self, fault):
        nodes = self.cluster.nodes
        if fault.groups is not None:
            await asyncio.to_thread(self.network.heal)
        elif fault.kind == "pause":
            nodes[fault.nodes[0]].resume()
        elif fault.kind == "kill":
            node = nodes[fault.nodes[0]]
            await asyncio.to_thread(node.start)
            await self.cluster.wait_up(node)  # the fault lasts until it serves again
        elif fault.kind == "skew":
            for i in fault.offsets:
                nodes[i].set_clock_offset(0)
        if self._current is not None:
            self._current["end"] = self.history.now()
            self.intervals.append(self._current)
            self._current = None
        self.note("stop", kind=fault.kind, nodes=fault.describe(self.names))

    def close_open_interval(self):
        """An interval still open (the run was cut short) ends now."""
        if self._current is not None:
            self._current["end"] = self.history.now()
            self.intervals.append(self._current)
            self._current = None

    async def heal_all(self):
        """The final heal: links restored, paused nodes resumed, dead
        nodes restarted, clocks reset.  Returns its history time."""
        self.close_open_interval()
        await asyncio.to_thread(self.network.heal)
        for node in self.cluster.nodes:
            node.resume()
            if not node.running:
                await asyncio.to_thread(node.start)
            node.set_clock_offset(0)
        return self.note("final-heal")["t"]
