"""A child process for tests/test_lsm_crash.py: writes a deterministic sequence
of operations to an LSM engine and prints the index of each operation on its
own line once the engine has acknowledged it (stdout flushed each time), so
the parent knows exactly which writes were acknowledged when it kills us.

    python writer.py DIR SEED START COUNT OPTIONS_JSON

performs operations(SEED, COUNT)[START:] and prints "done" at the end.  The
parent imports operations() to rebuild the same sequence."""
import json
import random
import sys


def operations(seed, count, keyspace=600):
    """A list of `count` operations; each is a list of ("put", key, value) /
    ("delete", key) steps applied together: one step is a put or delete, more
    are a write_batch.  Values name their key and operation index, so every
    prefix of the sequence leaves a distinguishable state."""
    rng = random.Random(seed)
    live = []
    out = []
    for i in range(count):
        r = rng.random()
        if r < 0.6 or not live:
            steps = [_put(rng, i, rng.randrange(keyspace))]
        elif r < 0.8:
            steps = [("delete", rng.choice(live))]
        else:
            steps = []
            for _ in range(rng.randrange(2, 8)):
                if rng.random() < 0.7 or not live:
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
    return ("put", key, key + b"@%d:" % i + rng.randbytes(rng.randrange(0, 160)))


def apply(engine, steps):
    if len(steps) == 1:
        step = steps[0]
        if step[0] == "put":
            engine.put(step[1], step[2])
        else:
            engine.delete(step[1])
    else:
        engine.write_batch(steps)


def main(argv):
    from rldb.storage import open_engine

    path, seed, start, count, options = argv[1], int(argv[2]), int(argv[3]), int(argv[4]), argv[5]
    ops = operations(seed, count)
    engine = open_engine("lsm", path, **json.loads(options))
    out = sys.stdout
    for i in range(start, count):
        apply(engine, ops[i])
        out.write(f"{i}\n")
        out.flush()
    engine.close()
    out.write("done\n")
    out.flush()


if __name__ == "__main__":
    main(sys.argv)
