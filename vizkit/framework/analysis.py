"""What an analysis is, and how one is run on a model.

A plugin declares an :class:`Analysis`: a name, a one-line description, its :class:`Option` s
(turned into CLI options and keyword arguments) and a ``run(ctx, **options)`` that receives a
:class:`RunContext` holding the shared instrumented model and returns a :class:`Result`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from vizkit.data import ImageList, Labels, Preprocess, check_labels, ensure_device, image_list, label_name, load_images
from vizkit.engine.instrument import Instrumented, instrument
from vizkit.engine.rules import ProjectionRule
from vizkit.errors import UsageError
from vizkit.framework import loading
from vizkit.framework.results import Result
from vizkit.models import describe

if TYPE_CHECKING:  # pragma: no cover
    from vizkit.framework.plugins import App


@dataclass(frozen=True)
class Option:
    """One option of an analysis: ``--name-with-dashes`` on the CLI, ``name`` in Python.

    ``type`` is int, float, str, bool (a flag) or a tuple of allowed strings (a choice);
    ``parse`` optionally turns the value into what ``run`` receives (and raises UsageError);
    ``registry`` ("rules") makes the value a name registered there by some plugin (the CLI
    offers them as choices), e.g. ``Option("rule", registry="rules", default="deconvnet")``.
    """

    name: str
    type: Any = str
    default: Any = None
    help: str = ""
    required: bool = False
    multiple: bool = False
    parse: Callable[[Any], Any] | None = None
    registry: Literal["rules"] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def convert(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(self.type, tuple):
            if value not in self.type:
                raise UsageError(f"{self.flag} must be one of {', '.join(self.type)}, not '{value}'")
        elif self.type in (int, float) and not isinstance(value, bool):
            try:
                value = self.type(value)
            except (TypeError, ValueError):
                raise UsageError(f"{self.flag} expects {self.type.__name__}, got '{value}'") from None
        return self.parse(value) if self.parse else value


@dataclass
class Analysis:
    """An analysis a plugin contributes."""

    name: str
    description: str
    run: Callable[..., Result]
    options: list[Option] = field(default_factory=list)
    inputs: Literal["images", "data", "any", "none"] = "images"
    demo: dict[str, Any] | None = None  # options for `vizkit demo`; None: not part of the demo
    demo_quick: dict[str, Any] | None = None  # `vizkit demo --quick`: overrides of ``demo`` (vizkit.app.demo)
    # the model spec to use when none is given, from the resolved options (e.g. the one a
    # training run recorded); None: a model must be given
    model_from: Callable[[dict[str, Any]], str] | None = None
    plugin: str = field(default="", compare=False)

    def option(self, name: str) -> Option:
        for option in self.options:
            if option.name == name:
                return option
        raise KeyError(name)

    def default_model(self, given: dict[str, Any]) -> str:
        """The model spec this analysis uses when the caller names none."""
        if self.model_from is None:
            raise UsageError(f"analysis '{self.name}' needs --model")
        return self.model_from(self.resolve_options(given))

    def resolve_options(self, given: dict[str, Any], app: App | None = None) -> dict[str, Any]:
        """Defaults filled in, values converted; unknown or missing options refused (and,
        with ``app``, names that its registries do not hold)."""
        names = {o.name for o in self.options}
        unknown = sorted(set(given) - names)
        if unknown:
            valid = ", ".join(sorted(names)) or "none"
            raise UsageError(f"analysis '{self.name}' has no option '{unknown[0]}' (options: {valid})")
        resolved = {}
        for option in self.options:
            value = given.get(option.name, option.default)
            if option.required and value in (None, (), []):
                raise UsageError(f"analysis '{self.name}' needs {option.flag}")
            if option.multiple:
                value = tuple(option.convert(v) for v in (value or ()))
            else:
                value = option.convert(value)
            if option.registry and app is not None and value is not None:
                registered = getattr(app, option.registry)
                for name in value if option.multiple else (value,):
                    if name not in registered:
                        raise UsageError(f"{option.flag} must be one of {', '.join(sorted(registered))}, not '{name}'")
            resolved[option.name] = value
        return resolved


@dataclass
class RunContext:
    """Everything an analysis's ``run`` receives besides its own options."""

    model: nn.Module
    instrumented: Instrumented
    preprocess: Preprocess
    device: torch.device
    labels: list[str] | None = None
    image_paths: list[Path] = field(default_factory=list)
    image_tensors: Tensor | None = None
    data: ImageList | None = None
    batch_size: int = 32
    seed: int = 0
    progress: bool = False
    out: Path | None = None  # where the result will be saved (for checkpoints), if known
    analysis: str = ""
    app: App | None = None
    generator: torch.Generator = field(default_factory=torch.Generator)  # seeded with ``seed``
    rng: np.random.Generator = field(default_factory=np.random.default_rng)  # seeded with ``seed``

    def rule(self, name: str | ProjectionRule) -> ProjectionRule:
        """The projection rule registered under ``name`` (built-in or a plugin's)."""
        if self.app is None:
            from vizkit.engine.rules import resolve_rule

            return resolve_rule(name)
        return self.app.rule(name)

    def images(self) -> Tensor:
        """The --image inputs as one preprocessed batch on the device."""
        if self.image_tensors is not None:
            return self.image_tensors.to(self.device)
        if not self.image_paths:
            raise UsageError(f"analysis '{self.analysis}' needs --image")
        return load_images(self.image_paths, self.preprocess).to(self.device)

    def dataset(self) -> ImageList:
        if self.data is None:
            raise UsageError(f"analysis '{self.analysis}' needs --data")
        return self.data

    def label(self, index: int) -> str:
        return label_name(self.labels, int(index))

    def image_names(self) -> list[str]:
        if self.image_paths:
            return [p.name for p in self.image_paths]
        count = 0 if self.image_tensors is None else self.image_tensors.shape[0]
        return [f"image {i}" for i in range(count)]


