"""The two workloads and the client loop that drives them.

set: a few keys, each holding a set of distinct integers (JSON lists).  An
add reads the key, merges every sibling's set, adds a new unique element
and writes the union back with the read's context, so that an element once
acknowledged must stay in the key forever: Jepsen's set test.

deletes: many keys, each written, deleted and read with the context of the
read just before.  A context covers exactly the values of the read it came
from, so every op records the values its read showed: the checker knows
what each write or delete superseded, and hence which values must be gone
(a delete saw them: finding one later is a zombie) and which must stay (a
write acknowledged and never superseded: missing is a lost write)."""
import asyncio
import json
import random

from tools.jepsen.history import FAIL, INFO, OK, Session, classify_write_error, \
    is_connection_trouble

SET_KEYS = 4
DELETE_KEYS = 200


def set_keys(count=SET_KEYS):
    return [f"s{i}" for i in range(count)]


def delete_keys(count=DELETE_KEYS):
    return [f"d{i}" for i in range(count)]


def decode_set(values):
    """The union of every sibling's elements (siblings are JSON lists)."""
    out = set()
    for value in values:
        try:
            out.update(int(x) for x in json.loads(value))
        except (ValueError, TypeError):
            out.add(f"undecodable:{bytes(value).hex()}")
    return out


def decode_values(values):
    """A deletes key's values (each a decimal integer)."""
    out = []
    for value in values:
        try:
            out.append(int(value))
        except ValueError:
            out.append(f"undecodable:{bytes(value).hex()}")
    return out


def order(x):
    """A sort key for values that are integers or undecodable:hex strings."""
    return (1, x) if isinstance(x, str) else (0, x)


class Elements:
    """Unique integers for the whole run, shared by every client."""

    def __init__(self):
        self._next = 0

    def take(self):
        self._next += 1
        return self._next


class SetWorkload:
    name = "set"

    def __init__(self, elements, keys=SET_KEYS):
        self.keys = set_keys(keys)
        self.elements = elements
        self.seen = {key: set() for key in self.keys}  # every element any read showed

    async def step(self, session, history, client_id, rng):
        key = rng.choice(self.keys)
        op = history.begin(client_id, session.node.name, self.name, "add", key)
        try:
            got = await session.read(key)
        except Exception as exc:  # noqa: BLE001 - a failed read wrote nothing
            return history.finish(op, FAIL, f"{type(exc).__name__}: {exc}", "read"), exc
        elements = decode_set(got.values) if got is not None else set()
        fresh = elements - self.seen[key]
        self.seen[key] |= fresh
        op["seen_new"] = sorted(x for x in fresh if isinstance(x, int))
        op["seen_bad"] = sorted(x for x in fresh if isinstance(x, str))
        op["seen_count"] = len(elements)
        op["siblings"] = len(got.values) if got is not None else 0
        element = self.elements.take()
        op["value"] = element
        body = json.dumps(sorted(x for x in elements | {element} if isinstance(x, int)),
                          separators=(",", ":")).encode()
        try:
            await session.ensure_connected()
            await session.client.put(key, body, got.context if got is not None else None)
        except Exception as exc:  # noqa: BLE001 - classified below
            outcome, text = classify_write_error(exc)
            return history.finish(op, outcome, text, "write"), exc
        return history.finish(op, OK), None


class DeletesWorkload:
    name = "deletes"
    MIX = (("write", 0.5), ("delete", 0.3), ("read", 0.2))

    def __init__(self, elements, keys=DELETE_KEYS):
        self.keys = delete_keys(keys)
        self.elements = elements

    def _pick(self, rng):
        roll, total = rng.random(), 0.0
        for f, share in self.MIX:
            total += share
            if roll < total:
                return f
        return self.MIX[-1][0]

    async def step(self, session, history, client_id, rng):
        key = rng.choice(self.keys)
        f = self._pick(rng)
        op = history.begin(client_id, session.node.name, self.name, f, key)
        try:
            got = await session.read(key)
        except Exception as exc:  # noqa: BLE001 - a failed read wrote nothing
            return history.finish(op, FAIL, f"{type(exc).__name__}: {exc}", "read"), exc
        values = decode_values(got.values) if got is not None else []
        op["read"] = [v for v in values if isinstance(v, int)]
        op["read_bad"] = [v for v in values if isinstance(v, str)]
        if f == "read":
            return history.finish(op, OK), None
        if f == "delete" and got is None:
            op["noop"] = True  # nothing to delete: no context to delete with
            return history.finish(op, OK), None
        context = got.context if got is not None else None
        try:
            await session.ensure_connected()
            if f == "write":
                op["value"] = self.elements.take()
                await session.client.put(key, str(op["value"]).encode(), context)
            else:
                await session.client.delete(key, context)
        except Exception as exc:  # noqa: BLE001 - classified below
            outcome, text = classify_write_error(exc)
            return history.finish(op, outcome, text, "write"), exc
        return history.finish(op, OK), None


def make_workloads(name, elements, set_key_count=SET_KEYS, delete_key_count=DELETE_KEYS):
    """The workload objects of --workload (set, deletes or both)."""
    out = []
    if name in ("set", "both"):
        out.append(SetWorkload(elements, set_key_count))
    if name in ("deletes", "both"):
        out.append(DeletesWorkload(elements, delete_key_count))
    return out


def assign(client_count, node_count, workloads):
    """(node index, workload) per client: clients spread round-robin over
    the nodes, and over the workloads so each node serves each workload."""
    return [(i % node_count, workloads[i % len(workloads)]) for i in range(client_count)]


async def client_loop(client_id, session, workload, history, stop, interval, seed):
    """Ops until stop is set, one every `interval` seconds on average (one
    at a time: a client waits for each op's outcome).  After connection
    trouble the client backs off and opens a fresh connection."""
    rng = random.Random(f"{seed}-client-{client_id}")
    loop = asyncio.get_running_loop()
    await asyncio.sleep(rng.uniform(0, interval))
    while not stop.is_set():
        began = loop.time()
        op, exc = await workload.step(session, history, client_id, rng)
        if exc is not None and is_connection_trouble(exc):
            await session.reset()
            await _sleep_or_stop(stop, rng.uniform(0.2, 0.4))
        elapsed = loop.time() - began
        await _sleep_or_stop(stop, max(0.0, rng.uniform(0.5, 1.5) * interval - elapsed))
    await session.close()


async def _sleep_or_stop(stop, seconds):
    if seconds <= 0:
        return
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass


def start_clients(cluster, workloads, history, stop, client_count, rate, seed):
    """The client tasks: client_count clients, rate ops/s in all."""
    interval = client_count / rate
    tasks = []
    for client_id, (node_index, workload) in enumerate(
            assign(client_count, len(cluster.nodes), workloads)):
        session = Session(cluster, cluster.nodes[node_index])
        tasks.append(asyncio.ensure_future(
            client_loop(client_id, session, workload, history, stop, interval, seed)))
    return tasks


__all__ = ["FAIL", "INFO", "OK", "SetWorkload", "DeletesWorkload", "make_workloads",
           "start_clients", "decode_set", "decode_values", "set_keys", "delete_keys"]
