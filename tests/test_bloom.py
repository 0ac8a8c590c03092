"""Bloom filters: never a false negative, about 1% false positives at 10 bits/key."""
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rldb._core.bloom import bloom_build, bloom_may_contain, bloom_probe_many, hash128
from rldb.errors import CorruptionError, InvalidArgumentError

keys_strategy = st.lists(st.binary(min_size=0, max_size=40), max_size=300)


@settings(max_examples=200)
@given(keys_strategy, st.integers(min_value=1, max_value=20))
def test_no_false_negatives(keys, bits_per_key):
    bloom = bloom_build(keys, bits_per_key)
    for key in keys:
        assert bloom_may_contain(bloom, key)
    assert bloom_probe_many(bloom, keys) == b"\x01" * len(keys)


def _false_positive_rate(bits_per_key, present=100_000, absent=100_000, seed=42):
    rng = random.Random(seed)
    keys = [rng.randbytes(16) for _ in range(present)]
    bloom = bloom_build(keys, bits_per_key)
    probes = [b"absent:" + rng.randbytes(12) for _ in range(absent)]
    return sum(bloom_probe_many(bloom, probes)) / absent


def test_false_positive_rate_at_10_bits():
    rate = _false_positive_rate(10)
    assert 0.005 <= rate <= 0.02, rate


def test_false_positive_rate_with_sequential_keys():
    # keys that differ in a few bytes only, as real keys do
    keys = [b"user:%012d" % i for i in range(100_000)]
    bloom = bloom_build(keys, 10)
    probes = [b"user:%012d" % i for i in range(100_000, 200_000)]
    rate = sum(bloom_probe_many(bloom, probes)) / len(probes)
    assert 0.005 <= rate <= 0.02, rate


def test_more_bits_fewer_false_positives():
    assert _false_positive_rate(16, 20_000, 50_000) < _false_positive_rate(6, 20_000, 50_000)


def test_size_is_about_bits_per_key():
    bloom = bloom_build([b"%d" % i for i in range(1000)], 10)
    assert len(bloom) == 1000 * 10 // 8 + 1


def test_single_and_batch_probe_agree():
    rng = random.Random(5)
    keys = [rng.randbytes(rng.randrange(1, 30)) for _ in range(2000)]
    bloom = bloom_build(keys[:1000], 10)
    batch = bloom_probe_many(bloom, keys)
    assert batch == bytes(bloom_may_contain(bloom, k) for k in keys)


def test_empty_filter_rejects_everything_mostly():
    bloom = bloom_build([], 10)
    assert not any(bloom_probe_many(bloom, [b"%d" % i for i in range(100)]))


def test_corrupt_filter_is_an_error_not_a_crash():
    for bad in (b"", b"\x00", b"\x00" * 8 + b"\x00", b"\x00" * 8 + b"\xff"):
        with pytest.raises(CorruptionError):
            bloom_may_contain(bad, b"key")
        with pytest.raises(CorruptionError):
            bloom_probe_many(bad, [b"key"])


def test_bad_bits_per_key():
    for bad in (0, 65, -1):
        with pytest.raises(InvalidArgumentError):
            bloom_build([b"a"], bad)


def test_hashes_are_independent_of_each_other():
    h1s, h2s = zip(*(hash128(b"%d" % i) for i in range(1000)))
    assert len(set(h1s)) == len(set(h2s)) == 1000
    assert all(a != b for a, b in zip(h1s, h2s))
