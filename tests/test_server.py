"""A real `rldb-server` process on loopback, fed bad input, pipelined
requests, many clients, restarts, signals and bad configurations.

Every bad input goes on its own connection; after it a normal request on
another connection must still work (and the server must still be running)."""
import asyncio
import json
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import msgpack
import pytest

from rldb._core.checksum import crc32c
from rldb.cluster import commands as c
from rldb.errors import ConnectionLostError
from rldb.net import protocol as p
from rldb.net.client import AsyncClient, Client
from tests.net_helpers import (ServerProcess, connect, json_request, msgpack_request, recv_frames,
                               recv_until_eof, request, server_factory, split_frames, stats, tool,
                               wait_for)

__all__ = ["server_factory"]  # a fixture, imported for the tests below

IDLE_MS = 1000
OK = b'{"Ok":{"message":"Ok"}}'
PONG = b'{"Ok":{"message":"PONG"}}'


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One memory-engine server for the tests that do not restart it."""
    with ServerProcess(tmp_path_factory.mktemp("mem"), "memory", idle_timeout_ms=IDLE_MS) as proc:
        yield proc  # leaving the block asserts that SIGTERM ends it with exit status 0


def put_payload(key, value, context=None):
    """Command 3's payload exactly as the original client writes it."""
    return json.dumps({"key": key, "value": {"value": value, "crc32c": crc32c(value.encode())},
                       "replication": False, "context": context}, separators=(",", ":")).encode()


def assert_works(server):
    """A fresh connection can ping, put and get."""
    server.assert_alive()
    key = f"check-{time.monotonic_ns()}"
    assert request(server.port, p.PING, "ok?", b"") == (p.PING, "ok?", b'{"Ok":{"message":"PONG"}}')
    assert request(server.port, p.PUT, "w", put_payload(key, "v")) == (p.PUT, "w", OK)
    _, _, body = json_request(server.port, p.GET, {"key": key})
    assert [v["value"] for v in body["Ok"]["values"]] == ["v"]


def one_error_tag(body):
    """body must be {"Err": {Tag: ...}} or {"Err": "Tag"}; the tag path."""
    assert list(body) == ["Err"], body
    err = body["Err"]
    if isinstance(err, str):
        return (err,)
    assert isinstance(err, dict) and len(err) == 1, body
    tag, inner = next(iter(err.items()))
    if isinstance(inner, str):
        return tag, inner
    if isinstance(inner, dict) and len(inner) == 1 and tag == "InvalidRequest":
        return tag, next(iter(inner))
    return (tag,)


# ---- bad input that ends the connection -------------------------------------------------

FATAL = {
    "garbage": (b"GET / HTTP/1.1\r\nHost: rldb\r\n\r\n", ord("G"), "MaxMessageSizeExceeded"),
    "binary garbage": (bytes(range(255, 0, -1)) * 3, 255, "MaxMessageSizeExceeded"),
    "oversized payload length": (b"\x02\x00\x00\x00\x03big" + struct.pack(">I", 2 << 20), 2,
                                 "MaxMessageSizeExceeded"),
    "oversized request id length": (b"\x01" + struct.pack(">I", 1 << 20), 1, "MaxMessageSizeExceeded"),
    "empty request id": (b"\x01\x00\x00\x00\x00\x00\x00\x00\x00", 1, "MessageReceivedWithoutRequestId"),
    "non-UTF-8 request id": (b"\x02\x00\x00\x00\x03\xff\xfe\xfd\x00\x00\x00\x0d{\"key\":\"foo\"}", 2,
                             "MessageRequestIdMustBeUtf8Encoded"),
}


@pytest.mark.parametrize("name", list(FATAL))
def test_fatal_bad_input_gets_an_error_reply_and_the_connection_closed(server, name):
    data, cmd_id, tag = FATAL[name]
    with connect(server.port) as sock:
        sock.sendall(data)
        reply = recv_until_eof(sock)  # the server must close the connection
    frames = split_frames(reply)
    assert len(frames) == 1, reply
    got_cmd, _, body = frames[0]
    assert got_cmd == cmd_id
    body = json.loads(body)
    assert one_error_tag(body) == ("InvalidRequest", tag), body
    if name == "oversized payload length":
        assert body["Err"]["InvalidRequest"]["MaxMessageSizeExceeded"]["max"] == 1 << 20
        assert frames[0][1] == b"big"  # the request id was readable: it is echoed
    assert_works(server)


@pytest.mark.parametrize("name", list(FATAL))
def test_error_replies_are_well_formed_frames(server, name):
    """A reply is a frame like any other: its request id must not be empty, or
    the client's own decoder (FrameDecoder, the original's Message reader)
    refuses the reply as MessageReceivedWithoutRequestId.  The original answers
    such errors with the request id "UNKNOWN"."""
    data, _, _ = FATAL[name]
    with connect(server.port) as sock:
        sock.sendall(data)
        reply = recv_until_eof(sock)
    frames = p.FrameDecoder().feed(reply)  # raises ProtocolError on an empty request id
    assert len(frames) == 1 and frames[0][1], frames


