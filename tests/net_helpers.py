"""Helpers for tests that talk to a real `rldb-server` process over loopback.

ServerProcess writes a JSON config (free port, data_dir under a temp
directory), starts `rldb-server --config-path FILE`, waits until it answers a
ping, and stops it with SIGTERM (SIGKILL if it does not exit); the
`server_factory` fixture stops every server a test started, whatever happens.
Raw-socket helpers send hand-made bytes and read frames back, so the tests can
check replies byte for byte."""
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest

from rldb.net import protocol as p

BIN = Path(sys.executable).parent


def tool(name):
    """The console script installed next to this interpreter (the venv's)."""
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (run `.venv/bin/pip install -e .`)")
    return found


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One rldb-server subprocess.  Its config is `config` plus port, host and
    (for disk engines) data_dir; its stderr goes to `log_path`."""

    def __init__(self, workdir, engine="memory", **config):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = config.pop("port", None) or free_port()
        self.config = {"port": self.port, "host": "127.0.0.1", "storage_engine": engine}
        if engine != "memory":
            self.config["data_dir"] = str(self.workdir / "data")
        self.config.update(config)
        self.config_path = self.workdir / "config.json"
        self.config_path.write_text(json.dumps(self.config))
        self.log_path = self.workdir / "server.log"
        self.proc = None
        self._log = None

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self, timeout=15.0):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [tool("rldb-server"), "--config-path", str(self.config_path), "--log-level", "info"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=str(self.workdir))
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"rldb-server exited with {self.proc.returncode} at start:\n"
                                     f"{self.log()}")
            try:
                reply = request(self.port, p.PING, "ready?", b"", timeout=1.0)
                assert reply[2] == b'{"Ok":{"message":"PONG"}}', reply
                return self
            except (OSError, ConnectionError, socket.timeout):
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"rldb-server did not answer within {timeout} s:\n{self.log()}")
            time.sleep(0.02)

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Signals the server and waits for it; its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"rldb-server ignored {sig!r} for {timeout} s:\n{self.log()}")
        self._close_log()
        return self.proc.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_log()

    def _close_log(self):
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def assert_alive(self):
        assert self.running, f"rldb-server died (exit {self.proc.returncode}):\n{self.log()}"


@pytest.fixture
def server_factory(tmp_path):
    """server_factory(engine="memory", name=None, **config) -> a started ServerProcess.
    Every server is stopped (killed if need be) when the test ends."""
    servers = []

    def make(engine="memory", name=None, start=True, **config):
        server = ServerProcess(tmp_path / (name or f"server{len(servers)}"), engine, **config)
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop(timeout=5)
        server.kill()


# ---- raw sockets ---------------------------------------------------------------------------


def connect(port, timeout=5.0):
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def recv_frames(sock, count, timeout=5.0):
    """Reads until `count` frames have arrived; the frames (cmd, rid, payload)."""
    decoder = p.FrameDecoder()
    frames = []
    deadline = time.monotonic() + timeout
    while len(frames) < count:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(1 << 16)
        if not data:
            raise ConnectionError(f"connection closed after {len(frames)} of {count} frames")
        frames.extend(decoder.feed(data))
    assert decoder.buffered == 0 and len(frames) == count, (frames, decoder.buffered)
    return frames


def recv_until_eof(sock, timeout=5.0):
    """Every byte until the peer closes; raises socket.timeout if it does not."""
    chunks = []
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(1 << 16)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def split_frames(data):
    """Splits raw bytes into frames without FrameDecoder's checks (an empty or
    non-UTF-8 request id is kept as bytes), so that a reply that breaks the
    frame rules can still be examined.  Raises AssertionError on a short frame."""
    frames = []
    pos = 0
    while pos < len(data):
        assert len(data) - pos >= 5, f"short frame header: {data[pos:]!r}"
        cmd_id, rid_len = struct.unpack_from(">BI", data, pos)
        assert len(data) - pos >= 9 + rid_len, f"short frame: {data[pos:]!r}"
        rid = data[pos + 5:pos + 5 + rid_len]
        (payload_len,) = struct.unpack_from(">I", data, pos + 5 + rid_len)
        end = pos + 9 + rid_len + payload_len
        assert end <= len(data), f"short payload: {data[pos:]!r}"
        frames.append((cmd_id, rid, data[pos + 9 + rid_len:end]))
        pos = end
    return frames


def request(port, cmd_id, request_id, payload, timeout=5.0):
    """One request on a fresh connection; the reply frame."""
    with connect(port, timeout) as sock:
        sock.sendall(p.encode_frame(cmd_id, request_id, payload))
        return recv_frames(sock, 1, timeout)[0]


def json_request(port, cmd_id, obj, request_id="r1", raw=None):
    """A JSON command; (reply cmd_id, reply request_id, decoded reply body)."""
    payload = raw if raw is not None else json.dumps(obj, separators=(",", ":")).encode()
    cmd, rid, body = request(port, cmd_id, request_id, payload)
    return cmd, rid, json.loads(body)


def msgpack_request(port, cmd_id, obj, request_id="r1", raw=None):
    payload = raw if raw is not None else msgpack.packb(obj, use_bin_type=True)
    cmd, rid, body = request(port, cmd_id, request_id, payload)
    return cmd, rid, msgpack.unpackb(body, raw=False)


def stats(port):
    return msgpack_request(port, p.STATS, {})[2]["ok"]


def wait_for(predicate, timeout=5.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def run_cli(*args, timeout=30.0, env=None):
    """Runs `rldb-client ARGS`; the CompletedProcess (text)."""
    return subprocess.run([tool("rldb-client"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env or os.environ.copy())
