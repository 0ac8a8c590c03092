"""The wire protocol without a network: frames (rldb/net/protocol.py) and
commands <-> payloads (rldb/net/codec.py).

* encode_frame / FrameDecoder round trips in any chunking, and a fuzz of the
  decoder against a small reference model of the frame rules: every input
  gives frames, "need more data" or a clean ProtocolError, never another
  exception;
* decode_request / encode_reply for each command;
* the JSON of commands 1, 2, 3, 6 and 7 and of their replies, byte for byte,
  as the original Rust rldb (rcmgleite/rldb) writes and reads them: serde_json
  compact output, externally tagged enums (unit variants are strings, struct
  variants {"Tag": {...}}), Result<T, Error> as {"Ok": T} / {"Err": Error}."""
import json
import struct

import crcmod.predefined
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rldb.cluster import commands as c
from rldb.cluster import messages
from rldb.net import codec
from rldb.net import protocol as p

crc32c_ref = crcmod.predefined.mkCrcFun("crc-32c")  # independent of rldb's C crc32c

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

request_ids = st.text(min_size=1, max_size=40)
payloads = st.binary(max_size=600)
frames_st = st.lists(st.tuples(st.integers(0, 255), request_ids, payloads), max_size=8)


def frame_bytes(cmd_id, rid, payload):
    """A frame written out by hand from the spec (not with encode_frame)."""
    rid = rid.encode() if isinstance(rid, str) else rid
    return (bytes([cmd_id]) + struct.pack(">I", len(rid)) + rid +
            struct.pack(">I", len(payload)) + payload)


def feed_in_chunks(data, cuts, max_frame=p.MAX_FRAME):
    """Feeds data cut at `cuts` (then a final feed(b"") to drain); returns
    (frames, error or None, bytes still buffered)."""
    decoder = p.FrameDecoder(max_frame)
    frames = []
    bounds = sorted({min(max(0, x), len(data)) for x in cuts} | {0, len(data)})
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:])] + [b""]
    for piece in pieces:
        try:
            frames.extend(decoder.feed(piece))
        except p.ProtocolError as exc:
            return frames, exc, decoder.buffered
    return frames, None, decoder.buffered


def reference_decode(data, max_frame=p.MAX_FRAME):
    """The frame rules as docs/protocol.md states them: (frames, outcome)
    where outcome is ("more", n_buffered) or ("error", tag).  Node-to-node
    frames (command 32) may be as large as a reply frame, other requests
    max_frame."""
    frames, pos = [], 0
    while True:
        left = len(data) - pos
        if left < 5:
            return frames, ("more", left)
        cmd_id, rid_len = struct.unpack_from(">BI", data, pos)
        if rid_len == 0:
            return frames, ("error", "MessageReceivedWithoutRequestId")
        if 9 + rid_len > max_frame:
            return frames, ("error", "MaxMessageSizeExceeded")
        if left < 9 + rid_len:
            return frames, ("more", left)
        try:
            rid = data[pos + 5:pos + 5 + rid_len].decode("utf-8")
        except UnicodeDecodeError:
            return frames, ("error", "MessageRequestIdMustBeUtf8Encoded")
        (payload_len,) = struct.unpack_from(">I", data, pos + 5 + rid_len)
        total = 9 + rid_len + payload_len
        if total > (p.MAX_REPLY_FRAME if cmd_id == p.INTERNAL else max_frame):
            return frames, ("error", "MaxMessageSizeExceeded")
        if left < total:
            return frames, ("more", left)
        frames.append((cmd_id, rid, data[pos + 9 + rid_len:pos + total]))
        pos += total


def error_tag(exc):
    body = exc.error["InvalidRequest"]
    return body if isinstance(body, str) else next(iter(body))


