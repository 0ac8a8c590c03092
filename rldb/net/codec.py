"""Between frames and the core's commands and replies.

Commands 1-7 take and give the original project's JSON; ours (16+) msgpack.
decode_request raises ProtocolError for a payload it cannot accept; the
connection stays usable (fatal=False) since the frame itself was whole."""
from rldb._core.checksum import crc32c
from rldb.cluster import commands as c
from rldb.net import protocol as p


def _bad(cmd_id, request_id, reason):
    """A payload of the wrong shape.  For the original JSON commands this is
    what serde reports: InvalidRequest(InvalidJsonPayload(message))."""
    if cmd_id in p.JSON_COMMANDS:
        error = {"InvalidRequest": {"InvalidJsonPayload": reason}}
    else:
        error = p.invalid_request("Generic", reason=reason)
    return p.ProtocolError(error, False, cmd_id, request_id)


def _field(obj, name, types, cmd_id, request_id, optional=False):
    if not isinstance(obj, dict):
        raise _bad(cmd_id, request_id, f"payload must be a map, not {type(obj).__name__}")
    if name not in obj or obj[name] is None:
        if optional:
            return None
        raise _bad(cmd_id, request_id, f"missing field {name!r}")
    value = obj[name]
    if not isinstance(value, types) or isinstance(value, bool) and bool not in (
            types if isinstance(types, tuple) else (types,)):
        raise _bad(cmd_id, request_id, f"field {name!r} has the wrong type "
                                       f"({type(value).__name__})")
    return value


def _key(value, cmd_id, request_id):
    key = value.encode() if isinstance(value, str) else value
    if not key:
        raise _bad(cmd_id, request_id, "key must not be empty")
    return key


def _quorum(obj, name, cmd_id, request_id):
    value = _field(obj, name, int, cmd_id, request_id, optional=True)
    if value is not None and value < 1:
        raise _bad(cmd_id, request_id, f"{name} must be at least 1")
    return value


def decode_request(cmd_id, request_id, payload):
    """The command a frame carries."""
    if cmd_id == p.PING:
        return c.Ping()
    if cmd_id in p.JSON_COMMANDS:
        if not payload and cmd_id != p.CLUSTER_STATE:
            raise p.ProtocolError(p.invalid_request("EmptyMessagePayload"), False, cmd_id, request_id)
        obj = p.parse_json(payload, cmd_id, request_id)
        if cmd_id == p.GET:
            return c.Get(_key(_field(obj, "key", str, cmd_id, request_id), cmd_id, request_id))
        if cmd_id == p.PUT:
            key = _key(_field(obj, "key", str, cmd_id, request_id), cmd_id, request_id)
            value = _field(obj, "value", dict, cmd_id, request_id)
            text = _field(value, "value", str, cmd_id, request_id)
            data = text.encode()
            crc = _field(value, "crc32c", int, cmd_id, request_id, optional=True)
            if crc is not None and crc != crc32c(data):
                raise p.ProtocolError(p.invalid_request(
                    "Generic", reason=f"crc32c {crc} does not match the value (expected "
                                      f"{crc32c(data)})"), False, cmd_id, request_id)
            ctx = _field(obj, "context", str, cmd_id, request_id, optional=True)
            return c.Put(key, data, _context_from_hex(ctx, cmd_id, request_id))
        if cmd_id == p.JOIN_CLUSTER:
            return c.JoinCluster(_field(obj, "known_cluster_node_addr", str, cmd_id, request_id))
        if cmd_id == p.CLUSTER_STATE:
            return c.ClusterState()
        raise _bad(cmd_id, request_id, f"command {cmd_id} is not accepted from clients")
    if cmd_id == p.ADMIN:
        obj = p.parse_msgpack(payload, cmd_id, request_id)
        op = _field(obj, "op", str, cmd_id, request_id)
        if op not in c.ADMIN_OPS:
            raise _bad(cmd_id, request_id, f"op must be one of {', '.join(c.ADMIN_OPS)}")
        partition = _field(obj, "partition", int, cmd_id, request_id, optional=True)
        rebuild = _field(obj, "rebuild", bool, cmd_id, request_id, optional=True)
        return c.Admin(op, partition, bool(rebuild))
    if cmd_id in (p.BGET, p.BPUT, p.BDELETE, p.STATS):
        obj = p.parse_msgpack(payload, cmd_id, request_id)
        if obj.__class__ is dict:
            # the common shapes, {"key"} and {"key", "value"} as bin, without the checks below
            key = obj.get("key")
            if key.__class__ is bytes and key:
                if cmd_id == p.BGET and len(obj) == 1:
                    return c.Get(key)
                if cmd_id == p.BPUT and len(obj) == 2 and obj.get("value").__class__ is bytes:
                    return c.Put(key, obj["value"])
        if cmd_id == p.STATS:
            return c.Stats()
        key = _key(_field(obj, "key", (bytes, str), cmd_id, request_id), cmd_id, request_id)
        if cmd_id == p.BGET:
            return c.Get(key, _quorum(obj, "r", cmd_id, request_id),
                         _quorum(obj, "pr", cmd_id, request_id))
        ctx = _field(obj, "context", bytes, cmd_id, request_id, optional=True)
        w = _quorum(obj, "w", cmd_id, request_id)
        pw = _quorum(obj, "pw", cmd_id, request_id)
        if cmd_id == p.BDELETE:
            return c.Delete(key, ctx, w, pw)
        value = _field(obj, "value", bytes, cmd_id, request_id)
        return c.Put(key, value, ctx, w, pw)
    raise p.ProtocolError(p.invalid_request("UnrecognizedCommand", id=cmd_id), False, cmd_id,
                          request_id)


