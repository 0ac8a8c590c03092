"""Helpers for tests that talk to a real `rldb-server` process over loopback.

The process itself is tests/helpers/server_process.py's ServerProcess
(re-exported here with free_port and tool, the names the tests import); the
`server_factory` fixture stops every server a test started, whatever
happens.  Raw-socket helpers send hand-made bytes and read frames back, so
the tests can check replies byte for byte."""
import json
import os
import socket
import struct
import subprocess
import time

import msgpack
import pytest

from rldb.net import protocol as p
from tests.helpers.ports import free_port
from tests.helpers.server_process import ServerProcess, tool

__all__ = ["ServerProcess", "free_port", "tool", "server_factory", "connect", "recv_frames",
           "recv_until_eof", "split_frames", "request", "json_request", "msgpack_request",
           "stats", "wait_for", "run_cli"]


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
        server.close()


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
