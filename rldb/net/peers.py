"""Pooled connections to the other nodes: one per peer address, reused by
every message, opened on first use and reopened after a failure.  Messages
are one-way frames (command INTERNAL); the core's deadlines cover loss, so a
message that cannot be sent is dropped and counted.

No message stays on a link longer than the send bound (the configuration's
peer_send_timeout_ms): the cluster core's tombstone collection and deadlines
assume that no message older than that is delivered from a link.  A cut that
drops packets does not break a TCP connection, so without the bound what was
written before a partition would wait in the send buffers (asyncio's and the
kernel's) and arrive after it heals.  Hence:

- a frame waits for a connection being opened at most the bound (the connect
  timeout is no longer), and one sent while the link backs off after a failed
  connect is dropped at once;
- every write is remembered with its time and where it ends in the link's
  byte stream.  While one is outstanding, one timer is armed for the oldest.
  When it fires, the peer has acknowledged what was written less asyncio's
  write buffer and the kernel's send queue (TIOCOUTQ: unsent and
  unacknowledged bytes).  A write not acknowledged by the time it is the
  bound old aborts the connection (transport.abort(): what it holds is thrown
  away, not sent), its messages are counted dropped, and the next send
  reconnects;
- TCP_USER_TIMEOUT is the bound too, so the kernel also gives up on a
  connection whose data stays unacknowledged that long.

What the peer's kernel has acknowledged but the peer has not read yet (a
paused peer process) is beyond the sender's reach."""
import asyncio
import collections
import fcntl
import logging
import socket
import struct
import termios

from rldb.net import protocol as p

log = logging.getLogger("rldb.peers")

MAX_BACKOFF = 0.5    # s between connects to a peer that is down: short, as what is sent
                     # meanwhile is dropped, and a peer back from a partition must hear
                     # from us soon (a heartbeat missed for long marks us down)
MAX_QUEUED = 10_000  # frames buffered for a peer while its connection opens
_TIOCOUTQ = getattr(termios, "TIOCOUTQ", None)


def kernel_unacked(sock):
    """Bytes in sock's kernel send queue, not sent or not acknowledged yet
    (0 where the platform cannot tell)."""
    if _TIOCOUTQ is None:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), _TIOCOUTQ, b"\0" * 4))[0]
    except OSError:
        return 0


