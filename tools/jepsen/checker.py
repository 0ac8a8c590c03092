"""The checks, as pure functions of a history and the final reads, so that
they can be tested on small hand-made histories.

set (Jepsen's set checker), per key: lost = acknowledged adds absent at
the end; unexpected = elements read that were never attempted;
recovered = info adds present at the end; applied-nowhere found = fail
adds seen by any read or at the end (the server said they were applied
nowhere).

deletes, per key: zombies = final values that an acknowledged delete had
seen (its context covered them, so they must be gone); lost = acknowledged
writes absent at the end that no later write or delete superseded (saw in
its read, hence covered with its context) — an ok or info op supersedes,
since an info op may have been applied; unexpected, recovered and
applied-nowhere found as for set.  lost_seen_by_failed, the lost writes
that a fail op had read (if that op was applied after all, it superseded
them), points at the cause of a loss.

availability: per nemesis phase (the fault whose interval an op started
in, or "healthy"), split by whether the op's node was a faulty one, the
fraction of ops that were ok."""
from tools.jepsen.history import FAIL, INFO, OK

SAMPLE = 20  # values listed per count in the results


def _sample(values):
    return sorted(values, key=lambda x: (isinstance(x, str), x))[:SAMPLE]


def _counts(result):
    """result with each set replaced by its count and a sample."""
    out = {}
    for name, values in result.items():
        if isinstance(values, set):
            out[name] = len(values)
            if values:
                out[f"{name}_sample"] = _sample(values)
        else:
            out[name] = values
    return out


def _per_key(ops, workload):
    keys = {}
    for op in ops:
        if op.get("workload") == workload and op.get("f") != "final-read":
            keys.setdefault(op["key"], []).append(op)
    return keys


def check_set(ops, final):
    """Counts (and samples) for the set workload; final = {key: set of
    elements} of the final reads of the set workload's keys."""
    total = {name: set() for name in ("attempted", "ok", "lost", "unexpected", "recovered",
                                      "applied_nowhere_found", "info", "fail")}
    keys = _per_key(ops, "set")
    for key in set(keys) | set(final):
        attempted, by_type, observed = set(), {OK: set(), INFO: set(), FAIL: set()}, set()
        for op in keys.get(key, ()):
            if op.get("value") is not None:
                attempted.add(op["value"])
                by_type[op["type"]].add(op["value"])
            observed.update(op.get("seen_new", ()))
            observed.update(op.get("seen_bad", ()))
        present = final.get(key, set())
        total["attempted"] |= attempted
        total["ok"] |= by_type[OK]
        total["info"] |= by_type[INFO]
        total["fail"] |= by_type[FAIL]
        total["lost"] |= by_type[OK] - present
        total["unexpected"] |= (present | observed) - attempted
        total["recovered"] |= by_type[INFO] & present
        total["applied_nowhere_found"] |= by_type[FAIL] & (present | observed)
    result = _counts(total)
    result["final_elements"] = sum(len(v) for v in final.values())
    return result


