"""What a node stores under each key: a DVV clock of versions, with a CRC.

A version is (value, timestamp in ms): value is bytes, or None for a delete
(a tombstone).  On disk: crc32c u32 little-endian | msgpack [entries,
anonymous]; the CRC covers the msgpack bytes and is checked on every read."""
import struct

import msgpack

from rldb._core.checksum import crc32c
from rldb.cluster import dvv
from rldb.errors import CorruptionError

_CRC = struct.Struct("<I")


def encode(clock):
    entries, anonymous = clock
    body = msgpack.packb(
        [[[i, n, [list(v) for v in vals]] for i, n, vals in entries], [list(v) for v in anonymous]],
        use_bin_type=True)
    return _CRC.pack(crc32c(body)) + body


def decode(data, key=None):
    """The clock stored in data; CorruptionError on a bad CRC or shape."""
    if len(data) < 4:
        raise CorruptionError(f"stored object of {len(data)} bytes for key {key!r}")
    body = memoryview(data)[4:]
    if crc32c(body) != _CRC.unpack_from(data)[0]:
        raise CorruptionError(f"stored object for key {key!r} fails its checksum")
    try:
        entries, anonymous = msgpack.unpackb(body, raw=False, use_list=True)
        clock = (tuple((i, n, tuple((v, ts) for v, ts in vals)) for i, n, vals in entries),
                 tuple((v, ts) for v, ts in anonymous))
        dvv.check(clock)
    except CorruptionError:
        raise
    except Exception as exc:
        raise CorruptionError(f"stored object for key {key!r} is malformed ({exc})") from None
    return clock


def live_values(clock):
    """The values of the clock that are not tombstones."""
    return [v for v, _ in dvv.values(clock) if v is not None]


def is_deleted(clock):
    """True when every version is a tombstone (or there is none)."""
    return all(v is None for v, _ in dvv.values(clock))
