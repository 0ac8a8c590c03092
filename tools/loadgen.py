#!/usr/bin/env python3
"""loadgen: closed-loop load generator for rldb nodes, on the raw wire protocol.

    python tools/loadgen.py --port 3001 --connections 32 --get-ratio 0.5 \\
        --value-size 100 --keys 100000 --duration 10 --warmup 1 --preload --csv run.csv

C connections (spread round-robin over --ports when given), each keeping
--pipeline requests outstanding (1 by default: send, wait for the reply, send
the next).  Each request is a binary GET (16) or PUT (17) of a uniformly random
key of the key space (PREFIX + 10 digits), the mix set by --get-ratio; values
are --value-size bytes cut from a random pool.  Frames and msgpack payloads are
built by hand and replies are matched in order (request id checked) without
decoding the payload unless it is an error, so the generator costs a few
microseconds per request and leaves the CPU to the server it measures.  With
--uvloop (used when importable) it needs about half the CPU of asyncio's own
loop (measured: 40-45% against 86% of a core at 24,000 ops/s).

Measurement: only requests *sent* after the warmup count.  With --duration D
no request is sent after warmup + D seconds; with --ops N exactly N requests
are sent after the warmup.  Either way the run waits for the replies of the
requests in flight.  Throughput = measured replies / (last reply - warmup end).
Latency = reply received - request written (client side, perf_counter), over
every measured reply, errors included; percentiles are exact (nearest rank
over all samples, kept in memory: 17 bytes per request).

A reply counts as an error when it is {"err": ...} (except NotFound for a GET,
which is a miss), when no reply comes within --timeout (the connection is then
dropped), when the reply does not match the request (request id or command),
or when a connection is lost with requests in flight (each of them counts).

--csv FILE writes one row per second of the measured window (--csv-mode
second, the default), by reply time, with columns
    second, interval_s, ops, ops_per_s, gets, puts, misses, errors,
    p50_ms, p99_ms, p999_ms, max_ms
(the last row covers the tail, interval_s < 1 possibly), or with
--csv-mode request one row per measured request with columns
    sent_s, latency_ms, op, outcome
(sent_s from the end of the warmup; op get|put; outcome ok|miss|error).

Siblings: --preload puts every key once before the warmup (unmeasured), so
that GETs hit.  A PUT without a context (--put-context none, the default) is a
blind write: under the node's DVV-set rules it becomes a sibling next to the
key's earlier values, so GET replies grow over a run and across runs on the
same store (the summary gives the mean GET reply size).  --put-context
last-read sends with each PUT the context of this run's last GET reply for
that key when there is one (GET hits are then decoded), which keeps siblings
down.  Start each measurement from an empty store (memory engine: a fresh
process; lsm, bitcask: an empty data_dir).

--server-stats fetches each node's STATS (19) at the end: the node's own
latency per command, cumulative since it started (preload included).  --json
prints the summary as one JSON object instead of text.  Exit status: 0 when
the run measured at least one reply (errors are reported, not fatal), 1 when
it could not connect or measured nothing, 2 for bad arguments.
"""
import argparse
import array
import asyncio
import collections
import csv
import json
import math
import random
import resource
import socket
import struct
import sys
import time

import msgpack  # to read error replies, contexts and STATS (rldb depends on it)

BGET, BPUT, STATS = 16, 17, 19
_HEAD = struct.Struct(">BI")
_LEN = struct.Struct(">I")
_RID_LEN = 8
_REQ_HEAD = struct.Struct(">BI8sI")  # cmd | rid_len (8) | request id | payload_len
_OK = b"\x81\xa2ok"                  # msgpack {"ok": ...}
_KEY_FIELD = b"\xa3key"
_VALUE_FIELD = b"\xa5value"
_CONTEXT_FIELD = b"\xa7context"

# outcome codes in the sample log
GET_HIT, GET_MISS, PUT_OK, GET_ERR, PUT_ERR = 0, 1, 2, 3, 4
_OUTCOME = {GET_HIT: ("get", "ok"), GET_MISS: ("get", "miss"), PUT_OK: ("put", "ok"),
            GET_ERR: ("get", "error"), PUT_ERR: ("put", "error")}


def _bin_header(n):
    if n < 256:
        return b"\xc4" + bytes((n,))
    if n < 65536:
        return b"\xc5" + struct.pack(">H", n)
    return b"\xc6" + struct.pack(">I", n)


def make_key(prefix, i):
    return prefix + b"%010d" % i


