"""vizkit: the Zeiler & Fergus analyses on any PyTorch convnet.

The public API. The top level holds what most users and plugin authors need: load and instrument
a model, project activations with the deconvnet, run registered analyses and read their results,
and write plugins (``hookimpl``, ``Analysis``, ``Option``, ``RunContext``, ``ReportView``,
``ModelEntry``, ``ModelSource``, ``ProjectionRule``, ``Result``). The rest is public in documented
sub-namespaces, each listing its names in its docstring and ``__all__``:

* :mod:`vizkit.engine`: recording forwards, projection rules, the deconvnet, receptive fields,
  incremental occlusion, canonical model copies;
* :mod:`vizkit.data`: images in, tensors out (decoding, preprocessing, datasets, labels);
* :mod:`vizkit.models`: model entries, spec sources, weights, model metadata;
* :mod:`vizkit.framework`: analyses, the plugin registry, runs, results and atomic files;
* :mod:`vizkit.toolkit`: what several analyses share (top-k scans, winners' projections,
  channel selections, features and linear probes, figures, long-run helpers).

Modules below those namespaces (``vizkit.engine.recorder``, ...) are internal. The package is
layered; a lower layer never imports a higher one (a test enforces it): errors/version < engine <
data < models < framework < toolkit < app.

Names are imported on first use (PEP 562, :mod:`vizkit._lazy`), so ``import vizkit`` costs
milliseconds and the command line starts without torchvision or matplotlib; a new public name
goes into ``_LAZY``, the ``TYPE_CHECKING`` block and ``__all__`` (tests/test_startup.py checks
that they agree).
"""

from typing import TYPE_CHECKING

from vizkit._lazy import attach
from vizkit.errors import UsageError, VizkitError
from vizkit.framework.hookspecs import hookimpl
from vizkit.version import __version__

if TYPE_CHECKING:  # what the lazy names below resolve to, spelled out for type checkers and IDEs
    from vizkit import data, engine, framework, models, toolkit
    from vizkit.app.demo import sample_images
    from vizkit.app.downloads import download_samples
    from vizkit.data import ImageList, Preprocess, load_image, load_images
    from vizkit.engine import (
        Instrumented,
        NonFiniteActivation,
        Projection,
        ProjectionRule,
        UnknownLayerError,
        instrument,
        project,
        to_image,
    )
    from vizkit.framework import (
        Analysis,
        MapMethod,
        MapRequest,
        Option,
        ReportView,
        Result,
        RunContext,
        build_model,
        list_models,
        load_model,
        load_result,
        make_app,
        run,
    )
    from vizkit.models import ModelEntry, ModelSource

_LAZY: dict[str, tuple[str, str | None]] = {
    # public name: (module, attribute in it; None: the module itself)
    "data": ("vizkit.data", None),
    "engine": ("vizkit.engine", None),
    "framework": ("vizkit.framework", None),
    "models": ("vizkit.models", None),
    "toolkit": ("vizkit.toolkit", None),
    "sample_images": ("vizkit.app.demo", "sample_images"),
    "download_samples": ("vizkit.app.downloads", "download_samples"),
    "ImageList": ("vizkit.data", "ImageList"),
    "Preprocess": ("vizkit.data", "Preprocess"),
    "load_image": ("vizkit.data", "load_image"),
    "load_images": ("vizkit.data", "load_images"),
    "instrument": ("vizkit.engine", "instrument"),
    "Instrumented": ("vizkit.engine", "Instrumented"),
    "NonFiniteActivation": ("vizkit.engine", "NonFiniteActivation"),
    "UnknownLayerError": ("vizkit.engine", "UnknownLayerError"),
    "project": ("vizkit.engine", "project"),
    "Projection": ("vizkit.engine", "Projection"),
    "ProjectionRule": ("vizkit.engine", "ProjectionRule"),
    "to_image": ("vizkit.engine", "to_image"),
    "Analysis": ("vizkit.framework", "Analysis"),
    "MapMethod": ("vizkit.framework", "MapMethod"),
    "MapRequest": ("vizkit.framework", "MapRequest"),
    "Option": ("vizkit.framework", "Option"),
    "RunContext": ("vizkit.framework", "RunContext"),
    "ReportView": ("vizkit.framework", "ReportView"),
    "Result": ("vizkit.framework", "Result"),
    "load_result": ("vizkit.framework", "load_result"),
    "make_app": ("vizkit.framework", "make_app"),
    "run": ("vizkit.framework", "run"),
    "build_model": ("vizkit.framework", "build_model"),
    "list_models": ("vizkit.framework", "list_models"),
    "load_model": ("vizkit.framework", "load_model"),
    "ModelEntry": ("vizkit.models", "ModelEntry"),
    "ModelSource": ("vizkit.models", "ModelSource"),
}

__all__ = [
    "Analysis",
    "ImageList",
    "Instrumented",
    "MapMethod",
    "MapRequest",
    "ModelEntry",
    "ModelSource",
    "NonFiniteActivation",
    "Option",
    "Preprocess",
    "Projection",
    "ProjectionRule",
    "ReportView",
    "Result",
    "RunContext",
    "UnknownLayerError",
    "UsageError",
    "VizkitError",
    "__version__",
    "build_model",
    "data",
    "download_samples",
    "engine",
    "framework",
    "hookimpl",
    "instrument",
    "list_models",
    "load_image",
    "load_images",
    "load_model",
    "load_result",
    "make_app",
    "models",
    "project",
    "run",
    "sample_images",
    "to_image",
    "toolkit",
]
__getattr__, __dir__ = attach(__name__, _LAZY, globals())
