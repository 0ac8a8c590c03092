"""rldb-client: talk to a node from a shell.  Mirrors the original rldb CLI
(ping, get, put, join-cluster with -p PORT) and adds delete, cluster-state and
stats.  Output is JSON; --pretty indents it.  A failure prints one line and
exits 1; a bad argument prints one line and exits 2."""
import json
import sys

import click

from rldb.cli.usage import Group
from rldb.errors import RldbError
from rldb.net.client import Client


def _text(value):
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _emit(ctx, obj):
    indent = 2 if ctx.obj["pretty"] else None
    click.echo(json.dumps(obj, indent=indent, default=_text))


def _call(ctx, method, *args, **kwargs):
    o = ctx.obj
    try:
        with Client(o["host"], o["port"], o["timeout"]) as client:
            return getattr(client, method)(*args, **kwargs)
    except (RldbError, TimeoutError, OSError) as exc:
        click.echo(f"rldb-client: {method} failed: {exc}", err=True)
        sys.exit(1)


def _use(ctx, port, pretty_here):
    ctx.obj["port"] = port
    ctx.obj["pretty"] = ctx.obj["pretty"] or pretty_here


def _context(hex_text):
    if hex_text is None:
        return None
    try:
        return bytes.fromhex(hex_text)
    except ValueError:
        raise click.BadParameter("the context is the hex string a get printed",
                                 param_hint="'-c' / '--context'") from None


class _Port(click.ParamType):
    """A TCP port, 1..65535 (a larger number would fail deep in the socket
    layer instead of here, as a bad argument)."""
    name = "port"

    def convert(self, value, param, ctx):
        try:
            port = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a port number (1..65535)", param, ctx)
        if not 1 <= port <= 65535:
            self.fail(f"{port} is not a port number (1..65535)", param, ctx)
        return port


def _at_least(low, exclusive=False):
    """An option callback: the number must be >= low (> low if exclusive)."""
    def check(ctx, param, value):
        if value is not None and (value <= low if exclusive else value < low):
            raise click.BadParameter(f"must be {'more than' if exclusive else 'at least'} {low}, "
                                     f"not {value}")
        return value
    return check


def port_option(command):
    """-p PORT, plus --pretty accepted after the command name too."""
    command = click.option("--pretty", "pretty_here", is_flag=True,
                           help="indented, readable output")(command)
    return click.option("-p", "--port", type=_Port(), required=True,
                        help="the node's port")(command)


@click.group("rldb-client", cls=Group)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--timeout", default=5.0, show_default=True, help="seconds to wait for a reply",
              callback=_at_least(0, exclusive=True))
@click.option("--pretty", is_flag=True, help="indented, readable output")
@click.pass_context
def main(ctx, host, timeout, pretty):
    """Command-line client for rldb nodes."""
    ctx.obj = {"host": host, "timeout": timeout, "pretty": pretty}


@main.command()
@port_option
@click.pass_context
def ping(ctx, port, pretty_here):
    """Check that a node answers."""
    _use(ctx, port, pretty_here)
    _emit(ctx, {"message": _call(ctx, "ping")})


@main.command()
@port_option
@click.option("-k", "--key", required=True)
@click.pass_context
def get(ctx, port, key, pretty_here):
    """Read a key: every sibling and the context to write back with."""
    _use(ctx, port, pretty_here)
    result = _call(ctx, "get", key)
    if result is None:
        click.echo(f"rldb-client: key {key!r} not found", err=True)
        sys.exit(1)
    _emit(ctx, {"values": [_text(v) for v in result.values], "context": result.context.hex()})


@main.command()
@port_option
@click.option("-k", "--key", required=True)
@click.option("-v", "--value", required=True)
@click.option("-c", "--context", default=None, help="the context a get printed")
@click.pass_context
def put(ctx, port, key, value, context, pretty_here):
    """Write a value (with the context of the value it replaces)."""
    _use(ctx, port, pretty_here)
    _call(ctx, "put", key, value, _context(context))
    _emit(ctx, {"message": "Ok"})


