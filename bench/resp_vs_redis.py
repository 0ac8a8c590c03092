#!/usr/bin/env python3
"""rldb's Redis front door against redis-server, measured by redis-benchmark.

    python bench/resp_vs_redis.py [--requests 100000] [--json FILE]

Starts, in one run: redis-server (no persistence: --save "" --appendonly no),
an rldb node with the memory engine, one with the lsm engine (sync off, its
default), and a 3-node rldb cluster (memory engine, n=3 r=2 w=2; the
benchmark talks to one node, which coordinates).  Against each it runs

    redis-benchmark -t set,get -d 100 -n N -r 100000 -c C [-P 16] --csv

for C = 1, C = 32 and C = 32 with 16 pipelined requests, and prints
requests/s, p50 and p99 (ms, as redis-benchmark reports them) with the
ratio rldb / redis-server for each row.  Needs redis-server and
redis-benchmark (Debian: redis-server, redis-tools) on PATH."""
import argparse
import csv
import io
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests/helpers: the node harness the tests use
from tests.helpers.ports import free_port, free_ports  # noqa: E402
from tests.helpers.server_process import ServerProcess, tool  # noqa: E402

CONFIGS = [("c=1", ["-c", "1"]), ("c=32", ["-c", "32"]), ("c=32 P=16", ["-c", "32", "-P", "16"])]


def wait_port(port, proc, limit=20.0):
    end = time.time() + limit
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"process for port {port} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Rldb(ServerProcess):
    """An rldb node with its RESP door on a second free port, started."""

    def __init__(self, workdir, engine, **extra):
        port, self.resp_port = free_ports(2)
        super().__init__(Path(workdir) / f"rldb-{port}", engine, port=port,
                         resp_port=self.resp_port, log_level="warning", **extra)
        self.start(timeout=20)


class RedisServer:
    def __init__(self):
        self.resp_port = free_port()
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.resp_port), "--save", "",
                                      "--appendonly", "no", "--daemonize", "no",
                                      "--bind", "127.0.0.1"], stdout=subprocess.DEVNULL)
        wait_port(self.resp_port, self.proc)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def cluster(workdir):
    quorum = {"quorum": {"n": 3, "r": 2, "w": 2}, "heartbeat": {"fanout": 2, "interval": 200}}
    nodes = [Rldb(workdir, "memory", **quorum) for _ in range(3)]
    for node in nodes[1:]:
        subprocess.run([tool("rldb-client"), "join-cluster", "-p", str(node.port),
                        "--known-cluster-node", f"127.0.0.1:{nodes[0].port}"], check=True,
                       capture_output=True)
    end = time.time() + 60
    while time.time() < end:
        out = subprocess.run([tool("rldb-client"), "status", "-p",
                              str(nodes[0].port), "--json"], capture_output=True, text=True)
        view = json.loads(out.stdout)
        if not view["in_transition"] and len(view["nodes"]) == 3 and \
                all(r["partitions"] > 0 for r in view["nodes"]):
            return nodes
        time.sleep(0.3)
    raise RuntimeError("the cluster did not settle")


def benchmark(port, requests, args):
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set,get", "-d", "100",
                          "-n", str(requests), "-r", "100000", "--csv", *args],
                         capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed: {out.stderr}")
    rows = {}
    for row in csv.DictReader(io.StringIO(out.stdout)):
        rows[row["test"]] = {"rps": float(row["rps"]), "p50_ms": float(row["p50_latency_ms"]),
                             "p99_ms": float(row["p99_latency_ms"])}
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    for tool in ("redis-server", "redis-benchmark"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not on PATH (Debian: apt-get install redis-server redis-tools)")
    results = []
    with tempfile.TemporaryDirectory(prefix="resp-bench-") as workdir:
        targets = [("redis-server", lambda: [RedisServer()]),
                   ("rldb memory", lambda: [Rldb(workdir, "memory")]),
                   ("rldb lsm", lambda: [Rldb(workdir, "lsm")]),
                   ("rldb 3-node n3 r2 w2", lambda: cluster(workdir))]
        for name, start in targets:
            servers = start()
            try:
                for config, extra in CONFIGS:
                    rows = benchmark(servers[0].resp_port, args.requests, extra)
                    for test, figures in rows.items():
                        results.append({"target": name, "config": config, "test": test,
                                        **figures})
                        print(f"{name:22} {config:10} {test:4} {figures['rps']:>10.0f} req/s "
                              f"p50 {figures['p50_ms']:.3f} ms p99 {figures['p99_ms']:.3f} ms",
                              flush=True)
            finally:
                for server in servers:
                    server.stop()
    base = {(r["config"], r["test"]): r["rps"] for r in results if r["target"] == "redis-server"}
    print()
    print("| target | connections | test | requests/s | p50 ms | p99 ms | rldb/redis |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        ratio = r["rps"] / base[(r["config"], r["test"])]
        r["ratio"] = round(ratio, 3)
        print(f"| {r['target']} | {r['config']} | {r['test']} | {r['rps']:,.0f} | "
              f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
              f"{'-' if r['target'] == 'redis-server' else f'{ratio:.2f}x'} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