def get_payload(key):
    """msgpack {"key": key} (key as bin)."""
    return b"\x81" + _KEY_FIELD + _bin_header(len(key)) + key


def put_payload(key, value, context=None):
    """msgpack {"key": key, "value": value[, "context": context]} (all bin)."""
    parts = [b"\x83" if context is not None else b"\x82", _KEY_FIELD, _bin_header(len(key)), key,
             _VALUE_FIELD, _bin_header(len(value)), value]
    if context is not None:
        parts += [_CONTEXT_FIELD, _bin_header(len(context)), context]
    return b"".join(parts)


class Stats:
    """What every connection records: the measured samples and the error counts."""

    def __init__(self):
        self.done = array.array("d")     # reply time (perf_counter)
        self.latency = array.array("d")  # seconds
        self.outcome = array.array("b")
        self.errors = collections.Counter()  # kind -> count, measured requests only
        self.unmeasured_errors = collections.Counter()
        self.replies = 0                 # every reply, for --progress
        self.get_hit_bytes = 0           # payload bytes of measured GET hits

    def error(self, kind, measured, n=1):
        (self.errors if measured else self.unmeasured_errors)[kind] += n


class Workload:
    """The request stream: decides for each send what to ask and whether to
    stop.  Shared by every connection of a run."""

    def __init__(self, args, value_pool):
        self.get_ratio = args.get_ratio
        # --put-context last-read: key index -> context of the last GET reply for it
        self.contexts = {} if args.put_context == "last-read" else None
        self.keys = args.keys
        self.prefix = args.key_prefix.encode()
        self.value_size = args.value_size
        self.pool = value_pool
        self.pool_span = len(value_pool) - args.value_size
        self.rand = random.Random(args.seed).random
        self.measure_from = math.inf  # perf_counter; set when the warmup ends
        self.stop_at = math.inf       # no send at or after this time
        self.budget = None            # --ops: sends left after the warmup
        self.preload_next = None      # preload: the next key index to put
        self.sending = True

    def next_frame(self, now, rid):
        """(frame, op, key index) for the next request, or None when the run stops sending."""
        if not self.sending:
            return None
        if now >= self.stop_at:
            self.sending = False
            return None
        rand = self.rand
        if self.preload_next is not None:
            i = self.preload_next
            if i >= self.keys:
                self.sending = False
                return None
            self.preload_next = i + 1
            is_get = False
        else:
            if now >= self.measure_from and self.budget is not None:
                if self.budget <= 0:
                    self.sending = False
                    return None
                self.budget -= 1
            i = int(rand() * self.keys)
            is_get = rand() < self.get_ratio
        key = self.prefix + b"%010d" % i
        if is_get:
            payload = b"\x81\xa3key\xc4" + bytes((len(key),)) + key if len(key) < 256 \
                else get_payload(key)
            return _REQ_HEAD.pack(BGET, _RID_LEN, rid, len(payload)) + payload, BGET, i
        off = int(rand() * self.pool_span)
        ctx = self.contexts.get(i) if self.contexts is not None else None
        payload = put_payload(key, self.pool[off:off + self.value_size], ctx)
        return _REQ_HEAD.pack(BPUT, _RID_LEN, rid, len(payload)) + payload, BPUT, i


