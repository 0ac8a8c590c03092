"""Child processes for tests/test_bitcask_crash.py.

    python writer.py write DIR SEED START COUNT OPTIONS_JSON
        performs operations(SEED, COUNT)[START:] on a Bitcask engine and prints
        the index of each operation on its own line once the engine has
        acknowledged it (stdout flushed each time), so the parent knows which
        writes were acknowledged when it kills us; "done" at the end.

    python writer.py merge DIR OPTIONS_JSON FULL STEP NTH
        opens the engine, and runs a merge (full or not) that kills this
        process with SIGKILL the NTH time the merge reaches STEP (see
        rldb/storage/bitcask/merge.py); STEP "random" prints "merging" and
        lets the parent kill us whenever it likes, the merge paced by a 3 ms
        pause after each input it copies (so that a kill lands inside it).
        Prints "finished" if the merge ran to its end.

The parent imports operations() to rebuild the same sequence."""
import json
import os
import random
import signal
import sys
import time


def operations(seed, count, keyspace=500):
    """A list of `count` operations; each is a list of ("put", key, value) /
    ("delete", key) steps applied together: one step is a put or delete, more
    are a write_batch.  Values name their key and operation index, so every
    prefix of the sequence leaves a distinguishable state."""
    rng = random.Random(seed)
    live = []
    out = []
    for i in range(count):
        r = rng.random()
        if r < 0.55 or not live:
            steps = [_put(rng, i, rng.randrange(keyspace))]
        elif r < 0.85:
            steps = [("delete", rng.choice(live))]
        else:
            steps = []
            for _ in range(rng.randrange(2, 8)):
                if rng.random() < 0.6 or not live:
                    steps.append(_put(rng, i, rng.randrange(keyspace)))
                else:
                    steps.append(("delete", rng.choice(live)))
        for step in steps:
            if step[0] == "put":
                live.append(step[1])
        if len(live) > 200:
            del live[:100]
        out.append(steps)
    return out


def _put(rng, i, k):
    key = b"key%05d" % k
    return ("put", key, key + b"@%d:" % i + rng.randbytes(rng.randrange(0, 120)))


def apply(engine, steps):
    if len(steps) == 1:
        step = steps[0]
        if step[0] == "put":
            engine.put(step[1], step[2])
        else:
            engine.delete(step[1])
    else:
        engine.write_batch(steps)


def write(path, seed, start, count, options):
    from rldb.storage import open_engine

    ops = operations(seed, count)
    engine = open_engine("bitcask", path, **options)
    out = sys.stdout
    for i in range(start, count):
        apply(engine, ops[i])
        out.write(f"{i}\n")
        out.flush()
    engine.close()
    out.write("done\n")
    out.flush()


def merge(path, options, full, step, nth):
    from rldb.storage import open_engine

    engine = open_engine("bitcask", path, **options)
    seen = {}

    def hook(name):
        seen[name] = seen.get(name, 0) + 1
        if name == step and seen[name] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        if step == "random" and name == "input-copied":
            time.sleep(0.003)

    engine._merge_hook = hook
    if step == "random":
        sys.stdout.write("merging\n")
        sys.stdout.flush()
    engine.merge(full=full)
    sys.stdout.write("finished\n")
    sys.stdout.flush()
    engine.close()


def main(argv):
    if argv[1] == "write":
        write(argv[2], int(argv[3]), int(argv[4]), int(argv[5]), json.loads(argv[6]))
    elif argv[1] == "merge":
        merge(argv[2], json.loads(argv[3]), argv[4] == "full", argv[5], int(argv[6]))
    else:
        raise SystemExit(f"unknown command {argv[1]!r}")


if __name__ == "__main__":
    main(sys.argv)
