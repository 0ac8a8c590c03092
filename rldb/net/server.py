"""The asyncio shell around the node core: TCP in, bytes out.

Each connection decodes frames as they arrive, hands the commands to the
core (NodeCore, sans-IO), and writes replies back in the order the requests
came (a connection may pipeline).  The server also keeps one timer at the
core's next deadline.  Bad input gets an error reply where one can be sent,
and the connection is closed only when the byte stream cannot go on."""
import asyncio
import collections
import logging
import time

from rldb.cluster import commands as c
from rldb.net import codec
from rldb.net import protocol as p
from rldb.net.peers import PeerPool
from rldb.net.stats import ServerStats

log = logging.getLogger("rldb.server")

COMMAND_NAMES = {p.PING: "ping", p.GET: "get", p.PUT: "put", p.JOIN_CLUSTER: "join_cluster",
                 p.CLUSTER_STATE: "cluster_state", p.BGET: "bget", p.BPUT: "bput",
                 p.BDELETE: "bdelete", p.STATS: "stats", p.ADMIN: "admin"}


class _Slot:
    __slots__ = ("frame", "cmd_id", "request_id", "started", "name")

    def __init__(self, cmd_id, request_id, started):
        self.frame = None
        self.cmd_id = cmd_id
        self.request_id = request_id
        self.started = started
        self.name = COMMAND_NAMES.get(cmd_id, f"cmd{cmd_id}")


class OrderedReplies(asyncio.Protocol):
    """A client connection whose replies go out in request order: each
    request has a slot in `slots`, filled by complete(); flush() writes the
    filled slots at the front in one write, and closes once `closing` and
    nothing is left to answer."""
    server = transport = None
    closing = False

    def complete(self, slot, frame, error=False):
        slot.frame = frame
        self.server.stats.record(slot.name, time.perf_counter() - slot.started, error)

    def flush(self):
        out = []
        slots = self.slots
        while slots and slots[0].frame is not None:
            out.append(slots.popleft().frame)
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])
        if self.closing and not slots and self.transport is not None:
            self.transport.close()


class Connection(OrderedReplies):
    def __init__(self, server):
        self.server = server
        self.decoder = p.FrameDecoder()
        self.slots = collections.deque()
        self.transport = None
        self.peer = None
        self.closing = False
        self.last_activity = time.monotonic()
        self._idle_handle = None
        self.reading = False  # in data_received: replies are written once, at its end

    # asyncio callbacks
    def connection_made(self, transport):
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        if not self.server.admit(self):
            log.warning("refusing connection from %s: max_connections (%d) reached",
                        self.peer, self.server.cfg.max_connections)
            transport.abort()
            return
        self._arm_idle()

    def connection_lost(self, exc):
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        self.closing = True
        self.server.forget(self)

    def data_received(self, data):
        self.last_activity = time.monotonic()
        if self.closing:
            return
        server = self.server
        try:
            frames = self.decoder.feed(data)
        except p.ProtocolError as exc:
            frames = []
            self._protocol_error(exc)
        self.reading = True  # replies to this read go out in one write, below
        server.hold()
        try:
            for cmd_id, request_id, payload in frames:
                if cmd_id == p.INTERNAL:
                    server.peer_message(payload)
                    continue
                slot = _Slot(cmd_id, request_id, time.perf_counter())
                self.slots.append(slot)
                try:
                    command = codec.decode_request(cmd_id, request_id, payload)
                except p.ProtocolError as exc:
                    server.stats.protocol_errors += 1
                    log.info("request %s from %s: %s", request_id, self.peer, exc)
                    self.complete(slot, codec.encode_error(cmd_id, request_id, exc.error), True)
                    continue
                server.submit(self, slot, command)
        finally:
            server.release()
            self.reading = False
        if frames and not self.closing:
            try:
                self.decoder.feed(b"")  # a bad frame after good ones in the same read
            except p.ProtocolError as exc:
                self._protocol_error(exc)
        self.flush()

    def eof_received(self):
        if self.decoder.buffered:
            log.info("client %s closed the connection in the middle of a frame", self.peer)
        return False

    # replies
    def _protocol_error(self, exc):
        self.server.stats.protocol_errors += 1
        log.warning("closing connection from %s: %s", self.peer, exc)
        slot = _Slot(exc.cmd_id, exc.request_id, time.perf_counter())
        slot.frame = codec.encode_error(exc.cmd_id, exc.request_id or p.UNKNOWN_REQUEST_ID,
                                        exc.error)
        self.slots.append(slot)
        self.closing = True

    def deliver(self, slot, reply, error):
        """The core's reply to the request of slot."""
        self.complete(slot, codec.encode_reply(slot.cmd_id, slot.request_id, reply), error)
        if not self.reading:
            self.flush()

    # idle timeout
    def _arm_idle(self, delay=None):
        timeout = self.server.cfg.idle_timeout_ms / 1000
        self._idle_handle = asyncio.get_running_loop().call_later(
            timeout if delay is None else delay, self._check_idle)

    def _check_idle(self):
        timeout = self.server.cfg.idle_timeout_ms / 1000
        idle = time.monotonic() - self.last_activity
        if idle >= timeout and not self.slots:
            log.info("closing idle connection from %s after %.1f s", self.peer, idle)
            self.transport.close()
        else:
            self._arm_idle(max(timeout - idle, 0.05))

    @property
    def pending(self):
        return len(self.slots)


