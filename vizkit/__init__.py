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
"""

from vizkit import models
from vizkit.app.demo import sample_images
from vizkit.data import (
    ImageList,
    Preprocess,
    check_labels,
    image_list,
    label_name,
    load_image,
    load_images,
    parse_fill,
    preprocess_for,
    read_labels,
    resolve_target,
)
from vizkit.engine.deconv import Projection, project, receptive_boxes, support_box, to_image
from vizkit.engine.incremental import IncrementalOcclusion, OcclusionCost
from vizkit.engine.instrument import Instrumented, hook_counts, instrument
from vizkit.engine.recorder import LayerInfo, Settings, UnknownLayerError
from vizkit.engine.rules import DeconvnetRule, GradientRule, GuidedRule, ProjectionRule
from vizkit.errors import UsageError, VizkitError
from vizkit.framework.analysis import Analysis, Option, RunContext, run
from vizkit.framework.hookspecs import hookimpl
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
from vizkit.version import __version__

__all__ = [
    "PROBE_GRID",
    "Analysis",
    "App",
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
    "Standardizer",
    "StopRequest",
    "UnknownLayerError",
    "UsageError",
    "VizkitError",
    "__version__",
    "apply_state_dict",
    "build_model",
    "check_labels",
    "clip_feature_scale",
    "crop_to_box",
    "deferred_interrupts",
    "describe_model",
    "extract_features",
    "figures",
    "fit_probe",
    "get_app",
    "hook_counts",
    "hookimpl",
    "hwc",
    "image_list",
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
    "write_atomic",
    "write_run_info",
]
