"""Whose fault an unexpected exception is: one line naming the plugin and which of its analyses,
models, model sources, rules or commands raised it, the user's own file and line, or vizkit.

The registry (:class:`vizkit.framework.App`) answers through :meth:`~vizkit.framework.App.explain`
and :meth:`~vizkit.framework.App.origin`, which call :func:`explain` and :func:`origin` here with
itself: the traceback is matched against the code objects of every callable the plugins
registered (through partials, bound methods, decorators and callable objects), the innermost
match deciding; frames in no registered callable fall back to the plugin whose module they run in.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import sysconfig
import types
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from vizkit.engine.rules import ProjectionRule
from vizkit.framework.manager import CORE, plugin_module_name

if TYPE_CHECKING:  # pragma: no cover
    from vizkit.framework.registry import App

MAX_MESSAGE = 400  # characters of an exception's text kept in a one-line failure report
DEBUG_HINT = "VIZKIT_DEBUG=1 shows the traceback"


@dataclass(frozen=True)
class Origin:
    """Where an exception came from: the ``kind`` of contribution (``"analysis"``, ``"model"``,
    ``"model source"``, ``"projection rule"``, ``"command"``, or ``""`` when only the plugin is
    known), its ``name``, and the ``plugin`` that registered it."""

    kind: str
    name: str
    plugin: str


def explain(app: App, error: BaseException, running: str | None = None) -> str:
    """One line for an unexpected exception (see :meth:`vizkit.framework.App.explain`).

    Args:
        app: the registry whose plugins' contributions are candidates.
        error: the exception, with its traceback.
        running: the analysis the command line was running, if any.
    """
    text = " ".join(str(error).split())
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 3] + "..."
    what = f"{type(error).__name__}: {text}" if text else type(error).__name__
    found, inner = _locate(app, error)
    if found is not None and not app.is_builtin(found.plugin):
        status = app.status(found.plugin)
        where = f" in {found.kind} '{found.name}'" if found.kind else ""
        source = f", from {status.distribution}" if status is not None and status.distribution else ""
        return (
            f"plugin '{found.plugin}' failed{where}: {what} (a bug in the plugin{source}, not in vizkit; {DEBUG_HINT})"
        )
    if found is not None and found.kind:
        subject = f"{found.kind} '{found.name}' failed: "
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
    return (
        f"{subject or 'unexpected '}{what} (a bug in vizkit: please report it with the traceback VIZKIT_DEBUG=1 shows)"
    )


def origin(app: App, error: BaseException) -> Origin | None:
    """The registered contribution an exception was raised in (see :meth:`vizkit.framework.App.origin`).

    Args:
        app: the registry whose plugins' contributions are candidates.
        error: the exception, with its traceback.
    """
    return _locate(app, error)[0]


def _locate(app: App, error: BaseException) -> tuple[Origin | None, list[types.FrameType]]:
    """The origin (see :func:`origin`) and the traceback's frames inside it, outermost first
    (all of them when no registered callable is in the traceback)."""
    codes = _codes(app)
    rules = {id(rule): rule for rule in app.rules.values()}
    frames = list(_frames(error.__traceback__))
    for index in range(len(frames) - 1, -1, -1):  # innermost first
        frame = frames[index]
        found = codes.get(frame.f_code)
        if found:
            return found[0], frames[index + 1 :]
        owner = frame.f_locals.get("self")  # a registered rule's method runs with self = the rule
        if isinstance(owner, ProjectionRule) and rules.get(id(owner)) is owner:
            return Origin("projection rule", owner.name, getattr(owner, "plugin", "")), frames[index + 1 :]
    modules = _plugin_modules(app)
    for frame in reversed(frames):
        module = frame.f_globals.get("__name__", "")
        for plugin, prefix in modules:
            if module == prefix or module.startswith(prefix + "."):
                return Origin("", "", plugin), []
    return None, frames


def _codes(app: App) -> dict[types.CodeType, list[Origin]]:
    """The code objects of every registered callable, with what they belong to."""
    codes: dict[types.CodeType, list[Origin]] = {}

    def add(function: Any, where: Origin) -> None:
        code = _code_of(function)
        if code is not None:
            codes.setdefault(code, []).append(where)

    for analysis in app.analyses.values():
        where = Origin("analysis", analysis.name, analysis.plugin)
        view = analysis.view.render if analysis.view is not None else None
        for function in (analysis.run, analysis.model_from, view, *(o.parse for o in analysis.options)):
            add(function, where)
    for entry in app.models.values():
        add(entry.factory, Origin("model", entry.name, entry.plugin))
    for source in app.model_sources.values():
        for function in (source.build, source.accepts):
            add(function, Origin("model source", source.name, source.plugin))
    for name, callback in app.callbacks.items():
        add(callback, Origin("command", name, app.commands.get(name, CORE)))
    return codes


def _plugin_modules(app: App) -> list[tuple[str, str]]:
    """(plugin, module prefix) pairs: a third-party plugin owns its whole top-level package,
    a built-in one its own module only (they share ``vizkit_plugins``)."""
    pairs = []
    for name, plugin in app.pm.list_name_plugin():
        module = plugin_module_name(plugin)
        if not module or module in ("builtins", "types", "__main__"):
            continue
        pairs.append((name, module if app.is_builtin(name) else module.split(".")[0]))
    return pairs


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
