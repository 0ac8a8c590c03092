"""Varints: round trips, and truncated or over-long input rejected cleanly."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rldb._core.varint import decode_varint, decode_varints, encode_varint, encode_varints
from rldb.errors import CorruptionError, InvalidArgumentError

u64 = st.integers(min_value=0, max_value=2**64 - 1)


@given(u64)
def test_round_trip(value):
    encoded = encode_varint(value)
    assert len(encoded) == max(1, (value.bit_length() + 6) // 7)
    assert decode_varint(encoded) == (value, len(encoded))


@given(st.lists(u64, max_size=50))
def test_round_trip_many(values):
    encoded = encode_varints(values)
    assert encoded == b"".join(encode_varint(v) for v in values)
    assert decode_varints(encoded) == values


@given(st.binary(max_size=30), u64)
def test_decode_at_position(prefix, value):
    data = prefix + encode_varint(value) + b"tail"
    assert decode_varint(data, len(prefix)) == (value, len(data) - 4)


def test_known_encodings():
    assert encode_varint(0) == b"\x00"
    assert encode_varint(127) == b"\x7f"
    assert encode_varint(128) == b"\x80\x01"
    assert encode_varint(300) == b"\xac\x02"
    assert encode_varint(2**64 - 1) == b"\xff" * 9 + b"\x01"


@given(u64)
def test_every_truncation_is_rejected(value):
    encoded = encode_varint(value)
    for cut in range(len(encoded)):
        with pytest.raises(CorruptionError, match="truncated"):
            decode_varint(encoded[:cut])


def test_over_long_is_rejected():
    with pytest.raises(CorruptionError, match="too long"):
        decode_varint(b"\x80" * 10 + b"\x00")
    with pytest.raises(CorruptionError, match="too long"):
        decode_varint(b"\xff" * 9 + b"\x02")  # more than 64 bits
    with pytest.raises(CorruptionError):
        decode_varints(b"\x01\x02" + b"\xff" * 12)


def test_truncated_batch_is_rejected():
    with pytest.raises(CorruptionError):
        decode_varints(encode_varints([1, 2, 300])[:-1])


@given(st.binary(max_size=64))
def test_random_bytes_never_crash(data):
    try:
        values = decode_varints(data)
    except CorruptionError:
        return
    # whatever decodes is a list of 64-bit values that survives a round trip
    assert all(0 <= v < 2**64 for v in values)
    assert len(values) <= len(data)
    assert decode_varints(encode_varints(values)) == values


def test_out_of_range_values_refused():
    for bad in (-1, 2**64):
        with pytest.raises(InvalidArgumentError):
            encode_varint(bad)
        with pytest.raises(InvalidArgumentError):
            encode_varints([bad])
    with pytest.raises(InvalidArgumentError):
        decode_varint(b"\x00", 5)