class LoadConnection(asyncio.Protocol):
    """One client connection, driven from its data_received callback: every
    reply is recorded and answered with the next request in the same write."""

    def __init__(self, run, index):
        self.run = run
        self.index = index
        self.transport = None
        self.inflight = collections.deque()  # (sent perf_counter, op, request id, key index)
        self.buf = b""
        self.seq = 0
        self.dead = False
        self.closing = False
        self.idle = False

    # ---- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def connection_lost(self, exc):
        if not self.dead and not self.closing:
            self._fail("connection_lost")
        self.transport = None

    def close(self):
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data):
        if self.dead:
            return
        buf = self.buf + data if self.buf else data
        n = len(buf)
        pos = 0
        now = time.perf_counter()
        inflight = self.inflight
        run = self.run
        stats = run.stats
        measure_from = run.workload.measure_from
        contexts = run.workload.contexts
        replies = 0
        unpack_head = _HEAD.unpack_from
        unpack_len = _LEN.unpack_from
        while n - pos >= 5:
            cmd, rid_len = unpack_head(buf, pos)
            body = pos + 5 + rid_len
            if n < body + 4:
                break
            (plen,) = unpack_len(buf, body)
            end = body + 4 + plen
            if n < end:
                break
            if not inflight:
                self._fail("unexpected_reply")
                return
            sent, op, rid, key = inflight.popleft()
            measured = sent >= measure_from
            if buf[pos + 5:body] != rid or cmd != op:
                stats.error("mismatched_reply", measured)
                self._fail(None)
                return
            if buf[body + 4:body + 8] == _OK:
                if op == BGET:
                    outcome = GET_HIT
                    if measured:
                        stats.get_hit_bytes += plen
                    if contexts is not None:
                        self._keep_context(key, buf[body + 4:end])
                else:
                    outcome = PUT_OK
            else:
                outcome = self._error_outcome(op, buf[body + 4:end], measured)
            if measured:
                stats.done.append(now)
                stats.latency.append(now - sent)
                stats.outcome.append(outcome)
            replies += 1
            pos = end
        self.buf = buf[pos:] if pos < n else b""
        if replies:
            stats.replies += replies
            self._send(replies)

    def eof_received(self):
        return False

    # ---- internals ------------------------------------------------------------------------

    def _keep_context(self, key, payload):
        try:
            self.run.workload.contexts[key] = msgpack.unpackb(payload, raw=False)["ok"]["context"]
        except Exception:
            self.run.stats.error("bad_reply", True)

    def _error_outcome(self, op, payload, measured):
        kind = "bad_reply"
        try:
            err = msgpack.unpackb(payload, raw=False)["err"]
            kind = err.get("kind", "unknown") if isinstance(err, dict) else str(err)
        except Exception:
            pass
        if op == BGET and kind == "NotFound":
            return GET_MISS
        self.run.stats.error(kind, measured)
        return GET_ERR if op == BGET else PUT_ERR

    def _send(self, count):
        """Sends up to count new requests, as one write."""
        now = time.perf_counter()
        frames = []
        inflight = self.inflight
        next_frame = self.run.workload.next_frame
        seq = self.seq
        for _ in range(count):
            seq += 1
            rid = b"%08x" % (seq & 0xFFFFFFFF)
            item = next_frame(now, rid)
            if item is None:
                break
            frame, op, key = item
            frames.append(frame)
            inflight.append((now, op, rid, key))
        self.seq = seq
        if frames:
            self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        elif not inflight and not self.idle:
            self.idle = True
            self.run.connection_idle(self)

    def start(self, depth):
        self.idle = False
        self._send(depth)

    def _fail(self, kind):
        """The connection cannot go on: each of its requests in flight is an
        error of that kind (or one error if it had none but the run still sends)."""
        if self.dead:
            return
        self.dead = True
        run = self.run
        measure_from = run.workload.measure_from
        kind = kind or "dropped_in_flight"
        if self.inflight:
            for sent, *_ in self.inflight:
                run.stats.error(kind, sent >= measure_from)
        elif run.workload.sending:
            run.stats.error(kind, time.perf_counter() >= measure_from)
        self.inflight.clear()
        if self.transport is not None:
            self.transport.abort()
        if not self.idle:
            self.idle = True
            run.connection_idle(self)

    def check_timeout(self, now, timeout):
        if self.inflight and now - self.inflight[0][0] > timeout:
            self._fail("timeout")


