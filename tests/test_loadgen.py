"""tools/loadgen.py against a real node (memory engine) in a subprocess: short
runs, so the file stays under a few seconds."""
import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from tests.helpers.ports import free_port
from tests.helpers.server_process import ServerProcess

LOADGEN = Path(__file__).resolve().parents[1] / "tools" / "loadgen.py"


def load_module():
    spec = importlib.util.spec_from_file_location("loadgen", LOADGEN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loadgen")
    with ServerProcess(tmp, "memory", log_level="warning",
                       quorum={"n": 1, "r": 1, "w": 1}) as server:
        yield server.port, tmp


def run_loadgen(*args, timeout=30):
    return subprocess.run([sys.executable, str(LOADGEN), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def test_percentile_is_the_nearest_rank():
    percentile = load_module().percentile
    values = [10, 20, 30, 40, 50]
    assert percentile(values, 0) == 10       # q=0: the smallest sample
    assert percentile(values, 0.2) == 10     # rank ceil(0.2 * 5) = 1
    assert percentile(values, 0.21) == 20    # rank 2
    assert percentile(values, 0.5) == 30     # rank ceil(2.5) = 3
    assert percentile(values, 0.8) == 40
    assert percentile(values, 0.99) == 50
    assert percentile(values, 1) == 50       # q=1: the largest
    assert [percentile([7], q) for q in (0, 0.5, 0.999, 1)] == [7, 7, 7, 7]
    assert percentile([1, 2], 0.5) == 1 and percentile([1, 2], 0.51) == 2
    assert percentile([], 0.5) is None
    hundred = list(range(1, 101))
    # 0.07 * 100 is 7.000000000000001 in floating point: still the 7th sample
    assert [percentile(hundred, q) for q in (0.07, 0.14, 0.28, 0.55, 0.99)] == [7, 14, 28, 55, 99]
    thousand = list(range(1, 1001))
    assert [percentile(thousand, q) for q in (0.5, 0.9, 0.99, 0.999)] == [500, 900, 990, 999]
    for q in (-0.01, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            percentile(values, q)


def test_payloads_are_msgpack():
    lg = load_module()
    key = lg.make_key(b"key:", 42)
    assert key == b"key:0000000042"
    assert msgpack.unpackb(lg.get_payload(key)) == {"key": key}
    for size in (0, 100, 255, 256, 70_000):
        value = bytes(range(256)) * (size // 256) + bytes(size % 256)
        assert msgpack.unpackb(lg.put_payload(key, value)) == {"key": key, "value": value}
        assert msgpack.unpackb(lg.put_payload(key, value, b"ctx")) == {
            "key": key, "value": value, "context": b"ctx"}


def test_duration_run_with_per_second_csv(node):
    port, tmp = node
    out = tmp / "seconds.csv"
    result = run_loadgen("--port", port, "--connections", 4, "--keys", 1000, "--duration", 1.5,
                         "--warmup", 0.2, "--preload", "--csv", out, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ops"] > 0 and summary["ops_per_s"] > 0
    assert summary["errors"] == 0, summary["error_kinds"]
    assert summary["gets"] > 0 and summary["puts"] > 0
    assert summary["get_misses"] == 0  # --preload put every key first
    assert 0 < summary["p50_ms"] <= summary["p99_ms"] <= summary["p999_ms"] <= summary["max_ms"]
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == load_module().CSV_SECOND_COLUMNS == [
        "second", "interval_s", "ops", "ops_per_s", "gets", "puts", "misses", "errors",
        "p50_ms", "p99_ms", "p999_ms", "max_ms"]
    assert len(rows) >= 2
    assert [int(r[0]) for r in rows[1:]] == list(range(len(rows) - 1))
    assert sum(int(r[2]) for r in rows[1:]) == summary["ops"]
    assert sum(int(r[7]) for r in rows[1:]) == 0


def test_op_count_run_with_per_request_csv_and_pipelining(node):
    port, tmp = node
    out = tmp / "requests.csv"
    result = run_loadgen("--ports", f"{port},{port}", "--connections", 3, "--pipeline", 4,
                         "--ops", 300, "--warmup", 0, "--get-ratio", 0.3, "--value-size", 300,
                         "--keys", 50, "--put-context", "last-read", "--server-stats",
                         "--csv", out, "--csv-mode", "request")
    assert result.returncode == 0, result.stderr
    assert "300 ops" in result.stdout and "errors      0" in result.stdout, result.stdout
    assert f"server {port}  in-server ms" in result.stdout, result.stdout
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["sent_s", "latency_ms", "op", "outcome"]
    assert len(rows) == 300
    assert {r["op"] for r in rows} == {"get", "put"}
    assert {r["outcome"] for r in rows} <= {"ok", "miss"}
    assert all(float(r["latency_ms"]) > 0 and float(r["sent_s"]) >= 0 for r in rows)


def test_unreachable_node_fails():
    result = run_loadgen("--port", free_port(), "--ops", 10, "--timeout", 2)
    assert result.returncode != 0
    assert "cannot connect" in result.stderr
