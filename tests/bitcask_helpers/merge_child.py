"""A child process for tests/test_bitcask_crash.py: a merge that dies.

    python merge_child.py DIR OPTIONS_JSON FULL STEP NTH

opens the Bitcask engine at DIR and runs a merge (full if FULL is "full")
that kills this process with SIGKILL the NTH time the merge reaches STEP (see
rldb/storage/bitcask/merge.py); STEP "random" prints "merging" and lets the
parent kill us whenever it likes, the merge paced by a 3 ms pause after each
input it copies (so that a kill lands inside it).  Prints "finished" if the
merge ran to its end.  (The writes killed mid-way are
tests/helpers/crash_writer.py's, shared with the LSM engine.)"""
import json
import os
import signal
import sys
import time


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
    if len(argv) != 6:
        raise SystemExit(f"usage: {argv[0]} DIR OPTIONS_JSON full|part STEP NTH")
    merge(argv[1], json.loads(argv[2]), argv[3] == "full", argv[4], int(argv[5]))


if __name__ == "__main__":
    main(sys.argv)
