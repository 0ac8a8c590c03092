"""Pooled connections to the other nodes: one per peer address, reused by
every message, opened on first use and reopened after a failure.  Messages
are one-way frames (command INTERNAL); the core's deadlines cover loss, so a
message that cannot be sent is dropped and counted."""
import asyncio
import logging

from rldb.net import protocol as p

log = logging.getLogger("rldb.peers")

MAX_QUEUED = 10_000  # frames buffered for a peer while its connection opens


class PeerLink:
    def __init__(self, pool, addr):
        self.pool = pool
        self.addr = addr
        self.writer = None
        self.queue = []
        self.connecting = False
        self.failures = 0
        self.retry_at = 0.0

    def send(self, frame):
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(frame)
            return
        if len(self.queue) >= MAX_QUEUED:
            self.pool.dropped += 1
            return
        self.queue.append(frame)
        loop = asyncio.get_running_loop()
        if not self.connecting and loop.time() >= self.retry_at:
            self.connecting = True
            loop.create_task(self._connect())

    async def _connect(self):
        host, _, port = self.addr.rpartition(":")
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)),
                                                    self.pool.connect_timeout)
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            self.failures += 1
            self.pool.dropped += len(self.queue)
            self.queue.clear()
            backoff = min(0.05 * 2 ** min(self.failures, 6), 2.0)
            self.retry_at = asyncio.get_running_loop().time() + backoff
            if self.failures == 1 or self.failures % 20 == 0:
                log.info("cannot reach peer %s (%s); retrying", self.addr, exc)
            return
        finally:
            self.connecting = False
        self.failures = 0
        self.writer = writer
        if self.queue:
            writer.write(b"".join(self.queue))
            self.queue.clear()
        asyncio.get_running_loop().create_task(self._drain_reads(reader, writer))

    async def _drain_reads(self, reader, writer):
        """Peers answer on their own links; this link only notices it closed."""
        try:
            while await reader.read(65536):
                pass
        except OSError:
            pass
        if self.writer is writer:
            self.writer = None
        writer.close()

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class PeerPool:
    def __init__(self, connect_timeout=1.0):
        self.connect_timeout = connect_timeout
        self.links = {}
        self.sent = 0
        self.dropped = 0

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
        link.send(b"".join(p.encode_frame(p.INTERNAL, "m", p.pack(m)) for m in messages))

    def close(self):
        for link in self.links.values():
            link.close()

    def stats(self):
        return {"peers": len(self.links), "messages_sent": self.sent,
                "messages_dropped": self.dropped,
                "connected": sum(1 for link in self.links.values() if link.writer is not None)}
