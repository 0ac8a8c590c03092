"""The phi accrual failure detector (Hayashibara et al., as in Cassandra and Akka).

For each peer it keeps the recent intervals between heartbeats and answers
phi(now): how unlikely the silence since the last heartbeat is, as -log10 of
the probability that a heartbeat is still on its way, under a normal
distribution of intervals.  Above a threshold (Cassandra's 8) the peer is
believed down.  Time comes in from the caller."""
import math
from collections import deque


class PhiAccrual:
    def __init__(self, threshold=8.0, window=100, min_std=0.25, first_interval=1.0,
                 acceptable_pause=0.0):
        self.threshold = threshold
        self.min_std = min_std
        self.first_interval = first_interval
        self.acceptable_pause = acceptable_pause
        self._intervals = deque(maxlen=window)
        self._sum = self._sumsq = 0.0   # of the intervals, kept as they come and go
        self._last = None

    def _add(self, interval):
        if len(self._intervals) == self._intervals.maxlen:
            old = self._intervals[0]
            self._sum -= old
            self._sumsq -= old * old
        self._intervals.append(interval)
        self._sum += interval
        self._sumsq += interval * interval

    def heartbeat(self, now):
        if self._last is None:
            # Seed with a guess so phi has a distribution from the start.
            self._add(self.first_interval)
        elif now > self._last:
            self._add(now - self._last)
        self._last = now

    @property
    def last_heartbeat(self):
        return self._last

    def phi(self, now):
        if self._last is None:
            return 0.0
        n = len(self._intervals)
        mean = self._sum / n
        var = max(self._sumsq / n - mean * mean, 0.0)
        std = max(math.sqrt(var), self.min_std * mean, 1e-3)
        elapsed = now - self._last - self.acceptable_pause
        # clamped: a clock that went back (or far ahead) must not overflow exp
        y = min(max((elapsed - mean) / std, -8.0), 30.0)
        # P(interval > elapsed) via the logistic approximation of the normal CDF
        e = math.exp(-y * (1.5976 + 0.070566 * y * y))
        p_later = e / (1.0 + e) if elapsed > mean else 1.0 - 1.0 / (1.0 + e)
        if p_later <= 0:
            return float("inf")
        return -math.log10(p_later)

    def available(self, now):
        return self.phi(now) < self.threshold
