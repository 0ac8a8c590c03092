"""Real rldb-server processes on loopback, joined and used as the README shows."""
import asyncio
import json
import os
import socket
import subprocess
import time

import pytest

from rldb.errors import QuorumNotReachedError, RequestError
from rldb.net.client import AsyncClient, Client
from tests.helpers.ports import free_ports
from tests.helpers.server_process import ServerProcess, tool
from tests.net_helpers import run_cli as cli

# tests/test_cluster_failures.py builds on these
__all__ = ["Node", "cli", "free_ports", "wait_until"]

CLIENT = tool("rldb-client")


class Node:
    """One node of the README's cluster (n=3 r=2 w=2 unless told, gossip
    every 100 ms) in tmp_path/node-PORT, started by a ServerProcess.
    `config` is the config file's path: a subclass may rewrite the file
    before start()."""

    def __init__(self, tmp_path, port, n=3, r=2, w=2, engine="memory"):
        workdir = tmp_path / f"node-{port}"
        self.server = ServerProcess(
            workdir, engine, port=port, quorum={"n": n, "r": r, "w": w},
            heartbeat={"fanout": 2, "interval": 100}, data_dir=str(workdir / "data"),
            request_timeout_ms=1500)
        self.port = port
        self.dir = self.server.workdir
        self.config = self.server.config_path

    @property
    def proc(self):
        return self.server.proc

    @proc.setter
    def proc(self, value):
        self.server.proc = value

    @property
    def log(self):
        """The open log file of the running process."""
        return self.server.log_file

    def start(self):
        self.server.start()
        return self

    def read_log(self):
        return self.server.log(2000)

    def stop(self):
        """SIGTERM; the node must exit 0."""
        if self.server.running:
            code = self.server.stop(timeout=10)
            assert code == 0, f"node {self.port} exited with {code}:\n{self.read_log()}"
        else:
            self.server.kill()  # reaps a process that exited on its own


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
    servers = []
    try:
        for i in (1, 2, 3):
            src = os.path.join(repo, "conf", f"cluster_node_{i}.json")
            (tmp_path / "conf" / f"cluster_node_{i}.json").write_text(open(src).read())
            # rldb-server --config-path conf/cluster_node_I.json, from tmp_path
            servers.append(ServerProcess(tmp_path, name=f"node{i}", log_level=None,
                                         config_file=f"conf/cluster_node_{i}.json",
                                         log_name=f"node{i}.log").start())
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
        try:
            for server in servers:
                assert server.stop(timeout=15) == 0, server.log()
        finally:
            for server in servers:
                server.kill()
