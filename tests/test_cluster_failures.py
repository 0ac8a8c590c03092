"""Issue 7: a cluster of real rldb-server processes (lsm engine) on loopback,
under failure and change, with a steady stream of writes:

  (a) a replica is killed (SIGKILL) and restarted 10 s later with its data;
  (b) the same, but its data directory is deleted before the restart;
  (c) a fourth node joins under load, then another node leaves.

Every write uses a fresh key whose value is the key.  Writes go only through
nodes that stay up, so every write must be acknowledged.  Whether a replica
holds a key is checked on that replica's own storage, never through a
quorum read (a read would also repair it): the nodes are stopped and each
data directory is opened with the engine.  While the restarted node runs,
its progress is followed on copies of its directory (a write is in the
engine's log before it is acknowledged, so a copy holds what it stored).

Run with -s to see the figures each test measures."""
import json
import os
import random
import shutil
import tempfile
import threading
import time

from rldb.cluster import objects
from rldb.cluster.store import ObjectStore
from rldb.errors import RldbError
from rldb.net.client import Client
from rldb.storage import open_engine
from tests.test_cluster_processes import Node, cli, free_ports, wait_until

PARTITIONS = 64
DOWN_FOR = 10.0        # s between the kill and the restart
REPAIR_LIMIT = 60.0    # s after the restart by which every replica holds every acked key
SEEN_UP_LIMIT = 3.0    # s after the restart by which its peers see the node up (30 gossip rounds)
WRITE_EVERY = 0.015    # s between writes


class LsmNode(Node):
    """A node of an n=3, r=2, w=2 cluster on the lsm engine, with fast gossip
    (100 ms) and anti-entropy (an exchange every 200 ms)."""

    def __init__(self, tmp_path, port):
        super().__init__(tmp_path, port, n=3, r=2, w=2, engine="lsm")
        cfg = json.loads(self.config.read_text())
        cfg.update({"storage_engine": "lsm", "partitions": PARTITIONS, "aae_interval_ms": 200,
                    "request_timeout_ms": 5000})
        self.config.write_text(json.dumps(cfg))
        self.node_id = f"127.0.0.1:{port}"
        self.data_dir = self.dir / "data"
        self.store_path = self.data_dir / "store"

    def kill(self):
        """A crash: SIGKILL, nothing flushed or closed."""
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        self.proc = None


def stop_all(nodes):
    """SIGTERM to every node still running (each must exit with status 0)."""
    errors = []
    for node in nodes:
        try:
            node.stop()
        except Exception as exc:
            errors.append(f"{node.node_id}: {exc!r}")
    assert not errors, errors


def node_logs(nodes):
    return "\n".join(f"--- {n.node_id} server.log (tail)\n{n.read_log()}" for n in nodes)


# ---- watching the cluster --------------------------------------------------------------------

def admin(port, op):
    with Client(port=port, timeout=5) as c:
        return c.admin(op)


def stats(port):
    with Client(port=port, timeout=5) as c:
        return c.stats()


def views(nodes):
    """admin status of every node, or None if one does not answer."""
    try:
        return [admin(n.port, "status") for n in nodes]
    except (RldbError, OSError):
        return None


def settled(nodes):
    """Every node in `nodes` sees the same ring, not in transition, spread
    over exactly `nodes`, all of them up."""
    members = {n.node_id for n in nodes}
    got = views(nodes)
    if got is None:
        return False
    versions = set()
    for view in got:
        rows = {row["node"]: row for row in view["nodes"]}
        owning = {node for node, row in rows.items() if row["partitions"] > 0}
        if view["in_transition"] or owning != members or \
                any(rows[m]["status"] != "up" for m in members):
            return False
        versions.add(view["ring_version"])
    return len(versions) == 1


def quiet(nodes):
    """settled, and no node reports hints or handoffs pending."""
    if not settled(nodes):
        return False
    for view in views(nodes) or [None]:
        if view is None or any(row["hints"] != 0 or row["handoffs"] != 0
                               for row in view["nodes"] if row["status"] != "left"):
            return False
    return True


def sees(observers, node, status):
    got = views(observers)
    return got is not None and all(
        any(row["node"] == node.node_id and row["status"] == status for row in view["nodes"])
        for view in got)


