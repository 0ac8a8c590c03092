"""CRC-32C: known vectors, agreement with crcmod on every length 0..4096, both paths."""
import random

import crcmod.predefined
import pytest

from rldb._core.checksum import (HW_CRC32C, crc32c, crc32c_hardware, crc32c_software, mask_crc,
                                 unmask_crc)
from rldb.errors import NotSupportedError

reference = crcmod.predefined.mkPredefinedCrcFun("crc-32c")

VECTORS = [
    (b"", 0x00000000),
    (b"123456789", 0xE3069283),
    (b"a", 0xC1D04330),
    (bytes(32), 0x8A9136AA),          # RFC 3720 B.4: 32 bytes of zeros
    (b"\xff" * 32, 0x62A8AB43),       # 32 bytes of ones
    (bytes(range(32)), 0x46DD794E),   # ascending
    (bytes(range(31, -1, -1)), 0x113FDB5C),  # descending
]

IMPLEMENTATIONS = [crc32c, crc32c_software]
if HW_CRC32C:
    IMPLEMENTATIONS.append(crc32c_hardware)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("data,expected", VECTORS)
def test_known_vectors(impl, data, expected):
    assert impl(data) == expected


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda f: f.__name__)
def test_agrees_with_crcmod_on_every_length(impl):
    rng = random.Random(1234)
    blob = rng.randbytes(4096 + 16)
    for length in range(4097):
        # vary the start so unaligned heads and tails are exercised too
        start = length % 8
        data = blob[start:start + length]
        assert impl(data) == reference(data), length


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda f: f.__name__)
def test_extend_equals_whole(impl):
    rng = random.Random(7)
    data = rng.randbytes(1000)
    for cut in (0, 1, 7, 8, 9, 500, 999, 1000):
        assert impl(data[cut:], impl(data[:cut])) == impl(data)


def test_hardware_path_is_reported_honestly():
    data = b"hello world" * 10
    if HW_CRC32C:
        assert crc32c_hardware(data) == reference(data)
    else:
        with pytest.raises(NotSupportedError):
            crc32c_hardware(data)


def test_accepts_bytes_like():
    data = b"123456789"
    assert crc32c(bytearray(data)) == crc32c(memoryview(data)) == 0xE3069283


def test_mask_round_trip_and_differs():
    rng = random.Random(3)
    for _ in range(1000):
        crc = rng.getrandbits(32)
        masked = mask_crc(crc)
        assert unmask_crc(masked) == crc
    assert mask_crc(0xE3069283) != 0xE3069283
    # LevelDB: mask(crc) = rotr15(crc) + 0xa282ead8
    crc = 0xE3069283
    assert mask_crc(crc) == ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