class NodeServer:
    """Connections, the core, its timer, and what sits between them."""

    def __init__(self, cfg, core, engine=None):
        self.cfg = cfg
        self.core = core
        self.engine = engine
        self.stats = ServerStats()
        self.connections = set()
        self._pending = {}
        self._held = 0
        self._next_token = 0
        self._server = None
        self._resp_server = None
        self._timer = None
        self._timer_at = None
        self.peers = PeerPool()
        self.started = time.time()
        self.stop_requested = None  # an asyncio.Event, set when the core stops (it left)

    async def start(self):
        loop = asyncio.get_running_loop()
        self.stop_requested = asyncio.Event()
        self._server = await loop.create_server(lambda: Connection(self), self.cfg.host,
                                                self.cfg.port, reuse_address=True, backlog=1024)
        if self.cfg.resp_port:
            from rldb.net.resp_server import RespConnection
            try:
                self._resp_server = await loop.create_server(
                    lambda: RespConnection(self), self.cfg.host, self.cfg.resp_port,
                    reuse_address=True, backlog=1024)
            except OSError:
                self._server.close()
                raise
            log.info("node %s speaks RESP (Redis) on %s:%d", self.cfg.node_id, self.cfg.host,
                     self.cfg.resp_port)
        self._schedule_timer()
        log.info("node %s listening on %s (engine %s)", self.cfg.node_id, self.cfg.addr,
                 self.cfg.storage_engine)
        return self

    @property
    def port(self):
        return self._server.sockets[0].getsockname()[1]

    def resp_info(self, section):
        from rldb.net.resp_server import info_text
        return info_text(self, section, self.cfg.resp_port)

    def admit(self, conn):
        if len(self.connections) >= self.cfg.max_connections:
            self.stats.connections_refused += 1
            return False
        self.connections.add(conn)
        self.stats.connections_open = len(self.connections)
        self.stats.connections_total += 1
        return True

    def forget(self, conn):
        self.connections.discard(conn)
        self.stats.connections_open = len(self.connections)

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
        self.core.handle_client(token, command, time.time())
        if not self._held:
            self._drain()

    def peer_message(self, payload):
        try:
            msg = p.parse_msgpack(payload, p.INTERNAL, "")
        except p.ProtocolError:
            self.stats.protocol_errors += 1
            return
        self.core.handle_message(msg, time.time())
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
        self._timer = loop.call_later(max(0.0, deadline - time.time()), self._on_timer)

    def _on_timer(self):
        self._timer = self._timer_at = None
        self.core.handle_timer(time.time())
        self._drain()
        self._schedule_timer()

    def stats_snapshot(self):
        snap = {"node_id": self.cfg.node_id, "addr": self.cfg.addr,
                "uptime_s": round(time.time() - self.started, 1), "server": self.stats.summary(),
                "peers": self.peers.stats(), "cluster": self.core.counters}
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
            conn.flush()
            if conn.transport is not None:
                conn.transport.close()
        if self._timer is not None:
            self._timer.cancel()
        self.peers.close()
        if self._server is not None:
            await self._server.wait_closed()
        if self.engine is not None:
            self.engine.close()
        log.info("node %s stopped", self.cfg.node_id)
