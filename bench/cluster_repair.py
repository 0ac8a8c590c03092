#!/usr/bin/env python3
"""Cluster repair and rebalancing, measured on real rldb-server processes.

    .venv/bin/python bench/cluster_repair.py                  # 100,000 keys, every phase
    .venv/bin/python bench/cluster_repair.py --keys 10000 --phases repair
    .venv/bin/python bench/cluster_repair.py --json > run.json

Starts `rldb-server --config-path FILE` processes on 127.0.0.1 (free ports,
lsm engine, data under a temporary directory, quorum n=3 r=2 w=2) and
measures three things (see bench/README.md, "Cluster repair and
rebalancing"):

repair  A 3-node cluster is loaded with --keys keys (100-byte values, written
        through the cluster by tools/loadgen.py --preload) and left until it is
        quiet.  Node 3 is stopped (SIGTERM), its data directory deleted, and it
        is started again: it starts empty, learns the ring from the others'
        gossip, and anti-entropy refills it.  Measured: the time from the
        restart until the anti-entropy repairs of all nodes add up to --keys
        (each exchange counts the keys it changed, on the node that started
        it); then an admin `repair` on node 3 must repair 0 keys, and node 3 is
        stopped, its store opened and counted (ObjectStore partition scan),
        and started again.  Once with the default aae_keys_per_s (10,000) on
        cluster a and, unless --fast-aae-rate 0, on a fresh cluster c whose
        nodes all have the higher rate (so that each wipe is its node's first
        restart).
join    A 4th, empty node joins the loaded 3-node cluster: through node 1 on
        cluster a (after the repair), and, unless --no-second-join, through
        node 2 on a fresh cluster d.  Node ids are host:port and the ports are
        chosen so that they sort node1 < node2 < node3 < node4, as the README's
        3001-3004 do: node 1 is the claimant (the node that plans ring
        changes).  Measured: the time from the join command until every node's
        admin `status` shows the ring out of transition with 4 nodes owning
        partitions (the same ring version everywhere); the keys the others
        sent ("keys_transferred") and node 4 took in ("keys_received"); bytes
        as keys received x the mean (key + stored object) size of node 4's
        store, counted after the run, and node 4's LSM size (tables +
        memtable).  Then, once quiet, an admin `repair` on every node, and
        every store is counted: each key must be held 3 times.  Replicas that
        anti-entropy had to restore after the settle are reported as a
        problem.
load    A fresh 3-node cluster b, preloaded; tools/loadgen.py (--connections
        over the 3 nodes, 50% gets, 100-byte values, --put-context last-read)
        for --before-s seconds; then loadgen again, a 4th node (started before
        this run) joins through node 1 --lead-s seconds into its measured
        window, and loadgen is stopped when the ring has settled.  ops/s and
        latency percentiles of the replies that arrived in each window: the
        first run ("before"), the second run up to the join command
        ("lead-in") and from the join command to the settled ring ("during"),
        from loadgen's per-request CSV.

loadgen runs in a child process: this script imports tools/loadgen.py there
and drives its Run object, so that the child can report the wall-clock time
its measured window starts and can be told to stop (a line on its stdin).

Progress goes to stderr; the tables (or, with --json, one JSON object) to
stdout.  Exit status 0 when every phase completed with nothing to report, 1
when one failed (a node died, a wait timed out, a count was wrong) or a
problem was found (missing replicas): the temporary directory with each
node's server.log is then kept and named.
"""
import argparse
import asyncio
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# tests/helpers: the node harness the tests use; tools/: loadgen, and its percentile
sys.path[:0] = [str(REPO), str(REPO / "tools")]
import loadgen  # noqa: E402
from loadgen import percentile  # noqa: E402
from tests.helpers.ports import LOOPBACK as HOST, free_ports  # noqa: E402
from tests.helpers.server_process import ServerError, ServerProcess  # noqa: E402


