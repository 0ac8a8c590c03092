"""The native door: rldb's own framed protocol (JSON commands of the
original project, binary msgpack ones of ours, node-to-node messages) on
`port`.

Each connection decodes frames as they arrive, hands the commands to the
node server (and through it to the core), and writes replies back in the
order the requests came.  Bad input gets an error reply where one can be
sent, and the connection is closed only when the byte stream cannot go on.
Ordering, admission and the idle timeout come from the shared
ClientConnection."""
import logging
import time

from rldb.net import codec
from rldb.net import protocol as p
from rldb.net.connection import ClientConnection

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


class NativeConnection(ClientConnection):
    def __init__(self, server):
        super().__init__(server)
        self.decoder = p.FrameDecoder()

    def refuse(self):
        log.warning("refusing connection from %s: max_connections (%d) reached",
                    self.peer, self.server.cfg.max_connections)
        self.transport.abort()

    def data_received(self, data):
        self.touch()
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

    # ---- replies ------------------------------------------------------------------------------

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
