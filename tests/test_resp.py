"""The Redis front door: the RESP2 parser on its own (with fuzzing), then
redis-py and redis-cli against real nodes, one alone and three in a cluster."""
import json
import shutil
import subprocess
import threading

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from rldb.net import resp
from tests.net_helpers import ServerProcess, free_port, run_cli

# ---- the parser ----------------------------------------------------------------------------


def encode_command(*args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def test_parser_reads_multibulk_and_inline_commands():
    parser = resp.RespParser()
    data = encode_command(b"SET", b"k", b"v\r\n\x00") + b"PING\r\n" + \
        b'SET "a b" \'c d\' "e\\nf"\r\n' + b"\r\n" + encode_command(b"GET", b"")
    assert parser.feed(data) == [[b"SET", b"k", b"v\r\n\x00"], [b"PING"],
                                 [b"SET", b"a b", b"c d", b"e\nf"], [b"GET", b""]]
    assert parser.buffered == 0


@given(st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=5), min_size=1, max_size=6),
       st.data())
def test_parser_gives_the_same_commands_however_the_bytes_are_split(commands, data):
    stream = b"".join(encode_command(*cmd) for cmd in commands)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    parser = resp.RespParser()
    got, last = [], 0
    for cut in cuts + [len(stream)]:
        got += parser.feed(stream[last:cut])
        last = cut
    assert got == commands
    assert parser.buffered == 0


@pytest.mark.parametrize("bad", [
    b"*2\r\n$3\r\nGET\r\n:1\r\n", b"*x\r\n", b"*1\r\n$-5\r\n", b"*1\r\n$3\r\nabcd\r\n",
    b"*1\r\n$999999999999\r\n", b"*99999999\r\n", b'GET "unclosed\r\n', b"*1\r\n$ 3\r\n",
    b"x" * (70 << 10),
])
def test_parser_refuses_what_it_cannot_resynchronise_after(bad):
    with pytest.raises(resp.RespError) as info:
        resp.RespParser().feed(encode_command(b"PING") + bad)
    assert str(info.value).startswith("Protocol error")
    assert info.value.commands == [[b"PING"]], "the commands before the bad one are kept"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_parser_gives_commands_waits_or_refuses_cleanly(data):
    parser = resp.RespParser(max_bulk=1 << 16, max_args=1 << 10)
    try:
        for command in parser.feed(data):
            assert isinstance(command, list) and command and \
                all(isinstance(a, bytes) for a in command)
    except resp.RespError:
        pass


@given(st.lists(st.binary(max_size=30), min_size=1, max_size=4), st.integers(0, 200))
def test_a_truncated_command_waits_for_the_rest(args, cut):
    stream = encode_command(*args)
    cut = min(cut, len(stream) - 1)
    parser = resp.RespParser()
    assert parser.feed(stream[:cut]) == []
    assert parser.feed(stream[cut:]) == [args]


def test_reply_encoding():
    assert resp.simple("OK") == b"+OK\r\n"
    assert resp.error("ERR bad\r\nthing") == b"-ERR bad  thing\r\n"
    assert resp.integer(-3) == b":-3\r\n"
    assert resp.bulk(b"a\r\nb") == b"$4\r\na\r\nb\r\n" and resp.bulk(None) == b"$-1\r\n"
    assert resp.array([resp.bulk(b"x"), resp.integer(1)]) == b"*2\r\n$1\r\nx\r\n:1\r\n"
    assert resp.array(None) == b"*-1\r\n"


# ---- a node ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("resp"), "memory", resp_port=free_port())
    srv.start()
    yield srv
    try:
        assert srv.stop() == 0, srv.log()
    finally:
        srv.kill()


@pytest.fixture
def r(node):
    client = redis.Redis(port=node.config["resp_port"], socket_timeout=10)
    yield client
    client.close()


def test_set_get_delete_and_a_missing_key(r):
    assert r.ping() is True
    assert r.set("a", "1") is True
    assert r.get("a") == b"1"
    assert r.set("a", "2") is True          # SET replaces: GET sees one value, not siblings
    assert r.get("a") == b"2"
    assert r.get("nothing-here") is None
    assert r.exists("a", "nothing-here", "a") == 2
    assert r.delete("a", "nothing-here") == 1
    assert r.get("a") is None
    assert r.delete("a") == 0


