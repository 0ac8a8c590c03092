"""The quiet period after the final heal: every key read from every node,
round after round, until all nodes answer every key alike (or the bound
passes).  The agreeing round is the final read the checker judges.

Reads ask for r=1: a node answers with the first replica's copy, so nodes
agree only once the replicas themselves hold the same versions (read
repair, hinted handoff and anti-entropy did their work), not merely once
a quorum merge hides the differences."""
import asyncio
import time

from tools.jepsen.workloads import decode_set, decode_values, order

IN_FLIGHT = 16  # reads outstanding per node


async def _read_all(cluster, node, keys, r):
    """{key: frozenset of sibling bytes, or an error string}."""
    client = cluster.client(node)
    gate = asyncio.Semaphore(IN_FLIGHT)
    out = {}

    async def one(key):
        async with gate:
            try:
                got = await client.get(key, r=r)
            except Exception as exc:  # noqa: BLE001 - a failed read is "not yet"
                out[key] = f"{type(exc).__name__}: {exc}"
                return
            out[key] = frozenset(got.values) if got is not None else frozenset()

    try:
        await asyncio.gather(*(one(key) for key in keys))
    finally:
        await client.close()
    return out


def _disagreeing(rounds_result, keys):
    bad = []
    for key in keys:
        answers = [per_node[key] for per_node in rounds_result.values()]
        if any(isinstance(a, str) for a in answers) or len(set(answers)) != 1:
            bad.append(key)
    return bad


async def converge(cluster, keys, heal_t, history, limit=60.0, r=1, pause=0.5, say=print):
    """Reads until agreement; a dict with converged, the convergence time
    (seconds from heal_t, the final heal's history time), the rounds, and
    final = {key: {node name: sorted values or an error}} of the last round."""
    deadline = time.monotonic() + limit
    rounds = 0
    last = {}
    bad = list(keys)
    while True:
        rounds += 1
        results = await asyncio.gather(*(_read_all(cluster, node, keys, r)
                                         for node in cluster.nodes))
        last = {node.name: res for node, res in zip(cluster.nodes, results)}
        bad = _disagreeing(last, keys)
        done_t = history.now()
        if not bad:
            say(f"converged after {done_t - heal_t:.2f} s ({rounds} rounds of "
                f"{len(keys)} keys x {len(cluster.nodes)} nodes)")
            break
        if time.monotonic() + pause > deadline:
            say(f"NOT converged within {limit} s: {len(bad)} keys still differ, e.g. {bad[:5]}")
            break
        await asyncio.sleep(pause)
    final = {key: {name: (res[key] if isinstance(res[key], str) else sorted(res[key]))
                   for name, res in last.items()} for key in keys}
    return {"converged": not bad, "convergence_s": round(done_t - heal_t, 3) if not bad else None,
            "rounds": rounds, "disagreeing_keys": bad, "final": final, "read_r": r}


def final_values(final, workload_of):
    """{key: set of elements/values} from a converge() result's final reads:
    the union over nodes (the agreed value when they agreed), decoded per
    workload (workload_of(key) is "set" or "deletes")."""
    out = {}
    for key, per_node in final.items():
        values = set()
        for answer in per_node.values():
            if isinstance(answer, str):
                continue
            if workload_of(key) == "set":
                values |= decode_set(answer)
            else:
                values |= set(decode_values(answer))
        out[key] = values
    return out


def final_records(final, workload_of, t):
    """History records of the final reads (one per key and node)."""
    records = []
    for key, per_node in final.items():
        for name, answer in per_node.items():
            record = {"f": "final-read", "workload": workload_of(key), "key": key, "node": name,
                      "start": t, "end": t}
            if isinstance(answer, str):
                record.update(type="fail", error=answer)
            elif workload_of(key) == "set":
                record.update(type="ok", siblings=len(answer),
                              value=sorted(decode_set(answer), key=order))
            else:
                record.update(type="ok", value=sorted(decode_values(answer), key=order))
            records.append(record)
    return records
