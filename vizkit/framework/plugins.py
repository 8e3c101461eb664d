"""The plugin manager and the registry of what plugins contribute.

``make_plugin_manager()`` builds a fresh pluggy manager (no import-time globals): vizkit's own
contributions (:mod:`vizkit.framework.builtins`), then every entry point in the ``vizkit`` group (the
built-in analyses in ``vizkit_plugins`` are registered exactly like a third party's). A plugin that
fails to import, implements a hook that does not exist (a misspelling), or raises while
registering is recorded with its error and left out; the rest keep working.
``VIZKIT_DISABLE_PLUGINS=a,b`` blocks plugins by name.

Name clashes (an analysis, model, model source, projection rule or command registered twice) are
settled by one rule, whatever order the plugins load in: vizkit's own name wins (the core's and
the built-in ``vizkit_plugins``' registrations: see :func:`is_builtin_module`), and a third-party
plugin's registration under such a name is left out; a name two third-party plugins both claim is
used by neither. Each clash marks the plugins involved with an error (``vizkit list plugins``) and
is kept in :attr:`App.warnings` (the CLI prints them on stderr).

:meth:`App.explain` turns an unexpected exception into one line that says which plugin, and which
of its analyses, models or rules, it came from (or that it is a bug in vizkit).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import inspect
import os
import sysconfig
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from vizkit.engine.rules import ProjectionRule
from vizkit.errors import UsageError
from vizkit.framework import hookspecs
from vizkit.framework.analysis import Analysis
from vizkit.models import ModelEntry, ModelSource

if TYPE_CHECKING:  # pragma: no cover
    import click

CORE = "builtin"  # the name vizkit's own registrations (vizkit.framework.builtins) go by
CORE_PLUGINS = {CORE: "vizkit.framework.builtins"}
DISABLE_ENV = "VIZKIT_DISABLE_PLUGINS"
BUILTIN_PACKAGES = ("vizkit", "vizkit_plugins")  # where vizkit's own plugin modules live
MAX_MESSAGE = 400  # characters of an exception's text kept in a one-line failure report
DEBUG_HINT = "VIZKIT_DEBUG=1 shows the traceback"


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


@dataclass(frozen=True)
class Origin:
    """Where an exception came from: the ``kind`` of contribution (``"analysis"``, ``"model"``,
    ``"model source"``, ``"projection rule"``, ``"command"``, or ``""`` when only the plugin is
    known), its ``name``, and the ``plugin`` that registered it."""

    kind: str
    name: str
    plugin: str


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


@dataclass
class App:
    """What the plugins of one plugin manager contributed, by name, and their statuses.

    ``warnings`` holds one line per name clash (see the module docstring for the rule);
    ``commands`` maps each command a plugin added to the CLI to that plugin's name.
    """

    pm: pluggy.PluginManager
    statuses: list[PluginStatus] = field(default_factory=list)
    analyses: dict[str, Analysis] = field(default_factory=dict)
    models: dict[str, ModelEntry] = field(default_factory=dict)
    model_sources: dict[str, ModelSource] = field(default_factory=dict)
    rules: dict[str, ProjectionRule] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    commands: dict[str, str] = field(default_factory=dict)
    _callbacks: dict[str, Callable[..., Any]] = field(default_factory=dict, repr=False)

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
        """Gather every plugin's analyses, models, model sources and rules (clashes settled)."""
        self.analyses = self._gather("register_analyses", Analysis, "analysis")
        self.models = self._gather("register_models", ModelEntry, "model")
        self.model_sources = self._gather("register_model_sources", ModelSource, "model source")
        self.rules = self._gather("register_rules", ProjectionRule, "projection rule")
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
                    self._callbacks[name] = command.callback

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
        text = " ".join(str(error).split())
        if len(text) > MAX_MESSAGE:
            text = text[: MAX_MESSAGE - 3] + "..."
        what = f"{type(error).__name__}: {text}" if text else type(error).__name__
        origin, inner = self._locate(error)
        if origin is not None and not self.is_builtin(origin.plugin):
            status = self.status(origin.plugin)
            where = f" in {origin.kind} '{origin.name}'" if origin.kind else ""
            source = f", from {status.distribution}" if status is not None and status.distribution else ""
            return (
                f"plugin '{origin.plugin}' failed{where}: {what} "
                f"(a bug in the plugin{source}, not in vizkit; {DEBUG_HINT})"
            )
        if origin is not None and origin.kind:
            subject = f"{origin.kind} '{origin.name}' failed: "
        elif running:
            subject = f"analysis '{running}' failed: "
        else:
            subject = ""
        own = next((frame for frame in reversed(inner) if _outside_libraries(frame)), None)
        if own is not None:  # e.g. the user's model's forward: their code, not vizkit's
            code = own.f_code
            return f"{subject}{what} (raised at {code.co_filename}:{own.f_lineno} in {code.co_name}; {DEBUG_HINT})"
        if _environmental(error):  # a full disk or no memory is not a bug
            return subject + what
        return f"{subject or 'unexpected '}{what} (a bug in vizkit: please report it with the traceback VIZKIT_DEBUG=1 shows)"

    def origin(self, error: BaseException) -> Origin | None:
        """The registered contribution an exception was raised in: the innermost frame of its
        traceback that runs a registered callable (an analysis's ``run``, ``parse`` or
        ``model_from``; a model's factory; a model source's ``build`` or ``accepts``; a rule's
        method; a command's callback), else the innermost frame in a plugin's own module.

        Args:
            error: the exception, with its traceback.
        """
        return self._locate(error)[0]

    def _locate(self, error: BaseException) -> tuple[Origin | None, list[types.FrameType]]:
        """The origin (see :meth:`origin`) and the traceback's frames inside it, outermost first
        (all of them when no registered callable is in the traceback)."""
        codes = self._codes()
        rules = {id(rule): rule for rule in self.rules.values()}
        frames = list(_frames(error.__traceback__))
        for index in range(len(frames) - 1, -1, -1):  # innermost first
            frame = frames[index]
            found = codes.get(frame.f_code)
            if found:
                return found[0], frames[index + 1 :]
            owner = frame.f_locals.get("self")  # a registered rule's method runs with self = the rule
            if isinstance(owner, ProjectionRule) and rules.get(id(owner)) is owner:
                return Origin("projection rule", owner.name, getattr(owner, "plugin", "")), frames[index + 1 :]
        modules = self._plugin_modules()
        for frame in reversed(frames):
            module = frame.f_globals.get("__name__", "")
            for plugin, prefix in modules:
                if module == prefix or module.startswith(prefix + "."):
                    return Origin("", "", plugin), []
        return None, frames

    def _codes(self) -> dict[types.CodeType, list[Origin]]:
        """The code objects of every registered callable, with what they belong to."""
        codes: dict[types.CodeType, list[Origin]] = {}

        def add(function: Any, origin: Origin) -> None:
            code = _code_of(function)
            if code is not None:
                codes.setdefault(code, []).append(origin)

        for analysis in self.analyses.values():
            origin = Origin("analysis", analysis.name, analysis.plugin)
            for function in (analysis.run, analysis.model_from, *(o.parse for o in analysis.options)):
                add(function, origin)
        for entry in self.models.values():
            add(entry.factory, Origin("model", entry.name, entry.plugin))
        for source in self.model_sources.values():
            for function in (source.build, source.accepts):
                add(function, Origin("model source", source.name, source.plugin))
        for name, callback in self._callbacks.items():
            add(callback, Origin("command", name, self.commands.get(name, CORE)))
        return codes

    def _plugin_modules(self) -> list[tuple[str, str]]:
        """(plugin, module prefix) pairs: a third-party plugin owns its whole top-level package,
        a built-in one its own module only (they share ``vizkit_plugins``)."""
        pairs = []
        for name, plugin in self.pm.list_name_plugin():
            module = plugin_module_name(plugin)
            if not module or module in ("builtins", "types", "__main__"):
                continue
            pairs.append((name, module if self.is_builtin(name) else module.split(".")[0]))
        return pairs

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