def test_oversized_binary_frame_gets_a_msgpack_error(server):
    with connect(server.port) as sock:
        sock.sendall(b"\x11\x00\x00\x00\x01b" + struct.pack(">I", (1 << 20) + 1))
        [(cmd, rid, body)] = split_frames(recv_until_eof(sock))
    assert (cmd, rid) == (p.BPUT, b"b")
    err = msgpack.unpackb(body, raw=False)["err"]
    assert err["kind"] == "InvalidRequest"
    assert "MaxMessageSizeExceeded" in err["detail"]["InvalidRequest"]
    assert_works(server)


@pytest.mark.parametrize("abort", [False, True], ids=["close", "reset"])
@pytest.mark.parametrize("cut", [1, 4, 7, 12])
def test_client_disconnects_mid_frame(server, cut, abort):
    frame = p.encode_frame(p.PUT, "half", put_payload("half", "value"))
    sock = connect(server.port)
    sock.sendall(frame[:cut])
    time.sleep(0.02)
    if abort:  # RST instead of FIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    time.sleep(0.05)
    assert_works(server)
    _, _, body = json_request(server.port, p.GET, {"key": "half"})
    assert body == {"Err": {"NotFound": {"key": "half"}}}  # the half frame did nothing


def test_good_frames_then_a_bad_one_in_one_write(server):
    data = (p.encode_frame(p.PING, "a", b"") + p.encode_frame(p.PING, "b", b"") +
            b"\x01\x00\x00\x00\x00\x00\x00\x00\x00")
    with connect(server.port) as sock:
        sock.sendall(data)
        frames = split_frames(recv_until_eof(sock))
    assert frames[:2] == [(p.PING, b"a", b'{"Ok":{"message":"PONG"}}'),
                          (p.PING, b"b", b'{"Ok":{"message":"PONG"}}')]
    assert len(frames) == 3
    assert json.loads(frames[2][2]) == {"Err": {"InvalidRequest": "MessageReceivedWithoutRequestId"}}
    assert_works(server)


# ---- bad input the connection survives ------------------------------------------------

NON_FATAL = {
    "unknown command id": (99, b'{"key":"foo"}', ("InvalidRequest", "UnrecognizedCommand")),
    "command id 0": (0, b"", ("InvalidRequest", "UnrecognizedCommand")),
    "invalid JSON get": (p.GET, b'{"key":', None),
    "invalid JSON put": (p.PUT, b'{"key":"k","value":{"value":', None),
    "not UTF-8 JSON": (p.GET, b'\xff\xfe\x00', None),
    "key as a number": (p.GET, b'{"key":42}', None),
    "put key as a number": (p.PUT, b'{"key":1,"value":{"value":"v","crc32c":0},"replication":false,'
                                   b'"context":null}', None),
    "value not an object": (p.PUT, b'{"key":"k","value":"v","replication":false,"context":null}', None),
    "value.value not a string": (p.PUT, b'{"key":"k","value":{"value":[1],"crc32c":0},'
                                        b'"replication":false,"context":null}', None),
    "bad crc32c": (p.PUT, b'{"key":"k","value":{"value":"v","crc32c":12345},"replication":false,'
                          b'"context":null}', ("InvalidRequest", "Generic")),
    "bad hex context": (p.PUT, put_payload("k", "v", "zz-not-hex"),
                        ("InvalidRequest", "MalformedContext")),
    "context not a version vector": (p.PUT, put_payload("k", "v", "c1"), ("InvalidRequest", "Generic")),
    "join without address": (p.JOIN_CLUSTER, b"{}", None),
}


@pytest.mark.parametrize("name", list(NON_FATAL))
def test_bad_json_request_gets_an_error_and_the_connection_stays(server, name):
    cmd_id, payload, want = NON_FATAL[name]
    with connect(server.port) as sock:
        sock.sendall(p.encode_frame(cmd_id, "bad", payload))
        [(cmd, rid, body)] = recv_frames(sock, 1)
        assert (cmd, rid) == (cmd_id, "bad")
        body = json.loads(body)
        tag = one_error_tag(body)
        assert tag[0] in ("InvalidRequest", "InvalidJsonPayload"), body
        if want is not None:
            assert tag == want, body
        # the same connection still serves
        sock.sendall(p.encode_frame(p.PING, "next", b""))
        assert recv_frames(sock, 1) == [(p.PING, "next", b'{"Ok":{"message":"PONG"}}')]
    assert_works(server)


@pytest.mark.parametrize("cmd_id", [p.BGET, p.BPUT, p.BDELETE, p.STATS])
@pytest.mark.parametrize("payload", [b"\xc1", b"\x92\x01", b"\x81\xa3key", b"\xdb\xff\xff\xff\xff"],
                         ids=["reserved byte", "short array", "short map", "huge str length"])
