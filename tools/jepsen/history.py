"""The history of a run (every operation, as Jepsen records it) and the one
rule that turns a client's outcome into ok / fail / info.

Why the rule is here, once: it is the interface between the harness and
the server.  A write that succeeded is ok.  An error whose text says
"Indeterminate", a client-side timeout or a lost connection is info: the
write may or may not have been applied.  Any other error the server gives
a write is fail, which the server promises means "applied nowhere", so the
checker counts every such value that is seen later.  A request that was
never sent (the connection could not be opened) is fail too."""
import asyncio
import json
import time

from rldb.errors import ConnectionLostError, RequestError

OK, FAIL, INFO = "ok", "fail", "info"


class NotSent(Exception):
    """The request never left the client (no connection could be opened)."""


def classify_write_error(exc):
    """(outcome, text) for an exception raised by a put or a delete."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, NotSent):
        return FAIL, text
    if isinstance(exc, RequestError):
        detail = f"{exc} {exc.fields!r}"
        return (INFO if "Indeterminate" in detail or "Indeterminate" in exc.kind else FAIL), text
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, ConnectionLostError, OSError)):
        return INFO, text
    return INFO, text  # anything unforeseen: we cannot tell whether it was applied


def is_connection_trouble(exc):
    return isinstance(exc, (NotSent, TimeoutError, asyncio.TimeoutError, ConnectionLostError,
                            OSError))


class History:
    """Every op of a run, in the order they completed; times are seconds
    since t0 (time.monotonic())."""

    def __init__(self, t0=None):
        self.t0 = time.monotonic() if t0 is None else t0
        self.ops = []
        self._ids = 0

    def now(self):
        return round(time.monotonic() - self.t0, 4)

    def begin(self, client, node, workload, f, key):
        """A new op record, started now; finish() it."""
        self._ids += 1
        return {"id": self._ids, "client": client, "node": node, "workload": workload, "f": f,
                "key": key, "value": None, "start": self.now(), "end": None, "type": None,
                "stage": None, "error": None}

    def finish(self, op, outcome, error=None, stage=None):
        op["end"] = self.now()
        op["type"] = outcome
        if error is not None:
            op["error"] = error
        if stage is not None:
            op["stage"] = stage
        self.ops.append(op)
        return op

    def add(self, record):
        """A record made elsewhere (final reads)."""
        self.ops.append(record)

    def write(self, path):
        with open(path, "w", encoding="utf-8") as f:
            for op in self.ops:
                f.write(json.dumps(op, separators=(",", ":")) + "\n")


def read_history(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class Session:
    """One client's connection to its node, through cluster.client():
    reopened after it is lost, with a pause after connection trouble so
    that a dead node is not hammered."""

    def __init__(self, cluster, node):
        self.cluster = cluster
        self.node = node
        self.client = cluster.client(node)
        self.trouble = False

    async def ensure_connected(self):
        """Raises NotSent when no connection can be opened."""
        try:
            await self.client.connect()
        except (ConnectionLostError, OSError, asyncio.TimeoutError) as exc:
            raise NotSent(str(exc)) from None

    async def read(self, key, r=None):
        """GetResult or None (NotFound); raises what the client raises."""
        await self.ensure_connected()
        return await self.client.get(key, r=r)

    async def reset(self):
        """A fresh client after trouble: the old connection may be wedged."""
        await self.close()
        self.client = self.cluster.client(self.node)

    async def close(self):
        try:
            await self.client.close()
        except Exception:  # noqa: BLE001 - closing a broken connection
            pass
