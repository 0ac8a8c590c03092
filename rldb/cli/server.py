"""rldb-server: run a node from a JSON configuration."""
import asyncio
import logging
import os
import signal
import sys
import time

import click

import random

from rldb.cluster.generation import next_generation
from rldb.cluster.node import CoreConfig, NodeCore
from rldb.cluster.store import ObjectStore
from rldb.errors import RldbError
from rldb.net.config import ConfigError, load
from rldb.net.server import NodeServer
from rldb.storage import open_engine


def open_node_engine(cfg):
    path = None if cfg.storage_engine == "memory" else os.path.join(cfg.data_dir, "store")
    return open_engine(cfg.storage_engine, path, **cfg.storage_options)


def make_core(cfg, engine, now):
    store = ObjectStore(engine, cfg.partitions)
    core_cfg = CoreConfig(
        node_id=cfg.node_id, addr=cfg.addr, n=cfg.quorum.n, r=cfg.quorum.r, w=cfg.quorum.w,
        partitions=cfg.partitions, gossip_interval=cfg.heartbeat.interval / 1000,
        fanout=cfg.heartbeat.fanout, request_timeout=cfg.request_timeout_ms / 1000,
        sloppy_timeout=cfg.sloppy_timeout_ms / 1000, handoff_rate=cfg.handoff_keys_per_s,
        handoff_batch=cfg.handoff_batch, aae_interval=cfg.aae_interval_ms / 1000,
        aae_rate=cfg.aae_keys_per_s, tombstone_grace=cfg.tombstone_grace_ms / 1000)
    return NodeCore(core_cfg, store, random.Random(os.urandom(16)), next_generation(store, time.time()), now)


async def serve(cfg):
    engine = open_node_engine(cfg)
    core = make_core(cfg, engine, time.time())
    server = NodeServer(cfg, core, engine)
    try:
        await server.start()
    except OSError as exc:
        engine.close()
        raise click.ClickException(f"cannot listen on {cfg.addr}: {exc.strerror}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    left = asyncio.ensure_future(server.stop_requested.wait())
    signalled = asyncio.ensure_future(stop.wait())
    await asyncio.wait([left, signalled], return_when=asyncio.FIRST_COMPLETED)
    left.cancel()
    signalled.cancel()
    logging.getLogger("rldb.server").info("shutting down")
    await server.shutdown()


def run(coro):
    """Runs the node on uvloop where it is installed (a faster event loop),
    else on asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    logging.getLogger("rldb.server").debug("event loop: uvloop %s", uvloop.__version__)
    return uvloop.run(coro)


@click.command()
@click.option("--config-path", required=True, type=click.Path(dir_okay=False),
              help="JSON configuration of the node (see conf/).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
def main(config_path, log_level):
    """Start an rldb node."""
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load(config_path)
    except ConfigError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from None
    try:
        run(serve(cfg))
    except RldbError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()
