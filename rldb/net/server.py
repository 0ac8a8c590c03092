"""The node server: both doors' listeners, the node core, its timer, and
what sits between them.

The core (NodeCore, sans-IO) decides; this shell feeds it the commands the
doors decode (rldb.net.native_server on `port`, rldb.net.resp_server on
`resp_port`), sends what it wants sent to other nodes, hands its replies
back to the connections that asked, and keeps one timer at its next
deadline.

The core takes its time from outside (every call gets `now`).  For tests
only, RLDB_CLOCK_OFFSET_FILE shifts that time (see Clock)."""
import asyncio
import logging
import os
import signal
import time

from rldb.cluster import commands as c
from rldb.errors import RldbError
from rldb.net import codec
from rldb.net import protocol as p
from rldb.net.connection import Admission
from rldb.net.native_server import NativeConnection
from rldb.net.peers import PeerPool
from rldb.net.resp_server import RespConnection
from rldb.net.stats import ServerStats

log = logging.getLogger("rldb.server")


class ListenError(RldbError, OSError):
    """A listener could not be opened.  Names the address that failed and
    the configuration key it came from, so that an operator with two ports
    configured knows which one to change."""

    def __init__(self, host, port, key, exc):
        self.host, self.port, self.key = host, port, key
        reason = exc.strerror or str(exc)
        super().__init__(f"cannot listen on {host}:{port} ({key}): {reason}")
        self.errno = exc.errno


CLOCK_OFFSET_ENV = "RLDB_CLOCK_OFFSET_FILE"


class Clock:
    """The time the core is given: time.time(), plus an offset for tests.

    Test-only, for a clock-skew nemesis: when RLDB_CLOCK_OFFSET_FILE names a
    file, it holds an integer number of milliseconds (negative too), read at
    start and again on every SIGUSR2; a missing or bad file is offset 0 and a
    warning.  It is not a configuration key on purpose, so that no
    production configuration can skew a node's clock by accident."""

    def __init__(self, path=None):
        self.path = path
        self.offset_ms = 0
        if path is not None:
            log.warning("test clock offset in use (%s=%s): this node's clock is skewed on "
                        "purpose", CLOCK_OFFSET_ENV, path)
            self.reload()

    @classmethod
    def from_env(cls):
        return cls(os.environ.get(CLOCK_OFFSET_ENV) or None)

    def reload(self):
        try:
            with open(self.path, encoding="ascii") as f:
                self.offset_ms = int(f.read().strip())
        except (OSError, ValueError) as exc:
            log.warning("clock offset file %s unusable (%s); offset 0", self.path, exc)
            self.offset_ms = 0
        log.warning("test clock offset: %+d ms", self.offset_ms)

    def now(self):
        return time.time() + self.offset_ms / 1000


