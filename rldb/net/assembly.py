"""A node built from its Config, and run.

The one place that knows how a configuration becomes a running node: the
engine opened under <data_dir>/store, the configuration's milliseconds
turned into the core's seconds, the object store over the engine, the
node's generation, the core with a random source of its own, and the server
around them.  It lives in the library, not in the command line, so that
rldb-server, tests and tools build a node the same way; rldb-server only
reads its arguments and calls run_node().

Errors: ConfigError for a configuration the engine refuses (its
storage_options), ListenError (from the server) for a port that cannot be
opened; both are one line."""
import asyncio
import logging
import os
import random
import signal

from rldb.cluster.generation import next_generation
from rldb.cluster.node import CoreConfig, NodeCore
from rldb.cluster.store import ObjectStore
from rldb.errors import InvalidArgumentError
from rldb.net.config import ConfigError
from rldb.net.server import Clock, ListenError, NodeServer
from rldb.storage import open_engine

log = logging.getLogger("rldb.server")


def open_node_engine(cfg):
    """The node's engine: in memory, or under <data_dir>/store."""
    path = None if cfg.storage_engine == "memory" else os.path.join(cfg.data_dir, "store")
    try:
        return open_engine(cfg.storage_engine, path, **cfg.storage_options)
    except InvalidArgumentError as exc:  # an unknown or ill-typed engine option
        raise ConfigError(f"storage_options: {exc}") from None


def core_config(cfg):
    """The core's view of the configuration (durations in seconds)."""
    return CoreConfig(
        node_id=cfg.node_id, addr=cfg.addr, n=cfg.quorum.n, r=cfg.quorum.r, w=cfg.quorum.w,
        partitions=cfg.partitions, gossip_interval=cfg.heartbeat.interval / 1000,
        fanout=cfg.heartbeat.fanout, request_timeout=cfg.request_timeout_ms / 1000,
        sloppy_timeout=cfg.sloppy_timeout_ms / 1000, handoff_rate=cfg.handoff_keys_per_s,
        handoff_batch=cfg.handoff_batch, aae_interval=cfg.aae_interval_ms / 1000,
        aae_rate=cfg.aae_keys_per_s, tombstone_grace=cfg.tombstone_grace_ms / 1000,
        forward_timeout=cfg.forward_timeout_ms / 1000,
        floor_retention=cfg.floor_retention_ms / 1000,
        clock_skew=cfg.max_clock_skew_ms / 1000)


def make_core(cfg, engine, now):
    """The node core over engine at time now, with the next generation of
    this store (so that peers tell a restarted node from its past self)."""
    store = ObjectStore(engine, cfg.partitions)
    return NodeCore(core_config(cfg), store, random.Random(os.urandom(16)),
                    next_generation(store, now), now)


def build_node(cfg, now=None):
    """The NodeServer of cfg, not started yet (start() it in a running
    event loop); it owns the engine and closes it at shutdown().  The core
    is built at the server's clock (which a test may offset, see Clock)."""
    clock = Clock.from_env()
    engine = open_node_engine(cfg)
    try:
        core = make_core(cfg, engine, clock.now() if now is None else now)
    except BaseException:
        engine.close()
        raise
    return NodeServer(cfg, core, engine, clock)


async def serve(cfg):
    """Runs a node until SIGINT or SIGTERM, or until it has left the
    cluster; then stops it cleanly (requests in flight are answered)."""
    server = build_node(cfg)
    try:
        await server.start()
    except ListenError:
        server.engine.close()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    left = asyncio.ensure_future(server.stop_requested.wait())
    signalled = asyncio.ensure_future(stop.wait())
    await asyncio.wait([left, signalled], return_when=asyncio.FIRST_COMPLETED)
    left.cancel()
    signalled.cancel()
    log.info("shutting down")
    await server.shutdown()


def run_node(cfg):
    """serve(cfg) on uvloop where it is installed (a faster event loop),
    else on asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(cfg))
    log.debug("event loop: uvloop %s", uvloop.__version__)
    return uvloop.run(serve(cfg))