def _context_from_hex(text, cmd_id, request_id):
    if text is None or text == "":
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise p.ProtocolError(p.invalid_request("MalformedContext"), False, cmd_id,
                              request_id) from None


def _error_body(err):
    if err.kind == "NotFound":
        key = err.fields["key"]
        return {"NotFound": {"key": key.decode("utf-8", "replace") if isinstance(key, bytes) else key}}
    if err.kind == "InvalidRequest":
        return p.invalid_request("Generic", reason=err.fields.get("reason", ""))
    if err.kind == "QuorumNotReached":
        return {"QuorumNotReached": {
            "operation": err.fields["operation"], "reason": err.fields["reason"],
            "errors": [_error_body(e) for e in err.fields.get("errors", [])]}}
    return {"Internal": {"Unknown": {"reason": err.fields.get("reason", err.kind)}}}


def _json_ok(cmd_id, value):
    if cmd_id == p.PING:
        return {"message": "PONG"}
    if cmd_id == p.GET:
        try:
            values = [{"value": v.decode(), "crc32c": crc32c(v)} for v in value.values]
        except UnicodeDecodeError:
            return None
        return {"values": values, "context": value.context.hex()}
    if cmd_id == p.CLUSTER_STATE:
        return {"nodes": value}
    return {"message": "Ok"}


def encode_reply(cmd_id, request_id, reply):
    """The response frame for a reply."""
    if cmd_id in p.JSON_COMMANDS:
        if isinstance(reply, c.Ok):
            ok = _json_ok(cmd_id, reply.value)
            body = {"Ok": ok} if ok is not None else {"Err": p.invalid_request(
                "Generic", reason="a value is not UTF-8; read it with the binary get (16)")}
        else:
            body = {"Err": _error_body(reply)}
        return p.encode_frame(cmd_id, request_id, p.json_body(body))
    if isinstance(reply, c.Ok):
        value = reply.value
        if isinstance(value, c.GetResult):
            value = {"values": value.values, "context": value.context,
                     "timestamps": value.timestamps}
        body = {"ok": value}
    else:
        body = {"err": {"kind": reply.kind, **{k: v for k, v in reply.fields.items()
                                                if k != "errors"},
                        **({"errors": [{"kind": e.kind, **e.fields} for e in
                                       reply.fields["errors"]]} if "errors" in reply.fields else {})}}
    return p.encode_frame(cmd_id, request_id, p.pack(body))


def encode_error(cmd_id, request_id, error):
    """The response frame for a ProtocolError's body, in the command's encoding."""
    if cmd_id in p.JSON_COMMANDS or cmd_id not in (p.BGET, p.BPUT, p.BDELETE, p.STATS, p.ADMIN):
        return p.encode_frame(cmd_id, request_id, p.json_body({"Err": error}))
    return p.encode_frame(cmd_id, request_id, p.pack({"err": {"kind": "InvalidRequest",
                                                              "detail": error}}))
