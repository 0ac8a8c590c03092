"""rldb-client (the CLI, as a subprocess) and the blocking Python Client
against a real rldb-server; the Client's timeout and connection errors
against a server that never answers and a port nobody listens on."""
import asyncio
import json
import socket
import threading
import time

import pytest

from rldb.errors import ConnectionLostError, RequestError
from rldb.net.client import AsyncClient, Client
from tests.net_helpers import ServerProcess, free_port, run_cli


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("cli"), "memory") as proc:
        yield proc  # leaving the block asserts that SIGTERM ends it with exit status 0


@pytest.fixture
def client(server):
    with Client("127.0.0.1", server.port, timeout=10) as c:
        yield c


def key(name):
    return f"{name}-{time.monotonic_ns()}"


def cli_ok(*args):
    result = run_cli(*args)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


# ---- rldb-client -----------------------------------------------------------------------------


def test_cli_ping(server):
    assert cli_ok("ping", "-p", server.port) == {"message": "PONG"}


def test_cli_put_get_and_context_collapses_siblings(server):
    k = key("cli")
    assert cli_ok("put", "-p", server.port, "-k", k, "-v", "first") == {"message": "Ok"}
    got = cli_ok("get", "-p", server.port, "-k", k)
    assert got["values"] == ["first"]
    bytes.fromhex(got["context"])
    assert got["context"]
    # a put without the context is concurrent: a sibling
    cli_ok("put", "-p", server.port, "-k", k, "-v", "second")
    got = cli_ok("get", "-p", server.port, "-k", k)
    assert sorted(got["values"]) == ["first", "second"]
    # with the context it replaces both
    cli_ok("put", "-p", server.port, "-k", k, "-v", "merged", "-c", got["context"])
    assert cli_ok("get", "-p", server.port, "-k", k)["values"] == ["merged"]


def test_cli_delete_then_get_fails_with_one_line(server):
    k = key("gone")
    cli_ok("put", "-p", server.port, "-k", k, "-v", "x")
    assert cli_ok("delete", "-p", server.port, "-k", k) == {"message": "Ok"}
    result = run_cli("get", "-p", server.port, "-k", k)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert k in lines[0] and "not found" in lines[0]


def test_cli_cluster_state_and_stats(server):
    nodes = cli_ok("cluster-state", "-p", server.port)["nodes"]
    assert [(n["addr"], n["status"]) for n in nodes] == [(f"127.0.0.1:{server.port}", "Ok")]
    assert isinstance(nodes[0]["tick"], int)
    snapshot = cli_ok("stats", "-p", server.port)
    assert snapshot["addr"] == f"127.0.0.1:{server.port}"
    assert snapshot["server"]["requests"] >= 1
    assert {"connections_open", "protocol_errors", "commands"} <= set(snapshot["server"])


