"""What vizkit's commands share: the App they run for, and the options and help texts several
of them take.

One convention for every command, vizkit's own and the plugins' (``train``): the App (the plugin
registry) the command line was built for is ``obj["app"]`` of the root click context, which
:func:`vizkit.app.cli.main` passes and :func:`vizkit.app.cli.build_cli` sets as the default.
A command reads it with :func:`current_app` or receives it first with :func:`pass_app`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

import click

from vizkit.framework.registry import App, get_app

P = ParamSpec("P")
R = TypeVar("R")


def current_app(ctx: click.Context | None = None) -> App:
    """The App the running command line was built for: the root context's ``obj["app"]``, else
    (a command invoked on its own) the installed plugins' (:func:`vizkit.framework.get_app`).

    Args:
        ctx: the click context to start from; None: the current one.
    """
    obj = (ctx or click.get_current_context()).find_root().obj
    app = obj.get("app") if isinstance(obj, dict) else None
    return app if app is not None else get_app()


def pass_app(function: Callable[Concatenate[App, P], R]) -> Callable[P, R]:
    """A command callback decorator (like ``click.pass_obj``): the callback receives the App of
    :func:`current_app` as its first argument.

    Args:
        function: the callback, taking the App first and then the command's parameters.
    """

    @functools.wraps(function)
    def callback(*args: P.args, **kwargs: P.kwargs) -> R:
        return function(current_app(), *args, **kwargs)

    return callback


def model_help(app: App) -> str:
    """What ``--model`` / ``MODEL`` accepts, from the registry: the registered names (the
    untrained ones marked) and the spec forms, so ``--help`` shows e.g. ``zfnet-compact``.

    Args:
        app: the plugin registry whose models and model sources are listed.
    """
    names = [
        f"{m.name} (untrained)" if "untrained" in m.tags else m.name
        for m in sorted(app.models.values(), key=lambda m: m.name)
    ]
    forms = [source.usage for source in app.model_sources.values()]
    listed = ", ".join(names) if names else "none"
    return f"a registered model: {listed} (details: vizkit list models); or {', '.join(forms)}"


def model_options(function: Callable[..., R]) -> Callable[..., R]:
    """--weights, --labels, --trust-weights: shared by every command that loads a model.

    Args:
        function: the command callback (before ``click.command``).
    """
    function = click.option(
        "--trust-weights", is_flag=True, help="allow arbitrary unpickling of --weights (only for files you trust)"
    )(function)
    function = click.option(
        "--labels",
        type=click.Path(dir_okay=False),
        help="class names: one per line, wnid<TAB>name, or Caffe synset_words.txt lines",
    )(function)
    function = click.option(
        "--weights", type=click.Path(dir_okay=False), help="state_dict file (loaded with weights_only=True)"
    )(function)
    return function