def check_against_reference(data, cuts, max_frame=p.MAX_FRAME):
    frames, exc, buffered = feed_in_chunks(data, cuts, max_frame)
    want_frames, (kind, detail) = reference_decode(data, max_frame)
    assert frames == want_frames
    if kind == "more":
        assert exc is None, exc
        assert buffered == detail
    else:
        assert exc is not None, "a bad frame was not refused"
        assert isinstance(exc, p.ProtocolError) and exc.fatal
        assert error_tag(exc) == detail
        json.dumps(exc.error)  # the error body must be sendable as JSON


# ---- frames ------------------------------------------------------------------------------


def test_frame_layout_is_the_originals():
    # u8 cmd_id | u32 request_id_len | request_id | u32 payload_len | payload, big-endian
    assert p.encode_frame(2, "ab", b"xyz") == b"\x02\x00\x00\x00\x02ab\x00\x00\x00\x03xyz"
    assert p.encode_frame(1, "req-\u00e9", b"") == b"\x01\x00\x00\x00\x06req-\xc3\xa9\x00\x00\x00\x00"
    assert p.FrameDecoder().feed(b"\x07\x00\x00\x00\x01z\x00\x00\x00\x04null") == [(7, "z", b"null")]
    assert p.MAX_FRAME == 1024 * 1024


@ROUND
@given(frames_st, st.lists(st.integers(0, 6000), max_size=12))
def test_frames_round_trip_in_any_chunking(frames, cuts):
    data = b"".join(p.encode_frame(*f) for f in frames)
    assert data == b"".join(frame_bytes(*f) for f in frames)
    got, exc, buffered = feed_in_chunks(data, cuts)
    assert exc is None
    assert got == frames
    assert buffered == 0


@ROUND
@given(frames_st)
def test_frames_round_trip_byte_by_byte(frames):
    data = b"".join(p.encode_frame(*f) for f in frames)
    decoder = p.FrameDecoder()
    got = []
    for i in range(len(data)):
        got.extend(decoder.feed(data[i:i + 1]))
    assert got == frames and decoder.buffered == 0


@FUZZ
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=6))
def test_fuzz_random_bytes(data, cuts):
    check_against_reference(data, cuts)


@FUZZ
@given(frames_st.filter(bool), st.data())
def test_fuzz_truncated_and_mutated_frames(frames, data):
    raw = bytearray(b"".join(p.encode_frame(*f) for f in frames))
    for _ in range(data.draw(st.integers(0, 4), label="mutations")):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        at = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and raw:
            raw[at] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and raw:
            del raw[at:at + data.draw(st.integers(1, 8))]
    cut_end = data.draw(st.integers(0, len(raw)), label="truncate at")
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=6), label="chunking")
    check_against_reference(bytes(raw[:cut_end]), cuts)


@FUZZ
@given(st.integers(0, 255), st.binary(min_size=1, max_size=20), st.integers(0, 2 ** 32 - 1),
       st.integers(16, 200), st.lists(st.integers(0, 300), max_size=4))
def test_fuzz_lengths_near_the_limit(cmd_id, rid, payload_len, max_frame, cuts):
    # a small max_frame so that sizes around the limit are cheap to build
    payload_len = payload_len % (max_frame + 10)
    data = frame_bytes(cmd_id, rid, b"x" * payload_len)
    check_against_reference(data, cuts, max_frame)


def test_truncated_frame_needs_more_data():
    frame = p.encode_frame(3, "rid", b'{"key":"k"}')
    for end in range(len(frame)):
        decoder = p.FrameDecoder()
        assert decoder.feed(frame[:end]) == []
        assert decoder.buffered == end
        assert decoder.feed(frame[end:]) == [(3, "rid", b'{"key":"k"}')]
        assert decoder.buffered == 0


