"""rldb-server: run a node from a JSON configuration."""
import asyncio
import logging
import os
import signal
import sys

import click

from rldb.cluster.node import NodeCore
from rldb.cluster.store import ObjectStore
from rldb.errors import RldbError
from rldb.net.config import ConfigError, load
from rldb.net.server import NodeServer
from rldb.storage import open_engine


def open_node_engine(cfg):
    path = None if cfg.storage_engine == "memory" else os.path.join(cfg.data_dir, "store")
    return open_engine(cfg.storage_engine, path, **cfg.storage_options)


async def serve(cfg):
    engine = open_node_engine(cfg)
    core = NodeCore(cfg.node_id, ObjectStore(engine, cfg.partitions), addr=cfg.addr)
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
    await stop.wait()
    logging.getLogger("rldb.server").info("shutting down")
    await server.shutdown()


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
        asyncio.run(serve(cfg))
    except RldbError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()