async def fetch_server_stats(host, port, timeout):
    """The node's STATS reply (cumulative since it started), or {"error": ...}."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        return {"error": f"cannot connect: {exc}"}
    try:
        payload = b"\x80"  # msgpack {}
        writer.write(_REQ_HEAD.pack(STATS, _RID_LEN, b"stats000", len(payload)) + payload)
        head = await asyncio.wait_for(reader.readexactly(5), timeout)
        _, rid_len = _HEAD.unpack(head)
        await asyncio.wait_for(reader.readexactly(rid_len), timeout)
        (plen,) = _LEN.unpack(await asyncio.wait_for(reader.readexactly(4), timeout))
        body = msgpack.unpackb(await asyncio.wait_for(reader.readexactly(plen), timeout),
                               raw=False)
        return body.get("ok", body)
    except Exception as exc:  # a stats failure must not spoil the run's figures
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        writer.close()


class Run:
    def __init__(self, args, loop):
        self.args = args
        self.loop = loop
        self.stats = Stats()
        pool = random.Random(args.seed + 1).randbytes(max(args.value_size * 4, 1 << 16))
        self.workload = Workload(args, pool)
        self.connections = []
        self._idle_waiter = None
        self._busy = 0

    def connection_idle(self, conn):
        self._busy -= 1
        if self._busy <= 0 and self._idle_waiter is not None and not self._idle_waiter.done():
            self._idle_waiter.set_result(None)

    async def connect(self):
        args = self.args
        for i in range(args.connections):
            port = args.ports[i % len(args.ports)]
            conn = LoadConnection(self, i)
            try:
                await asyncio.wait_for(self.loop.create_connection(lambda: conn, args.host, port),
                                       args.timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                raise SystemExit(f"loadgen: cannot connect to {args.host}:{port}: {exc}")
            self.connections.append(conn)

    async def phase(self, depth):
        """Starts every live connection with depth requests and waits until all
        are idle (the workload stopped sending and the replies are in)."""
        live = [c for c in self.connections if not c.dead]
        if not live:
            return
        self._busy = len(live)
        self._idle_waiter = self.loop.create_future()
        self.workload.sending = True
        for conn in live:
            conn.start(depth)
        timeout = self.args.timeout
        progress = self.args.progress
        last_replies, last_t = self.stats.replies, time.perf_counter()
        next_progress = last_t + 1
        while not self._idle_waiter.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._idle_waiter), 0.1)
            except asyncio.TimeoutError:
                pass
            now = time.perf_counter()
            for conn in live:
                if not conn.dead:
                    conn.check_timeout(now, timeout)
            if progress and now >= next_progress:
                rate = (self.stats.replies - last_replies) / (now - last_t)
                errs = sum(self.stats.errors.values())
                print(f"[{now - self.t_start:7.1f}s] {rate:10.0f} ops/s  errors {errs}",
                      file=sys.stderr, flush=True)
                last_replies, last_t = self.stats.replies, now
                next_progress = now + 1

    async def execute(self):
        args = self.args
        wl = self.workload
        self.t_start = time.perf_counter()
        await self.connect()
        if args.preload:
            t0 = time.perf_counter()
            wl.preload_next = 0
            await self.phase(max(args.pipeline, 16))
            wl.preload_next = None
            self.preload_s = time.perf_counter() - t0
            preload_errors = sum(self.stats.unmeasured_errors.values())
            if preload_errors:
                print(f"loadgen: {preload_errors} errors during the preload", file=sys.stderr)
        now = time.perf_counter()
        wl.measure_from = now + args.warmup
        if args.ops is not None:
            wl.budget = args.ops
            wl.stop_at = math.inf
        else:
            wl.stop_at = wl.measure_from + args.duration
        self.cpu0 = _cpu()
        await self.phase(args.pipeline)
        self.cpu1 = _cpu()
        self.t_end = time.perf_counter()
        for conn in self.connections:
            conn.close()
        await asyncio.sleep(0)
        if args.server_stats:
            self.server_stats = {port: await fetch_server_stats(args.host, port, args.timeout)
                                 for port in args.ports}


def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, time.perf_counter()


def percentile(sorted_values, q):
    """Nearest rank: the smallest sample with at least q of them at or below
    it (q=0: the smallest, q=1: the largest); None for no samples.  The one
    definition of a percentile for loadgen and the benchmarks in bench/.

    q * n carries the rounding of q (0.07 * 100 is 7.000000000000001), so a
    product within n * 1e-12 of a whole number counts as that number."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"percentile: q must be between 0 and 1, not {q!r}")
    n = len(sorted_values)
    if not n:
        return None
    rank = math.ceil(q * n - n * 1e-12)
    return sorted_values[min(max(rank, 1), n) - 1]


def _ms(seconds):
    return None if seconds is None else round(seconds * 1000, 3)


def summarize(run):
    args = run.args
    st = run.stats
    start = run.workload.measure_from
    n = len(st.latency)
    end = max(st.done) if n else start
    elapsed = max(end - start, 1e-9)
    lat = sorted(st.latency)
    outcomes = collections.Counter(st.outcome)
    errors = sum(st.errors.values())
    cpu_s = run.cpu1[0] - run.cpu0[0]
    wall = run.cpu1[1] - run.cpu0[1]
    return {
        "ports": args.ports, "connections": args.connections, "pipeline": args.pipeline,
        "get_ratio": args.get_ratio, "value_size": args.value_size, "keys": args.keys,
        "put_context": args.put_context,
        "measured_s": round(elapsed, 3), "ops": n,
        "ops_per_s": round(n / elapsed, 1) if n else 0.0,
        "gets": outcomes[GET_HIT] + outcomes[GET_MISS] + outcomes[GET_ERR],
        "puts": outcomes[PUT_OK] + outcomes[PUT_ERR],
        "get_hits": outcomes[GET_HIT], "get_misses": outcomes[GET_MISS],
        "get_hit_reply_bytes": round(st.get_hit_bytes / outcomes[GET_HIT], 1)
        if outcomes[GET_HIT] else None,
        "errors": errors, "error_kinds": dict(st.errors),
        "p50_ms": _ms(percentile(lat, 0.50)), "p90_ms": _ms(percentile(lat, 0.90)),
        "p99_ms": _ms(percentile(lat, 0.99)), "p999_ms": _ms(percentile(lat, 0.999)),
        "max_ms": _ms(lat[-1] if lat else None),
        "mean_ms": _ms(sum(lat) / n if n else None),
        "client_cpu_pct": round(100 * cpu_s / wall, 1) if wall > 0 else None,
        "preload_s": round(getattr(run, "preload_s", 0.0), 3) if args.preload else None,
        "event_loop": run.loop_name,
        "server_stats": getattr(run, "server_stats", None),
    }