def sees_up(observers, node):
    return sees(observers, node, "up")


def form_cluster(nodes):
    for node in nodes[1:]:
        out = cli("join-cluster", "-p", str(node.port), "--known-cluster-node",
                  f"127.0.0.1:{nodes[0].port}")
        assert out.returncode == 0, out.stderr
    assert wait_until(lambda: quiet(nodes), 30), node_logs(nodes)


def aae_counters(nodes):
    total = {"aae_exchanges": 0, "aae_keys_repaired": 0, "read_repairs": 0, "hints_delivered": 0}
    for n in nodes:
        cluster = stats(n.port)["cluster"]
        for name in total:
            total[name] += cluster.get(name, 0)
    return total


# ---- what a replica holds ----------------------------------------------------------------------

def missing_in(store_path, keys):
    """The keys of `keys` whose stored versions are not exactly [key], in the
    lsm store at store_path (which no process may have open)."""
    engine = open_engine("lsm", str(store_path), background=False, create_if_missing=False)
    try:
        store = ObjectStore(engine, PARTITIONS)
        return [k for k in keys if objects.live_values(store.get(k)) != [k]]
    finally:
        engine.close()


def missing_in_snapshot(node, keys):
    """missing_in on a copy of a running node's store; None when the copy
    came out inconsistent (a file changed under it), to try again."""
    dst = tempfile.mkdtemp(prefix="rldb-snap-")
    try:
        for name in sorted(os.listdir(node.store_path)):
            if name != "LOCK":
                shutil.copy2(node.store_path / name, os.path.join(dst, name))
        engine = open_engine("lsm", dst, background=False, create_if_missing=False,
                             wal_recovery="prefix")
        try:
            store = ObjectStore(engine, PARTITIONS)
            return [k for k in keys if objects.live_values(store.get(k)) != [k]]
        finally:
            engine.close()
    except (OSError, RldbError):
        return None
    finally:
        shutil.rmtree(dst, ignore_errors=True)


# ---- the load ------------------------------------------------------------------------------------

class Writer(threading.Thread):
    """Puts a fresh key (value = key) every WRITE_EVERY s, round robin through
    `ports`; every `read_every`-th step also reads an earlier acknowledged key
    with r=2 and checks its value."""

    def __init__(self, ports, prefix, read_every=0):
        super().__init__(daemon=True, name="writer")
        self.ports = list(ports)
        self.prefix = prefix
        self.read_every = read_every
        self.acked = []
        self.failures = []       # (seconds since start, port, key, error)
        self.read_errors = []
        self.wrong_reads = []
        self.reads = 0
        self.max_latency = 0.0
        self.halt = threading.Event()
        self.rng = random.Random(7)

    def stop(self):
        self.halt.set()
        self.join(30)
        assert not self.is_alive()

    def _note(self, where, what):
        where.append(what)
        if len(where) <= 5:
            print(f"  writer: {what}")

    def run(self):
        clients = {}

        def client(port):
            if port not in clients:
                clients[port] = Client(port=port, timeout=15)
            return clients[port]

        def drop(port):
            old = clients.pop(port, None)
            if old is not None:
                try:
                    old.close()
                except Exception:
                    pass

        start = next_at = time.monotonic()
        i = 0
        try:
            while not self.halt.is_set():
                port = self.ports[i % len(self.ports)]
                key = b"%s-%06d" % (self.prefix, i)
                t0 = time.monotonic()
                try:
                    client(port).put(key, key)
                    self.acked.append(key)
                except Exception as exc:
                    self._note(self.failures, (round(t0 - start, 2), port, key, repr(exc)))
                    drop(port)
                self.max_latency = max(self.max_latency, time.monotonic() - t0)
                if self.read_every and i % self.read_every == 0 and self.acked:
                    old = self.rng.choice(self.acked)
                    self.reads += 1
                    try:
                        got = client(port).get(old, r=2)
                        if got is None or got.values != [old]:
                            self._note(self.wrong_reads, (port, old, got))
                    except Exception as exc:
                        self._note(self.read_errors, (round(time.monotonic() - start, 2), port,
                                                      old, repr(exc)))
                        drop(port)
                i += 1
                next_at += WRITE_EVERY
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_at = time.monotonic()
        finally:
            for port in list(clients):
                drop(port)