def test_mget_mset_and_binary_values(r):
    blob = bytes(range(256)) * 10
    assert r.mset({"m1": blob, "m2": b"\r\n\x00", "m3": b""}) is True
    assert r.mget("m1", "m2", "missing", "m3") == [blob, b"\r\n\x00", None, b""]


def test_set_nx_and_xx(r):
    assert r.set("nx", "first", nx=True) is True
    assert r.set("nx", "second", nx=True) is None
    assert r.get("nx") == b"first"
    assert r.set("xx-missing", "v", xx=True) is None
    assert r.get("xx-missing") is None
    assert r.set("nx", "third", xx=True) is True
    assert r.get("nx") == b"third"
    with pytest.raises(redis.ResponseError, match="expir"):
        r.set("ttl", "v", ex=10)
    with pytest.raises(redis.ResponseError, match="syntax"):
        r.execute_command("SET", "k", "v", "NX", "XX")


def test_pipelines_answer_in_order(r):
    pipe = r.pipeline(transaction=False)
    for i in range(300):
        pipe.set(f"p{i}", f"v{i}")
        pipe.get(f"p{i}")
    out = pipe.execute()
    assert out == [x for i in range(300) for x in (True, f"v{i}".encode())]


def test_concurrent_clients(node):
    errors = []

    def work(n):
        try:
            client = redis.Redis(port=node.config["resp_port"], socket_timeout=10)
            for i in range(100):
                client.set(f"c{n}-{i}", f"{n}:{i}")
            assert [client.get(f"c{n}-{i}") for i in range(100)] == \
                [f"{n}:{i}".encode() for i in range(100)]
            client.close()
        except Exception as exc:  # reported below
            errors.append(repr(exc))
    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]


def test_siblings_through_rldb_commands(r, node):
    assert r.execute_command("RLDB.PUT", "sib", "x") == b"OK"
    assert r.execute_command("RLDB.PUT", "sib", "y") == b"OK"   # no context: a sibling
    values, context = r.execute_command("RLDB.GET", "sib")
    assert sorted(values) == [b"x", b"y"]
    assert r.get("sib") == b"y", "GET gives the newest sibling"
    assert r.execute_command("RLDB.PUT", "sib", "z", context) == b"OK"
    assert r.execute_command("RLDB.GET", "sib")[0] == [b"z"]
    assert r.execute_command("RLDB.GET", "no-such-key") is None
    # the native protocol sees the same key
    got = json.loads(run_cli("get", "-p", node.port, "-k", "sib").stdout)
    assert got["values"] == ["z"]


def test_admin_and_introspection_commands(r, node):
    assert r.echo("hello") == b"hello"
    assert r.execute_command("SELECT", 0) in (True, b"OK")
    with pytest.raises(redis.ResponseError, match="out of range"):
        r.execute_command("SELECT", 1)
    assert r.client_setname("tester") is True
    assert r.client_getname() == "tester" or r.client_getname() == b"tester"
    assert r.config_get("save") == {}
    assert r.command_count() == len(r.command()) >= 15
    assert r.command()["get"]["arity"] == 2 and r.command()["mset"]["step_count"] == 2
    r.set("counted", "1")
    info = r.info()
    assert info["redis_mode"] == "standalone" and info["tcp_port"] == node.config["resp_port"]
    assert info["connected_clients"] >= 1 and info["total_commands_processed"] > 0
    assert info["db0"]["keys"] == r.dbsize() >= 1
    assert "db0" in r.info("keyspace") and "redis_mode" not in r.info("keyspace")
    with pytest.raises(redis.ResponseError, match="unknown command"):
        r.execute_command("FLUSHALL")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        r.execute_command("GET")
    assert r.get("counted") == b"1", "the connection works after errors"