CSV_SECOND_COLUMNS = ["second", "interval_s", "ops", "ops_per_s", "gets", "puts", "misses",
                      "errors", "p50_ms", "p99_ms", "p999_ms", "max_ms"]
CSV_REQUEST_COLUMNS = ["sent_s", "latency_ms", "op", "outcome"]


def write_csv(run, path):
    st = run.stats
    start = run.workload.measure_from
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if run.args.csv_mode == "request":
            w.writerow(CSV_REQUEST_COLUMNS)
            for done, lat, outcome in zip(st.done, st.latency, st.outcome):
                op, result = _OUTCOME[outcome]
                w.writerow([f"{done - lat - start:.6f}", f"{lat * 1000:.3f}", op, result])
            return
        w.writerow(CSV_SECOND_COLUMNS)
        if not st.done:
            return
        end = max(st.done)
        seconds = max(1, math.ceil(end - start))
        buckets = [[] for _ in range(seconds)]
        for done, lat, outcome in zip(st.done, st.latency, st.outcome):
            buckets[min(int(done - start), seconds - 1)].append((lat, outcome))
        for i, bucket in enumerate(buckets):
            interval = min(1.0, end - start - i) if i == seconds - 1 else 1.0
            interval = max(interval, 1e-9)
            lats = sorted(lat for lat, _ in bucket)
            oc = collections.Counter(o for _, o in bucket)
            w.writerow([i, round(interval, 3), len(bucket), round(len(bucket) / interval, 1),
                        oc[GET_HIT] + oc[GET_MISS] + oc[GET_ERR], oc[PUT_OK] + oc[PUT_ERR],
                        oc[GET_MISS], oc[GET_ERR] + oc[PUT_ERR],
                        _ms(percentile(lats, 0.5)), _ms(percentile(lats, 0.99)),
                        _ms(percentile(lats, 0.999)), _ms(lats[-1] if lats else None)])


