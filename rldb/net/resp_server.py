"""The Redis front door: RESP2 connections on `resp_port`, served by the
same node core as the native protocol (quorums, siblings, hints and all).

A RESP view of a key is one value: GET answers the sibling with the newest
write timestamp, SET overwrites what the coordinating replica has seen, DEL
deletes what a read saw.  RLDB.GET and RLDB.PUT give the whole truth:
every sibling and the context, and a write with a context.  Replies go out
in the order the commands came, however the core's answers interleave.

Ordering, admission against max_connections and the idle timeout come from
the shared ClientConnection, as for the native door.  What INFO and DBSIZE
show of the node comes from NodeCore.summary(), not from the core's insides."""
import logging
import os
import time

from rldb import __version__
from rldb.cluster import commands as c
from rldb.net import resp
from rldb.net.connection import ClientConnection

log = logging.getLogger("rldb.resp")


class _Slot:
    __slots__ = ("frame", "replies", "waiting", "finish", "started", "name")

    def __init__(self, name, started):
        self.frame = None
        self.replies = []
        self.waiting = 0
        self.finish = None
        self.started = started
        self.name = name


class RespConnection(ClientConnection):
    label = "RESP connection"

    def __init__(self, server):
        super().__init__(server)
        self.parser = resp.RespParser()
        self.client_name = None

    # ---- asyncio callbacks ------------------------------------------------------------------

    def refuse(self):
        """Redis's own words, so that clients show the usual error."""
        self.transport.write(resp.error("ERR max number of clients reached"))
        self.transport.close()
        self.closing = True

    def data_received(self, data):
        self.touch()
        if self.closing:
            return
        bad = None
        try:
            commands = self.parser.feed(data)
        except resp.RespError as exc:
            commands, bad = exc.commands, exc
        self.reading = True
        self.server.hold()
        try:
            for args in commands:
                if self.closing:
                    break
                self._dispatch(args)
        finally:
            self.server.release()
            self.reading = False
        if bad is not None and not self.closing:
            self.server.stats.protocol_errors += 1
            log.info("closing RESP connection from %s: %s", self.peer, bad)
            slot = _Slot("resp", time.perf_counter())
            slot.frame = resp.error(f"ERR {bad}")
            self.slots.append(slot)
            self.closing = True
        self.flush()

    # ---- replies ------------------------------------------------------------------------------

    def _done(self, slot, frame):
        self.complete(slot, frame, frame[:1] == b"-")

    def deliver(self, slot, reply, error):
        """A core reply for one of the slot's requests (NodeServer calls
        this); the slot is done once all came, unless finish asked more."""
        slot.replies.append(reply)
        slot.waiting -= 1
        if slot.waiting == 0:
            frame = slot.finish(slot.replies)
            if frame is not _PENDING:
                self._done(slot, frame)
                if not self.reading:
                    self.flush()

    def ask(self, slot, commands, finish):
        """Sends core commands for a slot; finish(replies) makes its frame."""
        slot.waiting = len(commands)
        slot.finish = finish
        for command in commands:
            self.server.submit_core(self, slot, command)

    # ---- commands -----------------------------------------------------------------------------

    def _dispatch(self, args):
        name = args[0].upper()
        slot = _Slot("resp_" + name.decode("latin-1").lower(), time.perf_counter())
        self.slots.append(slot)
        spec = COMMANDS.get(name)
        if spec is None:
            start = " ".join(f"'{a.decode('latin-1')}'" for a in args[1:4])
            slot.name = "resp_unknown"
            self._done(slot, resp.error(f"ERR unknown command '{args[0].decode('latin-1')}', "
                                        f"with args beginning with: {start}"))
            return
        handler, arity = spec
        if (arity >= 0 and len(args) != arity) or (arity < 0 and len(args) < -arity):
            self._done(slot, resp.error(f"ERR wrong number of arguments for "
                                        f"'{name.decode().lower()}' command"))
            return
        frame = handler(self, slot, args[1:])
        if frame is not None:
            self._done(slot, frame)

    def cmd_ping(self, slot, args):
        if len(args) > 1:
            return resp.error("ERR wrong number of arguments for 'ping' command")
        return resp.bulk(args[0]) if args else resp.simple("PONG")

    def cmd_echo(self, slot, args):
        return resp.bulk(args[0])

    def cmd_quit(self, slot, args):
        self.closing = True
        return resp.OK

    def cmd_hello(self, slot, args):
        """HELLO [2]: the handshake; RESP3 is not spoken (clients that ask
        for it get Redis's own NOPROTO and can retry with protocol 2)."""
        if args and args[0] != b"2":
            return resp.error("NOPROTO unsupported protocol version")
        if len(args) > 1:
            return resp.error("ERR HELLO options (AUTH, SETNAME) are not supported by rldb")
        fields = [("server", "redis"), ("version", "7.0.0"), ("proto", 2),
                  ("id", id(self) & 0x7FFFFFFF), ("mode", "standalone"), ("role", "master")]
        return resp.array([item for k, v in fields for item in
                           (resp.bulk(k), resp.integer(v) if isinstance(v, int) else resp.bulk(v))]
                          + [resp.bulk("modules"), resp.array([])])

    def cmd_select(self, slot, args):
        return resp.OK if args[0] == b"0" else resp.error("ERR DB index is out of range")

    def cmd_client(self, slot, args):
        sub = args[0].upper()
        if sub == b"SETNAME" and len(args) == 2:
            self.client_name = args[1]
            return resp.OK
        if sub == b"GETNAME":
            return resp.bulk(self.client_name)
        if sub == b"SETINFO" and len(args) == 3:
            return resp.OK
        if sub == b"ID":
            return resp.integer(id(self) & 0x7FFFFFFF)
        return resp.error(f"ERR unknown subcommand '{args[0].decode('latin-1')}' for 'client'")

    def cmd_command(self, slot, args):
        if not args:
            return resp.array([_command_info(n) for n in sorted(COMMANDS)])
        sub = args[0].upper()
        if sub == b"COUNT":
            return resp.integer(len(COMMANDS))
        if sub == b"DOCS":
            return resp.array([])
        if sub == b"INFO":
            return resp.array([_command_info(a.upper()) if a.upper() in COMMANDS else resp.array(None)
                               for a in args[1:]])
        return resp.error(f"ERR unknown subcommand '{args[0].decode('latin-1')}' for 'command'")

    def cmd_config(self, slot, args):
        sub = args[0].upper()
        if sub == b"GET":
            return resp.array([])
        if sub == b"RESETSTAT":
            return resp.OK
        return resp.error(f"ERR CONFIG {args[0].decode('latin-1')} is not supported by rldb")

    def cmd_info(self, slot, args):
        section = args[0].decode("latin-1").lower() if args else None
        return resp.bulk(info_text(self.server, section, self.server.cfg.resp_port))

    def cmd_dbsize(self, slot, args):
        return resp.integer(self.server.core.summary()["keys"])

    # -- keys

    def cmd_get(self, slot, args):
        self.ask(slot, [c.Get(args[0])], lambda replies: _newest(replies[0]))

    def cmd_mget(self, slot, args):
        self.ask(slot, [c.Get(k) for k in args],
                 lambda replies: _first_error(replies) or resp.array([_newest(r) for r in replies]))

    def cmd_exists(self, slot, args):
        self.ask(slot, [c.Get(k) for k in args],
                 lambda replies: _first_error(replies) or resp.integer(
                     sum(isinstance(r, c.Ok) for r in replies)))

    def cmd_set(self, slot, args):
        key, value, options = args[0], args[1], [a.upper() for a in args[2:]]
        for option in options:
            if option in (b"EX", b"PX", b"EXAT", b"PXAT", b"KEEPTTL"):
                return resp.error("ERR expiry (EX, PX, EXAT, PXAT, KEEPTTL) is not supported "
                                  "by rldb: keys do not expire")
            if option not in (b"NX", b"XX"):
                return resp.error("ERR syntax error")
        if b"NX" in options and b"XX" in options:
            return resp.error("ERR syntax error")
        if not options:
            self.ask(slot, [c.Put(key, value, overwrite=True)], _ok_or_error)
            return None
        want_absent = b"NX" in options

        def after_read(replies):
            found = replies[0]
            if isinstance(found, c.Err) and found.kind != "NotFound":
                return _error(found)
            exists = isinstance(found, c.Ok)
            if exists == want_absent:
                return resp.bulk(None)  # the condition failed: nil, as Redis
            context = found.value.context if exists else None
            self.ask(slot, [c.Put(key, value, context, overwrite=not exists)], _ok_or_error)
            return None
        self._chain(slot, [c.Get(key)], after_read)
        return None

    def cmd_mset(self, slot, args):
        if len(args) % 2:
            return resp.error("ERR wrong number of arguments for 'mset' command")
        self.ask(slot, [c.Put(args[i], args[i + 1], overwrite=True) for i in range(0, len(args), 2)],
                 lambda replies: _first_error(replies) or resp.OK)
        return None

    def cmd_del(self, slot, args):
        def after_read(replies):
            error = next((r for r in replies if isinstance(r, c.Err) and r.kind != "NotFound"), None)
            if error is not None:
                return _error(error)
            found = [(k, r.value.context) for k, r in zip(args, replies) if isinstance(r, c.Ok)]
            if not found:
                return resp.integer(0)
            self.ask(slot, [c.Delete(k, ctx) for k, ctx in found],
                     lambda done: _first_error(done) or resp.integer(len(found)))
            return None
        self._chain(slot, [c.Get(k) for k in args], after_read)
        return None

    def cmd_rldb_get(self, slot, args):
        def finish(replies):
            r = replies[0]
            if isinstance(r, c.Err):
                return resp.array(None) if r.kind == "NotFound" else _error(r)
            return resp.array([resp.array([resp.bulk(v) for v in r.value.values]),
                               resp.bulk(r.value.context)])
        self.ask(slot, [c.Get(args[0])], finish)

    def cmd_rldb_put(self, slot, args):
        if len(args) > 3:
            return resp.error("ERR wrong number of arguments for 'rldb.put' command")
        context = args[2] if len(args) == 3 and args[2] else None
        self.ask(slot, [c.Put(args[0], args[1], context)], _ok_or_error)
        return None

    def _chain(self, slot, commands, then):
        """Asks commands; then(replies) gives the frame or asks again."""
        def finish(replies):
            slot.replies = []
            frame = then(replies)
            if frame is None:  # `then` asked more; its finish completes the slot
                return _PENDING
            return frame
        self.ask(slot, commands, finish)