def test_frame_of_exactly_max_size_is_accepted_one_byte_more_is_refused():
    rid = "r"
    body = b"a" * (p.MAX_FRAME - 9 - len(rid))
    frame = p.encode_frame(17, rid, body)
    assert len(frame) == p.MAX_FRAME
    assert p.FrameDecoder().feed(frame) == [(17, rid, body)]
    with pytest.raises(p.ProtocolError) as info:
        # the header alone is enough to refuse it: the payload is never waited for
        p.FrameDecoder().feed(p.encode_frame(17, rid, b"")[:-4] + struct.pack(">I", len(body) + 1))
    assert info.value.fatal
    assert info.value.error == {"InvalidRequest": {"MaxMessageSizeExceeded": {
        "max": p.MAX_FRAME, "got": p.MAX_FRAME + 1}}}
    assert info.value.request_id == rid and info.value.cmd_id == 17


@pytest.mark.parametrize("data, error", [
    (b"\x01\x00\x00\x00\x00\x00\x00\x00\x00", {"InvalidRequest": "MessageReceivedWithoutRequestId"}),
    (b"\x01\x00\x00\x00\x02\xff\xfe\x00\x00\x00\x00",
     {"InvalidRequest": "MessageRequestIdMustBeUtf8Encoded"}),
    (b"\x01\xff\xff\xff\xff", {"InvalidRequest": {"MaxMessageSizeExceeded": {
        "max": p.MAX_FRAME, "got": 0xFFFFFFFF + 9}}}),
])
def test_bad_frame_headers(data, error):
    with pytest.raises(p.ProtocolError) as info:
        p.FrameDecoder().feed(data)
    assert info.value.fatal and info.value.error == error


def test_good_frames_before_a_bad_one_come_out_first():
    data = p.encode_frame(1, "a", b"") + p.encode_frame(1, "b", b"") + b"\x01\x00\x00\x00\x00"
    decoder = p.FrameDecoder()
    assert decoder.feed(data) == [(1, "a", b""), (1, "b", b"")]
    with pytest.raises(p.ProtocolError):
        decoder.feed(b"")
    with pytest.raises(p.ProtocolError):  # and it stays refused
        decoder.feed(p.encode_frame(1, "c", b""))


# ---- codec: requests ---------------------------------------------------------------------

texts = st.text(min_size=1, max_size=30)
blobs = st.binary(min_size=1, max_size=60)
contexts = st.none() | st.binary(min_size=1, max_size=30)