def test_invalid_msgpack_gets_an_error_and_the_connection_stays(server, cmd_id, payload):
    with connect(server.port) as sock:
        sock.sendall(p.encode_frame(cmd_id, "bad", payload))
        [(cmd, rid, body)] = recv_frames(sock, 1)
        assert (cmd, rid) == (cmd_id, "bad")
        err = msgpack.unpackb(body, raw=False)["err"]
        assert err["kind"] == "InvalidRequest", err
        assert list(err["detail"]) == ["InvalidRequest"], err
        sock.sendall(p.encode_frame(p.BPUT, "next", msgpack.packb({"key": b"mk", "value": b"mv"})))
        assert msgpack.unpackb(recv_frames(sock, 1)[0][2]) == {"ok": None}
    assert_works(server)


@pytest.mark.parametrize("fields", [{"key": 7}, {"key": b""}, {"key": b"k", "value": "str"},
                                    {"key": b"k", "value": b"v", "w": 0}, [b"k", b"v"]])
def test_wrong_msgpack_fields(server, fields):
    _, rid, body = msgpack_request(server.port, p.BPUT, fields, "wf")
    assert rid == "wf" and body["err"]["kind"] == "InvalidRequest", body
    assert_works(server)


# ---- the original commands over the wire --------------------------------------------------


def test_original_commands_on_the_wire(server):
    port = server.port
    assert request(port, p.PING, "1", b"") == (p.PING, "1", b'{"Ok":{"message":"PONG"}}')
    assert request(port, p.GET, "2", b'{"key":"wire-key"}') == (
        p.GET, "2", b'{"Err":{"NotFound":{"key":"wire-key"}}}')
    assert request(port, p.PUT, "3", put_payload("wire-key", "bar")) == (
        p.PUT, "3", b'{"Ok":{"message":"Ok"}}')
    cmd, rid, body = request(port, p.GET, "4", b'{"key":"wire-key"}')
    assert (cmd, rid) == (p.GET, "4")
    reply = json.loads(body)
    context = reply["Ok"]["context"]
    bytes.fromhex(context)
    assert body == b'{"Ok":{"values":[{"value":"bar","crc32c":179770161}],"context":"%s"}}' % (
        context.encode())
    # a put with the context replaces the value instead of adding a sibling
    assert request(port, p.PUT, "5", put_payload("wire-key", "baz", context))[2] == OK
    values = json_request(port, p.GET, {"key": "wire-key"})[2]["Ok"]["values"]
    assert [v["value"] for v in values] == ["baz"]
    cmd, rid, body = request(port, p.CLUSTER_STATE, "7", b"null")
    assert body == b'{"Ok":{"nodes":[{"addr":"127.0.0.1:%d","status":"Ok","tick":%d}]}}' % (
        port, json.loads(body)["Ok"]["nodes"][0]["tick"])


def test_join_cluster_answers_as_the_original(server_factory):
    """JoinCluster (6) {"known_cluster_node_addr": "host:port"} is answered
    {"Ok":{"message":"Ok"}} (src/cmd/cluster/join_cluster.rs of the original;
    docs/protocol.md); afterwards ClusterState (7) on either node lists both."""
    a = server_factory("memory", name="a", heartbeat={"fanout": 2, "interval": 50})
    b = server_factory("memory", name="b", heartbeat={"fanout": 2, "interval": 50})
    reply = request(a.port, p.JOIN_CLUSTER, "6", b'{"known_cluster_node_addr":"127.0.0.1:%d"}' % b.port)
    assert reply == (p.JOIN_CLUSTER, "6", b'{"Ok":{"message":"Ok"}}')
    want = {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}

    def both_listed(port):
        nodes = json_request(port, p.CLUSTER_STATE, None)[2]["Ok"]["nodes"]
        return {n["addr"] for n in nodes if n["status"] == "Ok"} == want and nodes

    for port in (a.port, b.port):
        nodes = wait_for(lambda: both_listed(port), timeout=10, what=f"node {port} to list both nodes")
        assert all(list(n) == ["addr", "status", "tick"] and isinstance(n["tick"], int) for n in nodes)
    # and, once the ring has settled, what one node acknowledges the other reads
    attempt = iter(range(10 ** 6))

    def put_on_a_read_on_b():
        k = f"joined-{next(attempt)}"
        assert request(a.port, p.PUT, "p", put_payload(k, "v"))[2] == b'{"Ok":{"message":"Ok"}}'
        body = json_request(b.port, p.GET, {"key": k})[2]
        return body.get("Ok", {}).get("values") == [{"value": "v", "crc32c": crc32c(b"v")}]

    wait_for(put_on_a_read_on_b, timeout=10, interval=0.05, what="a write on a to be read on b")


