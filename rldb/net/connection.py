"""What both client doors share (the native protocol and RESP).

A client connection here answers in request order (a client may pipeline,
and the core's replies come back in any order), is admitted against one
max_connections budget for the whole node, is closed once it has been idle
for idle_timeout_ms, and is closed after its last reply once `closing` is
set.  Each door adds only its own framing and commands on top; the doors
import this module and never each other, and the node server, which listens
on both ports, imports both."""
import asyncio
import collections
import logging
import time

log = logging.getLogger("rldb.server")


class Admission:
    """The node's open client connections, both doors counted together:
    a connection costs the node the same whichever protocol it speaks, so
    max_connections is one budget.  Keeps the connection figures of
    ServerStats up to date."""

    def __init__(self, limit, stats):
        self.limit = limit
        self.stats = stats
        self.open = set()

    def admit(self, conn):
        """True if conn may stay (it is then counted); False if the node is full."""
        if len(self.open) >= self.limit:
            self.stats.connections_refused += 1
            return False
        self.open.add(conn)
        self.stats.connections_open = len(self.open)
        self.stats.connections_total += 1
        return True

    def forget(self, conn):
        """conn is gone (refused ones too: forgetting those changes nothing)."""
        self.open.discard(conn)
        self.stats.connections_open = len(self.open)

    def __len__(self):
        return len(self.open)

    def check(self):
        if len(self.open) > self.limit:
            raise AssertionError(f"{len(self.open)} connections open, over the limit {self.limit}")
        if self.stats.connections_open != len(self.open):
            raise AssertionError(f"stats say {self.stats.connections_open} connections open, "
                                 f"{len(self.open)} are")
        if self.stats.connections_total < len(self.open):
            raise AssertionError("fewer connections admitted in total than are open")


class ClientConnection(asyncio.Protocol):
    """One client connection of either door.

    Each request gets a slot in `slots` (the door's slot class, with at
    least `frame`, `name` and `started`); complete() fills it and flush()
    writes the filled slots at the front in one write.  While `reading`
    (inside the door's data_received) replies wait for the single flush at
    its end.  A door defines refuse() (how it turns a connection away when
    the node is full) and calls touch() whenever bytes arrive."""

    label = "connection"  # how log lines name this door's connections

    def __init__(self, server):
        self.server = server
        self.slots = collections.deque()
        self.transport = None
        self.peer = None
        self.closing = False
        self.reading = False
        self.last_activity = time.monotonic()
        self._idle_handle = None

    # ---- asyncio callbacks --------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        if not self.server.admission.admit(self):
            self.refuse()
            return
        self._arm_idle()

    def connection_lost(self, exc):
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        self.closing = True
        self.server.admission.forget(self)

    def refuse(self):
        """Turns the connection away: the node has max_connections open."""
        raise NotImplementedError

    # ---- replies ------------------------------------------------------------------------------

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

    def close(self):
        """Writes the replies that are ready and closes (the node stops)."""
        self.flush()
        if self.transport is not None:
            self.transport.close()

    @property
    def pending(self):
        return len(self.slots)

    # ---- idle timeout -------------------------------------------------------------------------

    def touch(self):
        """Bytes came: the idle clock starts again."""
        self.last_activity = time.monotonic()

    def _arm_idle(self, delay=None):
        timeout = self.server.cfg.idle_timeout_ms / 1000
        self._idle_handle = asyncio.get_running_loop().call_later(
            timeout if delay is None else delay, self._check_idle)

    def _check_idle(self):
        """Closes a connection silent for idle_timeout_ms with nothing to
        answer; one waiting for the core's replies is not idle."""
        timeout = self.server.cfg.idle_timeout_ms / 1000
        idle = time.monotonic() - self.last_activity
        if idle >= timeout and not self.slots:
            log.info("closing idle %s from %s after %.1f s", self.label, self.peer, idle)
            self.transport.close()
        else:
            self._arm_idle(max(timeout - idle, 0.05))