@pytest.mark.parametrize("where", ["before", "after"])
def test_cli_pretty(server, where):
    args = ["--pretty", "cluster-state", "-p", server.port] if where == "before" else \
        ["cluster-state", "-p", server.port, "--pretty"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "\n  " in result.stdout  # indented
    assert json.loads(result.stdout)["nodes"]
    plain = run_cli("cluster-state", "-p", server.port)
    assert "\n" not in plain.stdout.strip()


def test_cli_admin_commands_on_a_standalone_node(server):
    table = run_cli("status", "-p", server.port)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["node", "status", "phi", "partitions", "handoffs", "hints",
                                "data_bytes", "memtable_bytes"]
    row = lines[1].split()
    assert row[1] == "up" and row[3] == "64" and row[5] == "0"
    assert "settled" in lines[-1]
    status = cli_ok("status", "-p", server.port, "--json")
    assert len(status["nodes"]) == 1 and not status["in_transition"]
    ring = cli_ok("ring", "-p", server.port)
    assert len(ring["partitions"]) == 64
    assert {p["preference_list"][0] for p in ring["partitions"]} == {status["nodes"][0]["node"]}
    assert cli_ok("repair", "-p", server.port) == {"partitions": 0, "exchanges": 0,
                                                   "keys_repaired": 0}
    assert cli_ok("transfers", "-p", server.port)["outgoing"] == []
    alone = run_cli("leave", "-p", server.port)
    assert alone.returncode == 1 and "only node" in alone.stderr
    assert len(alone.stderr.strip().splitlines()) == 1


def test_cli_against_a_closed_port_fails_with_one_line():
    result = run_cli("--timeout", "2", "ping", "-p", free_port())
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_cli_bad_context_is_a_usage_error(server):
    result = run_cli("put", "-p", server.port, "-k", "k", "-v", "v", "-c", "not-hex")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "context" in result.stderr


BAD_CLI_ARGUMENTS = {
    "port out of range": (["get", "-p", "99999", "-k", "a"], "--port"),
    "port not a number": (["get", "-p", "abc", "-k", "a"], "--port"),
    "port zero": (["ping", "-p", "0"], "--port"),
    "no port": (["get", "-k", "a"], "--port"),
    "no key": (["get", "-p", "3001"], "--key"),
    "bad hex context": (["put", "-p", "3001", "-k", "k", "-v", "v", "-c", "xyz"], "context"),
    "odd-length hex context": (["delete", "-p", "3001", "-k", "k", "-c", "abc"], "context"),
    "zero timeout": (["--timeout", "0", "ping", "-p", "3001"], "--timeout"),
    "negative partition": (["repair", "-p", "3001", "--partition", "-1"], "--partition"),
    "unknown command": (["fetch", "-p", "3001"], "fetch"),
    "unknown option": (["ping", "-p", "3001", "--colour"], "--colour"),
}


@pytest.mark.parametrize("name", list(BAD_CLI_ARGUMENTS))
def test_cli_bad_arguments_exit_2_with_one_line(name):
    """Bad arguments never reach a node (port 3001 need not be listening)."""
    args, named = BAD_CLI_ARGUMENTS[name]
    result = run_cli(*args)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rldb-client") and named in lines[0], lines[0]


# ---- the blocking Client -------------------------------------------------------------------


def test_client_get_put_delete(client):
    k = key("py")
    assert client.get(k) is None
    client.put(k, b"v1")
    result = client.get(k)
    assert result.values == [b"v1"] and len(result.timestamps) == 1
    assert isinstance(result.context, bytes) and result.context
    client.put(k, "v2", result.context)  # str values are UTF-8
    assert client.get(k).values == [b"v2"]
    client.delete(k)
    assert client.get(k) is None
    assert client.ping() == "PONG"


def test_client_binary_and_empty_values(client):
    for value in (b"\x00\xff\xfe binary \x80", b""):
        k = key("bin").encode() + b"\xff"
        client.put(k, value)
        assert client.get(k).values == [value]


def test_client_siblings_and_context(client):
    k = key("sib")
    client.put(k, b"a")
    client.put(k, b"b")
    result = client.get(k)
    assert sorted(result.values) == [b"a", b"b"]
    assert len(result.timestamps) == 2
    client.put(k, b"c", result.context)
    assert client.get(k).values == [b"c"]


def test_client_delete_with_a_context_keeps_later_writes(client):
    k = key("del")
    client.put(k, b"old")
    seen = client.get(k)
    client.put(k, b"new")  # written after the read: not covered by its context
    client.delete(k, seen.context)
    assert client.get(k).values == [b"new"]


def test_client_malformed_context_is_an_error(client):
    with pytest.raises(RequestError) as info:
        client.put(key("ctx"), b"v", b"\xc1garbage")
    assert info.value.kind == "InvalidRequest"


def test_client_stats_and_cluster_state(client, server):
    assert client.cluster_state()[0]["addr"] == f"127.0.0.1:{server.port}"
    assert client.stats()["server"]["connections_open"] >= 1


def test_reads_of_what_was_written_fit_in_a_frame(client, server):
    """Two siblings of 600 kB each are accepted by put (each frame is under
    1 MiB), but the reply to a get holds both: the server must not send a
    frame over the 1 MiB its own clients accept (or it must refuse the put)."""
    k = key("big")
    big = b"x" * 600_000
    wrote = 0
    for value in (big, big.replace(b"x", b"y")):
        try:
            client.put(k, value)
            wrote += 1
        except RequestError:
            pass  # refusing the write is a fine answer too
    if wrote < 2:
        return
    result = client.get(k)  # ConnectionLostError: MaxMessageSizeExceeded on the reply
    assert sorted(result.values) == [big, big.replace(b"x", b"y")]


def test_client_reuses_one_connection(client, server):
    client.ping()
    before = client.stats()["server"]["connections_total"]
    for _ in range(20):
        client.ping()
    assert client.stats()["server"]["connections_total"] == before


def test_async_client_pipelines(server):
    async def main():
        async with AsyncClient("127.0.0.1", server.port) as c:
            k = key("async")
            await asyncio.gather(*(c.put(f"{k}-{i}", b"%d" % i) for i in range(50)))
            results = await asyncio.gather(*(c.get(f"{k}-{i}") for i in range(50)))
            return [r.values for r in results]

    assert asyncio.run(main()) == [[b"%d" % i] for i in range(50)]


def test_async_client_first_requests_in_parallel(server):
    """Requests started together on an AsyncClient that is not connected yet
    must share one connection (connect() has to be serialized) and all succeed."""
    async def main():
        async with AsyncClient("127.0.0.1", server.port) as probe:
            before = (await probe.stats())["server"]["connections_total"]
            client = AsyncClient("127.0.0.1", server.port, timeout=5)
            try:
                answers = await asyncio.gather(*(client.ping() for _ in range(20)),
                                               return_exceptions=True)
            finally:
                await client.close()
            after = (await probe.stats())["server"]["connections_total"]
            return answers, after - before

    answers, new_connections = asyncio.run(main())
    assert answers == ["PONG"] * 20
    assert new_connections == 1


# ---- timeouts and refused connections -------------------------------------------------------


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections, reads, and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()
    conns = []

    def serve():
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                conns.append(conn)
            except OSError:
                pass
            for conn in conns:
                conn.setblocking(False)
                try:
                    conn.recv(65536)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in conns:
        conn.close()
    listener.close()


def test_client_times_out_on_a_server_that_does_not_answer(silent_server):
    with Client("127.0.0.1", silent_server, timeout=0.3) as c:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            c.ping()
        assert 0.25 <= time.monotonic() - start < 5
        with pytest.raises(TimeoutError):  # and again: the client is still usable
            c.get("k")


def test_cli_times_out_with_one_line(silent_server):
    result = run_cli("--timeout", "0.3", "ping", "-p", silent_server)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_client_on_a_closed_port_raises_connection_lost():
    with Client("127.0.0.1", free_port(), timeout=2) as c:
        with pytest.raises(ConnectionLostError):
            c.ping()
        with pytest.raises(ConnectionLostError):
            c.put("k", b"v")


def test_client_sees_a_server_that_closes_as_connection_lost(server):
    """A server that closes mid-request (here: a refused frame) gives
    ConnectionLostError or the error reply, never a hang."""
    with Client("127.0.0.1", server.port, timeout=5) as c:
        with pytest.raises((ConnectionLostError, RequestError)):
            c.put("k", b"z" * (1 << 20))  # the frame is over 1 MiB: refused
        # the server closes that connection; the client may notice only when it
        # next writes on it, then reconnects
        try:
            answer = c.ping()
        except ConnectionLostError:
            answer = c.ping()
        assert answer == "PONG"