class NodeServer:
    """Connections, the core, its timer, and what sits between them."""

    def __init__(self, cfg, core, engine=None, clock=None):
        self.cfg = cfg
        self.clock = Clock.from_env() if clock is None else clock
        self.core = core
        self.engine = engine
        self.stats = ServerStats()
        self.admission = Admission(cfg.max_connections, self.stats)
        self._pending = {}
        self._held = 0
        self._next_token = 0
        self._server = None
        self._resp_server = None
        self._timer = None
        self._timer_at = None
        self._clock_signal = False  # SIGUSR2 reloads the test clock offset
        self.peers = PeerPool(cfg.peer_send_timeout_ms)
        self.started = time.time()
        self.stop_requested = None  # an asyncio.Event, set when the core stops (it left)

    async def start(self):
        """Opens the listeners (the RESP one only if resp_port is set).
        Raises ListenError naming the one that failed; none stays open then."""
        loop = asyncio.get_running_loop()
        self.stop_requested = asyncio.Event()
        self._server = await self._listen(loop, NativeConnection, self.cfg.port, "port")
        if self.cfg.resp_port:
            try:
                self._resp_server = await self._listen(loop, RespConnection, self.cfg.resp_port,
                                                       "resp_port")
            except ListenError:
                self._server.close()
                raise
            log.info("node %s speaks RESP (Redis) on %s:%d", self.cfg.node_id, self.cfg.host,
                     self.cfg.resp_port)
        if self.clock.path is not None:
            try:
                loop.add_signal_handler(signal.SIGUSR2, self.reload_clock)
                self._clock_signal = True
            except (RuntimeError, ValueError) as exc:  # not the main thread
                log.warning("SIGUSR2 will not reload the clock offset: %s", exc)
        self._schedule_timer()
        log.info("node %s listening on %s (engine %s)", self.cfg.node_id, self.cfg.addr,
                 self.cfg.storage_engine)
        return self

    async def _listen(self, loop, door, port, key):
        try:
            return await loop.create_server(lambda: door(self), self.cfg.host, port,
                                            reuse_address=True, backlog=1024)
        except OSError as exc:
            raise ListenError(self.cfg.host, port, key, exc) from None

    @property
    def port(self):
        return self._server.sockets[0].getsockname()[1]

    @property
    def connections(self):
        """The open client connections of both doors."""
        return self.admission.open

    # ---- requests -------------------------------------------------------------------------

    def submit(self, conn, slot, command):
        if isinstance(command, c.Stats):
            reply = c.Ok(self.stats_snapshot())
            conn.complete(slot, codec.encode_reply(slot.cmd_id, slot.request_id, reply))
            return
        self.submit_core(conn, slot, command)

    def submit_core(self, conn, slot, command):
        """Hands a command to the core; conn.deliver(slot, reply, error)
        gets its reply (now or later)."""
        token = self._next_token
        self._next_token += 1
        self._pending[token] = (conn, slot)
        self.core.handle_client(token, command, self.clock.now())
        if not self._held:
            self._drain()

    def peer_message(self, payload):
        try:
            msg = p.parse_msgpack(payload, p.INTERNAL, "")
        except p.ProtocolError:
            self.stats.protocol_errors += 1
            return
        if isinstance(msg, dict) and isinstance(msg.get("addr"), str):
            self.peers.heard_from(msg["addr"])
        self.core.handle_message(msg, self.clock.now())
        if not self._held:
            self._drain()

    def hold(self):
        """While held (a connection working through one read), what the core
        wants sent is sent once, at release(), not after every request."""
        self._held += 1

    def release(self):
        self._held -= 1
        if not self._held:
            self._drain()

    def _drain(self):
        by_peer = {}
        for addr, msg in self.core.messages_to_send():
            by_peer.setdefault(addr, []).append(msg)
        for addr, msgs in by_peer.items():
            try:
                self.peers.send_many(addr, msgs)
            except (TypeError, ValueError) as exc:  # a malformed address came in a message
                log.warning("dropping %d message(s) to %r: %s", len(msgs), addr, exc)
        for token, reply in self.core.replies():
            entry = self._pending.pop(token, None)
            if entry is None:
                continue
            conn, slot = entry
            error = isinstance(reply, c.Err) and reply.kind != "NotFound"
            if error:
                log.info("request %s (%s): %s %s", getattr(slot, "request_id", "-"), slot.name,
                         reply.kind, reply.fields.get("reason", ""))
            conn.deliver(slot, reply, error)
        if self.core.stopped and not self.stop_requested.is_set():
            log.info("node %s left the cluster; stopping", self.cfg.node_id)
            self.stop_requested.set()
        self._schedule_timer()

    def _schedule_timer(self):
        deadline = self.core.next_deadline()
        if deadline is None or deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = deadline
        self._timer = loop.call_later(max(0.0, deadline - self.clock.now()), self._on_timer)

    def _on_timer(self):
        self._timer = self._timer_at = None
        self.core.handle_timer(self.clock.now())
        self._drain()
        self._schedule_timer()

    def reload_clock(self):
        """SIGUSR2: the test clock offset read again; the timer follows it."""
        self.clock.reload()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None
        self._schedule_timer()

    def stats_snapshot(self):
        server = self.stats.summary()
        server["clock_offset_ms"] = self.clock.offset_ms
        snap = {"node_id": self.cfg.node_id, "addr": self.cfg.addr,
                "uptime_s": round(time.time() - self.started, 1), "server": server,
                "peers": self.peers.stats(), "cluster": self.core.figures()}
        if self.engine is not None:
            try:
                snap["engine"] = self.engine.stats()
            except Exception as exc:  # a stats call must not take the node down
                snap["engine"] = {"error": str(exc)}
        return snap

    # ---- shutdown -----------------------------------------------------------------------------

    async def shutdown(self, grace=5.0):
        """Stops accepting, lets requests in flight finish (up to grace
        seconds), closes the connections and the engine."""
        if self._server is not None:
            self._server.close()
        if self._resp_server is not None:
            self._resp_server.close()
        deadline = time.monotonic() + grace
        while self._pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.close()
        if self._timer is not None:
            self._timer.cancel()
        if self._clock_signal:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR2)
        self.peers.close()
        if self._server is not None:
            await self._server.wait_closed()
        if self.engine is not None:
            self.engine.close()
        log.info("node %s stopped", self.cfg.node_id)