def check_deletes(ops, final):
    """Counts (and samples) for the deletes workload; final = {key: set of
    values} of the final reads of its keys."""
    names = ("attempted", "ok", "info", "fail", "lost", "zombies", "unexpected", "recovered",
             "applied_nowhere_found", "superseded_absent", "lost_seen_by_failed")
    total = {name: set() for name in names}
    deletes = {OK: 0, INFO: 0, FAIL: 0}
    keys = _per_key(ops, "deletes")
    for key in set(keys) | set(final):
        key_ops = keys.get(key, [])
        attempted, by_type = set(), {OK: set(), INFO: set(), FAIL: set()}
        observed, deleted, superseded, by_failed = set(), set(), set(), set()
        for op in key_ops:
            read = set(op.get("read", ())) | set(op.get("read_bad", ()))
            observed |= read
            if op["f"] == "write" and op.get("value") is not None:
                attempted.add(op["value"])
                by_type[op["type"]].add(op["value"])
            if op["f"] == "delete" and not op.get("noop") and op.get("stage") != "read":
                deletes[op["type"]] += 1
                if op["type"] == OK:
                    deleted |= read
            if op["f"] in ("write", "delete") and op["type"] in (OK, INFO) \
                    and op.get("stage") != "read":
                superseded |= read
            if op["f"] in ("write", "delete") and op["type"] == FAIL and op.get("stage") == "write":
                by_failed |= read
        present = final.get(key, set())
        total["attempted"] |= attempted
        total["ok"] |= by_type[OK]
        total["info"] |= by_type[INFO]
        total["fail"] |= by_type[FAIL]
        total["zombies"] |= present & deleted
        total["lost"] |= by_type[OK] - present - superseded
        total["lost_seen_by_failed"] |= (by_type[OK] - present - superseded) & by_failed
        total["superseded_absent"] |= (by_type[OK] - present) & superseded
        total["unexpected"] |= (present | observed) - attempted
        total["recovered"] |= by_type[INFO] & present
        total["applied_nowhere_found"] |= by_type[FAIL] & (present | observed)
    result = _counts(total)
    result["deletes_ok"], result["deletes_info"], result["deletes_fail"] = \
        deletes[OK], deletes[INFO], deletes[FAIL]
    return result


def phase_of(op, intervals):
    """(phase kind, the op's node was faulty) for an op: the fault it
    started in, or one that began while it was in flight; its node counts
    as faulty when any fault overlapping the op names it (a node isolated
    or killed mid-request, or still restarting when the op began)."""
    start = op["start"]
    finish = op.get("end") if op.get("end") is not None else start
    kind, faulty = "healthy", False
    for interval in intervals:
        end = interval["end"] if interval["end"] is not None else float("inf")
        if interval["start"] <= start < end:
            kind = interval["kind"]
        elif not (interval["start"] <= finish and start < end):
            continue
        elif kind == "healthy":
            kind = interval["kind"]
        faulty = faulty or op["node"] in interval["faulty"]
    return kind, faulty


def availability(ops, intervals):
    """{phase: {"faulty": {...}, "other": {...}}} with ops, ok, fraction."""
    table = {}
    for op in ops:
        if op.get("f") == "final-read" or op.get("start") is None:
            continue
        kind, faulty = phase_of(op, intervals)
        row = table.setdefault(kind, {}).setdefault("faulty" if faulty else "other",
                                                    {"ops": 0, "ok": 0})
        row["ops"] += 1
        row["ok"] += op["type"] == OK
    for rows in table.values():
        for row in rows.values():
            row["fraction_ok"] = round(row["ok"] / row["ops"], 4) if row["ops"] else None
    return table


def outcome_counts(ops):
    counts = {}
    for op in ops:
        if op.get("f") == "final-read":
            continue
        per = counts.setdefault(op["workload"], {OK: 0, INFO: 0, FAIL: 0})
        per[op["type"]] += 1
    return counts


def verdict(results):
    """(valid, the list of failed checks, each one line) from the results."""
    failed = []
    if not results.get("completed"):
        failed.append(f"the run did not complete: {results.get('error', 'unknown error')}")
    conv = results.get("convergence") or {}
    if results.get("completed") and not conv.get("converged"):
        failed.append(f"not converged within {conv.get('limit_s')} s after the final heal "
                      f"({len(conv.get('disagreeing_keys', []))} keys differ)")
    checks = (("set", ("lost", "unexpected", "applied_nowhere_found")),
              ("deletes", ("lost", "zombies", "unexpected", "applied_nowhere_found")))
    for workload, names in checks:
        result = results.get("checks", {}).get(workload)
        if result is None:
            continue
        for name in names:
            if result.get(name):
                sample = result.get(f"{name}_sample", [])
                failed.append(f"{workload}: {name} = {result[name]} (e.g. {sample[:5]})")
    return not failed, failed
