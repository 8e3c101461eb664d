"""The plugin manager and the registry of what plugins contribute.

``make_plugin_manager()`` builds a fresh pluggy manager (no import-time globals): vizkit's own
contributions (:mod:`vizkit.framework.builtins`), then every entry point in the ``vizkit`` group (the built-in analyses in
``vizkit_plugins`` are registered exactly like a third party's). A plugin that fails to import,
implements a hook that does not exist (a misspelling), or raises while registering is recorded
with its error and left out; the rest keep working. ``VIZKIT_DISABLE_PLUGINS=a,b`` blocks plugins
by name.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from importlib.metadata import entry_points
from typing import Any

import pluggy

from vizkit.engine.rules import ProjectionRule
from vizkit.errors import UsageError, VizkitError
from vizkit.framework import hookspecs
from vizkit.framework.analysis import Analysis
from vizkit.models import ModelEntry, ModelSource

CORE_PLUGINS = {"builtin": "vizkit.framework.builtins"}
DISABLE_ENV = "VIZKIT_DISABLE_PLUGINS"


class DuplicateNameError(VizkitError):
    """Two plugins contributed the same analysis or model name."""


@dataclass
class PluginStatus:
    name: str
    source: str  # "core", "entry point <value>", or "registered"
    error: str | None = None
    disabled: bool = False


def disabled_plugins() -> set[str]:
    return {name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()}


def make_plugin_manager(
    entry_point_group: str | None = "vizkit",
    extra: Iterable[tuple[str, Any]] = (),
    statuses: list[PluginStatus] | None = None,
) -> pluggy.PluginManager:
    """A new plugin manager with vizkit's hook specs and its plugins registered."""
    pm = pluggy.PluginManager("vizkit")
    pm.add_hookspecs(hookspecs)
    statuses = statuses if statuses is not None else []
    blocked = disabled_plugins()
    for name, module_name in CORE_PLUGINS.items():
        _register(pm, name, partial(importlib.import_module, module_name), "core", blocked, statuses)
    if entry_point_group:
        for ep in sorted(entry_points(group=entry_point_group), key=lambda e: e.name):
            _register(pm, ep.name, ep.load, f"entry point {ep.value}", blocked, statuses)
    for name, plugin in extra:
        _register(pm, name, partial(_given, plugin), "registered", blocked, statuses)
    pm.check_pending()  # offenders were unregistered above, so this passes unless a bug lets one in
    return pm


def _given(plugin: Any) -> Any:
    return plugin


def _register(
    pm: pluggy.PluginManager,
    name: str,
    load: Callable[[], Any],
    source: str,
    blocked: set[str],
    statuses: list[PluginStatus],
) -> None:
    if name in blocked:
        statuses.append(PluginStatus(name, source, disabled=True))
        return
    try:
        plugin = load()
        pm.register(plugin, name=name)
    except Exception as error:  # a broken plugin must not take vizkit down
        statuses.append(PluginStatus(name, source, error=f"{type(error).__name__}: {error}"))
        return
    unknown = [
        impl.function.__name__
        for caller in pm.get_hookcallers(plugin) or []
        if caller.spec is None
        for impl in caller.get_hookimpls()
        if impl.plugin is plugin
    ]
    if unknown:
        pm.unregister(plugin)
        known = [n for n in dir(hookspecs) if n.startswith("register_")]
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        statuses.append(PluginStatus(name, source, error=f"unknown hook '{unknown[0]}'{hint}"))
        return
    statuses.append(PluginStatus(name, source))


@dataclass
class App:
    """What the plugins of one plugin manager contributed, by name, and their statuses."""

    pm: pluggy.PluginManager
    statuses: list[PluginStatus] = field(default_factory=list)
    analyses: dict[str, Analysis] = field(default_factory=dict)
    models: dict[str, ModelEntry] = field(default_factory=dict)
    model_sources: dict[str, ModelSource] = field(default_factory=dict)
    rules: dict[str, ProjectionRule] = field(default_factory=dict)

    def analysis(self, name: str) -> Analysis:
        if name not in self.analyses:
            known = ", ".join(sorted(self.analyses)) or "none"
            close = difflib.get_close_matches(name, list(self.analyses), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"unknown analysis '{name}'{hint}; available: {known}")
        return self.analyses[name]

    def status(self, name: str) -> PluginStatus | None:
        return next((s for s in self.statuses if s.name == name), None)

    def collect(self) -> App:
        self.analyses = self._gather("register_analyses", Analysis, "analysis")
        self.models = self._gather("register_models", ModelEntry, "model")
        self.model_sources = self._gather("register_model_sources", ModelSource, "model source")
        self.rules = self._gather("register_rules", ProjectionRule, "projection rule")
        return self

    def rule(self, name: str | ProjectionRule) -> ProjectionRule:
        """A registered projection rule by name (a one-line error listing them otherwise)."""
        if isinstance(name, ProjectionRule):
            return name
        if name not in self.rules:
            raise UsageError(f"unknown projection rule '{name}'; available: {', '.join(sorted(self.rules)) or 'none'}")
        return self.rules[name]

    def _gather(self, hook_name: str, kind: type[Any], noun: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        caller = getattr(self.pm.hook, hook_name)
        for impl in caller.get_hookimpls():  # registration order: the first to claim a name keeps it
            plugin_name = impl.plugin_name

            def register(item: Any, _plugin: str = plugin_name) -> None:
                if not isinstance(item, kind):
                    raise TypeError(f"register() expects a vizkit.{kind.__name__}, got {type(item).__name__}")
                if not item.name:
                    raise TypeError(f"a {noun} registered without a name")
                if item.name in found:
                    other = found[item.name].plugin
                    raise DuplicateNameError(
                        f"{noun} '{item.name}' is registered by both plugin '{other}' and plugin '{_plugin}'"
                    )
                item.plugin = _plugin
                found[item.name] = item

            try:
                impl.function(register=register)
            except DuplicateNameError as error:
                self._fail(plugin_name, str(error))
            except Exception as error:
                self._fail(plugin_name, f"{hook_name} failed: {type(error).__name__}: {error}")
        return found

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
