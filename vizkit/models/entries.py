"""What a plugin registers about models: named models (:class:`ModelEntry`) and forms of model
spec (:class:`ModelSource`). The registry (:mod:`vizkit.framework.registry`) collects them;
:func:`vizkit.load_model` looks a spec up among them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from vizkit.data import Preprocess


@dataclass
class ModelEntry:
    """A named model a plugin contributes: a factory, and optionally its weights and labels."""

    name: str
    factory: Callable[[], nn.Module]
    description: str = ""
    weights: Path | None = None  # default weights (a state_dict file), if the model ships them
    labels: list[str] | None = None
    # the input the model expects (load_model records it, vizkit.run and load_images use it);
    # None: the ImageNet default (resize 256, crop 224)
    preprocess: Preprocess | None = None
    tags: tuple[str, ...] = ()
    plugin: str = field(default="", compare=False)


@dataclass
class ModelSource:
    """A form of model spec and how to build it: ``prefix:<rest>`` specs (``build(rest)``), or
    specs that ``accepts(spec)`` recognises (``build(spec)``)."""

    name: str
    build: Callable[[str], nn.Module]
    usage: str  # how a spec of this form is written, e.g. "torchvision:<builder>"
    description: str = ""
    prefix: str | None = None
    accepts: Callable[[str], bool] | None = None
    plugin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if (self.prefix is None) == (self.accepts is None):
            raise TypeError(f"model source '{self.name}' needs exactly one of prefix= or accepts=")

    def handles(self, spec: str) -> str | None:
        """What ``build`` receives for ``spec``, or None when the spec is not of this form."""
        if self.prefix is not None:
            head, sep, rest = spec.partition(":")
            return rest if sep and head == self.prefix else None
        assert self.accepts is not None
        return spec if self.accepts(spec) else None