def run(
    analysis: str,
    model: nn.Module | None,
    images: Sequence[str | os.PathLike] | Tensor | None = None,
    data: str | os.PathLike | ImageList | None = None,
    labels: Sequence[str] | None = None,
    preprocess: Preprocess | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = False,
    out: str | os.PathLike | None = None,
    app: App | None = None,
    **options: Any,
) -> Result:
    """Run a registered analysis on ``model`` and return its Result (not yet saved).

    Every hook is removed afterwards and the model is left in the mode it was in, also on error.

    Args:
        analysis: the registered analysis's name (``vizkit list`` shows them).
        model: the model to analyse; None: the analysis's own default (e.g. the architecture a
            training run recorded), if it has one.
        images: image file paths or an already-preprocessed [N,3,H,W] tensor, for analyses of
            single images.
        data: a folder, ImageFolder tree or text file of paths (see :func:`vizkit.image_list`), or
            an ImageList, for analyses over a dataset.
        labels: class names, one per model output; None: those the model was loaded with, if any.
        preprocess: how image files are turned into tensors; None: the model's own (its
            ``vizkit_preprocess``), else the ImageNet default.
        device: where the model and inputs run (``"cpu"``, ``"cuda"``, a ``torch.device``).
        batch_size: images per forward pass (at least 1).
        seed: seeds the run's own random generators (``ctx.generator``, ``ctx.rng``); the global
            ones are left alone.
        progress: show progress bars on stderr.
        out: the folder the result will be saved to, for analyses that checkpoint there; None:
            none is known.
        app: the plugin registry to consult; None: the installed plugins' (:func:`vizkit.get_app`).
        **options: the analysis's own options by name (its :class:`Option` s); unknown or missing
            required ones are a UsageError.
    """
    from vizkit.framework.plugins import get_app

    app = app or get_app()
    spec = app.analysis(analysis)
    opts = spec.resolve_options(options, app)
    device = ensure_device(str(device)) if not isinstance(device, torch.device) else device
    if model is None:
        model = loading.load_model(spec.default_model(options), device=device, app=app)
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {batch_size}")
    preprocess = preprocess or getattr(model, "vizkit_preprocess", None) or Preprocess()
    labels = (
        (labels if isinstance(labels, Labels) else list(labels))
        if labels is not None
        else getattr(model, "vizkit_labels", None)
    )
    paths: list[Path] = []
    tensors = None
    if isinstance(images, Tensor):
        tensors = images
    elif images:
        paths = [Path(p) for p in images]
    dataset = data if isinstance(data, ImageList) or data is None else image_list(data, preprocess)
    _check_inputs(spec, bool(paths) or tensors is not None, dataset is not None)

    _check_finite(model, tensors)
    was_training = model.training
    model = model.to(device).eval()
    try:
        _check_model_takes_images(model, labels, preprocess, device, tensors)
    except BaseException:
        model.train(was_training)
        raise
    started = time.perf_counter()
    try:
        with instrument(model) as im:
            ctx = RunContext(
                model=model,
                instrumented=im,
                preprocess=preprocess,
                device=device,
                labels=labels,
                image_paths=paths,
                image_tensors=tensors,
                data=dataset,
                batch_size=batch_size,
                seed=seed,
                progress=progress,
                out=Path(out) if out else None,
                analysis=spec.name,
                app=app,
                generator=torch.Generator().manual_seed(seed),
                rng=np.random.default_rng(seed),
            )
            result = spec.run(ctx, **opts)
    finally:
        model.train(was_training)
    result.analysis = spec.name
    result.meta.setdefault("seconds", round(time.perf_counter() - started, 3))
    result.meta.setdefault("model", describe(model))  # an analysis that loaded other weights says which
    result.meta["params"] = {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()}
    result.meta["params"].update({"device": str(device), "batch_size": batch_size, "seed": seed})
    result.meta["inputs"] = {
        "images": [str(p) for p in paths] if paths else (None if tensors is None else f"tensor{list(tensors.shape)}"),
        "data": str(data) if data is not None and not isinstance(data, ImageList) else None,
        "preprocess": preprocess.to_dict(),
    }
    return result


