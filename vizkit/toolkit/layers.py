"""The layer an analysis uses when the caller names none (``--layer`` left out).

One rule for every analysis (occlusion, attribution, ...), so the same model gets the same
default layer everywhere: the model's own declared default, an alias resolved to the layer it
names, else its last layer with spatial feature maps before the classifier.
"""

from __future__ import annotations

from torch import nn

from vizkit.engine.recorder import Recorder
from vizkit.errors import UsageError
from vizkit.models.info import model_info

# module types that only pass a layer's maps on or wrap other layers: never a default
_NOT_A_LAYER = ("Dropout", "Dropout2d", "Identity", "Sequential", "ModuleList")


def default_layer(model: nn.Module, im: Recorder, num_classes: int, *, hookable: bool = False) -> str:
    """The layer to analyse when none is given.

    The model's declared default (:func:`vizkit.models.model_info`'s ``default_layer``, e.g. a
    class's ``vizkit_default_layer``: the paper's "layer 5" for the bundled ZF net), resolved
    through the model's aliases to a layer name; else the last layer of the recorded forward
    whose output is a spatial feature map (four dimensions, more than one row) that is not the
    classifier's (as many channels as classes) and not a container or pass-through module
    (Sequential, ModuleList, Dropout, Identity).

    Args:
        model: the model, read for its declared default layer.
        im: the instrumented model (:class:`vizkit.engine.Instrumented`), after a forward that
            recorded every layer.
        num_classes: the number of the model's outputs: a layer with that many channels is
            the classifier itself, not a feature map.
        hookable: only a module that runs once per forward, what a module hook (captum's layer
            methods) can attach to: a functional op (``F.relu`` in DenseNet's forward) or a
            module called twice (ResNet's shared ReLU) is skipped.

    Returns:
        The layer's name (never an alias).

    Raises:
        UsageError: the model has no such layer (the message asks for ``--layer``).
    """
    declared = model_info(model).default_layer
    if declared:
        return im.resolve_alias(declared)
    names = set(im.layers)
    candidates = [
        info.name
        for info in im.layer_infos()
        if info.shape is not None
        and len(info.shape) == 4
        and info.shape[2] > 1
        and info.shape[1] != num_classes
        and info.type not in _NOT_A_LAYER
        and not (hookable and (info.functional or "#" in info.name or f"{info.name}#1" in names))
    ]
    if not candidates:
        what = "module that runs once per forward" if hookable else "layer"
        raise UsageError(f"no {what} with spatial feature maps found; pass --layer")
    return candidates[-1]