# ---- (a) and (b): a replica crashes and comes back --------------------------------------------

def crash_and_restart(tmp_path, wipe):
    nodes = [LsmNode(tmp_path, port) for port in free_ports(3)]
    try:
        for node in nodes:
            node.start()
        form_cluster(nodes)
        first, second, victim = nodes
        writer = Writer([first.port, second.port], b"w" if wipe else b"k")
        writer.start()
        time.sleep(5)
        before_kill = len(writer.acked)
        victim.kill()
        killed = time.monotonic()
        assert wait_until(lambda: sees([first, second], victim, "down"), DOWN_FOR - 1), \
            node_logs(nodes)
        seen_down = time.monotonic() - killed
        time.sleep(max(0.0, DOWN_FOR - seen_down))
        if wipe:
            shutil.rmtree(victim.data_dir)
        victim.start()
        restarted = time.monotonic()
        print(f"\n[{'wiped' if wipe else 'kept'}] killed {victim.node_id} after "
              f"{before_kill} acked writes; both others saw it down after {seen_down:.1f} s; "
              f"restarted{' with an empty data directory' if wipe else ''} after "
              f"{restarted - killed:.1f} s")

        # writes go on for a while after the restart
        seen_up = None
        while time.monotonic() - restarted < 3:
            if seen_up is None and sees_up([first, second], victim):
                seen_up = time.monotonic() - restarted
            time.sleep(0.2)
        writer.stop()
        acked = list(writer.acked)
        assert len(set(acked)) == len(acked)

        if seen_up is None:
            assert wait_until(lambda: sees_up([first, second], victim), REPAIR_LIMIT - 3), \
                node_logs(nodes)
            seen_up = time.monotonic() - restarted

        # follow the restarted node on copies of its store until it holds every key
        complete_after = None
        last_missing = None
        while time.monotonic() - restarted < REPAIR_LIMIT:
            missing = missing_in_snapshot(victim, acked)
            if missing is not None:
                last_missing = len(missing)
                if not missing:
                    complete_after = time.monotonic() - restarted
                    break
            time.sleep(1.0)
        left = REPAIR_LIMIT - (time.monotonic() - restarted)
        quiet_now = wait_until(lambda: quiet(nodes), max(1.0, left))
        counters = aae_counters(nodes)
        checked_after = time.monotonic() - restarted

        stop_all(nodes)
        on_disk = {node.node_id: missing_in(node.store_path, acked) for node in nodes}

        print(f"  acked writes: {len(acked)}, failed writes: {len(writer.failures)}, "
              f"slowest put: {writer.max_latency * 1000:.0f} ms")
        print(f"  restarted node seen up by both others {seen_up:.1f} s after the restart")
        held = None if complete_after is None else round(complete_after, 1)
        print(f"  restarted node held every acked key {held} s after the restart "
              f"(missing at the last look: {last_missing})")
        print(f"  cluster quiet: {quiet_now}; anti-entropy so far: {counters}")
        print(f"  on disk after SIGTERM ({checked_after:.1f} s after the restart), "
              f"missing per node: { {n: len(m) for n, m in on_disk.items()} }")

        assert writer.failures == [], \
            f"{len(writer.failures)} writes failed: {writer.failures[:5]}"
        for node, missing in on_disk.items():
            assert not missing, f"{node} lacks {len(missing)} acked keys, e.g. {missing[:5]}\n" \
                                f"{node_logs(nodes)}"
        assert complete_after is not None and complete_after <= REPAIR_LIMIT, \
            f"the restarted node still lacked {last_missing} keys {REPAIR_LIMIT} s " \
            f"after it came back"
        assert quiet_now, node_logs(nodes)
        # A restarted node, wiped or not, is back in its peers' eyes within a
        # few gossip rounds (not only once its heartbeat counter passes the
        # one they remember from before the crash).
        assert seen_up <= SEEN_UP_LIMIT, \
            f"the others saw the restarted node up only {seen_up:.1f} s after its restart\n" \
            f"{node_logs(nodes)}"
    finally:
        stop_all(nodes)


