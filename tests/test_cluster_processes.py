"""Real rldb-server processes on loopback, joined and used as the README shows."""
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from rldb.errors import QuorumNotReachedError, RequestError
from rldb.net.client import AsyncClient, Client

BIN = os.path.dirname(sys.executable)
SERVER = os.path.join(BIN, "rldb-server")
CLIENT = os.path.join(BIN, "rldb-client")


def free_ports(count):
    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Node:
    def __init__(self, tmp_path, port, n=3, r=2, w=2, engine="memory"):
        self.port = port
        self.dir = tmp_path / f"node-{port}"
        self.dir.mkdir(exist_ok=True)
        self.config = self.dir / "config.json"
        self.config.write_text(json.dumps({
            "port": port, "quorum": {"n": n, "r": r, "w": w},
            "heartbeat": {"fanout": 2, "interval": 100}, "storage_engine": engine,
            "data_dir": str(self.dir / "data"), "request_timeout_ms": 1500}))
        self.proc = None

    def start(self):
        self.log = open(self.dir / "server.log", "ab")
        self.proc = subprocess.Popen([SERVER, "--config-path", str(self.config)],
                                     stdout=self.log, stderr=self.log)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"node {self.port} exited: {self.read_log()}")
                time.sleep(0.05)
        raise RuntimeError(f"node {self.port} did not start: {self.read_log()}")

    def read_log(self):
        return (self.dir / "server.log").read_text(errors="replace")[-2000:]

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                assert self.proc.wait(10) == 0
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
        self.proc = None


def cli(*args):
    return subprocess.run([CLIENT, *args], capture_output=True, text=True, timeout=30)


def wait_until(predicate, limit=15.0):
    end = time.time() + limit
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def all_ok(port, count):
    out = cli("cluster-state", "-p", str(port))
    if out.returncode:
        return False
    nodes = json.loads(out.stdout)["nodes"]
    return len(nodes) == count and all(n["status"] == "Ok" for n in nodes)


@pytest.fixture
def cluster(tmp_path):
    started = []

    def make(count, **quorum):
        nodes = [Node(tmp_path, port, **quorum).start() for port in free_ports(count)]
        started.extend(nodes)
        return nodes

    yield make
    for node in started:
        node.stop()


def join(nodes):
    first = nodes[0].port
    for node in nodes[1:]:
        out = cli("join-cluster", "-p", str(node.port), "--known-cluster-node", f"127.0.0.1:{first}")
        assert out.returncode == 0, out.stderr
    for node in nodes:
        assert wait_until(lambda node=node: all_ok(node.port, len(nodes))), node.read_log()
    time.sleep(0.5)  # the claimant's ring reaches everyone


def test_readme_steps_three_nodes(cluster):
    nodes = cluster(3)
    join(nodes)
    a = str(nodes[0].port)
    assert json.loads(cli("put", "-p", a, "-k", "foo", "-v", "bar").stdout) == {"message": "Ok"}
    for node in nodes:
        out = cli("get", "-p", str(node.port), "-k", "foo")
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)
        assert got["values"] == ["bar"] and got["context"]
    missing = cli("get", "-p", a, "-k", "never-written")
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_ten_concurrent_puts_with_one_context_become_siblings(cluster):
    nodes = cluster(10)
    join(nodes)
    with Client(port=nodes[0].port) as c:
        c.put(b"k", b"base")
        ctx = c.get(b"k").context

    async def put_all():
        clients = [AsyncClient(port=node.port) for node in nodes]
        try:
            await asyncio.gather(*(cl.put(b"k", b"v%d" % i, ctx) for i, cl in enumerate(clients)))
        finally:
            for cl in clients:
                await cl.close()

    asyncio.run(put_all())
    with Client(port=nodes[3].port) as c:
        got = c.get(b"k")
        assert sorted(got.values) == sorted(b"v%d" % i for i in range(10))
        c.put(b"k", b"merged", got.context)
        assert c.get(b"k").values == [b"merged"]


def test_quorum_failures(cluster):
    (alone,) = cluster(1)  # n=3, w=2, but no other node to replicate to
    with Client(port=alone.port) as c:
        with pytest.raises(QuorumNotReachedError) as info:
            c.put(b"k", b"v")
        assert info.value.kind == "QuorumNotReached" and "Put" in info.value.fields["operation"]
        with pytest.raises(RequestError):
            c.put(b"k", b"v", w=4)  # more than n


def test_reads_fail_when_two_of_three_are_down(cluster):
    nodes = cluster(3)
    join(nodes)
    with Client(port=nodes[0].port) as c:
        c.put(b"k", b"v")
        assert c.get(b"k").values == [b"v"]
    nodes[1].stop()
    nodes[2].stop()
    with Client(port=nodes[0].port, timeout=10) as c:
        with pytest.raises(QuorumNotReachedError):
            c.get(b"k", r=2)


def test_readme_verbatim_with_the_shipped_configs(tmp_path):
    """conf/cluster_node_{1,2,3}.json as shipped (ports 3001-3003, lsm), the
    README's commands word for word, run from a scratch directory."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for port in (3001, 3002, 3003):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                pytest.skip(f"port {port} is in use on this machine")
    (tmp_path / "conf").mkdir()
    procs = []
    try:
        for i in (1, 2, 3):
            src = os.path.join(repo, "conf", f"cluster_node_{i}.json")
            (tmp_path / "conf" / f"cluster_node_{i}.json").write_text(open(src).read())
            log = open(tmp_path / f"node{i}.log", "wb")
            procs.append(subprocess.Popen([SERVER, "--config-path", f"conf/cluster_node_{i}.json"],
                                          cwd=tmp_path, stdout=log, stderr=log))
        for port in (3001, 3002, 3003):
            assert wait_until(lambda port=port: cli("ping", "-p", str(port)).returncode == 0)
        for cmd in ("join-cluster -p 3002 --known-cluster-node 127.0.0.1:3001",
                    "join-cluster -p 3003 --known-cluster-node 127.0.0.1:3001"):
            out = subprocess.run([CLIENT, *cmd.split()], capture_output=True, text=True, cwd=tmp_path)
            assert out.returncode == 0, out.stderr
        assert wait_until(lambda: all(all_ok(p, 3) for p in (3001, 3002, 3003)), 30)
        time.sleep(1.5)
        out = subprocess.run([CLIENT, "put", "-p", "3001", "-k", "foo", "-v", "bar"],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        out = subprocess.run([CLIENT, "get", "-p", "3001", "-k", "foo"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)
        assert got["values"] == ["bar"] and len(got["context"]) > 0
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                assert proc.wait(15) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
