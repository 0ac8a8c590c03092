"""tools/jepsen: its checker on small hand-made histories (everywhere), and
one short real run (3 nodes in network namespaces, about 30 s of
partitions, pauses and kills, both workloads) where root, `ip netns` and
`iptables` are available."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rldb.errors import ConnectionLostError, QuorumNotReachedError, RequestError
from tools.jepsen import checker, nemesis, report
from tools.jepsen.history import FAIL, INFO, OK, NotSent, classify_write_error

REPO = Path(__file__).resolve().parents[1]


def op(f, key, value=None, type=OK, read=(), workload="deletes", start=0.0, node="n1",
       stage="write", **extra):
    record = {"f": f, "key": key, "value": value, "type": type, "workload": workload,
              "start": start, "end": start + 0.01, "node": node, "client": 0, "stage": stage}
    if workload == "deletes":
        record["read"] = list(read)
    else:
        record["seen_new"] = list(read)
    record.update(extra)
    return record


def add(key, value, type=OK, seen=()):
    return op("add", key, value, type, seen, workload="set")


# ---- the set checker ---------------------------------------------------------------------------

def test_set_lost_is_an_acknowledged_add_absent_at_the_end():
    ops = [add("s0", 1), add("s0", 2), add("s0", 3, INFO)]
    result = checker.check_set(ops, {"s0": {1}})
    assert result["lost"] == 1 and result["lost_sample"] == [2]
    assert result["unexpected"] == 0 and result["recovered"] == 0


def test_set_unexpected_element_was_never_attempted():
    result = checker.check_set([add("s0", 1)], {"s0": {1, 99}})
    assert result["unexpected"] == 1 and result["unexpected_sample"] == [99]
    assert result["lost"] == 0


def test_set_indeterminate_add_present_is_recovered_not_a_failure():
    result = checker.check_set([add("s0", 1, INFO), add("s0", 2, INFO)], {"s0": {1}})
    assert result["recovered"] == 1 and result["lost"] == 0
    valid, failed = checker.verdict({"completed": True, "convergence": {"converged": True},
                                     "checks": {"set": result}})
    assert valid and failed == []


def test_set_applied_nowhere_found_in_a_later_read_or_at_the_end():
    ops = [add("s0", 1, FAIL), add("s0", 2, OK, seen=[1]), add("s0", 3, FAIL)]
    seen_later = checker.check_set(ops, {"s0": {2}})
    assert seen_later["applied_nowhere_found"] == 1
    assert seen_later["applied_nowhere_found_sample"] == [1]
    at_the_end = checker.check_set([add("s0", 3, FAIL)], {"s0": {3}})
    assert at_the_end["applied_nowhere_found"] == 1
    clean = checker.check_set([add("s0", 3, FAIL)], {"s0": set()})
    assert clean["applied_nowhere_found"] == 0


# ---- the deletes checker -----------------------------------------------------------------------

def test_zombie_is_a_value_an_acknowledged_delete_had_seen():
    ops = [op("write", "d1", 10), op("delete", "d1", read=[10]),
           op("write", "d2", 20), op("delete", "d2", read=[20], type=INFO)]
    result = checker.check_deletes(ops, {"d1": {10}, "d2": {20}})
    assert result["zombies"] == 1 and result["zombies_sample"] == [10]
    assert result["lost"] == 0 and result["deletes_ok"] == 1 and result["deletes_info"] == 1


def test_superseded_write_absent_is_not_lost():
    ops = [op("write", "d1", 10), op("write", "d1", 11, read=[10]),
           op("write", "d1", 12, read=[11], type=INFO)]
    result = checker.check_deletes(ops, {"d1": set()})
    assert result["lost"] == 0
    assert result["superseded_absent"] == 2


def test_lost_write_is_acknowledged_absent_and_never_superseded():
    ops = [op("write", "d1", 10), op("write", "d1", 11),
           op("write", "d1", 12, read=[11], type=FAIL),  # applied nowhere: supersedes nothing
           op("delete", "d1", read=[10], stage="read", type=FAIL)]  # its read failed
    result = checker.check_deletes(ops, {"d1": {10}})
    assert result["lost"] == 1 and result["lost_sample"] == [11]
    assert result["lost_seen_by_failed"] == 1
    assert result["zombies"] == 0


def test_deletes_applied_nowhere_and_unexpected():
    ops = [op("write", "d1", 10, type=FAIL), op("read", "d1", read=[10, 77]),
           op("write", "d2", 20, type=FAIL)]
    result = checker.check_deletes(ops, {"d1": set(), "d2": set()})
    assert result["applied_nowhere_found"] == 1 and result["applied_nowhere_found_sample"] == [10]
    assert result["unexpected"] == 1 and result["unexpected_sample"] == [77]
    valid, failed = checker.verdict({"completed": True, "convergence": {"converged": True},
                                     "checks": {"deletes": result}})
    assert not valid
    assert any(line.startswith("deletes: applied_nowhere_found = 1") for line in failed)
    assert any(line.startswith("deletes: unexpected = 1") for line in failed)
    text = report.render({"valid": valid, "failed_checks": failed, "checks": {"deletes": result}})
    assert "INVALID" in text and "deletes: applied_nowhere_found = 1" in text


def test_verdict_names_convergence_and_an_incomplete_run():
    valid, failed = checker.verdict({"completed": True, "convergence": {
        "converged": False, "limit_s": 60, "disagreeing_keys": ["d1"]}, "checks": {}})
    assert not valid and failed[0].startswith("not converged within 60 s")
    valid, failed = checker.verdict({"completed": False, "error": "boom"})
    assert not valid and "boom" in failed[0]


# ---- outcomes, availability, the nemesis plan --------------------------------------------------

def test_write_outcomes():
    indeterminate = QuorumNotReachedError("QuorumNotReached", {"reason": "Indeterminate: 1 of 2"})
    assert classify_write_error(indeterminate)[0] == INFO
    assert classify_write_error(QuorumNotReachedError("QuorumNotReached", {"reason": "0 answered"}))[0] == FAIL
    assert classify_write_error(RequestError("Internal"))[0] == FAIL
    assert classify_write_error(TimeoutError("no reply"))[0] == INFO
    assert classify_write_error(ConnectionLostError("closed"))[0] == INFO
    assert classify_write_error(NotSent("cannot connect"))[0] == FAIL


def test_availability_is_split_by_phase_and_faulty_node():
    intervals = [{"kind": "pause", "start": 1.0, "end": 2.0, "faulty": ["n2"]}]
    ops = [op("read", "d1", start=0.5), op("read", "d1", start=1.5, node="n2", type=INFO),
           op("read", "d1", start=1.5, node="n1"), op("read", "d1", start=1.6, node="n1", type=FAIL)]
    table = checker.availability(ops, intervals)
    assert table["healthy"]["other"] == {"ops": 1, "ok": 1, "fraction_ok": 1.0}
    assert table["pause"]["faulty"] == {"ops": 1, "ok": 0, "fraction_ok": 0.0}
    assert table["pause"]["other"] == {"ops": 2, "ok": 1, "fraction_ok": 0.5}


def test_nemesis_plan_is_seeded_and_names_faulty_nodes():
    first = [(f.kind, f.nodes, f.duration) for f, _ in zip(nemesis.plan(5, 5, nemesis.KINDS), range(20))]
    again = [(f.kind, f.nodes, f.duration) for f, _ in zip(nemesis.plan(5, 5, nemesis.KINDS), range(20))]
    assert first == again
    halves = nemesis.Fault("partition-halves", [], 1, 1, groups=[[0, 1], [2, 3, 4]])
    assert halves.faulty(5) == [0, 1]
    bridge = nemesis.Fault("partition-bridge", [], 1, 1, groups=[[0, 1, 2], [2, 3, 4]])
    assert bridge.faulty(5) == []
    isolated = nemesis.Fault("partition-isolate", [], 1, 1, groups=[[3], [0, 1, 2, 4]])
    assert isolated.faulty(5) == [3]
    assert nemesis.Fault("kill", [4], 1, 1).faulty(5) == [4]


# ---- a short real run --------------------------------------------------------------------------

def _missing():
    from tools.jepsen.netns import missing_requirements
    return missing_requirements()


@pytest.mark.timeout(170)
def test_short_run_under_partitions_pauses_and_kills(tmp_path):
    missing = _missing()
    if missing:
        pytest.skip(f"needs {'; '.join(missing)}")
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "tools.jepsen", "--nodes", "3", "--duration", "30",
            "--seed", "7", "--workload", "both", "--nemesis", "partition,pause,kill",
            "--converge-timeout", "40", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        output, _ = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the harness tears down on SIGTERM
        output, _ = proc.communicate(timeout=30)
        pytest.fail(f"the run did not finish within 150 s:\n{output}")
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    tag = f"rj{proc.pid}"
    assert tag not in names and tag not in links, f"left behind:\n{names}\n{links}"
    results = json.loads((out / "results.json").read_text())
    text = (out / "report.txt").read_text()
    assert results["completed"], f"{results.get('error')}\n{output}"
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "history.jsonl").stat().st_size > 0
    kinds = {iv["kind"].split("-")[0] for iv in results["nemesis"]["intervals"]}
    assert kinds == {"partition", "pause", "kill"}, results["nemesis"]["intervals"]
    assert results["convergence"]["converged"], text
    for workload in ("set", "deletes"):
        check = results["checks"][workload]
        assert check["ok"] > 0, text
        for name in ("lost", "unexpected", "applied_nowhere_found", "zombies"):
            assert check.get(name, 0) == 0, f"{workload} {name}:\n{text}"
    assert results["valid"] and proc.returncode == 0, text
