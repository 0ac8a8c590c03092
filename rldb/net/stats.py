"""Request counts, errors and latency percentiles per command, cheaply: a
latency histogram with buckets growing by 2^(1/8) (about 9% apart)."""
import math

_BUCKETS_PER_DOUBLING = 8
_MIN = 1e-6  # 1 microsecond


def _bucket(seconds):
    if seconds <= _MIN:
        return 0
    return int(math.log2(seconds / _MIN) * _BUCKETS_PER_DOUBLING) + 1


def _bucket_upper(i):
    return _MIN * 2 ** (i / _BUCKETS_PER_DOUBLING)


class CommandStats:
    __slots__ = ("count", "errors", "hist")

    def __init__(self):
        self.count = 0
        self.errors = 0
        self.hist = {}

    def record(self, seconds, error):
        self.count += 1
        if error:
            self.errors += 1
        b = _bucket(seconds)
        self.hist[b] = self.hist.get(b, 0) + 1

    def percentile(self, q):
        """Upper bound of the bucket holding the q-quantile, in ms."""
        if not self.count:
            return None
        rank = math.ceil(q * self.count)
        seen = 0
        for b in sorted(self.hist):
            seen += self.hist[b]
            if seen >= rank:
                return round(_bucket_upper(b) * 1000, 3)
        return None

    def summary(self):
        return {"count": self.count, "errors": self.errors, "p50_ms": self.percentile(0.5),
                "p99_ms": self.percentile(0.99), "p999_ms": self.percentile(0.999)}


class ServerStats:
    def __init__(self):
        self.commands = {}
        self.connections_open = 0
        self.connections_total = 0
        self.connections_refused = 0
        self.protocol_errors = 0

    def record(self, name, seconds, error):
        stats = self.commands.get(name)
        if stats is None:
            stats = self.commands[name] = CommandStats()
        stats.record(seconds, error)

    def summary(self):
        return {
            "requests": sum(s.count for s in self.commands.values()),
            "errors": sum(s.errors for s in self.commands.values()),
            "connections_open": self.connections_open,
            "connections_total": self.connections_total,
            "connections_refused": self.connections_refused,
            "protocol_errors": self.protocol_errors,
            "commands": {name: s.summary() for name, s in sorted(self.commands.items())},
        }
