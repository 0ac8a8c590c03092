"""Names and small encodings shared by the LSM files (docs/formats.md).

Internal key = user key + fixed64 little-endian (sequence << 8 | kind), ordered
by user key, then newest first.  Kind 1 is a value, 0 a tombstone."""
import re
import struct

import msgpack

from rldb._core.memtable import KIND_DELETE, KIND_VALUE, MAX_SEQUENCE  # noqa: F401  (re-exported)
from rldb.errors import CorruptionError

TABLE_MAGIC = 0x3130747373626472  # "rdbsst01" little-endian; checked in C
_TRAILER = struct.Struct("<Q")


def internal_key(user_key, seq, kind):
    return user_key + _TRAILER.pack(seq << 8 | kind)


def split_internal_key(ikey):
    """(user key, sequence, kind)."""
    if len(ikey) < 8:
        raise CorruptionError(f"internal key of {len(ikey)} bytes is shorter than 8")
    trailer = _TRAILER.unpack_from(ikey, len(ikey) - 8)[0]
    return ikey[:-8], trailer >> 8, trailer & 0xFF


def ikey_compare(a, b):
    """-1, 0 or 1: user keys ascending, then newest (largest trailer) first."""
    ua, ub = a[:-8], b[:-8]
    if ua != ub:
        return -1 if ua < ub else 1
    ta, tb = _TRAILER.unpack_from(a, len(a) - 8)[0], _TRAILER.unpack_from(b, len(b) - 8)[0]
    return -1 if ta > tb else (1 if ta < tb else 0)


# ---- file names -------------------------------------------------------------------

CURRENT = "CURRENT"
_NAME = re.compile(r"^(?:(\d{6,})\.(log|sst)|MANIFEST-(\d{6,})|(\d{6,})\.(sst|dbtmp)\.tmp)$")


def log_name(number):
    return f"{number:06d}.log"


def table_name(number):
    return f"{number:06d}.sst"


def manifest_name(number):
    return f"MANIFEST-{number:06d}"


def parse_name(name):
    """("log" | "sst" | "manifest" | "temp", number), or None for a foreign file."""
    m = _NAME.match(name)
    if not m:
        return None
    if m.group(1):
        return m.group(2), int(m.group(1))
    if m.group(3):
        return "manifest", int(m.group(3))
    return "temp", int(m.group(4))


# ---- table properties -------------------------------------------------------------


def encode_properties(props):
    return msgpack.packb(props, use_bin_type=True)


def decode_properties(data, path=None):
    try:
        props = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise CorruptionError(f"unreadable table properties ({exc})", path) from None
    if not isinstance(props, dict):
        raise CorruptionError("table properties are not a map", path)
    return props
