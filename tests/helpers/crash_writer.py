"""The child process of the disk engines' crash tests (tests/test_lsm_crash.py,
tests/test_bitcask_crash.py): writes a deterministic sequence of operations
to an engine and prints the index of each operation on its own line once the
engine has acknowledged it (stdout flushed each time), so the parent knows
exactly which writes were acknowledged when it kills us with SIGKILL.

    python crash_writer.py ENGINE DIR SEED START COUNT OPTIONS_JSON

opens ENGINE (lsm, bitcask) at DIR with OPTIONS_JSON, performs
operations(ENGINE, SEED, COUNT)[START:] and prints "done" at the end.  The
parent imports operations() to rebuild the same sequence."""
import json
import random
import sys
from typing import NamedTuple


class Mix(NamedTuple):
    """The shape of an engine's sequence: keys drawn from `keyspace`; an
    operation is a single put below `put`, a single delete below `delete`,
    else a batch of 2-7 steps, each a put with probability `batch_put`;
    values carry up to `max_random` random bytes."""
    keyspace: int
    put: float
    delete: float
    batch_put: float
    max_random: int


MIXES = {
    "lsm": Mix(keyspace=600, put=0.6, delete=0.8, batch_put=0.7, max_random=160),
    "bitcask": Mix(keyspace=500, put=0.55, delete=0.85, batch_put=0.6, max_random=120),
}


def operations(engine, seed, count):
    """A list of `count` operations; each is a list of ("put", key, value) /
    ("delete", key) steps applied together: one step is a put or delete, more
    are a write_batch.  Values name their key and operation index, so every
    prefix of the sequence leaves a distinguishable state."""
    mix = MIXES[engine]
    rng = random.Random(seed)
    live = []
    out = []
    for i in range(count):
        r = rng.random()
        if r < mix.put or not live:
            steps = [_put(rng, mix, i)]
        elif r < mix.delete:
            steps = [("delete", rng.choice(live))]
        else:
            steps = []
            for _ in range(rng.randrange(2, 8)):
                if rng.random() < mix.batch_put or not live:
                    steps.append(_put(rng, mix, i))
                else:
                    steps.append(("delete", rng.choice(live)))
        for step in steps:
            if step[0] == "put":
                live.append(step[1])
        if len(live) > 200:
            del live[:100]
        out.append(steps)
    return out


def _put(rng, mix, i):
    key = b"key%05d" % rng.randrange(mix.keyspace)
    return ("put", key, key + b"@%d:" % i + rng.randbytes(rng.randrange(0, mix.max_random)))


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

    if len(argv) != 7 or argv[1] not in MIXES:
        raise SystemExit(f"usage: {argv[0]} {'|'.join(MIXES)} DIR SEED START COUNT OPTIONS_JSON")
    kind, path, seed, start, count = argv[1], argv[2], int(argv[3]), int(argv[4]), int(argv[5])
    ops = operations(kind, seed, count)
    engine = open_engine(kind, path, **json.loads(argv[6]))
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
