"""The harness the tests and benchmarks start nodes with (tests/helpers/):
free ports, and ServerProcess's start, stop, kill and restart."""
import signal
import socket

import pytest

from rldb.net.client import Client
from tests.helpers.ports import free_port, free_ports
from tests.helpers.server_process import ServerError, ServerProcess


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(8)
    assert len(set(ports)) == 8
    for port in ports + [free_port()]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="positive int"):
            free_ports(bad)


def test_a_node_that_exits_at_start_says_why(tmp_path):
    server = ServerProcess(tmp_path, "memory", storage_engine="no-such-engine")
    with pytest.raises(ServerError, match=r"exited with \d+ at start") as info:
        server.start()
    assert "no-such-engine" in str(info.value)   # the log, quoted
    assert server.proc is None and not server.running and server.returncode not in (0, None)


def test_restart_keeps_the_port_and_the_data(tmp_path):
    with ServerProcess(tmp_path, "lsm", quorum={"n": 1, "r": 1, "w": 1}) as server:
        port = server.port
        with Client(port=port, timeout=10) as c:
            c.put(b"k", b"v")
        assert server.restart() is server and server.port == port
        with Client(port=port, timeout=10) as c:
            assert c.get(b"k").values == [b"v"]
        assert server.log().count("---- start ") == 2
    assert server.returncode == 0 and not server.running


def test_a_node_that_ignores_sigterm_is_killed_after_the_bound(tmp_path):
    server = ServerProcess(tmp_path, "memory").start()
    try:
        server.proc.send_signal(signal.SIGSTOP)   # SIGTERM stays pending
        with pytest.raises(ServerError, match="ignored"):
            server.stop(timeout=0.5)
        assert server.proc is None and server.returncode == -signal.SIGKILL
    finally:
        server.close()


def test_kill_is_a_crash_and_a_block_that_raised_kills(tmp_path):
    server = ServerProcess(tmp_path / "a", "memory").start()
    server.assert_alive()
    assert server.kill() == -signal.SIGKILL
    with pytest.raises(ServerError, match="not running"):
        server.assert_alive()
    with pytest.raises(RuntimeError):
        with ServerProcess(tmp_path / "b", "memory") as other:
            raise RuntimeError("the test body failed")
    assert other.proc is None and other.returncode is not None


def test_a_block_that_ends_with_a_dead_node_fails(tmp_path):
    with pytest.raises(ServerError, match="exited with -9 on SIGTERM"):
        with ServerProcess(tmp_path, "memory") as server:
            server.proc.send_signal(signal.SIGKILL)   # dies on its own, not through kill()
            server.proc.wait(10)
    assert server.proc is None