def test_quorum_not_reached_has_the_original_shape(server_factory):
    """A node alone with n=3, w=2, r=2 cannot reach its quorum: the reply is
    {"Err":{"QuorumNotReached":{"operation","reason","errors"}}} as the original."""
    srv = server_factory("memory", quorum={"n": 3, "r": 2, "w": 2}, request_timeout_ms=500)
    for cmd_id, payload, operation in ((p.PUT, put_payload("q", "v"), "Put"),
                                       (p.GET, b'{"key":"q"}', "Get")):
        _, rid, body = request(srv.port, cmd_id, "q1", payload)
        body = json.loads(body)
        assert list(body) == ["Err"] and list(body["Err"]) == ["QuorumNotReached"], body
        fields = body["Err"]["QuorumNotReached"]
        assert list(fields) == ["operation", "reason", "errors"], fields
        assert fields["operation"] == operation and isinstance(fields["reason"], str)
        assert isinstance(fields["errors"], list)


def test_slow_replies_keep_the_pipeline_order(server_factory):
    """Two nodes with n=w=r=2; the second is frozen (SIGSTOP), so a put waits
    for its replica until the request timeout, while a ping behind it on the
    same connection could be answered at once: replies still come in order."""
    a = server_factory("memory", name="a", quorum={"n": 2, "r": 2, "w": 2},
                       heartbeat={"fanout": 2, "interval": 50}, request_timeout_ms=600)
    b = server_factory("memory", name="b", quorum={"n": 2, "r": 2, "w": 2},
                       heartbeat={"fanout": 2, "interval": 50}, request_timeout_ms=600)
    assert request(a.port, p.JOIN_CLUSTER, "j", b'{"known_cluster_node_addr":"127.0.0.1:%d"}'
                   % b.port)[2] == b'{"Ok":{"message":"Ok"}}'
    def pair_accepts_writes():
        try:  # a write forwarded while the ring settles may go unanswered:
            # see test_forwarded_write_gets_the_coordinators_reply
            return request(a.port, p.PUT, "w", put_payload("ready", "1"), timeout=1)[2] == OK
        except (socket.timeout, ConnectionError):
            return False

    wait_for(pair_accepts_writes, timeout=15, interval=0.1, what="the pair to accept w=2 writes")
    b.proc.send_signal(signal.SIGSTOP)
    try:
        with connect(a.port, timeout=10) as sock:
            start = time.monotonic()
            sock.sendall(p.encode_frame(p.PUT, "slow", put_payload("slow", "v")) +
                         p.encode_frame(p.PING, "fast", b"") +
                         p.encode_frame(p.GET, "slow-get", b'{"key":"slow"}') +
                         p.encode_frame(p.PING, "fast2", b""))
            frames = recv_frames(sock, 4, timeout=10)
            elapsed = time.monotonic() - start
    finally:
        b.proc.send_signal(signal.SIGCONT)
    assert [(cmd, rid) for cmd, rid, _ in frames] == [(p.PUT, "slow"), (p.PING, "fast"),
                                                      (p.GET, "slow-get"), (p.PING, "fast2")]
    assert frames[1][2] == frames[3][2] == b'{"Ok":{"message":"PONG"}}'
    assert "QuorumNotReached" in json.loads(frames[0][2])["Err"], frames[0]
    assert elapsed < 8


def _read_internal(sock, want_type, timeout=5.0):
    """Node-to-node frames (cmd 32) arriving on sock until one of type want_type."""
    decoder = p.FrameDecoder()
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(1 << 16)
        assert data, "the node closed its link"
        for cmd_id, _, payload in decoder.feed(data):
            msg = msgpack.unpackb(payload, raw=False)
            if cmd_id == p.INTERNAL and msg.get("t") == want_type:
                return msg


FORWARDED_REPLIES = {
    "ok": (c.Ok(), b'{"Ok":{"message":"Ok"}}'),
    "invalid": (c.invalid("w=3 is more than n=1"),
                b'{"Err":{"InvalidRequest":{"Generic":{"reason":"w=3 is more than n=1"}}}}'),
    "indeterminate": (c.Err("QuorumNotReached", {
        "operation": "Put", "reason": "Indeterminate: Put: 2 replica(s) needed, 1 answered "
                                      "(too many replicas failed)", "errors": []}),
        b'{"Err":{"QuorumNotReached":{"operation":"Put","reason":"Indeterminate: Put: 2 replica(s) '
        b'needed, 1 answered (too many replicas failed)","errors":[]}}}'),
    # applied nowhere: no other replica to try, so the node coordinates the
    # write itself (w=1: it keeps a hint for the owner)
    "applied nowhere": (c.Err("QuorumNotReached", {
        "operation": "Put", "reason": "Put: 2 replica(s) needed, 1 node(s) up; not applied "
                                      "anywhere (safe to retry)", "errors": []}),
        b'{"Ok":{"message":"Ok"}}'),
}


