"""The node core: every decision a node makes, with no I/O (sans-IO).

The asyncio shell (rldb.net.server) and the simulator feed it client
requests, peer messages and timer ticks with the current time, and carry out
what it asks: replies to send, messages to peers, the next deadline.  Time
comes in as `now` (seconds); randomness from the rng it was given."""
from rldb.cluster import commands as c
from rldb.cluster import context, dvv, objects
from rldb.errors import CorruptionError, InvalidArgumentError, RldbError


class NodeCore:
    def __init__(self, node_id, store, addr=None):
        self.node_id = node_id
        self.addr = addr or node_id
        self.store = store
        self.tick = 0
        self._replies = []

    # ---- the interface the shells drive -----------------------------------------------

    def handle_client(self, request_id, command, now):
        """Takes a client command; its reply comes out of replies()."""
        try:
            reply = self._execute(command, now)
        except InvalidArgumentError as exc:
            reply = c.invalid(str(exc))
        except CorruptionError as exc:
            reply = c.internal(f"corrupt data: {exc}")
        except RldbError as exc:
            reply = c.internal(str(exc))
        self._replies.append((request_id, reply))

    def handle_timer(self, now):
        self.tick += 1

    def replies(self):
        out, self._replies = self._replies, []
        return out

    def messages_to_send(self):
        return []

    def next_deadline(self):
        return None

    # ---- commands ---------------------------------------------------------------------

    def _execute(self, cmd, now):
        if isinstance(cmd, c.Get):
            return self._get(cmd.key)
        if isinstance(cmd, c.Put):
            return self._write(cmd.key, cmd.value, cmd.context, now)
        if isinstance(cmd, c.Delete):
            return self._write(cmd.key, None, cmd.context, now)
        if isinstance(cmd, c.Ping):
            return c.Ok("PONG")
        if isinstance(cmd, c.ClusterState):
            return c.Ok([{"addr": self.addr, "status": "Ok", "tick": self.tick}])
        if isinstance(cmd, c.Stats):
            return c.Ok({"node_id": self.node_id, "engine": self.store.engine.stats()})
        if isinstance(cmd, c.JoinCluster):
            return c.invalid("this node runs standalone; clustering needs a cluster config")
        return c.invalid(f"unknown command {cmd!r}")

    def _get(self, key):
        clock = self.store.get(key)
        return read_reply(key, clock)

    def _write(self, key, value, ctx, now):
        current = self.store.get(key)
        if value is None and ctx is None:
            # A delete without a context removes every version this node sees
            # (as Riak's clients do by reading first); a put without one is a sibling.
            vector = dvv.join(current)
        else:
            vector = context.decode(ctx)
        version = (value, int(now * 1000))
        clock = dvv.update(dvv.new(version, vector), current, self.node_id)
        self.store.put(key, clock)
        return c.Ok()


def read_reply(key, clock):
    """The reply to a read of key: NotFound when every version is a tombstone."""
    versions = sorted((ts, v) for v, ts in dvv.values(clock) if v is not None)
    if not versions:
        return c.not_found(key)
    return c.Ok(c.GetResult([v for _, v in versions], context.encode(dvv.join(clock)),
                            [ts for ts, _ in versions]))