def js(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def mp(obj):
    return msgpack.packb(obj, use_bin_type=True)


@ROUND
@given(texts, st.text(max_size=50), contexts, st.booleans())
def test_decode_json_get_and_put(key, value, ctx, with_crc):
    assert codec.decode_request(p.GET, "r", js({"key": key})) == c.Get(key.encode())
    data = value.encode()
    body = {"key": key, "value": {"value": value, "crc32c": crc32c_ref(data)},
            "replication": False, "context": None if ctx is None else ctx.hex()}
    if not with_crc:
        del body["value"]["crc32c"]
    assert codec.decode_request(p.PUT, "r", js(body)) == c.Put(key.encode(), data, ctx)


@ROUND
@given(blobs | texts, blobs, contexts, st.none() | st.integers(1, 5))
def test_decode_msgpack_commands(key, value, ctx, quorum):
    kb = key.encode() if isinstance(key, str) else key
    get = {"key": key} if quorum is None else {"key": key, "r": quorum}
    assert codec.decode_request(p.BGET, "r", mp(get)) == c.Get(kb, quorum)
    put = {"key": key, "value": value}
    if ctx is not None:
        put["context"] = ctx
    if quorum is not None:
        put["w"] = quorum
    assert codec.decode_request(p.BPUT, "r", mp(put)) == c.Put(kb, value, ctx, quorum)
    put.pop("value")
    assert codec.decode_request(p.BDELETE, "r", mp(put)) == c.Delete(kb, ctx, quorum)


def test_decode_other_commands():
    assert codec.decode_request(p.PING, "r", b"") == c.Ping()
    assert codec.decode_request(p.PING, "r", b"anything") == c.Ping()
    assert codec.decode_request(p.CLUSTER_STATE, "r", b"null") == c.ClusterState()
    assert codec.decode_request(p.JOIN_CLUSTER, "r", b'{"known_cluster_node_addr":"127.0.0.1:3001"}') \
        == c.JoinCluster("127.0.0.1:3001")
    assert codec.decode_request(p.STATS, "r", mp({})) == c.Stats()
    assert codec.decode_request(p.STATS, "r", b"") == c.Stats()
    assert codec.decode_request(p.ADMIN, "r", mp({"op": "status"})) == c.Admin("status")
    assert codec.decode_request(p.ADMIN, "r", mp({"op": "repair", "partition": 3, "rebuild": True})) \
        == c.Admin("repair", 3, True)
    assert codec.decode_request(p.BGET, "r", mp({"key": b"k", "r": 2, "pr": 1})) == c.Get(b"k", 2, 1)
    assert codec.decode_request(p.BPUT, "r", mp({"key": b"k", "value": b"v", "pw": 2})) \
        == c.Put(b"k", b"v", None, None, 2)
    assert codec.decode_request(p.BDELETE, "r", mp({"key": b"k", "w": 3, "pw": 3})) \
        == c.Delete(b"k", None, 3, 3)


@pytest.mark.parametrize("cmd_id, payload", [
    (p.GET, b'{"key":'), (p.GET, b"\xff\xfe"), (p.GET, b'{"key":1}'), (p.GET, b'{"key":""}'),
    (p.GET, b"[1,2]"), (p.GET, b'{"nokey":"x"}'), (p.GET, b""),
    (p.PUT, b'{"key":"k","value":"v"}'), (p.PUT, b'{"key":"k","value":{"value":5}}'),
    (p.PUT, b'{"key":"k","value":{"value":"v","crc32c":1}}'),
    (p.PUT, b'{"key":"k","value":{"value":"v","crc32c":true}}'),
    (p.PUT, b'{"key":"k","value":{"value":"v"},"context":"xyz"}'),
    (p.PUT, b'{"key":"k","value":{"value":"v"},"context":7}'),
    (p.JOIN_CLUSTER, b"{}"), (p.HEARTBEAT, b"{}"),
    (p.BGET, b"\xc1"), (p.BGET, mp([1, 2])), (p.BGET, mp({"key": 5})), (p.BGET, mp({"key": b""})),
    (p.BGET, mp({"key": b"k", "r": 0})), (p.BPUT, mp({"key": b"k"})),
    (p.BPUT, mp({"key": b"k", "value": "text"})), (p.BDELETE, mp({"key": b"k", "context": "s"})),
    (p.STATS, b"\x92"), (0, b""), (4, b"{}"), (99, b""), (255, b"x"),
    (p.ADMIN, mp({})), (p.ADMIN, mp({"op": "dance"})), (p.ADMIN, mp({"op": 5})),
    (p.ADMIN, mp({"op": "repair", "partition": "x"})), (p.ADMIN, b"\xc1"),
    (p.BGET, mp({"key": b"k", "pr": 0})), (p.BPUT, mp({"key": b"k", "value": b"v", "pw": "2"})),
])
def test_bad_payloads_are_clean_non_fatal_errors(cmd_id, payload):
    with pytest.raises(p.ProtocolError) as info:
        codec.decode_request(cmd_id, "rid", payload)
    exc = info.value
    assert not exc.fatal and exc.request_id == "rid" and exc.cmd_id == cmd_id
    frame = codec.encode_error(cmd_id, "rid", exc.error)
    [(cmd, rid, body)] = p.FrameDecoder().feed(frame)
    assert (cmd, rid) == (cmd_id, "rid")
    if cmd_id in (p.BGET, p.BPUT, p.BDELETE, p.STATS, p.ADMIN):
        reply = msgpack.unpackb(body, raw=False)
        assert reply["err"]["kind"] == "InvalidRequest" and reply["err"]["detail"] == exc.error
    else:
        assert json.loads(body) == {"Err": exc.error}


@ROUND
@given(st.binary(max_size=200), st.sampled_from([p.GET, p.PUT, p.JOIN_CLUSTER, p.CLUSTER_STATE,
                                                 p.BGET, p.BPUT, p.BDELETE, p.STATS, p.ADMIN,
                                                 0, 200]))
def test_fuzz_decode_request_never_raises_anything_else(payload, cmd_id):
    try:
        codec.decode_request(cmd_id, "r", payload)
    except p.ProtocolError as exc:
        assert not exc.fatal


# ---- codec: replies ----------------------------------------------------------------------


def reply_body(frame, cmd_id, rid="rid"):
    [(cmd, got_rid, body)] = p.FrameDecoder().feed(frame)
    assert (cmd, got_rid) == (cmd_id, rid)
    return body


@ROUND
@given(st.lists(st.text(max_size=20), min_size=1, max_size=4), st.binary(min_size=1, max_size=20))
def test_json_get_reply_round_trip(values, ctx):
    result = c.GetResult([v.encode() for v in values], ctx, list(range(len(values))))
    body = json.loads(reply_body(codec.encode_reply(p.GET, "rid", c.Ok(result)), p.GET))
    assert body == {"Ok": {"values": [{"value": v, "crc32c": crc32c_ref(v.encode())} for v in values],
                           "context": ctx.hex()}}


@ROUND
@given(st.lists(st.binary(max_size=20), min_size=1, max_size=4), st.binary(min_size=1, max_size=20))
def test_msgpack_get_reply_round_trip(values, ctx):
    result = c.GetResult(values, ctx, [1000 + i for i in range(len(values))])
    body = msgpack.unpackb(reply_body(codec.encode_reply(p.BGET, "rid", c.Ok(result)), p.BGET),
                           raw=False)
    assert body == {"ok": {"values": values, "context": ctx, "timestamps": result.timestamps}}


def test_msgpack_replies():
    def body(cmd_id, reply):
        return msgpack.unpackb(reply_body(codec.encode_reply(cmd_id, "rid", reply), cmd_id), raw=False)

    assert body(p.BPUT, c.Ok()) == {"ok": None}
    assert body(p.BDELETE, c.Ok()) == {"ok": None}
    assert body(p.STATS, c.Ok({"a": 1})) == {"ok": {"a": 1}}
    assert body(p.BGET, c.not_found(b"\xffk")) == {"err": {"kind": "NotFound", "key": b"\xffk"}}
    assert body(p.BPUT, c.invalid("bad")) == {"err": {"kind": "InvalidRequest", "reason": "bad"}}
    quorum = c.Err("QuorumNotReached", {"operation": "Put", "reason": "1 of 2",
                                        "errors": [c.internal("down")]})
    assert body(p.BPUT, quorum) == {"err": {"kind": "QuorumNotReached", "operation": "Put",
                                            "reason": "1 of 2",
                                            "errors": [{"kind": "Internal", "reason": "down"}]}}


def test_json_get_of_a_binary_value_is_an_error_not_a_crash():
    body = json.loads(reply_body(codec.encode_reply(p.GET, "rid", c.Ok(c.GetResult([b"\xff"], b"c"))),
                                 p.GET))
    assert list(body) == ["Err"] and "InvalidRequest" in body["Err"]


# ---- the original project's JSON, byte for byte ------------------------------------------
# Written from rcmgleite/rldb: src/server/message.rs (frame), src/cmd/{ping,get,put}.rs,
# src/cmd/cluster/{join_cluster,cluster_state}.rs, src/persistency/storage (Value
# {value, crc32c}), src/cmd/types.rs (SerializedContext: hex string) and src/error/mod.rs.

BAR_CRC = 179770161  # crc32c(b"bar")


def test_crc32c_is_castagnoli():
    assert crc32c_ref(b"123456789") == 0xE3069283
    assert crc32c_ref(b"bar") == BAR_CRC


@pytest.mark.parametrize("cmd_id, payload, command", [
    (p.PING, b"", c.Ping()),
    (p.GET, b'{"key":"foo"}', c.Get(b"foo")),
    (p.PUT, b'{"key":"foo","value":{"value":"bar","crc32c":179770161},"replication":false,'
            b'"context":null}', c.Put(b"foo", b"bar", None)),
    (p.PUT, b'{"key":"foo","value":{"value":"bar","crc32c":179770161},"replication":false,'
            b'"context":"0a1bff"}', c.Put(b"foo", b"bar", b"\x0a\x1b\xff")),
    (p.PUT, b'{"key":"k\xc3\xa9","value":{"value":"\xe2\x82\xac","crc32c":%d},"replication":false,'
            b'"context":null}' % crc32c_ref("\u20ac".encode()),
     c.Put("k\u00e9".encode(), "\u20ac".encode())),
    (p.JOIN_CLUSTER, b'{"known_cluster_node_addr":"127.0.0.1:3001"}', c.JoinCluster("127.0.0.1:3001")),
    (p.CLUSTER_STATE, b"null", c.ClusterState()),
])
def test_original_requests_are_accepted(cmd_id, payload, command):
    assert codec.decode_request(cmd_id, "some-request-id", payload) == command


def frame(cmd_id, rid, body):
    return bytes([cmd_id]) + struct.pack(">I", len(rid)) + rid + struct.pack(">I", len(body)) + body


@pytest.mark.parametrize("cmd_id, reply, body", [
    (p.PING, c.Ok("PONG"), b'{"Ok":{"message":"PONG"}}'),
    (p.GET, c.Ok(c.GetResult([b"bar"], b"\x01\xab", [5])),
     b'{"Ok":{"values":[{"value":"bar","crc32c":179770161}],"context":"01ab"}}'),
    (p.GET, c.Ok(c.GetResult([b"v1", b"v2"], b"\x00", [1, 2])),
     b'{"Ok":{"values":[{"value":"v1","crc32c":3850320085},{"value":"v2","crc32c":4130327329}],'
     b'"context":"00"}}'),
    (p.GET, c.not_found(b"foo"), b'{"Err":{"NotFound":{"key":"foo"}}}'),
    (p.PUT, c.Ok(), b'{"Ok":{"message":"Ok"}}'),
    (p.PUT, c.invalid("no"), b'{"Err":{"InvalidRequest":{"Generic":{"reason":"no"}}}}'),
    (p.PUT, c.internal("disk"), b'{"Err":{"Internal":{"Unknown":{"reason":"disk"}}}}'),
    (p.PUT, c.Err("QuorumNotReached", {"operation": "Put", "reason": "Unable to satisfy quorum",
                                       "errors": [c.not_found(b"k")]}),
     b'{"Err":{"QuorumNotReached":{"operation":"Put","reason":"Unable to satisfy quorum",'
     b'"errors":[{"NotFound":{"key":"k"}}]}}}'),
    (p.JOIN_CLUSTER, c.Ok(), b'{"Ok":{"message":"Ok"}}'),
    (p.CLUSTER_STATE, c.Ok([{"addr": "127.0.0.1:3001", "status": "Ok", "tick": 3}]),
     b'{"Ok":{"nodes":[{"addr":"127.0.0.1:3001","status":"Ok","tick":3}]}}'),
])
def test_original_replies_byte_for_byte(cmd_id, reply, body):
    assert codec.encode_reply(cmd_id, "req-7", reply) == frame(cmd_id, b"req-7", body)


def test_original_unit_variant_errors_are_strings():
    # serde's externally tagged unit variant: {"InvalidRequest":"MalformedContext"}
    with pytest.raises(p.ProtocolError) as info:
        codec.decode_request(p.PUT, "r", b'{"key":"k","value":{"value":"v","crc32c":%d},'
                                         b'"replication":false,"context":"not hex"}' % crc32c_ref(b"v"))
    assert codec.encode_error(p.PUT, "r", info.value.error) == frame(
        p.PUT, b"r", b'{"Err":{"InvalidRequest":"MalformedContext"}}')


def test_non_ascii_reply_is_utf8_as_serde_json_writes_it():
    # serde_json writes non-ASCII characters as raw UTF-8, never as \\u escapes.
    value = "h\u00e9llo \u20ac"
    crc = crc32c_ref(value.encode())
    got = codec.encode_reply(p.GET, "r", c.Ok(c.GetResult([value.encode()], b"\x01", [1])))
    want = b'{"Ok":{"values":[{"value":"' + value.encode() + b'","crc32c":%d}],"context":"01"}}' % crc
    assert reply_body(got, p.GET, "r") == want
    got = codec.encode_reply(p.GET, "r", c.not_found("cl\u00e9".encode()))
    assert reply_body(got, p.GET, "r") == '{"Err":{"NotFound":{"key":"cl\u00e9"}}}'.encode()


@pytest.mark.parametrize("payload, tag", [
    (b'{"key":', "InvalidJsonPayload"),   # not JSON
    (b'{"key":1}', "InvalidJsonPayload"),  # serde: invalid type: integer `1`, expected a string
    (b'{"nokey":"x"}', "InvalidJsonPayload"),  # serde: missing field `key`
    (b"", "EmptyMessagePayload"),
])
def test_bad_get_payload_errors_carry_the_original_tags(payload, tag):
    """In the original, a payload serde cannot read is
    Error::InvalidRequest(InvalidRequest::InvalidJsonPayload(String)) and a missing
    payload InvalidRequest::EmptyMessagePayload (src/cmd/mod.rs,
    try_from_message_with_payload!): {"InvalidRequest":{"InvalidJsonPayload":"..."}}
    and {"InvalidRequest":"EmptyMessagePayload"}."""
    with pytest.raises(p.ProtocolError) as info:
        codec.decode_request(p.GET, "r", payload)
    error = info.value.error
    assert list(error) == ["InvalidRequest"], error
    if tag == "EmptyMessagePayload":
        assert error["InvalidRequest"] == "EmptyMessagePayload"
    else:
        assert list(error["InvalidRequest"]) == [tag], error
        assert isinstance(error["InvalidRequest"][tag], str)  # a newtype variant: the message


# ---- replies that crossed a node-to-node hop ---------------------------------------------

FORWARDABLE = [
    c.Ok(),
    c.invalid("w=3 is more than n=2"),
    c.internal("disk full"),
    c.Err("QuorumNotReached", {"operation": "Put", "reason": "Put: 2 replica(s) needed, 1 answered",
                               "errors": []}),
    c.Err("QuorumNotReached", {"operation": "Put", "reason": "Put: 2 replica(s) needed, 0 answered",
                               "errors": [c.internal("n2: down")]}),
]


@pytest.mark.parametrize("reply", FORWARDABLE, ids=lambda r: getattr(r, "kind", "Ok"))
@pytest.mark.parametrize("cmd_id", [p.PUT, p.BPUT])
def test_a_forwarded_reply_encodes_like_the_reply_itself(reply, cmd_id):
    """A write sent to a node outside the key's preference list is forwarded;
    the coordinator's reply comes back in a fwd_reply message (msgpack, through
    rldb.cluster.messages.reply_to_wire / reply_from_wire) and the first node
    encodes it for the client.  It must encode exactly like the reply itself
    (a QuorumNotReached reply must not lose its shape, nor break encode_reply)."""
    wire = msgpack.unpackb(msgpack.packb(messages.reply_to_wire(reply), use_bin_type=True), raw=False)
    back = messages.reply_from_wire(wire)
    assert codec.encode_reply(cmd_id, "r", back) == codec.encode_reply(cmd_id, "r", reply)