@pytest.mark.parametrize("name", list(FORWARDED_REPLIES))
def test_forwarded_write_gets_the_coordinators_reply(server_factory, name):
    """A put sent to a node that does not own the key is forwarded to the
    owner, whose reply comes back in a fwd_reply message and goes to the
    client.  Here the test plays the owner ("0peer", which owns every
    partition), taking the offer (fwd_ack), told to go (fwd_go), then answering
    as rldb.cluster.messages.reply_to_wire encodes replies.
    The client must get that reply (an indeterminate QuorumNotReached one
    included), not wait forever; a reply that says the write was applied
    nowhere lets the node try elsewhere."""
    from rldb.cluster.membership import Member
    from rldb.cluster.messages import reply_to_wire

    reply, want = FORWARDED_REPLIES[name]
    peer = socket.socket()
    peer.bind(("127.0.0.1", 0))
    peer.listen(8)
    peer_addr = f"127.0.0.1:{peer.getsockname()[1]}"
    srv = server_factory("memory", partitions=8, heartbeat={"fanout": 2, "interval": 600_000},
                         request_timeout_ms=10_000)
    try:
        with connect(srv.port) as ctl:
            ctl.sendall(p.encode_frame(p.INTERNAL, "m", msgpack.packb({
                "t": "gossip_reply", "members": [Member("0peer", peer_addr, 1, 1).to_list()],
                "ring": [100, ["0peer"] * 8], "from": "0peer", "addr": peer_addr}, use_bin_type=True)))
            wait_for(lambda: peer_addr in {n["addr"] for n in json_request(
                srv.port, p.CLUSTER_STATE, None)[2]["Ok"]["nodes"]}, what="the peer to be known")
            with connect(srv.port) as client:
                client.sendall(p.encode_frame(p.PUT, "fwd-put", put_payload("forwarded", "v")))
                link, _ = peer.accept()
                with link:
                    fwd = _read_internal(link, "fwd")
                    assert fwd["key"] == b"forwarded" and fwd["value"] == b"v"
                    # the owner takes the offer, and is told to go
                    ctl.sendall(p.encode_frame(p.INTERNAL, "m", msgpack.packb({
                        "t": "fwd_ack", "id": fwd["id"], "from": "0peer", "addr": peer_addr},
                        use_bin_type=True)))
                    assert _read_internal(link, "fwd_go")["id"] == fwd["id"]
                    ctl.sendall(p.encode_frame(p.INTERNAL, "m", msgpack.packb({
                        "t": "fwd_reply", "id": fwd["id"], "reply": reply_to_wire(reply),
                        "from": "0peer", "addr": peer_addr}, use_bin_type=True)))
                    assert recv_frames(client, 1, timeout=3) == [(p.PUT, "fwd-put", want)]
    finally:
        peer.close()
    srv.assert_alive()


# ---- node-to-node messages (command 32) from anyone ------------------------------------

BAD_INTERNAL = {
    "not msgpack": b"\xc1",
    "a list": msgpack.packb([1, 2]),
    "unknown type": msgpack.packb({"t": "nonsense"}),
    "missing fields": msgpack.packb({"t": "rget"}),
    "unhashable reply address": msgpack.packb({"t": "rget", "id": 1, "key": b"k", "addr": [1]}),
    "reply address not a string": msgpack.packb({"t": "rget", "id": 1, "key": b"k", "addr": 5}),
    "empty forwarded reply": msgpack.packb({"t": "fwd_reply", "id": 1, "reply": []}),
    "bad gossip": msgpack.packb({"t": "gossip", "members": [[1, 2]], "ring": 5, "addr": "127.0.0.1:1"}),
    "bad object": msgpack.packb({"t": "rput", "id": 0, "key": b"k", "obj": b"\0" * 9, "addr": "x"}),
}


@pytest.fixture(scope="module")
def internal_server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("internal"), "memory")
    proc.start()
    yield proc
    proc.kill()


@pytest.mark.parametrize("name", list(BAD_INTERNAL))
def test_malformed_node_message_is_dropped_and_the_connection_goes_on(internal_server, name):
    """Command 32 carries node-to-node messages, with no reply.  A malformed one
    must be dropped (counted) without taking down the connection it came on:
    the request pipelined after it is answered, and nothing is logged as an
    unhandled exception."""
    srv = internal_server
    log_before = len(srv.log_path.read_bytes())
    with connect(srv.port) as sock:
        sock.sendall(p.encode_frame(p.INTERNAL, "m", BAD_INTERNAL[name]) +
                     p.encode_frame(p.PING, "after", b""))
        assert recv_frames(sock, 1) == [(p.PING, "after", b'{"Ok":{"message":"PONG"}}')]
    time.sleep(0.1)
    assert_works(srv)
    new_log = srv.log_path.read_bytes()[log_before:].decode(errors="replace")
    assert "Traceback" not in new_log, new_log


# ---- pipelining -----------------------------------------------------------------------------