def test_malformed_input_gets_an_error_then_the_connection_closes(node):
    import socket
    with socket.create_connection(("127.0.0.1", node.config["resp_port"]), 5) as s:
        s.sendall(encode_command(b"SET", b"k", b"v") + b"*1\r\n$x\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"+OK\r\n-ERR Protocol error: invalid bulk length")
    node.assert_alive()


def test_quit_closes_after_replying(node):
    import socket
    with socket.create_connection(("127.0.0.1", node.config["resp_port"]), 5) as s:
        s.sendall(b"PING\r\nQUIT\r\nPING\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data == b"+PONG\r\n+OK\r\n"


# ---- redis-cli ------------------------------------------------------------------------------

REDIS_CLI = shutil.which("redis-cli")


@pytest.mark.skipif(REDIS_CLI is None, reason="redis-cli is not installed (Debian: redis-tools)")
def test_redis_cli_basics(node):
    def cli(*args):
        out = subprocess.run([REDIS_CLI, "-p", str(node.config["resp_port"]), *args],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()
    assert cli("PING") == "PONG"
    assert cli("SET", "cli-key", "hello world") == "OK"
    assert cli("GET", "cli-key") == "hello world"
    assert cli("MSET", "c1", "a", "c2", "b") == "OK"
    assert cli("MGET", "c1", "c2", "c3").splitlines() == ["a", "b"]  # a nil prints empty
    assert cli("EXISTS", "c1", "c3") == "1"
    assert cli("DEL", "cli-key") == "1"
    assert cli("GET", "cli-key") == ""
    assert "redis_mode:standalone" in cli("INFO", "server")
    piped = subprocess.run([REDIS_CLI, "-p", str(node.config["resp_port"])],
                           input="SET piped 1\nGET piped\n", capture_output=True, text=True,
                           timeout=30)
    assert piped.stdout.split() == ["OK", "1"]


# ---- a 3-node cluster ------------------------------------------------------------------------


def test_redis_py_against_a_three_node_cluster(tmp_path):
    nodes = [ServerProcess(tmp_path / f"n{i}", "memory", resp_port=free_port(),
                           quorum={"n": 3, "r": 2, "w": 2},
                           heartbeat={"fanout": 2, "interval": 100}) for i in range(3)]
    try:
        for n in nodes:
            n.start()
        for n in nodes[1:]:
            out = run_cli("join-cluster", "-p", n.port, "--known-cluster-node",
                          f"127.0.0.1:{nodes[0].port}")
            assert out.returncode == 0, out.stderr

        def settled():
            out = run_cli("status", "-p", nodes[0].port, "--json")
            view = json.loads(out.stdout)
            return not view["in_transition"] and len(view["nodes"]) == 3 and \
                all(row["partitions"] > 0 for row in view["nodes"])
        import time
        end = time.time() + 30
        while not settled():
            assert time.time() < end, "the cluster did not settle"
            time.sleep(0.2)
        clients = [redis.Redis(port=n.config["resp_port"], socket_timeout=10) for n in nodes]
        for i in range(200):
            assert clients[i % 3].set(f"k{i}", f"v{i}") is True
        for i in range(200):
            assert clients[(i + 1) % 3].get(f"k{i}") == f"v{i}".encode()
        pipe = clients[2].pipeline(transaction=False)
        for i in range(200):
            pipe.get(f"k{i}")
        assert pipe.execute() == [f"v{i}".encode() for i in range(200)]
        assert clients[0].mset({"x": b"\x00\xff", "y": b"2"}) is True
        assert clients[1].mget("x", "y", "z") == [b"\x00\xff", b"2", None]
        assert clients[2].delete("x", "y", "z") == 2
        assert clients[0].get("x") is None
        for client in clients:
            client.close()
    finally:
        for n in nodes:
            n.stop()
            n.kill()


# ---- what the RESP door shares with the native one ---------------------------------------

IDLE_MS = 1000


def _resp_socket(port):
    import socket
    sock = socket.create_connection(("127.0.0.1", port), 5)
    sock.settimeout(5)
    return sock


def _read_until_eof(sock, timeout):
    import socket
    import time
    data, deadline = b"", time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return data
        except socket.timeout:
            raise AssertionError(f"still open after {timeout} s (read {data!r})") from None
        if not chunk:
            return data
        data += chunk


def test_idle_resp_connections_are_closed_and_busy_ones_are_not(tmp_path):
    import socket
    import time
    srv = ServerProcess(tmp_path / "idle", "memory", resp_port=free_port(),
                        idle_timeout_ms=IDLE_MS)
    srv.start()
    port = srv.config["resp_port"]
    try:
        silent, partial, busy = _resp_socket(port), _resp_socket(port), _resp_socket(port)
        partial.sendall(b"*2\r\n$3\r\nGET\r\n")  # half a command
        start = time.monotonic()
        checked_early = False
        while time.monotonic() - start < IDLE_MS / 1000 * 1.6:
            busy.sendall(b"PING\r\n")
            assert busy.recv(64) == b"+PONG\r\n"
            if not checked_early and time.monotonic() - start > IDLE_MS / 1000 * 0.4:
                for sock in (silent, partial):  # not closed before its time
                    sock.settimeout(0.02)
                    with pytest.raises(socket.timeout):
                        sock.recv(1)
                checked_early = True
            time.sleep(0.1)
        assert checked_early
        assert _read_until_eof(silent, IDLE_MS / 1000 * 3) == b""
        assert _read_until_eof(partial, IDLE_MS / 1000 * 3) == b""
        busy.sendall(b"ECHO still\r\n")  # the busy connection was never closed
        assert busy.recv(64) == b"$5\r\nstill\r\n"
        for sock in (silent, partial, busy):
            sock.close()
        srv.assert_alive()
    finally:
        srv.stop()
        srv.kill()


def test_max_connections_is_one_budget_for_both_doors(tmp_path):
    from rldb.net import protocol as p
    from tests.net_helpers import connect, recv_until_eof, stats, wait_for
    srv = ServerProcess(tmp_path / "full", "memory", resp_port=free_port(), max_connections=2)
    srv.start()
    port = srv.config["resp_port"]
    try:
        wait_for(lambda: stats(srv.port)["server"]["connections_open"] == 1,
                 what="the start's probe connections to close")

        def admitted(open_one, ask, answer):
            """A connection the node answered (the stats one may linger a moment)."""
            sock = open_one()
            try:
                sock.sendall(ask)
                if sock.recv(64).startswith(answer):
                    return sock
            except OSError:
                pass
            sock.close()
            return None

        native = wait_for(lambda: admitted(lambda: connect(srv.port),
                                           p.encode_frame(p.PING, "n", b""), bytes([p.PING])),
                          what="a native connection admitted")
        first = wait_for(lambda: admitted(lambda: _resp_socket(port), b"PING\r\n", b"+PONG"),
                         what="a RESP connection admitted")
        # one native and one RESP connection open: the budget of 2 is spent
        extra = _resp_socket(port)
        assert recv_until_eof(extra) == b"-ERR max number of clients reached\r\n"
        extra.close()
        native.close()
        first.close()
        srv.assert_alive()
    finally:
        srv.stop()
        srv.kill()


def test_dbsize_and_info_follow_the_keys_of_a_fresh_node(tmp_path):
    srv = ServerProcess(tmp_path / "count", "memory", resp_port=free_port())
    srv.start()
    try:
        r = redis.Redis(port=srv.config["resp_port"], socket_timeout=10)
        assert r.dbsize() == 0 and r.info("keyspace")["db0"]["keys"] == 0
        r.mset({f"k{i}": b"v" for i in range(7)})
        r.set("k0", b"again")  # an overwrite is no new key
        assert r.dbsize() == 7
        assert r.delete("k1", "k2", "nope") == 2
        assert r.dbsize() == 5
        info = r.info()
        assert info["db0"]["keys"] == 5
        assert info["read_repairs"] == 0 and info["hints_pending"] == 0
        r.close()
    finally:
        srv.stop()
        srv.kill()


class _SummaryOnlyCore:
    """A core with nothing but summary(): the door must not reach further."""

    def summary(self):
        return {"keys": 41, "hints_pending": 3, "read_repairs": 9}


def test_info_and_dbsize_ask_the_core_for_its_summary():
    from types import SimpleNamespace

    from rldb.net.config import Config
    from rldb.net.resp_server import RespConnection, info_text
    from rldb.net.stats import ServerStats
    server = SimpleNamespace(core=_SummaryOnlyCore(), stats=ServerStats(), connections=set(),
                             cfg=Config(resp_port=6400, node_id="n1"), started=0.0)
    lines = info_text(server, None, 6400).split("\r\n")
    assert "db0:keys=41,expires=0,avg_ttl=0" in lines
    assert "hints_pending:3" in lines and "read_repairs:9" in lines
    assert "tcp_port:6400" in lines and "node_id:n1" in lines
    assert info_text(server, "keyspace", 6400).split("\r\n")[:2] == \
        ["# Keyspace", "db0:keys=41,expires=0,avg_ttl=0"]
    conn = RespConnection(server)
    assert conn.cmd_dbsize(None, []) == b":41\r\n"
    assert resp.bulk(info_text(server, "stats", 6400)) == conn.cmd_info(None, [b"stats"])
