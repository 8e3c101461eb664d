"""The hooks a vizkit plugin can implement (pluggy project "vizkit").

A plugin is a module or object with functions decorated by ``vizkit.hookimpl`` whose names are
listed here. Each hook receives a ``register`` callback (datasette / llm style) so one plugin can
contribute several things, and vizkit knows which plugin contributed each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import click

    from vizkit.analysis import Analysis
    from vizkit.models import ModelEntry

hookspec = pluggy.HookspecMarker("vizkit")
hookimpl = pluggy.HookimplMarker("vizkit")


@hookspec
def register_analyses(register: "Callable[[Analysis], None]") -> None:
    """Contribute analyses: call ``register(vizkit.Analysis(...))`` once per analysis."""


@hookspec
def register_models(register: "Callable[[ModelEntry], None]") -> None:
    """Contribute named models: call ``register(vizkit.ModelEntry(...))`` once per model."""


@hookspec
def register_commands(cli: "click.Group") -> None:
    """Add commands to the ``vizkit`` command-line group (``@cli.command()``)."""