def print_summary(s, out=sys.stdout):
    def f(v):
        return "-" if v is None else f"{v:.3f}"
    ports = ",".join(map(str, s["ports"]))
    print(f"target      port(s) {ports}, {s['connections']} connections x pipeline "
          f"{s['pipeline']}, loop {s['event_loop']}", file=out)
    print(f"workload    get ratio {s['get_ratio']}, value {s['value_size']} B, "
          f"{s['keys']} keys, put context {s['put_context']}", file=out)
    print(f"measured    {s['ops']} ops in {s['measured_s']:.3f} s: {s['ops_per_s']:.0f} ops/s "
          f"({s['gets']} gets: {s['get_hits']} hits, {s['get_misses']} misses; {s['puts']} puts)",
          file=out)
    if s["get_hit_reply_bytes"] is not None:
        print(f"get replies {s['get_hit_reply_bytes']:.0f} B on average per hit (siblings add "
              f"about {s['value_size'] + 10} B each)", file=out)
    print(f"latency ms  p50 {f(s['p50_ms'])}  p90 {f(s['p90_ms'])}  p99 {f(s['p99_ms'])}  "
          f"p99.9 {f(s['p999_ms'])}  max {f(s['max_ms'])}  mean {f(s['mean_ms'])}", file=out)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(s["error_kinds"].items()))
    print(f"errors      {s['errors']}" + (f" ({kinds})" if kinds else ""), file=out)
    print(f"client cpu  {s['client_cpu_pct']}% of one core", file=out)
    for port, st in (s["server_stats"] or {}).items():
        cmds = (st.get("server") or {}).get("commands") if isinstance(st, dict) else None
        if not cmds:
            why = st.get("error") if isinstance(st, dict) else st
            print(f"server {port}  stats unavailable: {why}", file=out)
            continue
        parts = [f"{name} {c['count']} (p50 {c['p50_ms']} p99 {c['p99_ms']} p99.9 {c['p999_ms']})"
                 for name, c in sorted(cmds.items()) if name in ("bget", "bput")]
        print(f"server {port}  in-server ms since start: " + "; ".join(parts), file=out)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="Closed-loop load generator for rldb nodes (binary GET/PUT, raw protocol).",
        epilog="See the module docstring (or bench/README.md) for how requests are measured.")
    ap.add_argument("--host", default="127.0.0.1", help="node address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=3001, help="node port (default 3001)")
    ap.add_argument("--ports", default=None,
                    help="comma-separated ports; connections are spread round-robin "
                         "(overrides --port)")
    ap.add_argument("--connections", "-c", type=int, default=32,
                    help="concurrent connections (default 32)")
    ap.add_argument("--pipeline", type=int, default=1,
                    help="requests outstanding per connection (default 1)")
    ap.add_argument("--get-ratio", type=float, default=0.5,
                    help="fraction of GETs, 0..1 (default 0.5)")
    ap.add_argument("--value-size", type=int, default=100, help="bytes per PUT value (default 100)")
    ap.add_argument("--keys", type=int, default=100_000, help="key space size (default 100000)")
    ap.add_argument("--key-prefix", default="key:", help="keys are PREFIX + 10 digits")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--duration", type=float, default=None,
                       help="seconds of measured load after the warmup (default 10)")
    group.add_argument("--ops", type=int, default=None, help="measured requests to send")
    ap.add_argument("--warmup", type=float, default=1.0,
                    help="unmeasured seconds first (default 1)")
    ap.add_argument("--put-context", choices=("none", "last-read"), default="none",
                    help="none: blind PUTs (each adds a sibling); last-read: a PUT carries the "
                         "context of this run's last GET reply for its key, if any")
    ap.add_argument("--preload", action="store_true",
                    help="put every key once before the warmup (unmeasured)")
    ap.add_argument("--timeout", type=float, default=5.0,
                    help="seconds a request may wait for its reply before it is an error "
                         "(default 5)")
    ap.add_argument("--csv", default=None, help="write a CSV (see --csv-mode)")
    ap.add_argument("--csv-mode", choices=("second", "request"), default="second",
                    help="one row per second (default) or one per request")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    ap.add_argument("--progress", action="store_true", help="print ops/s every second to stderr")
    ap.add_argument("--uvloop", action="store_true", help="use uvloop when it is importable")
    ap.add_argument("--server-stats", action="store_true",
                    help="fetch each node's STATS (19) after the run and report its own latencies")
    ap.add_argument("--seed", type=int, default=1, help="seed of keys, mix and values (default 1)")
    args = ap.parse_args(argv)
    args.ports = [int(p) for p in args.ports.split(",")] if args.ports else [args.port]
    if args.duration is None and args.ops is None:
        args.duration = 10.0
    if args.connections < 1 or args.pipeline < 1:
        ap.error("--connections and --pipeline must be at least 1")
    if not 0.0 <= args.get_ratio <= 1.0:
        ap.error("--get-ratio must be between 0 and 1")
    if args.keys < 1 or args.value_size < 0 or args.warmup < 0:
        ap.error("--keys must be at least 1; --value-size and --warmup not negative")
    if ((args.duration is not None and args.duration <= 0)
            or (args.ops is not None and args.ops < 1)):
        ap.error("--duration must be positive, --ops at least 1")
    return args


def new_loop(want_uvloop):
    if want_uvloop:
        try:
            import uvloop
            return uvloop.new_event_loop(), "uvloop"
        except ImportError:
            print("loadgen: uvloop is not importable; using asyncio's loop", file=sys.stderr)
    return asyncio.new_event_loop(), "asyncio"


def main(argv=None):
    args = parse_args(argv)
    loop, loop_name = new_loop(args.uvloop)
    try:
        run = Run(args, loop)
        run.loop_name = loop_name
        loop.run_until_complete(run.execute())
    finally:
        loop.close()
    summary = summarize(run)
    if args.csv:
        write_csv(run, args.csv)
    if args.json:
        print(json.dumps(summary))
    else:
        print_summary(summary)
    return 0 if summary["ops"] else 1


if __name__ == "__main__":
    sys.exit(main())
