"""vizkit: the Zeiler & Fergus analyses on any PyTorch convnet.

The public API, and the only module plugins and users import: instrument a model, project
activations with the deconvnet, run registered analyses, and write plugins (``hookimpl``,
``Analysis``, ``Option``, ``ModelEntry``, ``ModelSource``, ``ProjectionRule``, ``Result``).

The package is layered; a lower layer never imports a higher one (a test enforces it):

* :mod:`vizkit.engine`: recording forwards, projection rules, the deconvnet, receptive fields
  and window geometry, incremental inference;
* :mod:`vizkit.data`: images in, tensors out;
* :mod:`vizkit.models`: model entries, spec forms, weights, the ZF models (``zfnet``: the
  paper's layout, untrained; ``zfnet-compact``: trained on Imagenette, weights bundled);
* :mod:`vizkit.framework`: hook specs, the plugin registry, analyses, results, model loading;
* :mod:`vizkit.toolkit`: what several analyses share (top-k, winners, channels, figures,
  training-run folders, multi-process helpers, progress);
* :mod:`vizkit.app`: the command line, the demo and the HTML report.

Names are imported on first use (PEP 562 ``__getattr__`` below), so ``import vizkit`` costs
milliseconds and the command line starts without torchvision or matplotlib; a new public name
goes into ``_LAZY``, the ``TYPE_CHECKING`` block and ``__all__`` (tests/test_startup.py checks
that they agree).
"""

import importlib
from typing import TYPE_CHECKING, Any

from vizkit.errors import UsageError, VizkitError
from vizkit.framework.hookspecs import hookimpl
from vizkit.version import __version__

if TYPE_CHECKING:  # what the lazy names below resolve to, spelled out for type checkers and IDEs
    from vizkit import models
    from vizkit.app.demo import sample_images
    from vizkit.app.downloads import download_samples
    from vizkit.data import (
        BadImage,
        ImageList,
        Preprocess,
        SkippedImages,
        UnreadableImage,
        check_labels,
        first_readable,
        image_list,
        image_loader,
        label_name,
        load_image,
        load_images,
        parse_fill,
        preprocess_for,
        read_batches,
        read_labels,
        resolve_target,
        workers_ignore_stop_signals,
    )
    from vizkit.engine.deconv import Projection, project, receptive_boxes, support_box, to_image
    from vizkit.engine.incremental import IncrementalOcclusion, OcclusionCost
    from vizkit.engine.instrument import Instrumented, hook_counts, instrument
    from vizkit.engine.recorder import LayerInfo, NonFiniteActivation, Settings, UnknownLayerError
    from vizkit.engine.rules import DeconvnetRule, GradientRule, GuidedRule, ProjectionRule
    from vizkit.framework.analysis import Analysis, Option, RunContext, run
    from vizkit.framework.loading import build_model, list_models, load_model
    from vizkit.framework.plugins import App, get_app, make_app
    from vizkit.framework.results import Result, load_result, save_torch_atomic, write_atomic
    from vizkit.models import (
        ModelEntry,
        ModelSource,
        apply_state_dict,
        read_state_dict,
        sha256_file,
    )
    from vizkit.models import describe as describe_model
    from vizkit.models.zfnet import clip_feature_scale
    from vizkit.toolkit import figures
    from vizkit.toolkit.cache import cache_folder
    from vizkit.toolkit.channels import parse_channel_spec, parse_layers, select_channels
    from vizkit.toolkit.distributed import ProcessGroup, is_main_process
    from vizkit.toolkit.features import CachedFeatures, extract_features, parse_pool, pool_features
    from vizkit.toolkit.figures import hwc, new_figure, projections_beside_patches, show, tile_mosaic
    from vizkit.toolkit.interrupts import StopRequest, deferred_interrupts, sigterm_as_interrupt
    from vizkit.toolkit.linear import GRID as PROBE_GRID
    from vizkit.toolkit.linear import LinearProbe, Standardizer, fit_probe, mean_class_accuracy, select_probe
    from vizkit.toolkit.progress import progress_bar
    from vizkit.toolkit.runs import read_run_info, snapshot_paths, write_run_info
    from vizkit.toolkit.similarity import ssim
    from vizkit.toolkit.topk import RunningTopK
    from vizkit.toolkit.winners import crop_to_box, project_winners

