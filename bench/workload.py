"""The data every engine is given: the same keys, values and orders for all, from one seed.

2N distinct random 16-byte keys are drawn and sorted; the even members of that
sorted list are loaded ("present"), the odd members never are ("absent"), so an
absent key always falls between two present keys, inside the key range.

Each value is 50 random bytes written twice (100 bytes), so an engine that
compresses can roughly halve it, as with db_bench's default compression ratio
of 0.5; nobody gets all-zero values for free."""
import os
import random

DEFAULT_N = 200_000
KEY_SIZE = 16
VALUE_SIZE = 100
SCANS = 20
SCAN_LEN = 10_000
SYNC_PUTS = 1_000


def bench_n(cli_value=None):
    """N from the command line if given, else $RLDB_BENCH_N, else 200,000."""
    if cli_value is not None:
        return int(cli_value)
    return int(os.environ.get("RLDB_BENCH_N", DEFAULT_N))


class Workload:
    """Everything the phases feed to the stores, built once and shared by all engines."""

    def __init__(self, n=DEFAULT_N, seed=20240601):
        if n < 2:
            raise ValueError("N must be at least 2")
        self.n = n
        self.seed = seed
        rng = random.Random(seed)

        keys = set()
        while len(keys) < 2 * n:
            keys.add(rng.getrandbits(8 * KEY_SIZE).to_bytes(KEY_SIZE, "big"))
        keys = sorted(keys)
        self.present = keys[0::2]  # sorted
        self.absent = keys[1::2]
        del keys

        half = VALUE_SIZE // 2
        noise = rng.randbytes(half * n)
        self.values = [noise[i * half:(i + 1) * half] * 2 for i in range(n)]  # values[i] is present[i]'s

        order = list(range(n))
        rng.shuffle(order)
        # load: one put per present key, in a shuffled order
        self.load_pairs = [(self.present[i], self.values[i]) for i in order]
        # get: N random present keys (with repetition); get_absent: N random absent keys
        self.get_keys = rng.choices(self.present, k=n)
        self.absent_keys = rng.choices(self.absent, k=n)
        # scan: forward scans of SCAN_LEN keys from random present keys, each with room for a full scan
        self.scan_len = min(SCAN_LEN, n)
        self.scan_starts = [self.present[rng.randrange(n - self.scan_len + 1)] for _ in range(SCANS)]
        # sync_put: overwrites of random present keys with new values (the old value reversed)
        picks = [rng.randrange(n) for _ in range(min(SYNC_PUTS, n))]
        self.sync_pairs = [(self.present[i], self.values[i][::-1]) for i in picks]

    def sample_checks(self, count=1000):
        """(present key, its value) and absent keys to verify a store with, untimed."""
        rng = random.Random(self.seed + 1)
        idx = [rng.randrange(self.n) for _ in range(min(count, self.n))]
        return [(self.present[i], self.values[i]) for i in idx], [self.absent[i] for i in idx]
