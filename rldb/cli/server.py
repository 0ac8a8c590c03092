"""rldb-server: run a node from a JSON configuration.

Only the command line lives here: the arguments, logging, and how failures
end (one line on stderr; exit status 2 for a bad argument or configuration,
1 for a failure at run time such as a port that cannot be opened).  The node
itself is built and run by rldb.net.assembly."""
import logging
import sys

import click

from rldb.cli.usage import BadConfiguration, Command
from rldb.errors import RldbError
from rldb.net.assembly import run_node
from rldb.net.config import ConfigError, load


@click.command("rldb-server", cls=Command)
@click.option("--config-path", required=True, type=click.Path(dir_okay=False),
              help="JSON configuration of the node (see conf/).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
def main(config_path, log_level):
    """Start an rldb node."""
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_node(load(config_path))
    except ConfigError as exc:
        raise BadConfiguration(f"bad configuration: {exc}") from None
    except (RldbError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()