@main.command()
@port_option
@click.option("-k", "--key", required=True)
@click.option("-c", "--context", default=None, help="the context a get printed")
@click.pass_context
def delete(ctx, port, key, context, pretty_here):
    """Delete a key (every version the node has seen, or those of the context)."""
    _use(ctx, port, pretty_here)
    _call(ctx, "delete", key, _context(context))
    _emit(ctx, {"message": "Ok"})


@main.command("join-cluster")
@port_option
@click.option("--known-cluster-node", required=True, help="host:port of a node in the cluster")
@click.pass_context
def join_cluster(ctx, port, known_cluster_node, pretty_here):
    """Make the node at PORT join the cluster KNOWN_CLUSTER_NODE belongs to."""
    _use(ctx, port, pretty_here)
    _emit(ctx, {"message": _call(ctx, "join_cluster", known_cluster_node)})


@main.command("cluster-state")
@port_option
@click.pass_context
def cluster_state(ctx, port, pretty_here):
    """The nodes this node knows, with their status."""
    _use(ctx, port, pretty_here)
    _emit(ctx, {"nodes": _call(ctx, "cluster_state")})


@main.command()
@port_option
@click.pass_context
def stats(ctx, port, pretty_here):
    """Request counts, latencies, connections and engine figures of a node."""
    _use(ctx, port, pretty_here)
    _emit(ctx, _call(ctx, "stats"))


# ---- operator commands -------------------------------------------------------------------

STATUS_COLUMNS = ("node", "status", "phi", "partitions", "handoffs", "hints", "data_bytes",
                  "memtable_bytes")


def status_table(view):
    """The status rows as an aligned text table."""
    rows = [[str(row.get(col, "")) if row.get(col) is not None else "-" for col in STATUS_COLUMNS]
            for row in view["nodes"]]
    widths = [max(len(col), *(len(r[i]) for r in rows)) for i, col in enumerate(STATUS_COLUMNS)]
    lines = ["  ".join(col.ljust(w) for col, w in zip(STATUS_COLUMNS, widths))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in rows]
    state = "in transition" if view["in_transition"] else "settled"
    lines.append(f"ring version {view['ring_version']}, {state} (as {view['node']} sees it)")
    return "\n".join(lines)


@main.command()
@port_option
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table")
@click.pass_context
def status(ctx, port, as_json, pretty_here):
    """The cluster as this node sees it: one row per node."""
    _use(ctx, port, pretty_here)
    view = _call(ctx, "admin", "status")
    if as_json:
        _emit(ctx, view)
    else:
        click.echo(status_table(view))


@main.command("ring")
@port_option
@click.pass_context
def ring_cmd(ctx, port, pretty_here):
    """Partition -> preference list (and the next one during a transition)."""
    _use(ctx, port, pretty_here)
    _emit(ctx, _call(ctx, "admin", "ring"))


@main.command()
@port_option
@click.option("--partition", type=int, default=None, callback=_at_least(0),
              help="only this partition")
@click.option("--rebuild", is_flag=True, help="rebuild the hash trees from a scan first")
@click.pass_context
def repair(ctx, port, partition, rebuild, pretty_here):
    """Run an anti-entropy exchange now; prints the keys repaired."""
    _use(ctx, port, pretty_here)
    if ctx.obj["timeout"] == 5.0:
        ctx.obj["timeout"] = 600.0  # a whole node's partitions take a while
    _emit(ctx, _call(ctx, "admin", "repair", partition, rebuild))


@main.command()
@port_option
@click.pass_context
def leave(ctx, port, pretty_here):
    """Hand all of the node's partitions to the others, then stop it."""
    _use(ctx, port, pretty_here)
    _emit(ctx, {"message": _call(ctx, "admin", "leave")})


@main.command()
@port_option
@click.pass_context
def transfers(ctx, port, pretty_here):
    """The node's partition transfers in flight and the hints it holds."""
    _use(ctx, port, pretty_here)
    _emit(ctx, _call(ctx, "admin", "transfers"))


if __name__ == "__main__":
    main()