def test_pipelined_requests_come_back_in_order(server):
    out, want = [], []
    for i in range(300):
        rid = f"pipe-{i}"
        kind = i % 5
        if kind == 0:
            out.append(p.encode_frame(p.PUT, rid, put_payload(f"pk{i}", f"pv{i}")))
            want.append((p.PUT, rid, b'{"Ok":{"message":"Ok"}}'))
        elif kind == 1:  # reads the put just before it, in the same write
            out.append(p.encode_frame(p.GET, rid, json.dumps({"key": f"pk{i - 1}"}).encode()))
            want.append((p.GET, rid, f"pv{i - 1}"))
        elif kind == 2:
            out.append(p.encode_frame(p.PING, rid, b""))
            want.append((p.PING, rid, b'{"Ok":{"message":"PONG"}}'))
        elif kind == 3:  # an error in the middle keeps its place
            out.append(p.encode_frame(p.GET, rid, b"{not json"))
            want.append((p.GET, rid, None))
        else:
            body = msgpack.packb({"key": f"pk{i}".encode(), "value": b"b"})
            out.append(p.encode_frame(p.BPUT, rid, body))
            want.append((p.BPUT, rid, msgpack.packb({"ok": None})))
    with connect(server.port) as sock:
        sock.sendall(b"".join(out))
        got = recv_frames(sock, len(out), timeout=15)
    assert [(cmd, rid) for cmd, rid, _ in got] == [(cmd, rid) for cmd, rid, _ in want]
    for (cmd, rid, body), (_, _, expected) in zip(got, want):
        if expected is None:
            assert list(json.loads(body)) == ["Err"], (rid, body)
        elif isinstance(expected, str):
            assert [v["value"] for v in json.loads(body)["Ok"]["values"]] == [expected], (rid, body)
        else:
            assert body == expected, (rid, body)


def test_requests_before_a_half_close_are_answered(server):
    with connect(server.port) as sock:
        sock.sendall(p.encode_frame(p.PING, "a", b"") + p.encode_frame(p.PING, "b", b""))
        sock.shutdown(socket.SHUT_WR)
        assert split_frames(recv_until_eof(sock)) == [(p.PING, b"a", b'{"Ok":{"message":"PONG"}}'),
                                                      (p.PING, b"b", b'{"Ok":{"message":"PONG"}}')]


# ---- many clients -------------------------------------------------------------------------


def test_200_concurrent_clients(server):
    async def one(i):
        async with AsyncClient("127.0.0.1", server.port, timeout=20) as client:
            for j in range(5):
                await client.put(f"c{i}-{j}", f"v{i}-{j}".encode())
            for j in range(5):
                result = await client.get(f"c{i}-{j}")
                assert result is not None and result.values == [f"v{i}-{j}".encode()]
            assert await client.ping() == "PONG"
        return i

    async def main():
        return await asyncio.gather(*(one(i) for i in range(200)))

    before = stats(server.port)["server"]
    assert sorted(asyncio.run(main())) == list(range(200))
    after = stats(server.port)["server"]
    assert after["connections_total"] - before["connections_total"] >= 200
    assert after["requests"] - before["requests"] >= 200 * 11
    assert_works(server)


# ---- idle connections and the connection limit ------------------------------------------------


def test_idle_connections_are_closed(server):
    silent = connect(server.port)
    partial = connect(server.port)
    partial.sendall(p.encode_frame(p.PING, "p", b"")[:6])
    active = connect(server.port)
    start = time.monotonic()
    checked_early = False
    try:
        # the active connection keeps talking for longer than the idle timeout
        while time.monotonic() - start < IDLE_MS / 1000 * 1.6:
            active.sendall(p.encode_frame(p.PING, "k", b""))
            assert recv_frames(active, 1)[0][2] == b'{"Ok":{"message":"PONG"}}'
            if not checked_early and time.monotonic() - start > IDLE_MS / 1000 * 0.4:
                for sock in (silent, partial):  # not closed before its time
                    sock.settimeout(0.02)
                    with pytest.raises(socket.timeout):
                        sock.recv(1)
                checked_early = True
            time.sleep(0.1)
        assert recv_until_eof(silent, timeout=IDLE_MS / 1000 * 3) == b""
        assert recv_until_eof(partial, timeout=IDLE_MS / 1000 * 3) == b""
        active.sendall(p.encode_frame(p.PING, "still", b""))
        assert recv_frames(active, 1)[0][1] == "still"
    finally:
        for sock in (silent, partial, active):
            sock.close()
    assert_works(server)


def test_connections_over_max_connections_are_refused(server_factory):
    srv = server_factory("memory", max_connections=3)
    wait_for(lambda: stats(srv.port)["server"]["connections_open"] == 1,
             what="probe connections to close")
    socks = [connect(srv.port) for _ in range(3)]
    try:
        for i, sock in enumerate(socks):
            sock.sendall(p.encode_frame(p.PING, f"in{i}", b""))
            assert recv_frames(sock, 1)[0][1] == f"in{i}"
        extra = connect(srv.port)
        try:
            extra.sendall(p.encode_frame(p.PING, "extra", b""))
        except OSError:
            pass
        assert recv_until_eof(extra) == b""  # refused: closed without a reply
        extra.close()
        for i, sock in enumerate(socks):  # the admitted ones keep working
            sock.sendall(p.encode_frame(p.PING, f"again{i}", b""))
            assert recv_frames(sock, 1)[0][1] == f"again{i}"
        socks.pop().close()

        def admitted():
            try:
                return stats(srv.port)
            except (OSError, ConnectionError):
                return None

        snapshot = wait_for(admitted, what="a free connection slot")
        assert snapshot["server"]["connections_refused"] >= 1
    finally:
        for sock in socks:
            sock.close()
    srv.assert_alive()


