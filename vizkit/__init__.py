"""vizkit: the Zeiler & Fergus analyses on any PyTorch convnet.

The public API: instrument a model, project activations with the deconvnet, run registered
analyses, and write plugins (``hookimpl``, ``Analysis``, ``Option``, ``ModelEntry``, ``Result``).
"""

__version__ = "0.1.0"

from vizkit.analysis import Analysis, Option, RunContext, run
from vizkit.channels import parse_channel_spec, select_channels
from vizkit.data import Preprocess, image_list, load_image, load_images, read_labels
from vizkit.deconv import Projection, project, receptive_boxes, support_box, to_image
from vizkit.errors import UsageError, VizkitError
from vizkit.hookspecs import hookimpl
from vizkit.instrument import Instrumented, LayerInfo, hook_counts, instrument
from vizkit.models import ModelEntry, list_models, load_model
from vizkit.plugins import get_app, make_app
from vizkit.progress import progress_bar
from vizkit.results import Result, load_result
from vizkit.topk import RunningTopK
from vizkit.winners import crop_to_box, project_winners
from vizkit import models

__all__ = [
    "Analysis", "Instrumented", "LayerInfo", "ModelEntry", "Option", "Preprocess", "Projection",
    "Result", "RunContext", "UsageError", "VizkitError", "__version__", "get_app", "hook_counts",
    "hookimpl", "image_list", "instrument", "list_models", "load_image", "load_images",
    "load_model", "load_result", "make_app", "models", "progress_bar", "project", "read_labels",
    "parse_channel_spec", "receptive_boxes", "run", "RunningTopK", "select_channels",
    "support_box", "to_image", "crop_to_box", "project_winners",
]
