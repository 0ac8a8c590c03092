"""The opaque context handed to clients: a clock's version vector, msgpack."""
import msgpack

from rldb.errors import InvalidArgumentError


def encode(vector):
    return msgpack.packb([[i, n] for i, n in vector], use_bin_type=True)


def decode(data):
    """A version vector from a client's context; InvalidArgumentError if malformed."""
    if not data:
        return ()
    try:
        items = msgpack.unpackb(data, raw=False)
        vector = tuple(sorted((i, n) for i, n in items))
    except Exception:
        raise InvalidArgumentError("malformed context") from None
    if not all(isinstance(i, str) and isinstance(n, int) and n > 0 for i, n in vector) or \
            len({i for i, _ in vector}) != len(vector):
        raise InvalidArgumentError("malformed context")
    return vector
