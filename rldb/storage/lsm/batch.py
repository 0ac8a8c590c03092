"""The payload of a write-ahead-log record: one write batch.

fixed64 first sequence | fixed32 count | count x (kind byte, varint key length,
key, and for a put: varint value length, value).  Op i has sequence first + i."""
import struct

from rldb._core.memtable import KIND_DELETE, KIND_VALUE
from rldb._core.varint import decode_varint, encode_varint
from rldb.errors import CorruptionError

_HEAD = struct.Struct("<QI")
_SMALL = [bytes([i]) for i in range(128)]


def _varint(n):
    return _SMALL[n] if n < 128 else encode_varint(n)


def encode_batch(seq, ops):
    """ops: (kind, key, value) with kind 1 put / 0 delete."""
    parts = [_HEAD.pack(seq, len(ops))]
    for kind, key, value in ops:
        if kind == KIND_VALUE:
            parts += (b"\x01", _varint(len(key)), key, _varint(len(value)), value)
        else:
            parts += (b"\x00", _varint(len(key)), key)
    return b"".join(parts)


def _read_varint(data, pos):
    if pos >= len(data):
        raise CorruptionError("write batch truncated")
    if data[pos] < 128:
        return data[pos], pos + 1
    return decode_varint(data, pos)


def decode_batch(payload):
    """(first sequence, [(kind, key, value)]); CorruptionError when malformed."""
    if len(payload) < _HEAD.size:
        raise CorruptionError("write batch shorter than its header")
    seq, count = _HEAD.unpack_from(payload)
    pos, ops = _HEAD.size, []
    try:
        for _ in range(count):
            kind = payload[pos]
            klen, pos = _read_varint(payload, pos + 1)
            key = payload[pos:pos + klen]
            pos += klen
            if pos > len(payload):
                raise CorruptionError("write batch key runs past the record")
            if kind == KIND_VALUE:
                vlen, pos = _read_varint(payload, pos)
                value = payload[pos:pos + vlen]
                pos += vlen
            elif kind == KIND_DELETE:
                value = b""
            else:
                raise CorruptionError(f"write batch op of unknown kind {kind}")
            if pos > len(payload) or not key:
                raise CorruptionError("write batch op runs past the record")
            ops.append((kind, key, value))
    except IndexError:
        raise CorruptionError("write batch truncated") from None
    if pos != len(payload):
        raise CorruptionError("write batch has trailing bytes")
    return seq, ops