def _check_finite(model: nn.Module, images: Tensor | None) -> None:
    """Refuse NaN or infinite weights, buffers or input tensors up front: every map computed
    from them would be NaN (or a torch error far from the cause)."""
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in named:
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                bad = int((~torch.isfinite(tensor)).sum())
                raise UsageError(f"the model's {kind} '{name}' has {bad} NaN or infinite values")
    if images is not None and images.is_floating_point() and not bool(torch.isfinite(images).all()):
        raise UsageError("the input images contain NaN or infinite values")


def _check_model_takes_images(
    model: nn.Module, labels: Sequence[str] | None, preprocess: Preprocess, device: torch.device, images: Tensor | None
) -> None:
    """One blank forward at the size the analysis will feed: a model that cannot take it (a
    fixed-size classifier given another --crop) is a one-line UsageError, and labels whose count
    differs from the outputs are refused (a 10-class model labelled with 1,000 ImageNet names
    would call everything 'goldfish')."""
    shape = tuple(images.shape[1:]) if images is not None else (3, preprocess.crop, preprocess.crop)
    try:
        with torch.no_grad():
            output = model(torch.zeros(1, *shape, device=device))
    except (RuntimeError, ValueError, TypeError, IndexError) as error:  # what torch raises for bad shapes
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"the model cannot take {'x'.join(map(str, shape))} inputs ({first}); check --crop") from None
    if labels is not None and isinstance(output, Tensor) and output.dim() == 2:
        check_labels(labels, output.shape[1])


def _check_inputs(spec: Analysis, has_images: bool, has_data: bool) -> None:
    if spec.inputs == "images" and not has_images:
        raise UsageError(f"analysis '{spec.name}' needs --image FILE (one or more)")
    if spec.inputs == "data" and not has_data:
        raise UsageError(f"analysis '{spec.name}' needs --data PATH")
    if spec.inputs == "any" and not (has_images or has_data):
        raise UsageError(f"analysis '{spec.name}' needs --image FILE or --data PATH")