# ---- restarts and signals -------------------------------------------------------------------


def test_lsm_restart_keeps_data(server_factory):
    srv = server_factory("lsm")
    with Client("127.0.0.1", srv.port) as client:
        for i in range(100):
            client.put(f"key{i}", f"value{i}".encode())
        client.put("sib", b"a")
        client.put("sib", b"b")  # no context: a sibling
        client.delete("key0")
    assert request(srv.port, p.PUT, "j", put_payload("json-key", "json-value"))[2] == OK
    assert srv.stop() == 0, srv.log()
    srv.start()
    with Client("127.0.0.1", srv.port) as client:
        assert client.get("key0") is None
        for i in range(1, 100):
            assert client.get(f"key{i}").values == [f"value{i}".encode()]
        assert sorted(client.get("sib").values) == [b"a", b"b"]
        assert client.get("json-key").values == [b"json-value"]


def test_memory_restart_loses_data(server_factory):
    srv = server_factory("memory")
    with Client("127.0.0.1", srv.port) as client:
        client.put("k", b"v")
        assert client.get("k").values == [b"v"]
    assert srv.stop() == 0, srv.log()
    srv.start()
    with Client("127.0.0.1", srv.port) as client:
        assert client.get("k") is None


def test_sigterm_exits_0_and_keeps_every_acknowledged_write(server_factory):
    srv = server_factory("lsm")
    acked = {}
    stop = threading.Event()
    errors = []

    def writer(n):
        try:
            with Client("127.0.0.1", srv.port, timeout=10) as client:
                i = 0
                while not stop.is_set():
                    key, value = f"w{n}-{i}", f"value-{n}-{i}".encode()
                    try:
                        client.put(key, value)
                    except (ConnectionLostError, OSError, TimeoutError):
                        return  # the server went away: this write was not acknowledged
                    acked[key] = value
                    i += 1
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 200, timeout=20, what="some acknowledged writes")
    code = srv.stop()  # SIGTERM while the writers are busy
    stop.set()
    for t in threads:
        t.join(20)
    assert not errors, errors
    assert code == 0, srv.log()
    assert "Traceback" not in srv.log()
    srv.start()
    with Client("127.0.0.1", srv.port) as client:
        missing = [k for k, v in acked.items() if (r := client.get(k)) is None or r.values != [v]]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged writes lost: {missing[:5]}"


# ---- bad configurations ---------------------------------------------------------------------

BAD_CONFIGS = {
    "missing port": ('{"storage_engine": "memory"}', "port"),
    "unknown key": ('{"port": 3001, "storage_engine": "memory", "colour": "blue"}', "colour"),
    "unknown quorum key": ('{"port": 3001, "quorum": {"n": 1, "r": 1, "w": 1, "x": 2}}', "quorum.x"),
    "quorum r > n": ('{"port": 3001, "quorum": {"n": 1, "r": 2, "w": 1}}', "quorum"),
    "quorum w > n": ('{"port": 3001, "quorum": {"n": 2, "r": 1, "w": 3}}', "quorum"),
    "bad storage_engine": ('{"port": 3001, "storage_engine": "rocksdb"}', "storage_engine"),
    "port as a string": ('{"port": "3001"}', "port"),
    "port out of range": ('{"port": 70000}', "port"),
    "port 99999": ('{"port": 99999, "storage_engine": "memory"}', "port"),
    "resp_port out of range": ('{"port": 3001, "resp_port": 70000}', "resp_port"),
    "unknown engine option": ('{"port": 3001, "storage_engine": "memory", '
                              '"storage_options": {"colour": 1}}', "storage_options"),
    "negative idle timeout": ('{"port": 3001, "idle_timeout_ms": -5}', "idle_timeout_ms"),
    "max_connections zero": ('{"port": 3001, "max_connections": 0}', "max_connections"),
    "not JSON": ('{"port": 3001,', "JSON"),
    "negative grace": ('{"port": 3001, "tombstone_grace_ms": -1}', "tombstone_grace_ms"),
    "negative skew": ('{"port": 3001, "max_clock_skew_ms": -5}', "max_clock_skew_ms"),
    "grace within the link bound": ('{"port": 3001, "tombstone_grace_ms": 400, '
                                    '"peer_send_timeout_ms": 400}', "tombstone_grace_ms"),
    "short floors": ('{"port": 3001, "floor_retention_ms": 1000}', "floor_retention_ms"),
    "forward as long as a request": ('{"port": 3001, "forward_timeout_ms": 5000}',
                                     "forward_timeout_ms"),
    "zero handoff rate": ('{"port": 3001, "handoff_keys_per_s": 0}', "handoff_keys_per_s"),
    "aae interval as text": ('{"port": 3001, "aae_interval_ms": "soon"}', "aae_interval_ms"),
    "not an object": ("[3001]", "object"),
}


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_bad_config_stops_the_start_with_one_line(tmp_path, name):
    text, key = BAD_CONFIGS[name]
    path = tmp_path / "bad.json"
    path.write_text(text)
    result = subprocess.run([tool("rldb-server"), "--config-path", str(path)], capture_output=True,
                            text=True, timeout=30, cwd=str(tmp_path))
    assert result.returncode == 2, result  # a bad configuration, like a bad argument
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert key in lines[0], lines[0]


