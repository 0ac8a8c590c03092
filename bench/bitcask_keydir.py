"""Bitcask keydir memory and hint-file reopen speed, as a plain script:

    .venv/bin/python bench/bitcask_keydir.py [--n 1000000] [--reopen-n 200000] [--rounds 3]
                                             [--value-sizes 100,1000]

1. Keydir bytes per key at N keys of 16 random bytes, measured two ways:
   - the C allocator's own count: every byte the keydir malloc'd (slot table,
     arena chunks, chunk table), from rldb_keydir_get_usage / stats();
   - RSS growth of the process across the load, as a cross-check (it also
     counts allocator slack and whatever else the load touched).
   Both for a Bitcask engine loaded with N puts (values of 8 bytes), and for
   the keydir alone (rldb._core.keydir.Keydir), each in a process of its own.  Riak
   documents about 91 bytes per key plus the key (so 107 at 16-byte keys) for
   its keydir.
2. Reopen time of a Bitcask store of --reopen-n keys (16-byte keys; 100-byte
   values are the engine benchmark's shape) from a cold page cache: with its
   hint files, and with the hints deleted (every data file scanned, its CRCs
   checked, and its hint written anew, as open does then).  Median of rounds."""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from adapters import drop_cache
from rldb._core.keydir import Keydir
from rldb.storage import open_engine

KEY = 16
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def keys_blob(n, seed):
    return random.Random(seed).randbytes(KEY * n)


def engine_keydir(n, root):
    blob = keys_blob(n, 1)
    value = b"v" * 8
    path = os.path.join(root, "keydir")
    db = open_engine("bitcask", path)
    put = db.put
    before = rss()
    for i in range(0, KEY * n, KEY):
        put(blob[i:i + KEY], value)
    after = rss()
    st = db.stats()
    db.close()
    shutil.rmtree(path)
    return {"keys": st["keys"], "allocator": st["keydir_bytes"], "rss": after - before,
            "slots": st["keydir_slots"]}


def bare_keydir(n):
    blob = keys_blob(n, 2)
    kd = Keydir()
    before = rss()
    for i in range(0, KEY * n, KEY):
        kd.put(blob[i:i + KEY], 1, i & 0xFFFFFFFF, 100, 1_700_000_000)
    after = rss()
    usage = kd.usage()
    return {"keys": usage["count"], "allocator": usage["memory"], "rss": after - before,
            "slots": usage["slots"], "arena": usage["arena_bytes"]}


def timed_open(path):
    drop_cache(path)
    start = time.perf_counter()
    db = open_engine("bitcask", path)
    elapsed = time.perf_counter() - start
    recovery = db.stats()["recovery"]
    db.close()
    return elapsed, recovery


def reopen(n, rounds, root, value_size):
    path = os.path.join(root, "reopen")
    rnd = random.Random(3)
    with open_engine("bitcask", path) as db:
        for _ in range(n):
            db.put(rnd.randbytes(KEY), rnd.randbytes(value_size // 2) * 2)
    with open_engine("bitcask", path):
        pass  # at rest: one data file with its hint
    with_hints, without = [], []
    for _ in range(rounds):
        elapsed, rec = timed_open(path)
        assert rec["files_scanned"] == 0 and rec["hints_loaded"] >= 1, rec
        with_hints.append(elapsed)
    for _ in range(rounds):
        for name in os.listdir(path):
            if name.endswith(".hint"):
                os.unlink(os.path.join(path, name))
        elapsed, rec = timed_open(path)
        assert rec["hints_loaded"] == 0 and rec["files_scanned"] >= 1, rec
        without.append(elapsed)
    size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    shutil.rmtree(path)
    return statistics.median(with_hints), statistics.median(without), size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="keys for the memory figures")
    parser.add_argument("--reopen-n", type=int, default=200_000, help="keys for the reopen figures")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--value-sizes", default="100,1000", help="value sizes for the reopen figures")
    parser.add_argument("--measure", choices=["engine", "keydir"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:  # one memory figure, in this fresh process
        with tempfile.TemporaryDirectory(prefix="rldb-bitcask-keydir-") as root:
            m = engine_keydir(args.n, root) if args.measure == "engine" else bare_keydir(args.n)
        print(json.dumps(m))
        return 0
    print(f"keydir memory at {args.n:,} keys of {KEY} bytes "
          f"(Riak: ~91 bytes + key = ~{91 + KEY} bytes/key)")
    for label, what in (("engine (N puts)", "engine"), ("keydir alone", "keydir")):
        out = subprocess.run([sys.executable, __file__, "--n", str(args.n), "--measure", what],
                             check=True, capture_output=True, text=True).stdout
        m = json.loads(out)
        keys = m["keys"]
        print(f"  {label:<16} allocator {m['allocator'] / keys:6.1f} bytes/key "
              f"({m['allocator'] / 2**20:.1f} MiB; {m['slots']:,} slots, load "
              f"{keys / m['slots']:.2f})   RSS growth {m['rss'] / keys:6.1f} bytes/key")
    with tempfile.TemporaryDirectory(prefix="rldb-bitcask-keydir-") as root:
        for value_size in map(int, args.value_sizes.split(",")):
            hinted, scanned, size = reopen(args.reopen_n, args.rounds, root, value_size)
            print(f"reopen of {args.reopen_n:,} keys with {value_size}-byte values "
                  f"({size / 1e6:.1f} MB on disk), cold page cache, median of {args.rounds}:")
            print(f"  with hints {hinted * 1e3:8.1f} ms")
            print(f"  without    {scanned * 1e3:8.1f} ms  (every entry's CRC checked, hints rewritten)")
            print(f"  speedup    {scanned / hinted:8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