def _frames(tb: types.TracebackType | None) -> Iterable[types.FrameType]:
    """The frames of a traceback, outermost first."""
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def _code_of(function: Any) -> types.CodeType | None:
    """The code object a registered callable runs: through partials, bound methods, decorators
    (``__wrapped__``), classes (their ``__init__``) and callable objects (their ``__call__``)."""
    while isinstance(function, functools.partial):
        function = function.func
    if function is None:
        return None
    function = getattr(function, "__func__", function)
    try:
        function = inspect.unwrap(function)
    except ValueError:  # a __wrapped__ cycle
        return None
    if isinstance(function, type):
        function = function.__dict__.get("__init__")
    elif not hasattr(function, "__code__") and callable(function):
        function = type(function).__call__
    code = getattr(function, "__code__", None)
    return code if isinstance(code, types.CodeType) else None


@lru_cache(maxsize=1)
def _library_roots() -> tuple[str, ...]:
    """Folders whose code is not the user's own: the standard library, installed packages
    (site-packages), and vizkit's own packages (also when installed in editable mode)."""
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    for package in ("vizkit", "vizkit_plugins"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            roots.update(spec.submodule_search_locations)
    return tuple(os.path.join(os.path.realpath(root), "") for root in roots)


def _outside_libraries(frame: types.FrameType) -> bool:
    """Whether a frame runs the user's own code: a real file outside the standard library,
    the installed packages and vizkit (a model file given as ``--model my_model.py:build``)."""
    filename = frame.f_code.co_filename
    if not filename or filename.startswith("<"):  # <frozen ...>, <string>: not a file of theirs
        return False
    return not os.path.realpath(filename).startswith(_library_roots())


def _environmental(error: BaseException) -> bool:
    """Errors of the machine, not of the code: a full disk, a missing permission, no memory."""
    return isinstance(error, (OSError, MemoryError)) or type(error).__name__ == "OutOfMemoryError"


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
