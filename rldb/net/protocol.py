"""The wire protocol: frames and the payloads of every command.  Pure encode
and decode, no I/O.

A frame, as in the original Rust rldb, big-endian:

    u8 cmd_id | u32 request_id_len | request_id (UTF-8, not empty) | u32 payload_len | payload

A response echoes cmd_id and request_id.  Commands 1-15 keep the original
project's ids and JSON payloads; ours (16 and up) carry msgpack.  Every
command is described in docs/protocol.md."""
import json
import struct

import msgpack

MAX_FRAME = 1 << 20  # bytes in a whole request frame, header included
MAX_REPLY_FRAME = 1 << 26  # replies and node-to-node messages carry whole clocks
UNKNOWN_REQUEST_ID = "UNKNOWN"  # in replies to frames whose request id could not be read
_HEAD = struct.Struct(">BI")
_LEN = struct.Struct(">I")

# Original commands (JSON payloads).
PING, GET, PUT = 1, 2, 3
HEARTBEAT, JOIN_CLUSTER, CLUSTER_STATE = 5, 6, 7
# Ours (msgpack payloads).
BGET, BPUT, BDELETE, STATS = 16, 17, 18, 19
ADMIN = 20  # operator commands: status, ring, transfers, repair, leave
INTERNAL = 32  # node-to-node messages (msgpack maps; no reply frame)

JSON_COMMANDS = {PING, GET, PUT, HEARTBEAT, JOIN_CLUSTER, CLUSTER_STATE}


class ProtocolError(Exception):
    """A frame or payload that breaks the protocol.  `error` is the reply body
    (an original-style error map); `fatal` means the stream cannot go on."""

    def __init__(self, error, fatal, cmd_id=0, request_id=""):
        super().__init__(json.dumps(error))
        self.error = error
        self.fatal = fatal
        self.cmd_id = cmd_id
        self.request_id = request_id


def invalid_request(kind, **fields):
    """An InvalidRequest error body, shaped as the original serde enum."""
    return {"InvalidRequest": {kind: fields} if fields else kind}


def encode_frame(cmd_id, request_id, payload):
    rid = request_id.encode() if isinstance(request_id, str) else request_id
    return b"".join((_HEAD.pack(cmd_id, len(rid)), rid, _LEN.pack(len(payload)), payload))


class FrameDecoder:
    """Feed bytes in, get (cmd_id, request_id, payload) frames out.

    feed() returns the complete frames so far; a frame that breaks the
    protocol raises ProtocolError after the good frames before it have been
    returned by earlier calls (call feed(b"") to drain)."""

    def __init__(self, max_frame=MAX_FRAME, max_internal=MAX_REPLY_FRAME):
        self.max_frame = max_frame
        self.max_internal = max_internal
        self._buf = bytearray()
        self._pending_error = None

    def feed(self, data):
        if self._pending_error is not None:
            raise self._pending_error
        buf = self._buf
        if not data and not buf:
            return []  # feed(b"") after a read that left nothing behind
        if not buf and data.__class__ is bytes and len(data) >= 9:
            # the common case: nothing buffered and data is exactly one whole frame
            cmd_id, rid_len = _HEAD.unpack_from(data)
            if 0 < rid_len and len(data) >= 9 + rid_len and cmd_id != INTERNAL:
                (payload_len,) = _LEN.unpack_from(data, 5 + rid_len)
                total = 9 + rid_len + payload_len
                if total == len(data) and total <= self.max_frame:
                    try:
                        request_id = data[5:5 + rid_len].decode()
                    except UnicodeDecodeError:
                        pass  # the general path below raises the error
                    else:
                        return [(cmd_id, request_id, data[9 + rid_len:])]
        buf += data
        frames = []
        pos = 0
        n = len(buf)
        try:
            while n - pos >= 5:
                cmd_id, rid_len = _HEAD.unpack_from(buf, pos)
                if rid_len == 0:
                    raise ProtocolError(invalid_request("MessageReceivedWithoutRequestId"), True,
                                        cmd_id)
                if 5 + rid_len + 4 > self.max_frame:
                    raise ProtocolError(invalid_request(
                        "MaxMessageSizeExceeded", max=self.max_frame, got=5 + rid_len + 4), True,
                        cmd_id)
                if n - pos < 9 + rid_len:
                    break
                (payload_len,) = _LEN.unpack_from(buf, pos + 5 + rid_len)
                total = 9 + rid_len + payload_len
                try:
                    request_id = bytes(buf[pos + 5:pos + 5 + rid_len]).decode()
                except UnicodeDecodeError:
                    raise ProtocolError(invalid_request("MessageRequestIdMustBeUtf8Encoded"), True,
                                        cmd_id) from None
                limit = self.max_internal if cmd_id == INTERNAL else self.max_frame
                if total > limit:
                    raise ProtocolError(invalid_request("MaxMessageSizeExceeded", max=limit,
                                                        got=total), True, cmd_id, request_id)
                if n - pos < total:
                    break
                frames.append((cmd_id, request_id, bytes(buf[pos + 9 + rid_len:pos + total])))
                pos += total
        except ProtocolError as exc:
            del buf[:pos]
            if frames:
                self._pending_error = exc
                return frames
            raise
        del buf[:pos]
        return frames

    @property
    def buffered(self):
        return len(self._buf)


# ---- payloads ----------------------------------------------------------------------------


def json_body(obj):
    """Compact JSON as serde_json writes it (raw UTF-8, no escaped code points)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def parse_json(payload, cmd_id, request_id):
    """The JSON value of a payload; InvalidJsonPayload when it is not JSON."""
    try:
        return json.loads(payload) if payload else None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError({"InvalidRequest": {"InvalidJsonPayload": str(exc)}}, False, cmd_id,
                            request_id) from None


def parse_msgpack(payload, cmd_id, request_id):
    try:
        return msgpack.unpackb(payload, raw=False) if payload else None
    except Exception as exc:
        raise ProtocolError(invalid_request("Generic", reason=f"bad msgpack payload: {exc}"),
                            False, cmd_id, request_id) from None


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)
