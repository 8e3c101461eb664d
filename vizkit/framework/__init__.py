"""``vizkit.framework``: analyses, the plugin registry, runs and results.

* writing an analysis: :class:`Analysis` (name, description, options, ``run``, optional report
  view), :class:`Option` (a typed option: a CLI flag and a keyword argument),
  :class:`RunContext` (what ``run`` receives: the shared instrumented model, images, labels),
  :class:`Result` (summary numbers, arrays, figures; saved atomically), :class:`ReportView`
  (how ``vizkit report`` shows its results; its ``render`` receives a :class:`ReportPage`);
* running: :func:`run` (an analysis by name, from Python), :func:`load_result`;
* plugins: :data:`hookimpl`, :class:`App` (the registry of analyses, models, sources, rules, map
  methods and commands), :class:`MapMethod` / :class:`MapRequest` (a way of explaining a class
  score with a map, which ``sanity`` checks), :func:`make_app` (a fresh registry: tests, extra plugins), :func:`get_app` (the
  process's registry);
* models by spec: :func:`load_model`, :func:`build_model`, :func:`list_models`;
* files: :func:`write_atomic`, :func:`save_torch_atomic` (temp file + rename: an interrupted run
  never leaves a truncated file), :func:`keep_json_lines` (a metrics file cut back to a checkpoint).

Modules inside are internal: their names may change.
"""

from typing import TYPE_CHECKING

from vizkit._lazy import attach

if TYPE_CHECKING:  # what the lazy names resolve to, for type checkers and IDEs
    from vizkit.framework.analysis import Analysis, Option, RunContext
    from vizkit.framework.hookspecs import hookimpl
    from vizkit.framework.loading import build_model, list_models, load_model
    from vizkit.framework.maps import MapMethod, MapRequest
    from vizkit.framework.registry import App, get_app, make_app
    from vizkit.framework.report_view import ReportPage, ReportView
    from vizkit.framework.results import Result, keep_json_lines, load_result, save_torch_atomic, write_atomic
    from vizkit.framework.runner import run


_LAZY = {
    "Analysis": ("vizkit.framework.analysis", "Analysis"),
    "Option": ("vizkit.framework.analysis", "Option"),
    "RunContext": ("vizkit.framework.analysis", "RunContext"),
    "MapMethod": ("vizkit.framework.maps", "MapMethod"),
    "MapRequest": ("vizkit.framework.maps", "MapRequest"),
    "run": ("vizkit.framework.runner", "run"),
    "ReportView": ("vizkit.framework.report_view", "ReportView"),
    "ReportPage": ("vizkit.framework.report_view", "ReportPage"),
    "Result": ("vizkit.framework.results", "Result"),
    "load_result": ("vizkit.framework.results", "load_result"),
    "write_atomic": ("vizkit.framework.results", "write_atomic"),
    "keep_json_lines": ("vizkit.framework.results", "keep_json_lines"),
    "save_torch_atomic": ("vizkit.framework.results", "save_torch_atomic"),
    "hookimpl": ("vizkit.framework.hookspecs", "hookimpl"),
    "App": ("vizkit.framework.registry", "App"),
    "make_app": ("vizkit.framework.registry", "make_app"),
    "get_app": ("vizkit.framework.registry", "get_app"),
    "load_model": ("vizkit.framework.loading", "load_model"),
    "build_model": ("vizkit.framework.loading", "build_model"),
    "list_models": ("vizkit.framework.loading", "list_models"),
}
__all__ = [
    "Analysis",
    "App",
    "MapMethod",
    "MapRequest",
    "Option",
    "ReportPage",
    "ReportView",
    "Result",
    "RunContext",
    "build_model",
    "get_app",
    "hookimpl",
    "keep_json_lines",
    "list_models",
    "load_model",
    "load_result",
    "make_app",
    "run",
    "save_torch_atomic",
    "write_atomic",
]
__getattr__, __dir__ = attach(__name__, _LAZY, globals())
