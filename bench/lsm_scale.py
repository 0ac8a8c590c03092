"""One large run of the LSM engine (default N=2,000,000): load, reopen, gets,
absent gets, scans, with the peak RSS and write amplification.  Each engine
runs in its own process; engine_rss_mb is the growth of the resident set from
before the engine opened to the end of its reads (the workload's own memory,
printed first, is excluded), peak_rss_mb the whole process's peak.

    .venv/bin/python bench/lsm_scale.py [--n 2000000] [--engines lsm,rocksdict]
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from adapters import engine_factories  # noqa: E402
from workload import Workload  # noqa: E402


def _rate(count, seconds):
    return round(count / seconds) if seconds else None


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_one(name, n, root):
    """Runs every phase for one engine in this process; a dict of figures."""
    wl = Workload(n)
    base_rss = _rss_mb()
    adapter = engine_factories()[name]()
    path = os.path.join(root, name)
    os.makedirs(path)
    out = {"engine": name, "n": n}
    adapter.open(path)
    start = time.perf_counter()
    put = adapter.put
    for key, value in wl.load_pairs:
        put(key, value)
    out["load_per_s"] = _rate(n, time.perf_counter() - start)
    db = getattr(adapter, "db", None)
    if hasattr(db, "stats"):
        stats = db.stats()
        out["write_amplification"] = round(stats.get("write_amplification", 0.0), 2)
        out["stall_seconds"] = stats.get("stall_seconds")
    adapter.close()
    start = time.perf_counter()
    adapter.open(path)
    out["reopen_ms"] = round((time.perf_counter() - start) * 1000, 1)
    get = adapter.get
    sample = wl.get_keys[:200_000]
    start = time.perf_counter()
    for key in sample:
        get(key)
    out["get_per_s"] = _rate(len(sample), time.perf_counter() - start)
    sample = wl.absent_keys[:200_000]
    start = time.perf_counter()
    for key in sample:
        get(key)
    out["absent_get_per_s"] = _rate(len(sample), time.perf_counter() - start)
    start = time.perf_counter()
    for s in wl.scan_starts:
        adapter.scan(s, wl.scan_len)
    out["scan_keys_per_s"] = _rate(len(wl.scan_starts) * wl.scan_len, time.perf_counter() - start)
    db = getattr(adapter, "db", None)
    if hasattr(db, "stats"):
        stats = db.stats()
        out["levels"] = [level["files"] for level in stats["levels"]]
    engine_rss = _rss_mb()  # after the reads, with the engine open and its cache warm
    adapter.close()
    out["disk_mb"] = round(adapter.disk_bytes() / 1e6, 1)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["engine_rss_mb"] = round(engine_rss - base_rss, 1)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--engines", default="lsm,rocksdict")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.n, args.root)))
        return
    root = tempfile.mkdtemp(prefix="rldb-scale-")
    try:
        # The workload itself takes memory: its RSS is measured alone as a baseline.
        base = subprocess.run([sys.executable, "-c",
                               "import sys, resource; sys.path.insert(0, %r); "
                               "from workload import Workload; Workload(%d); "
                               "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
                               % (HERE, args.n)], capture_output=True, text=True, check=True)
        print(f"N={args.n:,}; RSS of the workload alone: {float(base.stdout):.0f} MB")
        for name in args.engines.split(","):
            res = subprocess.run([sys.executable, __file__, "--one", name, "--n", str(args.n),
                                  "--root", root], capture_output=True, text=True)
            if res.returncode:
                print(f"{name}: failed\n{res.stderr}")
                continue
            print(json.dumps(json.loads(res.stdout.splitlines()[-1])))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
