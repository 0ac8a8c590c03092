"""The nodes under test: one rldb-server per network namespace, each with
its own config, data directory (kept across a kill and restart), log and
clock offset file, joined into one cluster.

Why processes and not in-process nodes: the faults (SIGSTOP, SIGKILL,
iptables) must hit the real server, its real sockets and its real disk."""
import asyncio
import copy
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rldb.net.client import AsyncClient

PORT = 3001
PR_SET_PDEATHSIG = 1


def base_config(host, data_dir):
    """Every node's configuration before the extra keys are merged in:
    n=3 r=2 w=2, a short heartbeat and request timeout, and a tombstone
    grace short enough that collection runs during the faults (above
    peer_send_timeout_ms, as the server requires); the clock skew allowed
    covers the skew nemesis (up to 2 s each way on two nodes)."""
    return {"port": PORT, "host": host, "storage_engine": "lsm", "data_dir": data_dir,
            "quorum": {"n": 3, "r": 2, "w": 2}, "heartbeat": {"fanout": 2, "interval": 300},
            "request_timeout_ms": 1500, "tombstone_grace_ms": 500, "peer_send_timeout_ms": 400,
            "max_clock_skew_ms": 4000}


def merge(base, extra):
    """base with extra merged in, objects recursively (extra wins)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _substitute(value, names):
    """{node}, {host} and {dir} in the strings of an extra config, per node
    (for files such as one certificate per node)."""
    if isinstance(value, str):
        for name, text in names.items():
            value = value.replace("{" + name + "}", text)
        return value
    if isinstance(value, dict):
        return {k: _substitute(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, names) for v in value]
    return value


def _die_with_parent():
    """In the child before exec: SIGKILL when the harness dies, so that a
    harness killed with SIGKILL leaves no node running."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class Node:
    """One rldb-server in namespace index of the network."""

    def __init__(self, index, network, workdir, extra_config, log_level="info"):
        self.index = index
        self.name = f"n{index + 1}"
        self.host = network.addrs[index]
        self.addr = f"{self.host}:{PORT}"
        self.network = network
        self.dir = Path(workdir) / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        names = {"node": self.name, "host": self.host, "dir": str(self.dir)}
        self.config = merge(base_config(self.host, str(self.dir / "data")),
                            _substitute(extra_config, names))
        self.config_path = self.dir / "config.json"
        self.config_path.write_text(json.dumps(self.config, indent=1))
        self.offset_file = self.dir / "clock_offset_ms"
        self.offset_file.write_text("0\n")
        self.log_path = self.dir / "server.log"
        self.log_level = log_level
        self.proc = None
        self.paused = False
        self.starts = 0

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        """Starts the server (same config and data as any earlier start)."""
        if self.running:
            return
        env = dict(os.environ, RLDB_CLOCK_OFFSET_FILE=str(self.offset_file))
        self.offset_file.write_text("0\n")
        argv = [*self.network.exec_prefix(self.index), sys.executable, "-m", "rldb.cli.server",
                "--config-path", str(self.config_path), "--log-level", self.log_level]
        with open(self.log_path, "ab") as log:
            log.write(f"---- start {self.starts + 1} at {time.strftime('%H:%M:%S')} ----\n".encode())
            log.flush()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env, cwd=str(self.dir),
                                         preexec_fn=_die_with_parent)
        self.paused = False
        self.starts += 1

    def kill(self):
        """SIGKILL (a crash: nothing flushed), and reap it."""
        if self.proc is None:
            return
        if self.paused:
            self.resume()
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None

    def stop(self, timeout=5.0):
        """SIGTERM, SIGKILL after timeout; the exit code (None if not running)."""
        if self.proc is None:
            return None
        if self.paused:
            self.resume()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        code, self.proc = self.proc.returncode, None
        return code

    def pause(self):
        if self.running and not self.paused:
            self.proc.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self):
        if self.proc is not None and self.paused:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def catches(self, signum):
        """Whether the running server installed a handler for signum (from
        /proc/PID/status SigCgt): a signal it does not catch would kill it."""
        if not self.running:
            return False
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
        except OSError:
            return False
        return False

    def set_clock_offset(self, offset_ms):
        """Writes the offset and sends SIGUSR2 when the server handles it;
        whether it was applied."""
        self.offset_file.write_text(f"{int(offset_ms)}\n")
        if self.running and not self.paused and self.catches(signal.SIGUSR2):
            self.proc.send_signal(signal.SIGUSR2)
            return True
        return False

    def log_tail(self, lines=30):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Cluster:
    """The nodes of one run; client_args are extra AsyncClient arguments."""

    def __init__(self, network, workdir, extra_config=None, client_args=None, log_level="info"):
        self.network = network
        self.nodes = [Node(i, network, workdir, extra_config or {}, log_level)
                      for i in range(network.count)]
        self.client_args = dict(client_args or {})
        cfg = self.nodes[0].config
        self.request_timeout = cfg.get("request_timeout_ms", 5000) / 1000

    def client(self, node, timeout=None):
        """A fresh AsyncClient to node (not connected yet)."""
        args = dict(self.client_args)
        args.setdefault("timeout", self.request_timeout + 1.0 if timeout is None else timeout)
        return AsyncClient(node.host, PORT, **args)

    async def wait_up(self, node, limit=20.0):
        """Until node answers PING (bounded); raises RuntimeError naming it."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if node.proc is not None and node.proc.poll() is not None:
                raise RuntimeError(f"{node.name} exited with {node.proc.returncode} at start:\n"
                                   f"{node.log_tail()}")
            client = self.client(node, timeout=1.0)
            try:
                if await client.ping() == "PONG":
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            finally:
                await client.close()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{node.name} ({node.addr}) did not answer PING within {limit} s:\n"
                           f"{node.log_tail()}")

    async def clock_offset(self, node, expected, limit=1.0):
        """The clock offset node's STATS reports (polled until it is
        `expected` or limit seconds passed); None if it reports none."""
        deadline = time.monotonic() + limit
        seen = None
        while True:
            client = self.client(node, timeout=0.5)
            try:
                seen = (await client.stats()).get("server", {}).get("clock_offset_ms")
            except Exception:  # noqa: BLE001 - a busy node: try again
                pass
            finally:
                await client.close()
            if seen == expected or time.monotonic() > deadline:
                return seen
            await asyncio.sleep(0.05)

    async def form(self, limit=60.0):
        """Starts every node, joins nodes 2..N to node 1 and waits until
        every node sees all members up and the same settled ring."""
        for node in self.nodes:
            node.start()
        await asyncio.gather(*(self.wait_up(node) for node in self.nodes))
        first = self.nodes[0].addr
        for node in self.nodes[1:]:
            client = self.client(node)
            try:
                await client.join_cluster(first)
            finally:
                await client.close()
        await self.wait_settled(limit)

    async def settled_view(self):
        """(settled, why not) from every node's cluster_state and status."""
        versions = set()
        for node in self.nodes:
            client = self.client(node, timeout=2.0)
            try:
                state = await client.cluster_state()
                status = await client.admin("status")
            except Exception as exc:  # noqa: BLE001 - a node not answering is not settled
                return False, f"{node.name}: {exc}"
            finally:
                await client.close()
            ok = [m for m in state if m.get("status") == "Ok"]
            if len(state) != len(self.nodes) or len(ok) != len(self.nodes):
                return False, f"{node.name} sees {len(ok)}/{len(state)} members Ok"
            if status.get("in_transition"):
                return False, f"{node.name}: ring in transition"
            owners = [row for row in status["nodes"] if row.get("partitions")]
            if len(owners) != len(self.nodes):
                return False, f"{node.name}: {len(owners)} nodes own partitions"
            versions.add(status.get("ring_version"))
        if len(versions) != 1:
            return False, f"ring versions differ: {sorted(versions)}"
        return True, ""

    async def wait_settled(self, limit=60.0):
        deadline = time.monotonic() + limit
        why = "not checked"
        while time.monotonic() < deadline:
            settled, why = await self.settled_view()
            if settled:
                return
            await asyncio.sleep(0.3)
        raise RuntimeError(f"the cluster did not settle within {limit} s: {why}")

    def stop_all(self):
        """Stops every node (never raises): for teardown."""
        for node in self.nodes:
            try:
                node.stop(timeout=3.0)
            except Exception:  # noqa: BLE001 - teardown goes on
                node.proc = None
