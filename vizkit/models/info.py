"""What vizkit knows about a model, as one object stored on it (timm's ``pretrained_cfg``), and
what result.json records of it (:func:`describe`).

:func:`vizkit.load_model` stores a :class:`ModelInfo` on the model it returns, as
``model.vizkit_info``: the spec it was built from, its weights file and their SHA-256, its class
labels and the preprocessing it expects. :func:`model_info` is the one way to read it; for a
model that carries none (built by hand, or by a factory before ``load_model`` sees it) it derives
one from what the model's class declares.

A model (its class, or a factory on the instance) may declare:

* ``vizkit_default_layer = "conv5"``: the layer analyses such as occlusion track when given no
  ``--layer``;
* ``vizkit_aliases = {"conv5": "features.10"}``: short names for layers;
* anything else by setting ``model.vizkit_info = ModelInfo(preprocess=Preprocess(...))``, e.g.
  the input size a factory's model was built for (``load_model`` keeps it).

The engine (layer aliases) and :func:`vizkit.data.preprocess_for` sit below this package and read
``vizkit_info`` by name, with the same rule: the stored value, else the class's declaration.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from vizkit.data import Preprocess
from vizkit.errors import UsageError
from vizkit.models.weight_files import sha256_file

ATTRIBUTE = "vizkit_info"  # where a model carries its ModelInfo


@dataclass(frozen=True)
class ModelInfo:
    """A model's metadata: how it was loaded, with which weights and labels, the input it
    expects, and the layers analyses should know about.

    Frozen: derive a changed copy with :func:`dataclasses.replace` and store it as
    ``model.vizkit_info``.

    Attributes:
        spec: how :func:`vizkit.load_model` built it (``zfnet-compact``,
            ``torchvision:alexnet``, ``file.py:factory``); None for a model built otherwise
            (result.json then names its class).
        weights: the weights file it was loaded with (its path), or None.
        weights_sha256: the hex SHA-256 of that file, so results say exactly which weights.
        labels: its class names, one per output, or None.
        preprocess: the input it expects (:class:`vizkit.data.Preprocess`; a dict of its fields
            is converted); None: the ImageNet default (resize 256, crop 224).
        default_layer: the layer (or alias) analyses use when given none; None: their own rule
            (the last layer with spatial maps, :func:`vizkit.toolkit.default_layer`).
        aliases: short layer names and the module names they stand for
            (``{"conv5": "features.10"}``), accepted wherever a layer is named.
    """

    spec: str | None = None
    weights: str | None = None
    weights_sha256: str | None = None
    labels: list[str] | None = None
    preprocess: Preprocess | None = None
    default_layer: str | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        preprocess: Any = self.preprocess
        if isinstance(preprocess, Mapping):
            object.__setattr__(self, "preprocess", Preprocess.from_dict(dict(preprocess)))
        elif preprocess is not None and not isinstance(preprocess, Preprocess):
            raise UsageError(f"ModelInfo.preprocess must be a vizkit.Preprocess, not {type(preprocess).__name__}")
        object.__setattr__(self, "aliases", dict(self.aliases or {}))


def model_info(model: nn.Module) -> ModelInfo:
    """What vizkit knows about ``model``: the :class:`ModelInfo` stored on it (``load_model``
    stores one), its empty fields filled from the model's declarations (``vizkit_default_layer``,
    ``vizkit_aliases`` on its class or itself); for a model with none stored, those declarations
    alone.

    Args:
        model: any module.

    Returns:
        A ModelInfo (a new object: change the model's by storing a :func:`dataclasses.replace` d
        copy as ``model.vizkit_info``).
    """
    stored = getattr(model, ATTRIBUTE, None)
    if stored is not None and not isinstance(stored, ModelInfo):
        raise UsageError(f"model.{ATTRIBUTE} must be a vizkit.models.ModelInfo, not {type(stored).__name__}")
    found = stored or ModelInfo()
    return replace(
        found,
        default_layer=found.default_layer or getattr(model, "vizkit_default_layer", None),
        aliases=found.aliases or getattr(model, "vizkit_aliases", None) or {},
    )


def describe(model: nn.Module, weights: str | os.PathLike | None = None) -> dict[str, Any]:
    """What result.json records about a model: its spec, class and weights.

    Args:
        model: the model, with the :class:`ModelInfo` :func:`vizkit.load_model` stores (a
            model built otherwise is described by its class name).
        weights: the file whose weights it holds now, when an analysis loaded others than it was
            built with (hashed here); None: the weights it was loaded with.
    """
    info = model_info(model)
    return {
        "spec": info.spec or type(model).__name__,
        "class": type(model).__name__,
        "weights": str(weights) if weights is not None else info.weights,
        "weights_sha256": sha256_file(weights) if weights is not None else info.weights_sha256,
    }
