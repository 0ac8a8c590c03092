"""The phi accrual failure detector: phi grows with silence, and its running
sums give what a computation over the whole window gives."""
import math

from hypothesis import given
from hypothesis import strategies as st

from rldb.cluster.failure_detector import PhiAccrual


def test_phi_grows_with_silence_and_crosses_the_threshold():
    d = PhiAccrual(threshold=8.0, first_interval=0.5)
    t = 0.0
    for _ in range(20):
        d.heartbeat(t)
        t += 0.5
    phis = [d.phi(t + extra) for extra in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert phis == sorted(phis) and phis[0] < 1.0
    assert d.available(t) and not d.available(t + 10.0)


@given(st.lists(st.floats(0.01, 5.0), min_size=1, max_size=250), st.floats(0.0, 20.0))
def test_running_sums_match_the_window(intervals, silence):
    d = PhiAccrual(window=100, first_interval=1.0)
    t = 0.0
    d.heartbeat(t)
    for x in intervals:
        t += x
        d.heartbeat(t)
    window = list(d._intervals)
    assert len(window) == min(100, len(intervals) + 1)
    mean = sum(window) / len(window)
    assert math.isclose(d._sum / len(window), mean, rel_tol=1e-9, abs_tol=1e-9)
    var = sum((x - mean) ** 2 for x in window) / len(window)
    assert math.isclose(max(d._sumsq / len(window) - mean * mean, 0.0), var,
                        rel_tol=1e-6, abs_tol=1e-6)


def test_phi_of_a_time_before_the_last_heartbeat_is_a_number():
    """A node's clock can step back (NTP, a skewed clock reset): phi must
    stay a finite, small number rather than overflow."""
    from rldb.cluster.failure_detector import PhiAccrual
    d = PhiAccrual()
    t = 0.0
    for _ in range(150):
        t += 0.3
        d.heartbeat(t)
    for back in (1.5, 10.0, 1e6):
        assert 0.0 <= d.phi(t - back) < 1.0
    assert d.phi(t + 1e6) > 8.0
