"""tools/loadgen.py against a real node (memory engine) in a subprocess: short
runs, so the file stays under a few seconds."""
import csv
import importlib.util
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest

LOADGEN = Path(__file__).resolve().parents[1] / "tools" / "loadgen.py"


def load_module():
    spec = importlib.util.spec_from_file_location("loadgen", LOADGEN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loadgen")
    port = free_port()
    config = tmp / "node.json"
    config.write_text(json.dumps({"port": port, "storage_engine": "memory",
                                  "quorum": {"n": 1, "r": 1, "w": 1}}))
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "rldb.cli.server", "--config-path",
                             str(config), "--log-level", "warning"], cwd=tmp, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.close()
                    pytest.fail("the node did not start:\n" + (tmp / "server.log").read_text())
                time.sleep(0.05)
        yield port, tmp
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def run_loadgen(*args, timeout=30):
    return subprocess.run([sys.executable, str(LOADGEN), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


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