def tune_socket(sock, send_timeout_ms):
    """TCP_NODELAY (messages are small and one-way) and TCP_USER_TIMEOUT."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, send_timeout_ms)


class PeerLink:
    def __init__(self, pool, addr):
        self.pool = pool
        self.addr = addr
        self.writer = None
        self.sock = None
        self.queue = []           # frames waiting for the connection being opened
        self.queued = 0           # the messages in them
        self.queued_since = 0.0   # when the first of them was queued
        self.connecting = False
        self.failures = 0
        self.retry_at = 0.0
        self.written = 0          # bytes handed to the current connection
        self.unacked = collections.deque()  # (end in the stream, time, messages), oldest first
        self.timer = None

    def send(self, frame, count):
        loop = asyncio.get_running_loop()
        if self.writer is not None:
            if not self.writer.is_closing():
                self._write(frame, count, loop.time())
                return
            self._forget()
        if len(self.queue) >= MAX_QUEUED or (not self.connecting and loop.time() < self.retry_at):
            self.pool.dropped += count
            return
        if not self.queue:
            self.queued_since = loop.time()
        self.queue.append(frame)
        self.queued += count
        if not self.connecting:
            self.connecting = True
            loop.create_task(self._connect())

    async def _connect(self):
        host, _, port = self.addr.rpartition(":")
        writer = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)),
                                                    self.pool.connect_timeout)
            tune_socket(writer.get_extra_info("socket"), self.pool.send_timeout_ms)
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            if writer is not None:
                writer.transport.abort()
            self.failures += 1
            self.pool.dropped += self.queued
            self.queue.clear()
            self.queued = 0
            backoff = min(0.05 * 2 ** min(self.failures, 6), MAX_BACKOFF)
            self.retry_at = asyncio.get_running_loop().time() + backoff
            if self.failures == 1 or self.failures % 20 == 0:
                log.info("cannot reach peer %s (%s); retrying", self.addr, exc)
            return
        finally:
            self.connecting = False
        self.failures = 0
        self.writer, self.sock, self.written = writer, writer.get_extra_info("socket"), 0
        if self.queue:
            self._write(b"".join(self.queue), self.queued, self.queued_since)
            self.queue.clear()
            self.queued = 0
        asyncio.get_running_loop().create_task(self._drain_reads(reader, writer))

    def _write(self, data, count, since):
        self.writer.write(data)
        self.written += len(data)
        self.unacked.append((self.written, since, count))
        if self.timer is None:
            self._arm()

    def _arm(self):
        due = self.unacked[0][1] + self.pool.send_timeout
        self.timer = asyncio.get_running_loop().call_at(due, self._check)

    def _check(self):
        """The timer: forgets the writes the peer acknowledged; aborts the
        connection if the oldest left is the bound old."""
        self.timer = None
        if self.writer is None:
            return
        pending = self.writer.transport.get_write_buffer_size() + kernel_unacked(self.sock)
        acked = self.written - pending
        while self.unacked and self.unacked[0][0] <= acked:
            self.unacked.popleft()
        if not self.unacked:
            return
        if asyncio.get_running_loop().time() < self.unacked[0][1] + self.pool.send_timeout:
            self._arm()
            return
        lost = sum(count for _, _, count in self.unacked)
        self.pool.links_reset += 1
        self.pool.dropped += lost
        log.warning("peer %s: %d byte(s) not drained within %d ms; link reset, %d message(s) "
                    "dropped", self.addr, pending, self.pool.send_timeout_ms, lost)
        self.writer.transport.abort()
        self._forget()

    def _forget(self):
        """Drops what is known of the current connection (it is gone)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.unacked.clear()
        self.writer = self.sock = None

    async def _drain_reads(self, reader, writer):
        """Peers answer on their own links; this link only notices it closed."""
        try:
            while await reader.read(65536):
                pass
        except OSError:
            pass
        if self.writer is writer:
            self._forget()
        writer.close()

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self._forget()


class PeerPool:
    """The links to every peer.  send_timeout_ms is the bound on how long a
    message may stay on a link (see the module's docstring)."""

    def __init__(self, send_timeout_ms=2000, connect_timeout=1.0):
        self.send_timeout_ms = send_timeout_ms
        self.send_timeout = send_timeout_ms / 1000
        self.connect_timeout = min(connect_timeout, self.send_timeout)
        self.links = {}
        self.sent = 0
        self.dropped = 0
        self.links_reset = 0

    def send(self, addr, message):
        self.send_many(addr, [message])

    def send_many(self, addr, messages):
        """Messages for one peer, written together."""
        if not isinstance(addr, str) or ":" not in addr:
            raise ValueError(f"not a peer address: {addr!r}")
        link = self.links.get(addr)
        if link is None:
            link = self.links[addr] = PeerLink(self, addr)
        self.sent += len(messages)
        link.send(b"".join(p.encode_frame(p.INTERNAL, "m", p.pack(m)) for m in messages),
                  len(messages))

    def heard_from(self, addr):
        """A peer that sends us a message is up: a link to it waiting out a
        connect backoff (from while it was down or restarting) may try again
        at once, so our answers to it are not dropped."""
        link = self.links.get(addr)
        if link is not None and link.writer is None:
            link.retry_at = 0.0

    def close(self):
        for link in self.links.values():
            link.close()

    def stats(self):
        return {"peers": len(self.links), "messages_sent": self.sent,
                "messages_dropped": self.dropped, "links_reset": self.links_reset,
                "send_timeout_ms": self.send_timeout_ms,
                "connected": sum(1 for link in self.links.values() if link.writer is not None)}
