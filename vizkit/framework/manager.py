"""The pluggy plugin manager: which plugins load, and how each fared.

:func:`make_plugin_manager` builds a fresh manager (no import-time globals): vizkit's own
contributions (:mod:`vizkit.framework.builtins`), then every entry point in the ``vizkit`` group (the
built-in analyses in ``vizkit_plugins`` are registered exactly like a third party's), then plugins
given in Python. A plugin that fails to import or implements a hook that does not exist (a
misspelling) is recorded in its :class:`PluginStatus` with its error and left out; the rest keep
working. ``VIZKIT_DISABLE_PLUGINS=a,b`` blocks plugins by name. What the plugins register is
gathered by the registry (:mod:`vizkit.framework.registry`).
"""

from __future__ import annotations

import difflib
import importlib
import os
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from vizkit.framework import hookspecs

CORE = "builtin"  # the name vizkit's own registrations (vizkit.framework.builtins) go by
CORE_PLUGINS = {CORE: "vizkit.framework.builtins"}
DISABLE_ENV = "VIZKIT_DISABLE_PLUGINS"
BUILTIN_PACKAGES = ("vizkit", "vizkit_plugins")  # where vizkit's own plugin modules live


@dataclass
class PluginStatus:
    """How one plugin fared: loaded, disabled, or left out (wholly or partly) with an error.

    ``source`` is ``"core"``, ``"entry point <value>"`` or ``"registered"`` (``make_app(extra=)``);
    ``builtin`` says whether it is part of vizkit (its names win clashes); ``distribution`` is the
    installed package an entry point came from (``"name version"``), when known.
    """

    name: str
    source: str
    error: str | None = None
    disabled: bool = False
    builtin: bool = False
    distribution: str | None = None


def disabled_plugins() -> set[str]:
    """The plugin names blocked by ``VIZKIT_DISABLE_PLUGINS`` (comma-separated)."""
    return {name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()}


def is_builtin_module(module_name: str | None) -> bool:
    """Whether a plugin defined in module ``module_name`` is part of vizkit: the core
    (``vizkit.*``) or the built-in analyses (``vizkit_plugins.*``).

    This, not the order plugins load in, decides who keeps a name two plugins register.

    Args:
        module_name: the plugin's module (a module plugin's ``__name__``, an object plugin's
            class's ``__module__``); None: unknown, not built in.
    """
    if not module_name:
        return False
    return any(module_name == package or module_name.startswith(package + ".") for package in BUILTIN_PACKAGES)


def plugin_module_name(plugin: Any) -> str | None:
    """The module a plugin object is defined in: its own name for a module, else its class's
    (or, for a class registered as a plugin, the class's) module.

    Args:
        plugin: a registered plugin (a module, a class or an instance with hook implementations).
    """
    if isinstance(plugin, types.ModuleType):
        return plugin.__name__
    if isinstance(plugin, type):
        return plugin.__module__
    return type(plugin).__module__


def make_plugin_manager(
    entry_point_group: str | None = "vizkit",
    extra: Iterable[tuple[str, Any]] = (),
    statuses: list[PluginStatus] | None = None,
) -> pluggy.PluginManager:
    """A new plugin manager with vizkit's hook specs and its plugins registered.

    Args:
        entry_point_group: the entry-point group whose plugins are loaded; None loads none.
        extra: ``(name, plugin)`` pairs registered after the entry points.
        statuses: a list that receives one :class:`PluginStatus` per plugin (None: discarded).
    """
    pm = pluggy.PluginManager("vizkit")
    pm.add_hookspecs(hookspecs)
    statuses = statuses if statuses is not None else []
    blocked = disabled_plugins()
    for name, module_name in CORE_PLUGINS.items():
        _register(pm, name, partial(importlib.import_module, module_name), "core", blocked, statuses)
    if entry_point_group:
        read: dict[int, tuple[str, str] | None] = {}  # metadata read once per distribution
        for ep in sorted(entry_points(group=entry_point_group), key=lambda e: e.name):
            dist = _distribution(ep, read)
            _register(pm, ep.name, ep.load, f"entry point {ep.value}", blocked, statuses, dist)
    for name, plugin in extra:
        _register(pm, name, partial(_given, plugin), "registered", blocked, statuses)
    pm.check_pending()  # offenders were unregistered above, so this passes unless a bug lets one in
    return pm


def _given(plugin: Any) -> Any:
    return plugin


def _distribution(ep: EntryPoint, read: dict[int, tuple[str, str] | None]) -> tuple[str, str] | None:
    """The installed distribution (name, version) an entry point belongs to, if known; ``read``
    caches it by distribution (reading metadata costs milliseconds each time)."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None
    if id(dist) not in read:
        try:
            read[id(dist)] = (str(dist.name), str(dist.version))
        except Exception:  # broken metadata must not take vizkit down
            read[id(dist)] = None
    return read[id(dist)]


def _register(
    pm: pluggy.PluginManager,
    name: str,
    load: Callable[[], Any],
    source: str,
    blocked: set[str],
    statuses: list[PluginStatus],
    distribution: tuple[str, str] | None = None,
) -> None:
    dist = f"{distribution[0]} {distribution[1]}" if distribution else None
    if name in blocked:
        statuses.append(PluginStatus(name, source, disabled=True, distribution=dist))
        return
    try:
        plugin = load()
        pm.register(plugin, name=name)
    except Exception as error:  # a broken plugin must not take vizkit down
        statuses.append(PluginStatus(name, source, error=f"{type(error).__name__}: {error}", distribution=dist))
        return
    # built in: defined in vizkit's own packages and, for an entry point, shipped by vizkit itself
    builtin = is_builtin_module(plugin_module_name(plugin)) and (
        distribution is None or distribution[0].lower() == "vizkit"
    )
    status = PluginStatus(name, source, builtin=builtin, distribution=dist)
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
        status.error = f"unknown hook '{unknown[0]}'{hint}"
    statuses.append(status)
