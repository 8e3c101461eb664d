"""vizkit's own commands, one module each, as module-level click commands.

Each command reads the App it runs for from the click context (:func:`current_app`,
:func:`pass_app`: the root context's ``obj["app"]``), the convention plugins' commands follow
too, so a command is built once and :func:`vizkit.app.cli.build_cli` only assembles the group.
A new command of vizkit's own is a module here and an entry in :data:`COMMANDS`; a plugin adds
one through the ``register_commands`` hook instead.

* :mod:`~vizkit.app.commands.listing`: ``vizkit list``;
* :mod:`~vizkit.app.commands.layers`: ``vizkit layers MODEL``;
* :mod:`~vizkit.app.commands.run`: ``vizkit run ANALYSIS``, one sub-command per analysis;
* :mod:`~vizkit.app.commands.report`: ``vizkit report FOLDER``;
* :mod:`~vizkit.app.commands.demo`: ``vizkit demo`` and ``vizkit samples``.
"""

from __future__ import annotations

import click

from vizkit.app.commands.common import current_app, pass_app
from vizkit.app.commands.demo import demo_command, samples_command
from vizkit.app.commands.layers import layers_command
from vizkit.app.commands.listing import list_command
from vizkit.app.commands.report import report_command
from vizkit.app.commands.run import run_group

# vizkit's own commands (`vizkit --help` lists them by name); a plugin's clashing name loses
COMMANDS: tuple[click.Command, ...] = (
    list_command,
    layers_command,
    run_group,
    report_command,
    demo_command,
    samples_command,
)

__all__ = ["COMMANDS", "current_app", "pass_app"]
