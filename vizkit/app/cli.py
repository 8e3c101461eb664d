"""The ``vizkit`` command line (click): the group, and the one-line error handling.

The commands are module-level click commands in :mod:`vizkit.app.commands`, each reading the App
(the plugin registry) it runs for from the click context; :func:`build_cli` assembles them and
the plugins' commands into one group. User mistakes end in a one-line ``vizkit: error: ...`` and
exit status 2 (1 when a run fails), never a traceback.
"""

from __future__ import annotations

import os
import sys
import traceback

import click

import vizkit
from vizkit.app.commands import COMMANDS
from vizkit.errors import UsageError, VizkitError
from vizkit.framework.registry import App, make_app

DEBUG_ENV = "VIZKIT_DEBUG"  # set to 1: full tracebacks on stderr, for any error


def build_cli(app: App) -> click.Group:
    """The ``vizkit`` command group for one App: vizkit's own commands, then the plugins'
    (``register_commands``; vizkit's own names win clashes).

    The App is the group's default context object (``obj["app"]``, what :func:`main` passes
    too), where every command finds it.

    Args:
        app: the plugin registry the commands run for.
    """

    @click.group(context_settings={"help_option_names": ["-h", "--help"], "obj": {"app": app}})
    @click.version_option(vizkit.__version__, prog_name="vizkit")
    def cli() -> None:
        """Make the inside of a convnet visible (Zeiler & Fergus analyses on any PyTorch model)."""

    for command in COMMANDS:
        cli.add_command(command)
    app.add_commands(cli)
    return cli


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vizkit`` console script; returns the exit status.

    Under ``torchrun`` a rank other than 0 ends its process here (``os._exit``, after flushing
    its output) once the command is done and its process group left: interpreter shutdown with
    gloo's threads around aborted such a rank now and then ("terminate called without an active
    exception", SIGABRT), which made torchrun stop rank 0 before it wrote the result.

    Every error ends in one line on stderr: ``vizkit: error: ...``, status 2 for a usage
    mistake, 1 for a failed run, 130 when interrupted. An unexpected exception (a bug) names
    the plugin and its analysis, model or rule it came from, or says it is a bug in vizkit
    (:meth:`vizkit.framework.App.explain`). ``VIZKIT_DEBUG=1`` prints the full traceback before that line,
    for any error. Plugin name clashes are warned about on stderr, one line each.

    Args:
        argv: the arguments after ``vizkit``; None: ``sys.argv[1:]``.
    """
    status = _main(list(argv if argv is not None else sys.argv[1:]))
    _end_worker_rank(status)
    return status


def _end_worker_rank(status: int) -> None:
    """``os._exit(status)`` on a torchrun rank other than 0 whose process group is closed."""
    from vizkit.toolkit.distributed import is_main_process, world_size

    distributed = sys.modules.get("torch.distributed")
    if world_size() <= 1 or is_main_process() or distributed is None:
        return
    if distributed.is_available() and distributed.is_initialized():
        return  # still in a group (a plugin's own): leave through the normal shutdown
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _main(args: list[str]) -> int:
    app: App | None = None
    try:
        app = make_app()
        cli = build_cli(app)
        for warning in app.warnings:
            click.echo(f"vizkit: warning: {warning}", err=True)
        with vizkit.toolkit.sigterm_as_interrupt():  # a scheduler's or `timeout`'s SIGTERM saves work as Ctrl-C does
            cli.main(args=args, prog_name="vizkit", standalone_mode=False, obj={"argv": args, "app": app})
    except click.exceptions.Exit as done:
        return int(done.exit_code or 0)
    except click.exceptions.NoArgsIsHelpError as error:  # `vizkit` or `vizkit run` alone: the help
        click.echo(error.ctx.get_help())
        return 0
    except click.ClickException as error:  # click's own checks (no such option, a bad choice or type)
        _debug_traceback(error)
        command = getattr(getattr(error, "ctx", None), "command_path", None)
        hint = f" (see '{command} --help')" if isinstance(error, click.UsageError) and command else ""
        click.echo(f"vizkit: error: {' '.join(error.format_message().split())}{hint}", err=True)
        return error.exit_code
    except click.exceptions.Abort as error:
        _debug_traceback(error)
        click.echo("vizkit: aborted", err=True)
        return 130
    except KeyboardInterrupt as error:
        _debug_traceback(error)
        click.echo("vizkit: interrupted", err=True)
        return 130
    except UsageError as error:
        _debug_traceback(error)
        click.echo(f"vizkit: error: {_one_line(error)}", err=True)
        return 2
    except VizkitError as error:
        _debug_traceback(error)
        click.echo(f"vizkit: error: {_one_line(error)}", err=True)
        return 1
    except Exception as error:  # a bug: in a plugin or in vizkit; one line, not a traceback
        _debug_traceback(error)
        click.echo(f"vizkit: error: {_explain(error, app, args)}", err=True)
        return 1
    return 0


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def debug_enabled() -> bool:
    """Whether ``VIZKIT_DEBUG`` asks for full tracebacks (any value but empty, 0, false, no, off)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def _debug_traceback(error: BaseException) -> None:
    if debug_enabled():
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)


def _explain(error: Exception, app: App | None, args: list[str]) -> str:
    """The one line for an unexpected exception (see :meth:`vizkit.framework.App.explain`)."""
    if app is None:  # the plugin registry itself failed to build
        return f"unexpected {type(error).__name__}: {_one_line(error)} (a bug in vizkit: please report it with the traceback {DEBUG_ENV}=1 shows)"
    running = args[1] if len(args) > 1 and args[0] == "run" and args[1] in app.analyses else None
    return app.explain(error, running)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