_LAZY: dict[str, tuple[str, str | None]] = {
    # public name: (module, attribute in it; None: the module itself)
    "models": ("vizkit.models", None),
    "ModelEntry": ("vizkit.models", "ModelEntry"),
    "ModelSource": ("vizkit.models", "ModelSource"),
    "apply_state_dict": ("vizkit.models", "apply_state_dict"),
    "read_state_dict": ("vizkit.models", "read_state_dict"),
    "sha256_file": ("vizkit.models", "sha256_file"),
    "describe_model": ("vizkit.models", "describe"),
    "sample_images": ("vizkit.app.demo", "sample_images"),
    "download_samples": ("vizkit.app.downloads", "download_samples"),
    "cache_folder": ("vizkit.toolkit.cache", "cache_folder"),
    "BadImage": ("vizkit.data", "BadImage"),
    "ImageList": ("vizkit.data", "ImageList"),
    "Preprocess": ("vizkit.data", "Preprocess"),
    "SkippedImages": ("vizkit.data", "SkippedImages"),
    "UnreadableImage": ("vizkit.data", "UnreadableImage"),
    "check_labels": ("vizkit.data", "check_labels"),
    "first_readable": ("vizkit.data", "first_readable"),
    "image_list": ("vizkit.data", "image_list"),
    "image_loader": ("vizkit.data", "image_loader"),
    "label_name": ("vizkit.data", "label_name"),
    "load_image": ("vizkit.data", "load_image"),
    "load_images": ("vizkit.data", "load_images"),
    "parse_fill": ("vizkit.data", "parse_fill"),
    "preprocess_for": ("vizkit.data", "preprocess_for"),
    "read_batches": ("vizkit.data", "read_batches"),
    "read_labels": ("vizkit.data", "read_labels"),
    "resolve_target": ("vizkit.data", "resolve_target"),
    "Projection": ("vizkit.engine.deconv", "Projection"),
    "project": ("vizkit.engine.deconv", "project"),
    "receptive_boxes": ("vizkit.engine.deconv", "receptive_boxes"),
    "support_box": ("vizkit.engine.deconv", "support_box"),
    "to_image": ("vizkit.engine.deconv", "to_image"),
    "IncrementalOcclusion": ("vizkit.engine.incremental", "IncrementalOcclusion"),
    "OcclusionCost": ("vizkit.engine.incremental", "OcclusionCost"),
    "Instrumented": ("vizkit.engine.instrument", "Instrumented"),
    "hook_counts": ("vizkit.engine.instrument", "hook_counts"),
    "instrument": ("vizkit.engine.instrument", "instrument"),
    "LayerInfo": ("vizkit.engine.recorder", "LayerInfo"),
    "NonFiniteActivation": ("vizkit.engine.recorder", "NonFiniteActivation"),
    "Settings": ("vizkit.engine.recorder", "Settings"),
    "UnknownLayerError": ("vizkit.engine.recorder", "UnknownLayerError"),
    "DeconvnetRule": ("vizkit.engine.rules", "DeconvnetRule"),
    "GradientRule": ("vizkit.engine.rules", "GradientRule"),
    "GuidedRule": ("vizkit.engine.rules", "GuidedRule"),
    "ProjectionRule": ("vizkit.engine.rules", "ProjectionRule"),
    "Analysis": ("vizkit.framework.analysis", "Analysis"),
    "Option": ("vizkit.framework.analysis", "Option"),
    "RunContext": ("vizkit.framework.analysis", "RunContext"),
    "run": ("vizkit.framework.analysis", "run"),
    "build_model": ("vizkit.framework.loading", "build_model"),
    "list_models": ("vizkit.framework.loading", "list_models"),
    "load_model": ("vizkit.framework.loading", "load_model"),
    "App": ("vizkit.framework.plugins", "App"),
    "get_app": ("vizkit.framework.plugins", "get_app"),
    "make_app": ("vizkit.framework.plugins", "make_app"),
    "Result": ("vizkit.framework.results", "Result"),
    "load_result": ("vizkit.framework.results", "load_result"),
    "save_torch_atomic": ("vizkit.framework.results", "save_torch_atomic"),
    "write_atomic": ("vizkit.framework.results", "write_atomic"),
    "clip_feature_scale": ("vizkit.models.zfnet", "clip_feature_scale"),
    "figures": ("vizkit.toolkit.figures", None),
    "hwc": ("vizkit.toolkit.figures", "hwc"),
    "new_figure": ("vizkit.toolkit.figures", "new_figure"),
    "projections_beside_patches": ("vizkit.toolkit.figures", "projections_beside_patches"),
    "show": ("vizkit.toolkit.figures", "show"),
    "tile_mosaic": ("vizkit.toolkit.figures", "tile_mosaic"),
    "parse_channel_spec": ("vizkit.toolkit.channels", "parse_channel_spec"),
    "parse_layers": ("vizkit.toolkit.channels", "parse_layers"),
    "select_channels": ("vizkit.toolkit.channels", "select_channels"),
    "ProcessGroup": ("vizkit.toolkit.distributed", "ProcessGroup"),
    "is_main_process": ("vizkit.toolkit.distributed", "is_main_process"),
    "CachedFeatures": ("vizkit.toolkit.features", "CachedFeatures"),
    "extract_features": ("vizkit.toolkit.features", "extract_features"),
    "parse_pool": ("vizkit.toolkit.features", "parse_pool"),
    "pool_features": ("vizkit.toolkit.features", "pool_features"),
    "StopRequest": ("vizkit.toolkit.interrupts", "StopRequest"),
    "deferred_interrupts": ("vizkit.toolkit.interrupts", "deferred_interrupts"),
    "sigterm_as_interrupt": ("vizkit.toolkit.interrupts", "sigterm_as_interrupt"),
    "workers_ignore_stop_signals": ("vizkit.data", "workers_ignore_stop_signals"),
    "PROBE_GRID": ("vizkit.toolkit.linear", "GRID"),
    "LinearProbe": ("vizkit.toolkit.linear", "LinearProbe"),
    "Standardizer": ("vizkit.toolkit.linear", "Standardizer"),
    "fit_probe": ("vizkit.toolkit.linear", "fit_probe"),
    "mean_class_accuracy": ("vizkit.toolkit.linear", "mean_class_accuracy"),
    "select_probe": ("vizkit.toolkit.linear", "select_probe"),
    "progress_bar": ("vizkit.toolkit.progress", "progress_bar"),
    "read_run_info": ("vizkit.toolkit.runs", "read_run_info"),
    "snapshot_paths": ("vizkit.toolkit.runs", "snapshot_paths"),
    "write_run_info": ("vizkit.toolkit.runs", "write_run_info"),
    "ssim": ("vizkit.toolkit.similarity", "ssim"),
    "RunningTopK": ("vizkit.toolkit.topk", "RunningTopK"),
    "crop_to_box": ("vizkit.toolkit.winners", "crop_to_box"),
    "project_winners": ("vizkit.toolkit.winners", "project_winners"),
}

