"""The hooks a vizkit plugin can implement (pluggy project "vizkit").

A plugin is a module or object with functions decorated by ``vizkit.hookimpl`` whose names are
listed here. Each ``register_*`` hook receives a ``register`` callback (datasette / llm style),
so one plugin can contribute several things and vizkit knows which plugin contributed each.
vizkit's own analyses, commands, models, model sources, projection rules and map methods arrive through
these same hooks.

Names are unique per kind: a name vizkit has (its own or a built-in plugin's) stays vizkit's and a
plugin's registration under it is left out; a name two third-party plugins register is used by
neither (both are marked with the clash in ``vizkit list plugins``). Plugin modules are imported
when ``vizkit`` starts, so their top level should import nothing heavy (torchvision, matplotlib,
captum: import those inside the functions that use them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import click

    from vizkit.engine.rules import ProjectionRule
    from vizkit.framework.analysis import Analysis
    from vizkit.framework.maps import MapMethod
    from vizkit.models import ModelEntry, ModelSource

hookspec = pluggy.HookspecMarker("vizkit")
hookimpl = pluggy.HookimplMarker("vizkit")


@hookspec
def register_analyses(register: Callable[[Analysis], None]) -> None:
    """Contribute analyses: call ``register(vizkit.Analysis(...))`` once per analysis."""


@hookspec
def register_models(register: Callable[[ModelEntry], None]) -> None:
    """Contribute named models: call ``register(vizkit.ModelEntry(...))`` once per model."""


@hookspec
def register_model_sources(register: Callable[[ModelSource], None]) -> None:
    """Contribute model spec forms: call ``register(vizkit.ModelSource(...))``, e.g. a
    ``timm:`` prefix, so that ``--model timm:resnet18`` builds through it."""


@hookspec
def register_rules(register: Callable[[ProjectionRule], None]) -> None:
    """Contribute projection rules: call ``register(MyRule())`` with a
    ``vizkit.ProjectionRule`` instance; its ``name`` becomes a valid ``--rule``."""


@hookspec
def register_map_methods(register: Callable[[MapMethod], None]) -> None:
    """Contribute map methods: call ``register(vizkit.MapMethod(...))`` once per method; its
    ``name`` becomes a valid ``--method`` of ``vizkit run sanity``."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``vizkit`` command-line group (``@cli.command()``)."""