# ---- bad arguments and ports that cannot be opened ------------------------------------------

BAD_ARGUMENTS = {
    "a port option it does not have": ["-p", "99999"],
    "no --config-path": [],
    "a bad log level": ["--config-path", "x.json", "--log-level", "loud"],
    "a directory as the configuration": ["--config-path", "."],
}


@pytest.mark.parametrize("name", list(BAD_ARGUMENTS))
def test_bad_arguments_to_rldb_server_exit_2_with_one_line(tmp_path, name):
    result = subprocess.run([tool("rldb-server"), *BAD_ARGUMENTS[name]], capture_output=True,
                            text=True, timeout=30, cwd=str(tmp_path))
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rldb-server"), result.stderr


def _held_and_free_ports():
    """A port a listening socket of ours holds, and one free now."""
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.bind(("127.0.0.1", 0))
    held.listen()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    return held, free


@pytest.mark.parametrize("taken", ["port", "resp_port"])
def test_a_port_that_cannot_be_opened_is_named_by_its_own_number(tmp_path, taken):
    held, free = _held_and_free_ports()
    with held:
        busy = held.getsockname()[1]
        other = "resp_port" if taken == "port" else "port"
        path = tmp_path / "node.json"
        path.write_text(json.dumps({taken: busy, other: free, "storage_engine": "memory"}))
        result = subprocess.run([tool("rldb-server"), "--config-path", str(path)],
                                capture_output=True, text=True, timeout=30, cwd=str(tmp_path))
    assert result.returncode == 1, result  # a failure at run time, not a bad argument
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    named = re.findall(r"127\.0\.0\.1:(\d+)", lines[0])
    assert named == [str(busy)], lines[0]
    assert f"({taken})" in lines[0], lines[0]


# ---- building a node from its configuration ------------------------------------------------


def test_build_node_gives_the_core_seconds_and_the_engine_its_directory(tmp_path):
    from rldb.net.assembly import build_node
    from rldb.net.config import parse
    cfg = parse({"port": 3001, "storage_engine": "lsm", "data_dir": str(tmp_path / "d"),
                 "quorum": {"n": 3, "r": 2, "w": 2}, "heartbeat": {"fanout": 3, "interval": 250},
                 "request_timeout_ms": 1500, "sloppy_timeout_ms": 200, "aae_interval_ms": 0,
                 "tombstone_grace_ms": 60_000, "handoff_keys_per_s": 7, "partitions": 16})
    server = build_node(cfg, now=1000.0)
    try:
        core = server.core.cfg
        assert (core.n, core.r, core.w, core.partitions, core.fanout) == (3, 2, 2, 16, 3)
        assert (core.gossip_interval, core.request_timeout, core.sloppy_timeout) == \
            (0.25, 1.5, 0.2)
        assert (core.aae_interval, core.tombstone_grace, core.handoff_rate) == (0, 60.0, 7)
        assert core.node_id == core.addr == "127.0.0.1:3001"
        assert (tmp_path / "d" / "store").is_dir()
        assert server.engine is not None and server.cfg is cfg
    finally:
        server.engine.close()


def test_build_node_refuses_an_engine_option_as_a_configuration_error():
    from rldb.net.assembly import build_node
    from rldb.net.config import ConfigError, parse
    cfg = parse({"port": 3001, "storage_engine": "memory", "storage_options": {"colour": 1}})
    with pytest.raises(ConfigError, match="storage_options: .*colour"):
        build_node(cfg)


# ---- how the network layer's modules depend on each other ----------------------------------


def _net_imports():
    """module name -> the rldb.net modules it imports (at any depth of its code)."""
    import ast
    import pathlib

    import rldb
    graph = {}
    for path in (pathlib.Path(rldb.__file__).parent / "net").glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        graph[path.stem] = {n.split(".")[2] for n in names
                            if n.startswith("rldb.net.") and n.count(".") >= 2}
    return graph


def test_the_doors_share_a_base_and_not_each_other():
    graph = _net_imports()
    for door, other in (("native_server", "resp_server"), ("resp_server", "native_server")):
        assert "connection" in graph[door]
        assert other not in graph[door] and "server" not in graph[door], (door, graph[door])
    assert {"native_server", "resp_server", "connection"} <= graph["server"]


def test_no_import_circle_in_the_network_layer():
    graph = _net_imports()

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    circles = sorted(m for m in graph if m in reach(m))
    assert circles == [], circles