_PENDING = object()  # a finish that asked the core again: no frame yet


def _newest(reply):
    """GET's view of a key: the sibling written last (by its timestamp)."""
    if isinstance(reply, c.Err):
        return resp.bulk(None) if reply.kind == "NotFound" else _error(reply)
    result = reply.value
    if not result.values:
        return resp.bulk(None)
    stamps = result.timestamps or [0] * len(result.values)
    return resp.bulk(max(zip(stamps, range(len(stamps)), result.values))[2])


def _error(reply):
    reason = reply.fields.get("reason", reply.kind)
    if reply.kind == "QuorumNotReached":
        return resp.error(f"QUORUM {reason}")
    if reply.kind == "InvalidRequest":
        return resp.error(f"ERR {reason}")
    return resp.error(f"ERR {reply.kind}: {reason}")


def _first_error(replies):
    for r in replies:
        if isinstance(r, c.Err) and r.kind != "NotFound":
            return _error(r)
    return None


def _ok_or_error(replies):
    return _first_error(replies) or resp.OK


# name -> (handler, arity as Redis gives it: exact if >= 0, at least -arity if < 0)
COMMANDS = {
    b"PING": (RespConnection.cmd_ping, -1), b"ECHO": (RespConnection.cmd_echo, 2),
    b"QUIT": (RespConnection.cmd_quit, -1), b"SELECT": (RespConnection.cmd_select, 2),
    b"HELLO": (RespConnection.cmd_hello, -1),
    b"CLIENT": (RespConnection.cmd_client, -2), b"COMMAND": (RespConnection.cmd_command, -1),
    b"CONFIG": (RespConnection.cmd_config, -2), b"INFO": (RespConnection.cmd_info, -1),
    b"DBSIZE": (RespConnection.cmd_dbsize, 1),
    b"GET": (RespConnection.cmd_get, 2), b"MGET": (RespConnection.cmd_mget, -2),
    b"EXISTS": (RespConnection.cmd_exists, -2), b"SET": (RespConnection.cmd_set, -3),
    b"MSET": (RespConnection.cmd_mset, -3), b"DEL": (RespConnection.cmd_del, -2),
    b"RLDB.GET": (RespConnection.cmd_rldb_get, 2), b"RLDB.PUT": (RespConnection.cmd_rldb_put, -3),
}
_WRITES = {b"SET", b"MSET", b"DEL", b"RLDB.PUT"}