__all__ = [
    "PROBE_GRID",
    "Analysis",
    "App",
    "BadImage",
    "CachedFeatures",
    "DeconvnetRule",
    "GradientRule",
    "GuidedRule",
    "ImageList",
    "IncrementalOcclusion",
    "Instrumented",
    "LayerInfo",
    "LinearProbe",
    "ModelEntry",
    "ModelSource",
    "NonFiniteActivation",
    "OcclusionCost",
    "Option",
    "Preprocess",
    "ProcessGroup",
    "Projection",
    "ProjectionRule",
    "Result",
    "RunContext",
    "RunningTopK",
    "Settings",
    "SkippedImages",
    "Standardizer",
    "StopRequest",
    "UnknownLayerError",
    "UnreadableImage",
    "UsageError",
    "VizkitError",
    "__version__",
    "apply_state_dict",
    "build_model",
    "cache_folder",
    "check_labels",
    "clip_feature_scale",
    "crop_to_box",
    "deferred_interrupts",
    "describe_model",
    "download_samples",
    "extract_features",
    "figures",
    "first_readable",
    "fit_probe",
    "get_app",
    "hook_counts",
    "hookimpl",
    "hwc",
    "image_list",
    "image_loader",
    "instrument",
    "is_main_process",
    "label_name",
    "list_models",
    "load_image",
    "load_images",
    "load_model",
    "load_result",
    "make_app",
    "mean_class_accuracy",
    "models",
    "new_figure",
    "parse_channel_spec",
    "parse_fill",
    "parse_layers",
    "parse_pool",
    "pool_features",
    "preprocess_for",
    "progress_bar",
    "project",
    "project_winners",
    "projections_beside_patches",
    "read_batches",
    "read_labels",
    "read_run_info",
    "read_state_dict",
    "receptive_boxes",
    "resolve_target",
    "run",
    "sample_images",
    "save_torch_atomic",
    "select_channels",
    "select_probe",
    "sha256_file",
    "show",
    "sigterm_as_interrupt",
    "snapshot_paths",
    "ssim",
    "support_box",
    "tile_mosaic",
    "to_image",
    "workers_ignore_stop_signals",
    "write_atomic",
    "write_run_info",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562) and return the value.

    ``import vizkit`` stays light (no torch, torchvision or matplotlib until a name needs them),
    so the command line starts quickly; ``vizkit.X`` and ``from vizkit import X`` work as usual.

    Args:
        name: the attribute looked up on the ``vizkit`` package.
    """
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'vizkit' has no attribute '{name}'") from None
    module = importlib.import_module(module_name)
    # not cached here: a value kept on first use would outlive a test's monkeypatch of the
    # defining module if the first use fell inside it (a lookup is a dict hit once imported)
    return module if attribute is None else getattr(module, attribute)


def __dir__() -> list[str]:
    """The public names (``dir(vizkit)``, tab completion), imported or not yet."""
    return sorted(set(globals()) | set(__all__))