def test_killed_replica_restarts_with_its_data_and_catches_up(tmp_path):
    crash_and_restart(tmp_path, wipe=False)


def test_killed_replica_restarts_wiped_and_anti_entropy_restores_it(tmp_path):
    crash_and_restart(tmp_path, wipe=True)


# ---- (c): a node joins under load, another leaves -----------------------------------------

def test_join_then_leave_under_load(tmp_path):
    nodes = [LsmNode(tmp_path, port) for port in free_ports(4)]
    first, second, leaver, joiner = nodes
    try:
        for node in (first, second, leaver):
            node.start()
        form_cluster([first, second, leaver])
        writer = Writer([first.port, second.port], b"j", read_every=3)
        writer.start()
        time.sleep(2)

        joiner.start()
        t0 = time.monotonic()
        out = cli("join-cluster", "-p", str(joiner.port), "--known-cluster-node",
                  f"127.0.0.1:{first.port}")
        assert out.returncode == 0, out.stderr
        assert wait_until(lambda: settled(nodes), 90), node_logs(nodes)
        join_settled = time.monotonic() - t0
        failed_in_join = len(writer.failures)
        acked_in_join = len(writer.acked)
        print(f"\n[join] {joiner.node_id} joined; ring settled on 4 nodes in {join_settled:.1f} s "
              f"({acked_in_join} writes acked so far, {failed_in_join} failed)")
        time.sleep(2)

        t1 = time.monotonic()
        out = cli("leave", "-p", str(leaver.port))
        assert out.returncode == 0, out.stderr
        end = time.monotonic() + 60
        while leaver.proc.poll() is None and time.monotonic() < end:
            time.sleep(0.1)
        left_after = time.monotonic() - t1
        code = leaver.proc.poll()
        assert code == 0, f"the leaving node's exit status: {code}\n{node_logs([leaver])}"
        leaver.proc = None
        print(f"[leave] {leaver.node_id} exited with status 0 {left_after:.1f} s after `leave`")
        stay = [first, second, joiner]
        assert wait_until(lambda: settled(stay), 60), node_logs(nodes)
        leave_settled = time.monotonic() - t1
        time.sleep(2)
        writer.stop()
        acked = list(writer.acked)

        print(f"  ring settled on 3 nodes {leave_settled:.1f} s after `leave`")
        print(f"  acked writes: {len(acked)}, failed writes: {len(writer.failures)} "
              f"({failed_in_join} during the join), "
              f"slowest put: {writer.max_latency * 1000:.0f} ms")
        print(f"  reads (r=2) under load: {writer.reads}, errors: {len(writer.read_errors)}, "
              f"wrong values: {len(writer.wrong_reads)}")

        unreadable = []
        with Client(port=first.port, timeout=15) as c:
            for key in acked:
                got = c.get(key, r=2)
                if got is None or got.values != [key]:
                    unreadable.append((key, got))
        moved = {name: sum(stats(n.port)["cluster"][name] for n in stay)
                 for name in ("keys_transferred", "keys_received", "keys_dropped",
                              "hints_delivered", "forwarded")}
        print(f"  handoff counters of the remaining nodes: {moved}")
        ring = admin(second.port, "ring")
        owners = [p["owner"] for p in ring["partitions"]]
        load = {n.node_id: owners.count(n.node_id) for n in stay}
        print(f"  acked keys read back with r=2: {len(acked) - len(unreadable)}/{len(acked)}; "
              f"partitions per node: {load}")

        assert writer.failures == [], f"{len(writer.failures)} writes failed " \
                                      f"({failed_in_join} during the join): {writer.failures[:5]}"
        assert not unreadable, f"{len(unreadable)} acked keys unreadable, e.g. {unreadable[:5]}"
        assert writer.wrong_reads == [], writer.wrong_reads[:5]
        assert writer.read_errors == [], writer.read_errors[:5]
        assert set(owners) == {n.node_id for n in stay} and not ring["in_transition"]
        assert sum(load.values()) == PARTITIONS, load
        assert max(load.values()) - min(load.values()) <= 1, load
    finally:
        stop_all(nodes)