class BenchError(Exception):
    """A phase could not complete: what happened, with the node logs."""


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pid):
    """User + system CPU seconds of a process (Linux /proc), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def machine_busy():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts) - idle, sum(parts)


# ---- the rldb side: nodes and what they report ----------------------------------------------


def rpc(port, method, *args, timeout=10.0):
    from rldb.net.client import Client
    with Client(HOST, port, timeout) as c:
        return getattr(c, method)(*args)


class Node:
    """One lsm node of an n=3 r=2 w=2 cluster, in root/name, run by the
    tests' ServerProcess; its failures are BenchErrors with its log's tail."""

    def __init__(self, root, name, port, partitions, extra):
        self.name = name
        self.port = port
        self.addr = f"{HOST}:{port}"
        self.partitions = partitions
        self.server = ServerProcess(Path(root) / name, "lsm", name=name, port=port,
                                    quorum={"n": 3, "r": 2, "w": 2},
                                    heartbeat={"fanout": 2, "interval": 500},
                                    partitions=partitions, **extra)
        self.dir = self.server.workdir
        self.data_dir = self.server.data_dir

    def start(self, timeout=60.0):
        """Starts the process and waits until it answers a ping; seconds taken."""
        t0 = time.monotonic()
        try:
            self.server.start(timeout)
        except ServerError as exc:
            raise BenchError(str(exc)) from None
        return time.monotonic() - t0

    def stop(self, timeout=60.0):
        """SIGTERM and wait; raises unless it exits 0."""
        try:
            code = self.server.stop(timeout=timeout)
        except ServerError as exc:
            raise BenchError(str(exc)) from None
        if code not in (0, None):
            raise BenchError(f"{self.name} exited with {code} on SIGTERM\n" + self.tail())

    def kill(self):
        self.server.kill()

    @property
    def running(self):
        return self.server.running

    def check_alive(self):
        """Raises if the node was started, not stopped, and is gone."""
        if self.server.proc is not None and not self.server.running:
            raise BenchError(f"{self.name} died (exit {self.server.proc.returncode})\n"
                             + self.tail())

    def tail(self):
        return f"---- tail of {self.name}/server.log ----\n" + self.server.log()

    def wipe(self):
        shutil.rmtree(self.data_dir, ignore_errors=False)

    def cpu(self):
        return cpu_seconds(self.server.proc.pid) if self.running else None

    def stats(self):
        return rpc(self.port, "stats")

    def status(self):
        return rpc(self.port, "admin", "status")

    def count_store(self):
        """Stopped node only: (keys, bytes of key + stored object) in its store."""
        from rldb.cluster.store import ObjectStore
        from rldb.storage import open_engine
        engine = open_engine("lsm", str(self.data_dir / "store"))
        try:
            st = ObjectStore(engine, self.partitions)
            keys = size = 0
            for q in range(self.partitions):
                for key, data in st.partition_raw(q):
                    keys += 1
                    size += len(key) + len(data)
            return keys, size
        finally:
            engine.close()


class Cluster:
    """Nodes node1, node2, ... whose ids (host:port) sort in that order, as
    with the README's ports 3001-3004: node1 is the claimant (the lowest id
    among the joined nodes that are up), the node that plans ring changes."""

    def __init__(self, root, partitions, extra=None, prefix="node"):
        self.root = root
        self.partitions = partitions
        self.extra = dict(extra or {})
        self.prefix = prefix
        self.nodes = []
        self._ports = sorted(free_ports(4), key=lambda port: f"{HOST}:{port}")

    def add(self, port=None):
        port = port or (self._ports.pop(0) if self._ports else free_ports(1)[0])
        node = Node(self.root, f"{self.prefix}{len(self.nodes) + 1}", port, self.partitions,
                    self.extra)
        self.nodes.append(node)
        return node

    def live(self):
        return [n for n in self.nodes if n.running]

    def check_alive(self):
        for n in self.nodes:
            n.check_alive()

    def tails(self):
        return "\n".join(n.tail() for n in self.nodes)

    def stop_all(self):
        errors = []
        for n in self.nodes:
            try:
                n.stop()
            except BenchError as exc:
                errors.append(str(exc))
        if errors:
            raise BenchError("\n".join(errors))

    def kill_all(self):
        for n in self.nodes:
            n.kill()

    def settled(self, count):
        """True when every live node sees the same ring version, no
        transition, and `count` nodes up and owning partitions."""
        versions = set()
        for n in self.live():
            st = n.status()
            if st["in_transition"]:
                return False
            owning = [r for r in st["nodes"] if r["partitions"] > 0 and r["status"] == "up"]
            if len(owning) != count:
                return False
            versions.add(st["ring_version"])
        return len(versions) == 1

    def wait_settled(self, count, timeout, interval=0.25):
        t0 = time.monotonic()
        while True:
            self.check_alive()
            try:
                if self.settled(count):
                    return time.monotonic() - t0
            except Exception:  # a node restarting: ask again
                pass
            if time.monotonic() - t0 > timeout:
                raise BenchError(f"the ring did not settle on {count} nodes within {timeout} s\n"
                                 + self.status_dump() + "\n" + self.tails())
            time.sleep(interval)

    def status_dump(self):
        out = []
        for n in self.live():
            try:
                out.append(f"{n.name} admin status: {json.dumps(n.status())}")
            except Exception as exc:
                out.append(f"{n.name} admin status failed: {exc}")
        return "\n".join(out)

    def form(self, timeout):
        first = self.nodes[0]
        for n in self.nodes[1:]:
            rpc(n.port, "join_cluster", first.addr)
        return self.wait_settled(len(self.nodes), timeout)

    def activity(self):
        """One number that grows with any background data movement, and
        whether every node looks quiet right now."""
        total = 0
        quiet = True
        for n in self.live():
            s = n.stats()
            c = s["cluster"]
            total += (c["aae_keys_repaired"] + c["keys_received"] + c["hints_delivered"]
                      + c["keys_dropped"] + c["read_repairs"])
            e = s.get("engine", {})
            if e.get("immutable_memtable") or e.get("pending_compaction_bytes", 0) > 0:
                quiet = False
            st = n.status()
            me = next(r for r in st["nodes"] if r["node"] == st["node"])
            if st["in_transition"] or me["hints"] or me["handoffs"]:
                quiet = False
        return total, quiet

    def wait_quiet(self, timeout, hold=3.0, interval=0.5):
        """Until no data moves between nodes for `hold` seconds, no hints or
        transfers are pending and no LSM flush or compaction is due."""
        t0 = time.monotonic()
        last, since = None, None
        while True:
            self.check_alive()
            total, quiet = self.activity()
            now = time.monotonic()
            if total != last or not quiet:
                last, since = total, now
            elif now - since >= hold:
                return now - t0
            if now - t0 > timeout:
                raise BenchError(f"the cluster was not quiet within {timeout} s\n"
                                 + self.status_dump() + "\n" + self.tails())
            time.sleep(interval)

    def counters(self, name):
        return {n.name: n.stats()["cluster"][name] for n in self.live()}


# ---- loadgen in a child process -------------------------------------------------------------

CHILD_FLAG = "--loadgen-child"


def loadgen_child(argv):
    """Runs tools/loadgen.py's Run in this process.  Prints READY <epoch of
    the measured window's start> once known, stops sending when a line
    arrives on stdin, and prints RESULT <summary json> at the end."""
    lg = loadgen
    args = lg.parse_args(argv)
    loop, loop_name = lg.new_loop(args.uvloop)
    offset = time.time() - time.perf_counter()
    run = lg.Run(args, loop)
    run.loop_name = loop_name

    announced = []

    def ready():
        if not announced:
            announced.append(True)
            print(f"READY {run.workload.measure_from + offset:.6f}", flush=True)

    async def announce():
        while run.workload.measure_from == math.inf or run.workload.preload_next is not None:
            await asyncio.sleep(0.005)
        ready()

    def on_stdin():
        line = sys.stdin.readline()
        if line.strip() == "stop":
            run.workload.stop_at = min(run.workload.stop_at, time.perf_counter())
        if not line or line.strip() == "stop":
            loop.remove_reader(sys.stdin.fileno())

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    try:
        task = loop.create_task(announce())
        loop.run_until_complete(run.execute())
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    finally:
        loop.close()
    ready()  # a run shorter than the announcer's poll
    summary = lg.summarize(run)
    if args.csv:
        lg.write_csv(run, args.csv)
    summary["measure_from_epoch"] = run.workload.measure_from + offset
    print("RESULT " + json.dumps(summary), flush=True)
    return 0


class LoadGen:
    def __init__(self, argv, name):
        self.name = name
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), CHILD_FLAG,
                                      *map(str, argv)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.measure_from = None

    def wait_ready(self):
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.proc.kill()
            raise BenchError(f"loadgen ({self.name}) did not start: {line!r}")
        self.measure_from = float(line.split()[1])
        return self.measure_from

    def stop(self):
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass

    def result(self, timeout=120):
        """Waits for the run to end (stdin stays open: closing it is no stop)."""
        out = self.proc.stdout.read()
        self.proc.wait(timeout)
        self.proc.stdin.close()
        for line in out.splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[7:])
        raise BenchError(f"loadgen ({self.name}) exited {self.proc.returncode} without a result")


def loadgen_args(ports, keys, value_size, connections, extra):
    return ["--ports", ",".join(map(str, ports)), "--keys", keys, "--value-size", value_size,
            "--connections", connections, "--uvloop", *extra]


def preload(ports, keys, value_size, connections):
    """Every key once through the cluster (loadgen --preload); (seconds, errors)."""
    lg = LoadGen(loadgen_args(ports, keys, value_size, connections,
                              ["--preload", "--ops", 1, "--warmup", 0, "--get-ratio", 1,
                               "--timeout", 30]), "preload")
    lg.wait_ready()
    res = lg.result(timeout=3600)
    return res["preload_s"], res["errors"]


def read_requests(path, measure_from):
    """[(done epoch, latency s, is_error)] from a --csv-mode request CSV."""
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            lat = float(row["latency_ms"]) / 1000
            out.append((measure_from + float(row["sent_s"]) + lat, lat, row["outcome"] == "error"))
    out.sort()
    return out


def window(requests, start, end):
    """Replies that arrived in [start, end): ops/s and latency percentiles (ms)."""
    lats = sorted(lat for done, lat, _ in requests if start <= done < end)
    errors = sum(1 for done, _, err in requests if err and start <= done < end)
    secs = max(end - start, 1e-9)

    def ms(v):
        return None if v is None else round(v * 1000, 3)
    return {"seconds": round(secs, 2), "ops": len(lats), "ops_per_s": round(len(lats) / secs, 1),
            "p50_ms": ms(percentile(lats, 0.5)), "p99_ms": ms(percentile(lats, 0.99)),
            "p999_ms": ms(percentile(lats, 0.999)), "max_ms": ms(lats[-1] if lats else None),
            "errors": errors}


def per_second(requests, start, end):
    rows = []
    t = start
    while t < end:
        w = window(requests, t, min(t + 1, end))
        rows.append({"t": round(t - start, 1), "ops_per_s": w["ops_per_s"], "p99_ms": w["p99_ms"],
                     "errors": w["errors"]})
        t += 1
    return rows


# ---- the phases ------------------------------------------------------------------------------


class Sampler:
    """CPU of the node processes and of the machine over a window."""

    def __init__(self, nodes):
        self.nodes = nodes
        self.t0 = time.monotonic()
        self.cpu0 = {n.name: n.cpu() for n in nodes}
        self.busy0 = machine_busy()

    def done(self):
        secs = max(time.monotonic() - self.t0, 1e-9)
        busy1 = machine_busy()
        out = {}
        for n in self.nodes:
            a, b = self.cpu0.get(n.name), n.cpu()
            out[n.name] = None if a is None or b is None else round((b - a) / secs, 2)
        db, dt = busy1[0] - self.busy0[0], busy1[1] - self.busy0[1]
        return {"node_cores": out, "machine_busy_cores": round(os.cpu_count() * db / dt, 2)
                if dt else None}


def peer_views(peers, target):
    """How each peer sees target: {peer name: status word}."""
    out = {}
    for n in peers:
        st = n.status()
        row = next((r for r in st["nodes"] if r["node"] == target.addr), None)
        out[n.name] = row["status"] if row else "unknown"
    return out


def repair_run(cluster, args, rate):
    """Wipes node 3 and measures anti-entropy refilling it."""
    n1, n2, n3 = cluster.nodes[:3]
    keys = args.keys
    base = {n.name: n.stats()["cluster"] for n in (n1, n2)}
    uptime = n3.stats()["uptime_s"]
    log(f"repair (aae_keys_per_s {rate}): stopping {n3.name} (up {uptime:.0f} s), "
        "deleting its data directory")
    n3.stop()
    n3.wipe()
    t0 = time.monotonic()
    ready_s = n3.start()
    sampler = Sampler([n1, n2, n3])
    log(f"repair: {n3.name} answers again after {ready_s:.2f} s; waiting for {keys:,} "
        "repaired keys")
    timeline = []
    first = done_at = None
    # The peers' failure detectors still count node 3 up for a moment after
    # the restart: "seen down" is the first poll where a peer calls it down,
    # "seen up" the first poll after that where both call it up again.
    seen_down = seen_up = None
    last_growth = time.monotonic()
    last = -1
    next_note = time.monotonic() + 10
    per_node = {}
    while True:
        cluster.check_alive()
        try:
            s3 = n3.stats()["cluster"]
            others = {n.name: n.stats()["cluster"] for n in (n1, n2)}
            views = peer_views((n1, n2), n3) if seen_up is None else None
        except Exception:
            time.sleep(args.poll)
            continue
        now = time.monotonic()
        if views is not None:
            if seen_down is None and any(v != "up" for v in views.values()):
                seen_down = now - t0
            elif seen_down is not None and all(v == "up" for v in views.values()):
                seen_up = now - t0
        per_node = {n3.name: (s3["aae_keys_repaired"], s3["aae_exchanges"])}
        for k in others:
            per_node[k] = (others[k]["aae_keys_repaired"] - base[k]["aae_keys_repaired"],
                           others[k]["aae_exchanges"] - base[k]["aae_exchanges"])
        repaired = sum(v[0] for v in per_node.values())
        exchanges = sum(v[1] for v in per_node.values())
        timeline.append((round(now - t0, 2), repaired,
                         *(per_node[n.name][0] for n in (n1, n2, n3))))
        if repaired and first is None:
            first = now - t0
        if repaired != last:
            last, last_growth = repaired, now
        if repaired >= keys:
            done_at = now - t0
            break
        if now >= next_note:
            seen = ("up" if seen_up is not None else "down" if seen_down is not None
                    else "not yet down")
            log(f"repair: {repaired:,} keys repaired after {now - t0:.1f} s "
                f"({exchanges} exchanges; the peers see {n3.name} {seen})")
            next_note = now + 10
        if now - last_growth > args.stall_s:
            log(f"repair: no growth for {args.stall_s:.0f} s at {repaired:,} keys")
            break
        if now - t0 > args.repair_timeout:
            raise BenchError(f"repair: only {repaired:,} of {keys:,} keys after "
                             f"{args.repair_timeout} s\n" + cluster.status_dump() + "\n"
                             + cluster.tails())
        time.sleep(args.poll)
    cpu = sampler.done()
    log(f"repair: counters at {repaired:,} after {now - t0:.1f} s; admin repair on {n3.name}")
    t_rep = time.monotonic()
    final = rpc(n3.port, "admin", "repair", timeout=600)
    final_s = time.monotonic() - t_rep
    if done_at is None:
        done_at = time.monotonic() - t0  # the stall path: complete only once the repair ran
    s3 = n3.stats()
    log(f"repair: final admin repair: {final} ({final_s:.2f} s)")
    diag = {}
    for n in (n1, n2, n3):
        st = n.stats()
        diag[n.name] = {"bad_messages": st["cluster"].get("bad_messages"),
                        "peer_messages_dropped": st.get("peers", {}).get("messages_dropped")}
    row = {"aae_keys_per_s": rate, "keys": keys, "node3_uptime_before_wipe_s": uptime,
           "restart_to_ping_s": round(ready_s, 2),
           "peers_saw_down_s": None if seen_down is None else round(seen_down, 2),
           "peers_saw_up_s": None if seen_up is None else round(seen_up, 2),
           "first_repair_s": None if first is None else round(first, 2),
           "complete_s": round(done_at, 2), "keys_repaired": repaired + final["keys_repaired"],
           "keys_per_s": round(keys / done_at, 1), "exchanges": exchanges,
           "by_node": {k: {"keys_repaired": v[0], "exchanges": v[1]} for k, v in per_node.items()},
           "final_repair": final, "final_repair_s": round(final_s, 2),
           "reached_by_counters": repaired >= keys, "cpu": cpu, "diagnostics": diag,
           "node3_engine_bytes": (s3["engine"].get("bytes", 0)
                                  + s3["engine"].get("memtable_bytes", 0)),
           "timeline": timeline[:: max(1, len(timeline) // 60)]}
    if args.verify:
        log(f"repair: stopping {n3.name} to count its store")
        n3.stop()
        count, size = n3.count_store()
        row["verified_keys"] = count
        row["verified_bytes"] = size
        n3.start()
        if count != keys:
            raise BenchError(f"repair: node 3 holds {count:,} keys, not {keys:,}, after the "
                             f"counters reached {repaired:,} and the final repair "
                             f"{final}\n" + cluster.tails())
    return row


def join_run(cluster, args, timeout, new=None, via=0):
    """Joins an empty node (started here unless given) through
    cluster.nodes[via], waits for the settled ring."""
    if new is None:
        new = cluster.add()
        new.start()
    old = [n for n in cluster.nodes if n is not new]
    base = cluster.counters("keys_transferred")
    sampler = Sampler(cluster.nodes)
    log(f"join: {new.name} joins through {old[via].name}")
    t0 = time.time()
    rpc(new.port, "join_cluster", old[via].addr)
    transition_at = None
    next_note = t0 + 10
    while True:
        cluster.check_alive()
        now = time.time()
        try:
            if transition_at is None and any(n.status()["in_transition"] for n in cluster.nodes):
                transition_at = now - t0
            if cluster.settled(len(cluster.nodes)):
                break
            if now >= next_note:
                got = new.stats()["cluster"]["keys_received"]
                log(f"join: {got:,} keys received after {now - t0:.1f} s")
                next_note = now + 10
        except Exception:
            pass
        if now - t0 > timeout:
            raise BenchError(f"join: the ring did not settle within {timeout} s\n"
                             + cluster.status_dump() + "\n" + cluster.tails())
        time.sleep(args.poll)
    settled_at = time.time()
    cpu = sampler.done()
    aae_at_settle = cluster.counters("aae_keys_repaired")
    relayed = cluster.counters("relayed_writes")
    sent = cluster.counters("keys_transferred")
    received = new.stats()["cluster"]["keys_received"]
    eng = new.stats()["engine"]
    ring = new.status()["ring_version"]
    return {"t0": t0, "settled_epoch": settled_at, "settle_s": round(settled_at - t0, 2),
            "via": old[via].name, "claimant": min(old, key=lambda n: n.addr).name,
            "ring_version_after": ring, "aae_at_settle": aae_at_settle,
            "relayed_by_node": relayed,
            "sent_by_node": {k: sent[k] - base.get(k, 0) for k in sent if k != new.name},
            "transition_after_s": None if transition_at is None else round(transition_at, 2),
            "keys_received": received,
            "keys_transferred": sum(sent[k] - base.get(k, 0) for k in sent),
            "node4_engine_bytes": eng.get("bytes", 0) + eng.get("memtable_bytes", 0),
            "node4_user_bytes_written": eng.get("user_bytes_written"), "cpu": cpu}, new


def after_join_check(cluster, new, args, row, results):
    """After a settled join: waits until quiet, asks every node for a full
    anti-entropy repair, stops the nodes and counts every store.  Every key
    must then be held n=3 times; keys repaired after the settle (on their
    own while the cluster went quiet, then by the admin repairs) are
    replicas the join left missing.  Stops the cluster."""
    row["quiet_after_settle_s"] = round(cluster.wait_quiet(args.quiet_timeout), 1)
    aae = cluster.counters("aae_keys_repaired")
    row["aae_repaired_after_settle"] = sum(aae[k] - row["aae_at_settle"].get(k, 0) for k in aae)
    row["dropped_by_node"] = cluster.counters("keys_dropped")
    row["keys_dropped"] = sum(v for k, v in row["dropped_by_node"].items() if k != new.name)
    row["relayed_after_quiet_by_node"] = cluster.counters("relayed_writes")
    repairs = {}
    for n in cluster.nodes:
        repairs[n.name] = rpc(n.port, "admin", "repair", timeout=600)["keys_repaired"]
    row["admin_repair_keys_by_node"] = repairs
    row["missing_replicas_repaired"] = row["aae_repaired_after_settle"] + sum(repairs.values())
    log(f"join check: {row['aae_repaired_after_settle']:,} keys repaired by anti-entropy after "
        f"the settle, {sum(repairs.values()):,} by admin repairs; counting every store")
    cluster.stop_all()
    held = {n.name: n.count_store() for n in cluster.nodes}
    row["keys_by_node"] = {k: v[0] for k, v in held.items()}
    row["replicas_total"] = sum(v[0] for v in held.values())
    row["node4_keys"], row["node4_logical_bytes"] = held[new.name]
    if row["missing_replicas_repaired"]:
        results.setdefault("problems", []).append(
            f"join ({row['phase']}): {row['missing_replicas_repaired']:,} replicas were missing "
            f"after the ring settled and were restored by anti-entropy "
            f"({row['aae_repaired_after_settle']:,} on its own, "
            f"{sum(repairs.values()):,} by admin repairs); by the settle {new.name} had received "
            f"{row['keys_received']:,} keys and relayed "
            f"{row['relayed_by_node'].get(new.name, 0):,} "
            f"received keys on as hints (relayed_writes: keys for a partition it did not know "
            f"yet that it replicates) instead of storing them")
    if row["replicas_total"] != 3 * args.keys:
        results.setdefault("problems", []).append(
            f"join ({row['phase']}): the nodes hold {row['replicas_total']:,} replicas after the "
            f"repairs, not {3 * args.keys:,}: {row['keys_by_node']}")


def loaded_cluster(root, name, args, extra=None):
    """Three joined nodes holding --keys keys, quiet; (cluster, preload figures).
    On a failure the nodes are killed before the error goes on."""
    cluster = Cluster(Path(root) / name, args.partitions, extra)
    try:
        for _ in range(3):
            cluster.add().start()
        log(f"cluster {name}: 3 nodes on ports {[n.port for n in cluster.nodes]}"
            + (f" with {extra}" if extra else "") + "; joining")
        cluster.form(args.settle_timeout)
        ports = [n.port for n in cluster.nodes]
        log(f"cluster {name}: preloading {args.keys:,} keys through the cluster")
        secs, errors = preload(ports, args.keys, args.value_size, args.connections)
        info = {"cluster": name, "keys": args.keys, "seconds": secs,
                "keys_per_s": round(args.keys / secs, 1) if secs else None, "errors": errors}
        log(f"cluster {name}: preload {secs:.1f} s, {errors} errors; waiting until it is quiet")
        info["quiet_after_s"] = round(cluster.wait_quiet(args.quiet_timeout), 1)
    except BaseException:
        cluster.kill_all()
        raise
    return cluster, info


def join_phase(cluster, args, results, via, label):
    cluster.wait_settled(3, args.repair_timeout)
    cluster.wait_quiet(args.quiet_timeout)
    row, new = join_run(cluster, args, args.join_timeout, via=via)
    row["phase"] = label
    log(f"join: settled after {row['settle_s']} s; {row['keys_received']:,} keys received")
    after_join_check(cluster, new, args, row, results)
    count, size = row["node4_keys"], row["node4_logical_bytes"]
    mean = size / count if count else 0
    row["mean_stored_bytes"] = round(mean, 1)
    row["bytes_transferred_est"] = round(row["keys_received"] * mean)
    row["keys_per_s"] = round(row["keys_received"] / row["settle_s"], 1)
    row["mb_per_s"] = round(row["bytes_transferred_est"] / row["settle_s"] / 1e6, 2)
    for k in ("t0", "settled_epoch", "aae_at_settle"):
        row.pop(k)
    results.setdefault("join", []).append(row)


def phase_repair_and_join(root, args, results):
    """Cluster a: the repair at the default rate, then the join through node
    1 (the claimant).  Cluster c (a fresh one, every node with
    --fast-aae-rate): the repair again; each wipe is then its node 3's first
    restart.  Cluster d: the join through node 2, which is not the claimant."""
    cluster, info = loaded_cluster(root, "a", args)
    results.setdefault("preload", []).append(info)
    try:
        if "repair" in args.phases:
            results.setdefault("repair", []).append(repair_run(cluster, args, 10_000))
        if "join" in args.phases:
            join_phase(cluster, args, results, 0, "through node1, the claimant")
        cluster.stop_all()
    finally:
        cluster.kill_all()
    if "repair" in args.phases and args.fast_aae_rate:
        cluster, info = loaded_cluster(root, "c", args, {"aae_keys_per_s": args.fast_aae_rate})
        results["preload"].append(info)
        try:
            results["repair"].append(repair_run(cluster, args, args.fast_aae_rate))
            cluster.stop_all()
        finally:
            cluster.kill_all()
    if "join" in args.phases and args.second_join:
        cluster, info = loaded_cluster(root, "d", args)
        results["preload"].append(info)
        try:
            join_phase(cluster, args, results, 1, "through node2, not the claimant")
            cluster.stop_all()
        finally:
            cluster.kill_all()


def phase_load(root, args, results):
    cluster, info = loaded_cluster(root, "b", args)
    results.setdefault("preload", []).append(info)
    try:
        ports = [n.port for n in cluster.nodes]
        common = ["--get-ratio", 0.5, "--put-context", "last-read", "--warmup", 2,
                  "--csv-mode", "request", "--timeout", 10]
        before_csv = Path(root) / "before.csv"
        log(f"load: {args.before_s:.0f} s of loadgen before the join")
        lg = LoadGen(loadgen_args(ports, args.keys, args.value_size, args.connections,
                                  common + ["--duration", args.before_s, "--csv", before_csv]),
                     "before")
        lg.wait_ready()
        before_sum = lg.result(timeout=args.before_s + 120)
        reqs = read_requests(before_csv, before_sum["measure_from_epoch"])
        before = window(reqs, before_sum["measure_from_epoch"], reqs[-1][0] + 1e-9)
        before["loadgen_summary"] = {k: before_sum[k] for k in (
            "ops_per_s", "p50_ms", "p99_ms", "errors", "get_hit_reply_bytes", "client_cpu_pct")}
        new = cluster.add()
        new.start()  # before the second run: its start-up is not in the lead-in
        cluster.wait_quiet(args.quiet_timeout)
        during_csv = Path(root) / "during.csv"
        lg = LoadGen(loadgen_args(ports, args.keys, args.value_size, args.connections,
                                  common + ["--duration", args.join_timeout + args.lead_s + 60,
                                            "--csv", during_csv]), "during")
        start = lg.wait_ready()
        time.sleep(max(0.0, start + args.lead_s - time.time()))
        try:
            row, new = join_run(cluster, args, args.join_timeout, new)
        finally:
            lg.stop()
        during_sum = lg.result()
        row["phase"] = "under load"
        after_join_check(cluster, new, args, row, results)
        reqs = read_requests(during_csv, during_sum["measure_from_epoch"])
        lead = window(reqs, start, row["t0"])
        during = window(reqs, row["t0"], row["settled_epoch"])
        results["load"] = {
            "connections": args.connections, "get_ratio": 0.5, "put_context": "last-read",
            "before": before, "lead_in": lead, "during": during,
            "during_loadgen_reply_bytes": during_sum["get_hit_reply_bytes"],
            "join": {k: row[k] for k in (
                "settle_s", "transition_after_s", "keys_received", "keys_transferred", "cpu",
                "via", "claimant",
                "relayed_by_node", "aae_repaired_after_settle", "admin_repair_keys_by_node",
                "missing_replicas_repaired", "keys_by_node", "replicas_total")},
            "ops_ratio": round(during["ops_per_s"] / before["ops_per_s"], 3)
            if before["ops_per_s"] else None,
            "p99_ratio": round(during["p99_ms"] / before["p99_ms"], 2)
            if before["p99_ms"] and during["p99_ms"] else None,
            "ops_ratio_vs_lead_in": round(during["ops_per_s"] / lead["ops_per_s"], 3)
            if lead["ops_per_s"] else None,
            "p99_ratio_vs_lead_in": round(during["p99_ms"] / lead["p99_ms"], 2)
            if lead["p99_ms"] and during["p99_ms"] else None,
            "during_per_second": per_second(reqs, row["t0"], row["settled_epoch"]),
        }
        log(f"load: before {before['ops_per_s']:,.0f} ops/s p99 {before['p99_ms']} ms; during "
            f"the join ({row['settle_s']} s) {during['ops_per_s']:,.0f} ops/s p99 "
            f"{during['p99_ms']} ms")
    finally:
        cluster.kill_all()


# ---- report ----------------------------------------------------------------------------------


def table(headers, rows):
    cells = [[("-" if v is None else f"{v:,}" if isinstance(v, int) else str(v)) for v in r]
             for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    out = ["  ".join(h.rjust(w) for h, w in zip(headers, widths)),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


def report(results):
    out = []
    m = results["meta"]
    out.append(f"rldb cluster repair and rebalancing: {m['keys']:,} keys x {m['value_size']} B "
               f"values, lsm, n=3 r=2 w=2, {m['partitions']} partitions, commit {m['commit']}, "
               f"{m['date']}")
    if m.get("dirty_at_start") or m.get("dirty_at_end") or \
            m.get("commit_at_end", m["commit"]) != m["commit"]:
        out.append(f"working tree: files differing from the commit at start: "
                   f"{', '.join(m.get('dirty_at_start') or []) or 'none'}; at the end: commit "
                   f"{m.get('commit_at_end')}, {', '.join(m.get('dirty_at_end') or []) or 'none'}")
    for p in results.get("preload", []):
        out.append(f"preload of cluster {p['cluster']} (loadgen, {m['connections']} connections, "
                   f"w=2): {p['seconds']} s, {p['keys_per_s']:,} keys/s, {p['errors']} errors; "
                   f"quiet {p['quiet_after_s']} s later")
    if results.get("repair"):
        out.append("\n1. anti-entropy refill of a wiped replica (node 3 of 3; seconds from its "
                   "restart)")
        rows = []
        for r in results["repair"]:
            cpu = r["cpu"]["node_cores"]
            rows.append([r["aae_keys_per_s"], r["keys"], r["node3_uptime_before_wipe_s"],
                         r["restart_to_ping_s"],
                         "not seen down" if r["peers_saw_down_s"] is None else
                         "still down" if r["peers_saw_up_s"] is None else r["peers_saw_up_s"],
                         r["first_repair_s"],
                         r["complete_s"], f"{r['keys_per_s']:,.0f}", r["exchanges"],
                         r["final_repair"]["keys_repaired"], r.get("verified_keys"),
                         "/".join(f"{v:.2f}" if v is not None else "-" for v in cpu.values()),
                         r["cpu"]["machine_busy_cores"]])
        out.append(table(["aae_keys_per_s", "keys", "prior uptime s", "ping s", "peers see up s",
                          "first s", "all keys s", "keys/s", "exchanges", "final repair",
                          "counted", "node cores 1/2/3", "machine cores"], rows))
        for r in results["repair"]:
            by = ", ".join(f"{k} {v['keys_repaired']:,} keys in {v['exchanges']} exchanges"
                           for k, v in sorted(r["by_node"].items()))
            out.append(f"  rate {r['aae_keys_per_s']:,}: repaired by the node that started the "
                       f"exchange: {by}")
    if results.get("join"):
        out.append("\n2. handoff when a 4th node joins the loaded 3-node cluster (no client load)")
        rows = []
        for j in results["join"]:
            rows.append([j["phase"], j["settle_s"], j["transition_after_s"], j["keys_received"],
                         f"{j['keys_per_s']:,.0f}", round(j["bytes_transferred_est"] / 1e6, 2),
                         j["mb_per_s"], round(j["node4_engine_bytes"] / 1e6, 2),
                         j["relayed_by_node"].get("node4", 0), j["missing_replicas_repaired"],
                         j["replicas_total"], j["cpu"]["node_cores"].get("node4"),
                         j["cpu"]["machine_busy_cores"]])
        out.append(table(["join", "settle s", "transition s", "keys received", "keys/s",
                          "MB (est.)", "MB/s", "node 4 lsm MB", "relayed by node 4",
                          "replicas missing", "replicas after", "node 4 cores",
                          "machine cores"], rows))
        j = results["join"][0]
        out.append(f"  MB (est.) = keys received x {j['mean_stored_bytes']} B, the mean key + "
                   f"stored object size in node 4's store; node 4 lsm MB: its tables + memtable "
                   f"at the settle; transition s: when a node first showed the ring in "
                   f"transition; replicas missing: repaired by anti-entropy after the settle "
                   f"(on its own, then by an admin repair on every node); replicas after: "
                   f"counted in the 4 stores (n=3 x {results['meta']['keys']:,} expected)")
    if "load" in results:
        ld = results["load"]
        out.append(f"\n3. client load ({ld['connections']} connections over nodes 1-3, 50% gets, "
                   f"100 B values, put context last-read) before and during a join")
        rows = []
        for name, key in (("before (own run)", "before"), ("lead-in, same run", "lead_in"),
                          ("during the join", "during")):
            w = ld[key]
            rows.append([name, w["seconds"], f"{w['ops_per_s']:,.0f}", w["p50_ms"], w["p99_ms"],
                         w["p999_ms"], w["max_ms"], w["errors"]])
        out.append(table(["window", "seconds", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms",
                          "errors"], rows))
        out.append(f"during / before: ops/s {ld['ops_ratio']}x, p99 {ld['p99_ratio']}x "
                   f"(during / lead-in: ops/s {ld['ops_ratio_vs_lead_in']}x, p99 "
                   f"{ld['p99_ratio_vs_lead_in']}x); the join "
                   f"settled in {ld['join']['settle_s']} s under load "
                   f"({ld['join']['keys_received']:,} keys received; replicas missing after the "
                   f"settle, restored by anti-entropy: "
                   f"{ld['join']['missing_replicas_repaired']:,})")
    for problem in results.get("problems", []):
        out.append(f"\nPROBLEM: {problem}")
    if "error" in results:
        out.append(f"\nFAILED: {results['error'].splitlines()[0]}")
    return "\n".join(out)


def git_dirty():
    """Files of the package and tools that differ from the commit (others may
    be editing the tree while this runs)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", "rldb", "tools", "csrc"],
                             cwd=REPO, capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return None
    return sorted(line[3:] for line in out.splitlines())


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except OSError:
        return None


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See bench/README.md, 'Cluster repair and rebalancing'.")
    ap.add_argument("--keys", type=int, default=100_000, help="keys to load (default 100000)")
    ap.add_argument("--value-size", type=int, default=100, help="bytes per value (default 100)")
    ap.add_argument("--phases", default="repair,join,load",
                    help="comma-separated subset of repair,join,load (default: all)")
    ap.add_argument("--fast-aae-rate", type=int, default=100_000,
                    help="aae_keys_per_s of the second repair row; 0: no second row "
                         "(default 100000)")
    ap.add_argument("--partitions", type=int, default=64, help="ring partitions (default 64)")
    ap.add_argument("--connections", type=int, default=32,
                    help="loadgen connections, for the preload and the load phase (default 32)")
    ap.add_argument("--before-s", type=float, default=20.0,
                    help="seconds of load measured before the join (default 20)")
    ap.add_argument("--lead-s", type=float, default=10.0,
                    help="seconds of load before the join command in the second run (default 10)")
    ap.add_argument("--no-second-join", dest="second_join", action="store_false",
                    help="join only through node 1 (the claimant), not also through node 2")
    ap.add_argument("--no-verify", dest="verify", action="store_false",
                    help="do not stop node 3 to count its store after a repair")
    ap.add_argument("--poll", type=float, default=0.25, help="seconds between polls (default 0.25)")
    ap.add_argument("--stall-s", type=float, default=90.0,
                    help="repair: seconds without a new repaired key before giving up waiting "
                         "for the counters and asking node 3 for a full repair (default 90)")
    ap.add_argument("--repair-timeout", type=float, default=1800.0)
    ap.add_argument("--join-timeout", type=float, default=900.0)
    ap.add_argument("--settle-timeout", type=float, default=120.0)
    ap.add_argument("--quiet-timeout", type=float, default=600.0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--json", action="store_true",
                    help="print the results as one JSON object instead of the tables")
    args = ap.parse_args(argv)
    args.phases = [p for p in args.phases.split(",") if p]
    bad = set(args.phases) - {"repair", "join", "load"}
    if bad or not args.phases:
        ap.error(f"--phases: unknown {sorted(bad)}; use repair, join, load")
    if args.keys < 1 or args.value_size < 1:
        ap.error("--keys and --value-size must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    root = tempfile.mkdtemp(prefix="rldb-cluster-bench-")
    results = {"meta": {"keys": args.keys, "value_size": args.value_size,
                        "partitions": args.partitions, "connections": args.connections,
                        "commit": git_commit(), "dirty_at_start": git_dirty(),
                        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                        "load_average_at_start": os.getloadavg()[0]}}
    log(f"working under {root}")
    ok = False
    try:
        if "repair" in args.phases or "join" in args.phases:
            phase_repair_and_join(root, args, results)
        if "load" in args.phases:
            phase_load(root, args, results)
        ok = True
    except BenchError as exc:
        print(f"cluster_repair: FAILED: {exc}", file=sys.stderr)
        results["error"] = str(exc)
    except KeyboardInterrupt:
        print("cluster_repair: interrupted", file=sys.stderr)
        results["error"] = "interrupted"
    finally:
        if ok and not args.keep and not results.get("problems"):
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"cluster_repair: node directories and logs kept under {root}", file=sys.stderr)
    results["meta"]["commit_at_end"] = git_commit()
    results["meta"]["dirty_at_end"] = git_dirty()
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print(report(results))
    return 0 if ok and not results.get("problems") else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD_FLAG:
        sys.exit(loadgen_child(sys.argv[2:]))
    sys.exit(main())
