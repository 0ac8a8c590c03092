"""Clients for a node: AsyncClient (asyncio) and Client (blocking).

One connection, reused; requests may be pipelined (each carries its own
request id and replies are matched to it).  get() returns a GetResult with
every sibling and the context to pass back to put(), or None when the key is
absent; failures raise rldb.errors.RequestError (QuorumNotReachedError for
quorum failures), ConnectionLostError, or TimeoutError."""
import asyncio
import itertools
import threading

from rldb.cluster.commands import GetResult
from rldb.errors import ConnectionLostError, QuorumNotReachedError, RequestError
from rldb.net import protocol as p


def _raise_for(body):
    if "err" in body:
        err = dict(body["err"])
        kind = err.pop("kind", "Internal")
        cls = QuorumNotReachedError if kind == "QuorumNotReached" else RequestError
        raise cls(kind, err)
    if "Err" in body:
        err = body["Err"]
        kind, fields = next(iter(err.items())) if isinstance(err, dict) else (err, {})
        cls = QuorumNotReachedError if kind == "QuorumNotReached" else RequestError
        raise cls(kind, fields if isinstance(fields, dict) else {"detail": fields})
    return body.get("ok", body.get("Ok"))


class AsyncClient:
    def __init__(self, host="127.0.0.1", port=3001, timeout=5.0):
        self.host = host
        self.port = port
        self.timeout = timeout
        self._reader = self._writer = None
        self._waiting = {}
        self._ids = itertools.count(1)
        self._read_task = None
        self._lock = asyncio.Lock()

    async def connect(self):
        async with self._lock:  # one connection, however many first requests race
            if self._writer is None:
                await self._open()
        return self

    async def _open(self):
        if self._writer is None:
            try:
                self._reader, self._writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), self.timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                raise ConnectionLostError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
            self._read_task = asyncio.get_running_loop().create_task(self._read_loop())

    async def _read_loop(self):
        decoder = p.FrameDecoder(max_frame=p.MAX_REPLY_FRAME)
        error = ConnectionLostError(f"connection to {self.host}:{self.port} closed")
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    break
                for cmd_id, request_id, payload in decoder.feed(data):
                    future = self._waiting.pop(request_id, None)
                    if future is not None and not future.done():
                        future.set_result((cmd_id, payload))
        except (OSError, p.ProtocolError) as exc:
            error = ConnectionLostError(f"connection to {self.host}:{self.port} failed: {exc}")
        finally:
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(error)
            self._waiting.clear()
            self._writer = None

    async def request(self, cmd_id, payload):
        """Sends one frame, returns the reply's payload bytes."""
        if self._writer is None:
            await self.connect()
        request_id = str(next(self._ids))
        future = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        self._writer.write(p.encode_frame(cmd_id, request_id, payload))
        try:
            _, reply = await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError:
            self._waiting.pop(request_id, None)
            raise TimeoutError(f"no reply from {self.host}:{self.port} within {self.timeout} s") from None
        return reply

    async def _binary(self, cmd_id, fields):
        return _raise_for(p.parse_msgpack(await self.request(cmd_id, p.pack(fields)), cmd_id, ""))

    async def _json(self, cmd_id, obj):
        return _raise_for(p.parse_json(await self.request(cmd_id, p.json_body(obj)), cmd_id, ""))

    async def ping(self):
        return (await self._json(p.PING, None))["message"]

    async def get(self, key, r=None, pr=None):
        fields = {"key": _bytes(key)}
        if r is not None:
            fields["r"] = r
        if pr is not None:
            fields["pr"] = pr
        try:
            value = await self._binary(p.BGET, fields)
        except RequestError as exc:
            if exc.kind == "NotFound":
                return None
            raise
        return GetResult(value["values"], value["context"], value.get("timestamps", []))

    async def put(self, key, value, context=None, w=None, pw=None):
        fields = {"key": _bytes(key), "value": _bytes(value)}
        await self._binary(p.BPUT, _with_options(fields, context=context, w=w, pw=pw))

    async def delete(self, key, context=None, w=None, pw=None):
        fields = {"key": _bytes(key)}
        await self._binary(p.BDELETE, _with_options(fields, context=context, w=w, pw=pw))

    async def stats(self):
        return await self._binary(p.STATS, {})

    async def admin(self, op, partition=None, rebuild=False):
        """An operator command: status, ring, transfers, repair, leave."""
        fields = {"op": op}
        if partition is not None:
            fields["partition"] = partition
        if rebuild:
            fields["rebuild"] = True
        return await self._binary(p.ADMIN, fields)

    async def cluster_state(self):
        return (await self._json(p.CLUSTER_STATE, None))["nodes"]

    async def join_cluster(self, known_node_addr):
        return (await self._json(p.JOIN_CLUSTER, {"known_cluster_node_addr": known_node_addr}))["message"]

    async def close(self):
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
        if self._read_task is not None:
            self._read_task.cancel()
        self._writer = None

    async def __aenter__(self):
        return await self.connect()

    async def __aexit__(self, *exc):
        await self.close()


def _bytes(value):
    return value.encode() if isinstance(value, str) else value


class Client:
    """The blocking wrapper: an AsyncClient on a private event loop thread."""

    def __init__(self, host="127.0.0.1", port=3001, timeout=5.0):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"rldb-client-{host}:{port}")
        self._thread.start()
        self._client = AsyncClient(host, port, timeout)
        self.timeout = timeout

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __getattr__(self, name):
        method = getattr(self._client, name)
        return lambda *args, **kwargs: self._run(method(*args, **kwargs))

    def close(self):
        if self._loop.is_running():
            self._run(self._client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _with_options(fields, **options):
    """fields plus the options that were given (a field left out takes the
    node's default)."""
    fields.update((name, value) for name, value in options.items() if value is not None)
    return fields