def _command_info(name):
    """COMMAND's entry for a command: name, arity, flags, first key, last
    key, step (what redis-cli reads for its hints)."""
    arity = COMMANDS[name][1]
    keyed = name in (b"GET", b"MGET", b"EXISTS", b"SET", b"MSET", b"DEL", b"RLDB.GET",
                     b"RLDB.PUT")
    flags = [resp.simple("write" if name in _WRITES else "readonly")]
    last = -1 if name in (b"MGET", b"EXISTS", b"DEL", b"MSET") else 1
    return resp.array([resp.bulk(name.lower()), resp.integer(arity), resp.array(flags),
                       resp.integer(1 if keyed else 0), resp.integer(last if keyed else 0),
                       resp.integer((2 if name == b"MSET" else 1) if keyed else 0)])


def info_text(server, section, resp_port):
    """INFO's text: server, clients, stats and keyspace sections.  What it
    says of the node's data comes from core.summary()."""
    stats = server.stats
    summary = server.core.summary()
    sections = {
        "server": [("redis_version", "7.0.0"), ("rldb_version", __version__),
                   ("redis_mode", "standalone"), ("process_id", os.getpid()),
                   ("tcp_port", resp_port), ("node_id", server.cfg.node_id),
                   ("uptime_in_seconds", int(time.time() - server.started)),
                   ("uptime_in_days", int((time.time() - server.started) // 86400))],
        "clients": [("connected_clients", len(server.connections))],
        "stats": [("total_connections_received", stats.connections_total),
                  ("total_commands_processed", sum(s.count for s in stats.commands.values())),
                  ("rejected_connections", stats.connections_refused),
                  ("protocol_errors", stats.protocol_errors),
                  ("read_repairs", summary["read_repairs"]),
                  ("hints_pending", summary["hints_pending"])],
        "keyspace": [("db0", f"keys={summary['keys']},expires=0,avg_ttl=0")],
    }
    wanted = list(sections) if section in (None, "all", "default", "everything") else [section]
    lines = []
    for name in wanted:
        if name in sections:
            lines.append(f"# {name.capitalize()}")
            lines += [f"{k}:{v}" for k, v in sections[name]]
            lines.append("")
    return "\r\n".join(lines)
