"""The registry: what the plugins of one plugin manager contributed, by name.

:func:`make_app` builds a plugin manager (:mod:`vizkit.framework.manager`) and gathers every
plugin's analyses, models, model sources, projection rules and commands into an :class:`App`;
:func:`get_app` is the process's App of the installed plugins, built once on first use.

Name clashes (an analysis, model, model source, projection rule or command registered twice) are
settled by one rule, whatever order the plugins load in: vizkit's own name wins (the core's and
the built-in ``vizkit_plugins``' registrations: see :func:`~vizkit.framework.manager.is_builtin_module`),
and a third-party plugin's registration under such a name is left out; a name two third-party
plugins both claim is used by neither. Each clash marks the plugins involved with an error
(``vizkit list plugins``) and is kept in :attr:`App.warnings` (the CLI prints them on stderr).

:meth:`App.explain` turns an unexpected exception into one line that says which plugin, and which
of its analyses, models or rules, it came from, or that it is a bug in vizkit
(:mod:`vizkit.framework.blame`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import pluggy

from vizkit.engine.rules import ProjectionRule
from vizkit.errors import UsageError
from vizkit.framework import blame
from vizkit.framework.analysis import Analysis
from vizkit.framework.blame import Origin
from vizkit.framework.manager import CORE, DISABLE_ENV, PluginStatus, make_plugin_manager
from vizkit.framework.maps import MapMethod
from vizkit.models import ModelEntry, ModelSource

if TYPE_CHECKING:  # pragma: no cover
    import click


@dataclass
class App:
    """What the plugins of one plugin manager contributed, by name, and their statuses.

    ``warnings`` holds one line per name clash (see the module docstring for the rule);
    ``commands`` maps each command a plugin added to the CLI to that plugin's name, and
    ``callbacks`` each command's callback (what :meth:`explain` matches a traceback against).
    """

    pm: pluggy.PluginManager
    statuses: list[PluginStatus] = field(default_factory=list)
    analyses: dict[str, Analysis] = field(default_factory=dict)
    models: dict[str, ModelEntry] = field(default_factory=dict)
    model_sources: dict[str, ModelSource] = field(default_factory=dict)
    rules: dict[str, ProjectionRule] = field(default_factory=dict)
    map_methods: dict[str, MapMethod] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    commands: dict[str, str] = field(default_factory=dict)
    callbacks: dict[str, Callable[..., Any]] = field(default_factory=dict, repr=False)

    def analysis(self, name: str) -> Analysis:
        """The registered analysis ``name`` (a one-line UsageError listing them otherwise).

        Args:
            name: the analysis's registered name, e.g. ``"occlusion"``.
        """
        if name not in self.analyses:
            known = ", ".join(sorted(self.analyses)) or "none"
            close = difflib.get_close_matches(name, list(self.analyses), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"unknown analysis '{name}'{hint}; available: {known}{self.failed_hint()}")
        return self.analyses[name]

    def failed_hint(self) -> str:
        """``"; plugin(s) 'a', 'b' failed to load ..."`` when some plugin was left out with an error
        (a misspelt hook, an import error, a registration that raised), so that a name it would
        have registered is not just "unknown"; empty when every plugin loaded."""
        failed = [s.name for s in self.statuses if s.error and not s.disabled]
        if not failed:
            return ""
        names = ", ".join(f"'{name}'" for name in failed[:5]) + (", ..." if len(failed) > 5 else "")
        return f"; plugin(s) {names} failed to load, wholly or partly (see `vizkit list plugins`)"

    def status(self, name: str) -> PluginStatus | None:
        """The status of the plugin registered as ``name``, or None if there is none.

        Args:
            name: the plugin's name (its entry point's name).
        """
        return next((s for s in self.statuses if s.name == name), None)

    def is_builtin(self, plugin: str) -> bool:
        """Whether the plugin registered as ``plugin`` is part of vizkit (its names win clashes).

        Args:
            plugin: the plugin's name.
        """
        status = self.status(plugin)
        return status.builtin if status is not None else plugin == CORE

    def collect(self) -> App:
        """Gather every plugin's analyses, models, model sources, rules and map methods (clashes settled)."""
        self.analyses = self._gather("register_analyses", Analysis, "analysis")
        self.models = self._gather("register_models", ModelEntry, "model")
        self.model_sources = self._gather("register_model_sources", ModelSource, "model source")
        self.rules = self._gather("register_rules", ProjectionRule, "projection rule")
        self.map_methods = self._gather("register_map_methods", MapMethod, "map method")
        return self

    def rule(self, name: str | ProjectionRule) -> ProjectionRule:
        """A registered projection rule by name (a one-line error listing them otherwise).

        Args:
            name: the rule's registered name (``"deconvnet"``), or a rule instance (returned as is).
        """
        if isinstance(name, ProjectionRule):
            return name
        if name not in self.rules:
            known = ", ".join(sorted(self.rules)) or "none"
            raise UsageError(f"unknown projection rule '{name}'; available: {known}{self.failed_hint()}")
        return self.rules[name]

    def add_commands(self, cli: click.Group) -> None:
        """Let every plugin add its commands to ``cli`` (``register_commands``), clashes settled:
        a command vizkit has (its own or a built-in plugin's) keeps its name, a name two
        third-party plugins both add is left to neither; a plugin whose hook raises adds nothing.

        Args:
            cli: the ``vizkit`` command group, already holding vizkit's own commands.
        """
        base = dict(cli.commands)
        claims: dict[str, list[tuple[str, Any]]] = {name: [(CORE, command)] for name, command in base.items()}
        try:
            for impl in self.pm.hook.register_commands.get_hookimpls():
                cli.commands.clear()
                cli.commands.update(base)  # each plugin sees vizkit's own commands only
                try:
                    impl.function(cli=cli)
                except Exception as error:  # a broken plugin must not take the CLI down
                    self._fail(impl.plugin_name, f"register_commands failed: {type(error).__name__}: {error}")
                    continue
                for name, command in cli.commands.items():
                    if base.get(name) is not command:
                        claims.setdefault(name, []).append((impl.plugin_name, command))
        finally:
            cli.commands.clear()
        for name, claimants in claims.items():
            kept = self._settle("command", name, [plugin for plugin, _ in claimants])
            if kept is not None:
                plugin, command = claimants[kept]
                cli.commands[name] = command
                if plugin != CORE:
                    self.commands[name] = plugin
                if command.callback is not None:
                    self.callbacks[name] = command.callback

    def explain(self, error: BaseException, running: str | None = None) -> str:
        """One line for an unexpected exception (not a :class:`vizkit.VizkitError`): which
        plugin and which of its contributions it came from, or that it is a bug in vizkit.

        A third-party plugin's failure reads ``plugin 'NAME' failed in analysis 'X': ValueError:
        ...``; one raised in the user's own code (a model file outside vizkit and the installed
        packages, e.g. its ``forward``) names that file and line; one inside vizkit or a built-in
        plugin reads ``analysis 'X' failed: ValueError: ... (a bug in vizkit: ...)``. An OSError
        or out-of-memory error is reported as it is (a full disk is not a bug).

        Args:
            error: the exception, with its traceback (the innermost frame that belongs to a
                registered analysis, model, model source, rule or command decides).
            running: the analysis the command line was running, if any (named when the
                traceback shows nothing registered).
        """
        return blame.explain(self, error, running)

    def origin(self, error: BaseException) -> Origin | None:
        """The registered contribution an exception was raised in: the innermost frame of its
        traceback that runs a registered callable (an analysis's ``run``, ``parse``,
        ``model_from`` or report view; a model's factory; a model source's ``build`` or
        ``accepts``; a rule's method; a command's callback), else the innermost frame in a
        plugin's own module.

        Args:
            error: the exception, with its traceback.
        """
        return blame.origin(self, error)

    def _gather(self, hook_name: str, kind: type[Any], noun: str) -> dict[str, Any]:
        claims: dict[str, list[tuple[str, Any]]] = {}
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():  # registration order
            plugin_name = impl.plugin_name
            staged: list[Any] = []

            def register(item: Any, _staged: list[Any] = staged) -> None:
                if not isinstance(item, kind):
                    raise TypeError(f"register() expects a vizkit.{kind.__name__}, got {type(item).__name__}")
                if not item.name:
                    raise TypeError(f"a {noun} registered without a name")
                _staged.append(item)

            try:
                impl.function(register=register)
            except Exception as error:  # nothing of a hook that raised is kept
                self._fail(plugin_name, f"{hook_name} failed: {type(error).__name__}: {error}")
                continue
            for item in staged:
                item.plugin = plugin_name
                claims.setdefault(item.name, []).append((plugin_name, item))
        found: dict[str, Any] = {}
        for name, claimants in claims.items():
            kept = self._settle(noun, name, [plugin for plugin, _ in claimants])
            if kept is not None:
                found[name] = claimants[kept][1]
        return found

    def _settle(self, noun: str, name: str, plugins: list[str]) -> int | None:
        """Which of several registrations of one name is kept (its index), or None for none;
        every plugin that loses a clash is marked and the clash goes to ``warnings``."""
        distinct = list(dict.fromkeys(plugins))
        if len(plugins) == 1:
            return 0
        if len(distinct) == 1:  # one plugin registering a name twice: its own mistake, the first stays
            self._clash([distinct[0]], f"plugin '{distinct[0]}' registers {noun} '{name}' more than once")
            return 0
        builtin = [index for index, plugin in enumerate(plugins) if self.is_builtin(plugin)]
        if builtin:
            owner = plugins[builtin[0]]
            whose = "vizkit itself" if owner == CORE else f"vizkit's built-in plugin '{owner}'"
            for plugin in distinct:
                if plugin != owner:
                    self._clash(
                        [plugin],
                        f"{noun} '{name}' of plugin '{plugin}' is left out: the name belongs to {whose} "
                        f"(rename it in plugin '{plugin}')",
                    )
            return builtin[0]
        named = ", ".join(f"plugin '{p}'" for p in distinct[:-1]) + f" and plugin '{distinct[-1]}'"
        self._clash(
            distinct,
            f"{noun} '{name}' is registered by {named}: {'neither' if len(distinct) == 2 else 'none'} is used "
            f"(rename it in one, or block one with {DISABLE_ENV}=NAME)",
        )
        return None

    def _clash(self, plugins: list[str], message: str) -> None:
        if message not in self.warnings:  # the CLI may be built twice from one App
            self.warnings.append(message)
        for plugin in plugins:
            self._fail(plugin, message)

    def _fail(self, plugin_name: str, message: str) -> None:
        status = self.status(plugin_name)
        if status is not None:
            status.error = status.error or message


def make_app(
    entry_point_group: str | None = "vizkit",
    extra: Iterable[tuple[str, Any]] = (),
) -> App:
    """A fresh App: a new plugin manager and the registry built from it.

    Args:
        entry_point_group: the entry-point group whose plugins are loaded; None loads none (only
            vizkit's own contributions and ``extra``, e.g. for an isolated test registry).
        extra: ``(name, plugin)`` pairs registered after the entry points; a plugin is a module
            or object with ``@vizkit.hookimpl`` functions.
    """
    statuses: list[PluginStatus] = []
    pm = make_plugin_manager(entry_point_group, extra, statuses)
    return App(pm, statuses).collect()


@lru_cache(maxsize=1)
def get_app() -> App:
    """The App of the installed plugins, built once per process on first use."""
    return make_app()
