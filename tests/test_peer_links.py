"""Peer links never hold a message longer than the send bound, and the
test-only clock offset of the server.

A link to a peer that stops reading is aborted once a write has gone
unacknowledged for the bound (its messages counted dropped) and the next
send opens a fresh connection that carries only the new messages; a peer
that reads slowly but keeps up keeps its link.  Both run on asyncio's loop
and on uvloop (which the server uses where it is installed).  The clock
offset is checked in a real server process (read at start and on SIGUSR2)
and in a NodeServer over a stand-in core (every `now`, and the timer)."""
import asyncio
import signal
import socket
import threading
import time

import pytest

from rldb.net import protocol as p
from rldb.net.config import parse
from rldb.net.peers import PeerPool
from rldb.net.server import CLOCK_OFFSET_ENV, Clock, NodeServer
from tests.helpers.ports import free_port
from tests.helpers.server_process import ServerProcess
from tests.net_helpers import stats, wait_for

LOOPS = ["asyncio", "uvloop"]
BIG = b"x" * 65536


def run(loop_kind, coro):
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed")
        return uvloop.run(coro)
    return asyncio.run(coro)


def listener(rcvbuf):
    """A listening socket on loopback whose connections get a small receive
    buffer (set before listen, so the accepted sockets inherit it)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(10)
    return sock


def read_messages(conn, want, deadline, chunk=65536, pause=0.0):
    """The INTERNAL messages read from conn until `want` arrived, the peer
    closed, or the deadline (monotonic) passed; reads `chunk` bytes at a
    time with `pause` seconds between reads."""
    conn.settimeout(0.2)
    decoder = p.FrameDecoder()
    got = []
    while len(got) < want and time.monotonic() < deadline:
        try:
            data = conn.recv(chunk)
        except socket.timeout:
            continue
        except OSError:
            break
        if not data:
            break
        got += [p.parse_msgpack(payload, cmd, rid) for cmd, rid, payload in decoder.feed(data)]
        if pause:
            time.sleep(pause)
    return got


async def wait_until(predicate, what, timeout=10.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(interval)


class Accepting(threading.Thread):
    """Accepts one connection on sock; then runs `then(conn)` on it (the
    default holds it open and never reads)."""

    def __init__(self, sock, then=None):
        super().__init__(daemon=True)
        self.sock, self.then, self.conn, self.result = sock, then, None, None

    def run(self):
        self.conn, _ = self.sock.accept()
        if self.then is not None:
            self.result = self.then(self.conn)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_a_link_the_peer_does_not_drain_is_reset_and_the_next_send_reconnects(loop_kind):
    sock = listener(4096)
    addr = f"127.0.0.1:{sock.getsockname()[1]}"
    silent = Accepting(sock)
    silent.start()

    async def main():
        pool = PeerPool(send_timeout_ms=300)
        try:
            pool.send(addr, {"t": "hello"})
            link = pool.links[addr]
            await wait_until(lambda: link.writer is not None, "the link to open")
            for i in range(200):  # 13 MB: far more than the peer's and our buffers take at once
                pool.send(addr, {"t": "big", "i": i, "blob": BIG})
            await wait_until(lambda: pool.links_reset == 1, "the stalled link to be reset")
            assert link.writer is None and not link.unacked and link.timer is None
            first = pool.stats()
            assert first["links_reset"] == 1
            # the peer's 8 KB took at most the hello and one big frame
            assert 199 <= first["messages_dropped"] <= 201, first

            silent.conn.close()
            reader = Accepting(sock, lambda conn: read_messages(conn, 5, time.monotonic() + 10))
            reader.start()
            for i in range(5):
                pool.send(addr, {"t": "small", "i": i})
            await asyncio.to_thread(reader.join, 15)
            got = reader.result
            assert [(m["t"], m["i"]) for m in got] == [("small", i) for i in range(5)]
            assert pool.stats()["links_reset"] == 1  # the new link drains: no further reset
            assert pool.stats()["messages_dropped"] == first["messages_dropped"]
            assert pool.stats()["connected"] == 1
            reader.conn.close()
        finally:
            pool.close()

    try:
        run(loop_kind, main())
    finally:
        sock.close()
        if silent.conn is not None:
            silent.conn.close()


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_a_slow_peer_that_keeps_up_keeps_its_link(loop_kind):
    """40 frames of 24 KB, one every 50 ms, to a peer with an 8 KB receive
    buffer reading 8 KB every 5 ms: each frame waits on the link a while,
    well within the 500 ms bound."""
    sock = listener(8192)
    addr = f"127.0.0.1:{sock.getsockname()[1]}"
    count = 40
    reader = Accepting(sock, lambda conn: read_messages(conn, count, time.monotonic() + 30,
                                                        chunk=8192, pause=0.005))
    reader.start()

    async def main():
        pool = PeerPool(send_timeout_ms=500)
        try:
            for i in range(count):
                pool.send(addr, {"t": "slow", "i": i, "blob": BIG[:24576]})
                await asyncio.sleep(0.05)
            await asyncio.to_thread(reader.join, 35)
            return pool.stats()
        finally:
            pool.close()

    try:
        final = run(loop_kind, main())
    finally:
        sock.close()
        if reader.conn is not None:
            reader.conn.close()
    assert [m["i"] for m in reader.result] == list(range(count))
    assert final["links_reset"] == 0 and final["messages_dropped"] == 0, final
    assert final["messages_sent"] == count


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="no TCP_USER_TIMEOUT here")
@pytest.mark.parametrize("loop_kind", LOOPS)
def test_peer_sockets_carry_the_bound_as_tcp_user_timeout_and_no_delay(loop_kind):
    sock = listener(65536)
    addr = f"127.0.0.1:{sock.getsockname()[1]}"
    peer = Accepting(sock)
    peer.start()

    async def main():
        pool = PeerPool(send_timeout_ms=1234)
        try:
            pool.send(addr, {"t": "hello"})
            link = pool.links[addr]
            await wait_until(lambda: link.sock is not None, "the link to open")
            return (link.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
                    link.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        finally:
            pool.close()

    try:
        user_timeout, nodelay = run(loop_kind, main())
    finally:
        peer.join(10)
        sock.close()
        if peer.conn is not None:
            peer.conn.close()
    assert user_timeout == 1234
    assert nodelay != 0


def test_frames_sent_while_the_peer_is_unreachable_are_dropped_not_kept():
    """A refused connect drops what waited for it; during the backoff that
    follows, frames are dropped at once instead of waiting for a later
    connect (which could carry them past the bound)."""
    port = free_port()

    async def main():
        pool = PeerPool(send_timeout_ms=300)
        try:
            pool.send(f"127.0.0.1:{port}", {"t": "a"})
            link = pool.links[f"127.0.0.1:{port}"]
            await wait_until(lambda: link.failures == 1, "the connect to fail", interval=0)
            pool.send(f"127.0.0.1:{port}", {"t": "b"})
            return pool.stats(), list(link.queue), link.connecting
        finally:
            pool.close()

    final, queue, connecting = asyncio.run(main())
    assert final["messages_dropped"] == 2 and final["connected"] == 0
    assert queue == [] and not connecting


def test_a_message_from_a_peer_ends_the_backoff_of_the_link_to_it():
    """A peer that was down (a restart) and sends us a message is up: our
    answer to it goes out at once instead of being dropped for the rest of
    the connect backoff."""
    port = free_port()
    addr = f"127.0.0.1:{port}"

    async def main():
        pool = PeerPool(send_timeout_ms=2000)
        server = None
        try:
            pool.send(addr, {"t": "a"})
            link = pool.links[addr]
            await wait_until(lambda: link.failures == 1, "the connect to fail", interval=0)
            assert link.retry_at > asyncio.get_running_loop().time()  # backing off
            got = []

            async def on_client(reader, writer):
                got.append(await reader.read(65536))
                writer.close()
            server = await asyncio.start_server(on_client, "127.0.0.1", port)
            pool.heard_from(addr)   # the peer is back, and wrote to us
            pool.send(addr, {"t": "b"})
            await wait_until(lambda: got, "the answer to arrive", interval=0.01)
            return pool.stats(), got
        finally:
            pool.close()
            if server is not None:
                server.close()

    final, got = asyncio.run(main())
    assert final["messages_dropped"] == 1  # only the one sent while it was down
    frame = p.encode_frame(p.INTERNAL, "m", p.pack({"t": "b"}))
    assert got[0].startswith(frame)


# ---- the test clock offset -----------------------------------------------------------------


@pytest.mark.parametrize("text, want", [("5000", 5000), ("  -3000\n", -3000), ("12.5", 0),
                                        ("", 0), ("soon", 0), (None, 0)])
def test_clock_reads_whole_milliseconds_and_takes_anything_else_as_zero(tmp_path, text, want):
    path = tmp_path / "offset"
    if text is not None:
        path.write_text(text)
    clock = Clock(str(path))
    assert clock.offset_ms == want
    assert abs(clock.now() - (time.time() + want / 1000)) < 1.0
    assert Clock().offset_ms == 0 and Clock().path is None


class RecordingCore:
    """Stands in for NodeCore: records every `now` it is given, and has one
    deadline 0.1 s after the `now` of its last client command."""

    def __init__(self):
        self.seen = []
        self.deadline = None
        self.timer_calls = []
        self.stopped = False
        self.counters = {}

    def figures(self):
        return dict(self.counters)

    def handle_client(self, token, cmd, now):
        self.seen.append(now)
        self.deadline = now + 0.1

    def handle_message(self, msg, now):
        self.seen.append(now)

    def handle_timer(self, now):
        self.timer_calls.append((now, self.deadline))
        self.deadline = None

    def next_deadline(self):
        return self.deadline

    def messages_to_send(self):
        return []

    def replies(self):
        return []


@pytest.mark.parametrize("offset_ms", [5000, -3000])
def test_the_core_gets_the_offset_clock_and_its_timer_follows_it(tmp_path, offset_ms):
    """With +5 s, a timer computed on the real clock would wait 5.1 s (the
    bounded wait fails); with -3 s it would fire at once with a `now` before
    the deadline.  On the offset clock it fires at the deadline."""
    path = tmp_path / "offset"
    path.write_text(str(offset_ms))
    core = RecordingCore()
    server = NodeServer(parse({"port": free_port()}), core, clock=Clock(str(path)))

    async def main():
        server.submit_core(None, None, object())
        server.peer_message(p.pack({"t": "ping"}))
        await wait_until(lambda: core.timer_calls, "the core's timer", timeout=3.0)
        if server._timer is not None:
            server._timer.cancel()

    before = time.time()
    asyncio.run(main())
    after = time.time()
    assert len(core.seen) == 2
    for now in core.seen:
        assert before + offset_ms / 1000 - 0.5 <= now <= after + offset_ms / 1000 + 0.5
    (now, deadline), = core.timer_calls
    assert now >= deadline - 0.01
    assert server.stats_snapshot()["server"]["clock_offset_ms"] == offset_ms


def test_a_server_process_reads_its_clock_offset_at_start_and_on_sigusr2(tmp_path,
                                                                          monkeypatch):
    offset = tmp_path / "clock-offset"
    offset.write_text("5000\n")
    monkeypatch.setenv(CLOCK_OFFSET_ENV, str(offset))
    with ServerProcess(tmp_path / "node", "memory") as node:
        assert stats(node.port)["server"]["clock_offset_ms"] == 5000
        assert "test clock offset in use" in node.log()
        offset.write_text("-3000")
        node.proc.send_signal(signal.SIGUSR2)
        wait_for(lambda: stats(node.port)["server"]["clock_offset_ms"] == -3000, timeout=10,
                 what="the offset to be read again")
        offset.write_text("not a number")
        node.proc.send_signal(signal.SIGUSR2)
        wait_for(lambda: stats(node.port)["server"]["clock_offset_ms"] == 0, timeout=10,
                 what="a bad offset file to read as 0")
        node.assert_alive()


def test_a_server_process_without_the_variable_has_no_offset(tmp_path, monkeypatch):
    monkeypatch.delenv(CLOCK_OFFSET_ENV, raising=False)
    with ServerProcess(tmp_path / "node", "memory") as node:
        assert stats(node.port)["server"]["clock_offset_ms"] == 0
        assert "clock offset" not in node.log()
