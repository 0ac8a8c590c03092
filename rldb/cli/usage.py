"""One line for every error of rldb-server and rldb-client.

click reports a usage error on four lines (usage, a hint, a blank, the
error); a script or a supervisor that runs these tools wants one line on
stderr that it can log, and exit statuses it can tell apart: 2 for a bad
argument or a bad configuration, 1 for a failure at run time (cannot
connect, cannot listen).  OneLineErrors gives a click command or group
exactly that; BadConfiguration is a failure that exits 2 like a usage
error."""
import sys

import click


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


class BadConfiguration(click.ClickException):
    """The arguments parsed, but what they point to cannot be used."""
    exit_code = 2


class OneLineErrors:
    """Mixed into a click.Command or click.Group ahead of it."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:  # the caller handles errors itself
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except _NO_ARGS_IS_HELP as exc:  # a group called bare: its help, as click prints it
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else self.name
            click.echo(f"{where}: {exc.format_message()} (see {where} --help)", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"{self.name}: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)  # an int is an exit code (--help: 0)


class Command(OneLineErrors, click.Command):
    pass


class Group(OneLineErrors, click.Group):
    """Its subcommands' errors come up to the group's main, and are one line."""
