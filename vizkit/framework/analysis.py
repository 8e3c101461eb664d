"""What an analysis is, and how one is run on a model.

A plugin declares an :class:`Analysis`: a name, a one-line description, its :class:`Option` s
(turned into CLI options and keyword arguments) and a ``run(ctx, **options)`` that receives a
:class:`RunContext` holding the shared instrumented model and returns a :class:`Result`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from vizkit.data import (
    ImageList,
    Labels,
    Preprocess,
    SkippedImages,
    check_labels,
    ensure_device,
    first_readable,
    image_list,
    label_name,
    load_images,
    read_batches,
    read_labels,
)
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

    An int or float option's accepted range is declared once, here, and checked before the
    analysis runs (a one-line UsageError naming the flag and the bound; ``--help`` shows the range):
    ``minimum`` / ``maximum`` are inclusive bounds, ``exclusive_minimum`` / ``exclusive_maximum``
    make one strict (``Option("stdev", float, 0.15, minimum=0, exclusive_minimum=True)``: above 0).
    A float option never takes NaN or infinity; an int option never takes a fraction.
    ``output_folder`` marks a str option naming a folder the analysis writes into (a cache): it
    must be a folder, or one that can be created, and the one-line error says why not.
    """

    name: str
    type: Any = str
    default: Any = None
    help: str = ""
    required: bool = False
    multiple: bool = False
    parse: Callable[[Any], Any] | None = None
    registry: Literal["rules"] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    output_folder: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def range_text(self) -> str:
        """The accepted range in words ("at least 1", "in (0, 1]"); empty when unbounded."""
        low, high = self.minimum, self.maximum
        if low is None and high is None:
            return ""
        if high is None:
            return f"{'above' if self.exclusive_minimum else 'at least'} {low:g}"
        if low is None:
            return f"{'below' if self.exclusive_maximum else 'at most'} {high:g}"
        if self.exclusive_minimum or self.exclusive_maximum:
            return (
                f"in {'(' if self.exclusive_minimum else '['}{low:g}, {high:g}{')' if self.exclusive_maximum else ']'}"
            )
        return f"between {low:g} and {high:g}"

    def convert(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(self.type, tuple):
            if value not in self.type:
                raise UsageError(f"{self.flag} must be one of {', '.join(self.type)}, not '{value}'")
        elif self.type in (int, float) and not isinstance(value, bool):
            value = self._number(value)
        if self.output_folder:
            self._check_output_folder(value)
        return self.parse(value) if self.parse else value

    def _check_output_folder(self, value: Any) -> None:
        """``value`` is a folder, or the first of its parents that exists is a writable one."""
        if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
            raise UsageError(f"{self.flag} expects a folder, got '{value}'")
        folder = Path(value)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{self.flag} {folder} is not a folder")
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            why = "is not a folder" if not existing.is_dir() else "is not writable"
            raise UsageError(f"{self.flag} {folder} cannot be created: {existing} {why}")

    def _number(self, value: Any) -> int | float:
        """``value`` as this option's int or float, inside its declared range."""
        kind = self.type.__name__
        try:
            number = float(value) if self.type is float or isinstance(value, float) else int(value)
        except (TypeError, ValueError, OverflowError):
            raise UsageError(f"{self.flag} expects {'an' if kind == 'int' else 'a'} {kind}, got '{value}'") from None
        if not math.isfinite(number):
            raise UsageError(f"{self.flag} must be a finite number, not {value}")
        if self.type is int:
            if not float(number).is_integer():
                raise UsageError(f"{self.flag} expects a whole number, got {value}")
            number = int(number)
            if abs(number) > INT_LIMIT and (self.maximum is None or self.maximum > INT_LIMIT):  # torch's C ints
                raise UsageError(f"{self.flag} must be at most {INT_LIMIT} in size, not {value}")
        low, high = self.minimum, self.maximum
        if low is not None and (number <= low if self.exclusive_minimum else number < low):
            raise UsageError(
                f"{self.flag} must be {'above' if self.exclusive_minimum else 'at least'} {low:g}, not {value}"
            )
        if high is not None and (number >= high if self.exclusive_maximum else number > high):
            raise UsageError(
                f"{self.flag} must be {'below' if self.exclusive_maximum else 'at most'} {high:g}, not {value}"
            )
        return number


INT_LIMIT = 2**31 - 1  # no int option goes beyond (torch turns them into C ints: 2**63 overflows)
MAX_BATCH_SIZE = 65536  # images per forward: far more would not fit in any memory (and torch's samplers refuse 10**30)


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
    # unreadable --data files: skipped with a warning and counted (``strict``: the first one stops the run)
    strict: bool = False
    skipped: SkippedImages = field(default_factory=SkippedImages)

    def __post_init__(self) -> None:
        self.skipped.strict = self.skipped.strict or self.strict

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
        """The --data images. Read them with :meth:`batches` / :meth:`first_image`, which skip
        unreadable files (recorded in ``ctx.skipped``, reported in result.json) or, with
        ``--strict``, stop at the first one; ``dataset()[i]`` raises for an unreadable file."""
        if self.data is None:
            raise UsageError(f"analysis '{self.analysis}' needs --data")
        return self.data

    def batches(
        self, images: ImageList | None = None, indices: Sequence[int] | None = None, workers: int = 0
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """``(images on the device, their indices)`` in batches of ``batch_size``, unreadable
        files left out and recorded in ``skipped`` (see :func:`vizkit.read_batches`).

        Args:
            images: the image list to read; None: --data.
            indices: the positions to read, in this order (None: all).
            workers: data-loading worker processes (0: load in this process).
        """
        source = self.dataset() if images is None else images
        for x, where in read_batches(source, self.skipped, indices, self.batch_size, workers):
            yield x.to(self.device, non_blocking=True), where

    def first_image(self, images: ImageList | None = None) -> tuple[Tensor, int]:
        """The first readable image (preprocessed, on the CPU) and its index, e.g. to learn a
        layer's shape; the unreadable ones before it are recorded in ``skipped``, and a dataset
        with none readable is a UsageError.

        Args:
            images: the image list; None: --data.
        """
        return first_readable(self.dataset() if images is None else images, self.skipped)

    def label(self, index: int) -> str:
        return label_name(self.labels, int(index))

    def image_names(self) -> list[str]:
        """The --image inputs' names, for titles and per-image summary keys: file names, a repeated
        one (the same name in two folders, or one file given twice) made unique by its position
        (``x.jpg [1]``, ``x.jpg [2]``) so that no entry keyed by name overwrites another's."""
        if self.image_paths:
            return unique_names([p.name for p in self.image_paths])
        count = 0 if self.image_tensors is None else self.image_tensors.shape[0]
        return [f"image {i}" for i in range(count)]


def unique_names(names: list[str]) -> list[str]:
    """``names`` with each repeated one suffixed by its 1-based position: ``x.jpg [2]``."""
    repeated = {name for name in names if names.count(name) > 1}
    return [f"{name} [{i + 1}]" if name in repeated else name for i, name in enumerate(names)]


def run(
    analysis: str,
    model: nn.Module | None,
    images: str | os.PathLike | Sequence[str | os.PathLike] | Tensor | None = None,
    data: str | os.PathLike | ImageList | None = None,
    labels: str | os.PathLike | Sequence[str] | None = None,
    preprocess: Preprocess | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = False,
    out: str | os.PathLike | None = None,
    app: App | None = None,
    strict: bool = False,
    **options: Any,
) -> Result:
    """Run a registered analysis on ``model`` and return its Result (not yet saved).

    Every hook is removed afterwards and the model is left in the mode it was in, also on error.

    Args:
        analysis: the registered analysis's name (``vizkit list`` shows them).
        model: the model to analyse; None: the analysis's own default (e.g. the architecture a
            training run recorded), if it has one.
        images: an image file path or several, or an already-preprocessed float [N,3,H,W]
            tensor (``preprocess`` is then not applied to it), for analyses of single images.
        data: a folder, ImageFolder tree or text file of paths (see :func:`vizkit.image_list`), or
            an ImageList, for analyses over a dataset.
        labels: class names, one per model output, or a labels file (one name per line, or
            ``wnid<TAB>name``, as for :func:`vizkit.load_model`); None: those the model was loaded
            with, if any. A count other than the model's outputs is a UsageError.
        preprocess: a :class:`vizkit.Preprocess`, how image files are turned into tensors; None:
            the model's own (its ``vizkit_preprocess``), else the ImageNet default.
        device: where the model and inputs run (``"cpu"``, ``"cuda"``, a ``torch.device``).
        batch_size: images per forward pass (at least 1).
        seed: seeds the run's own random generators (``ctx.generator``, ``ctx.rng``); the global
            ones are left alone.
        progress: show progress bars on stderr.
        out: the folder the result will be saved to, for analyses that checkpoint there; None:
            none is known.
        app: the plugin registry to consult; None: the installed plugins' (:func:`vizkit.get_app`).
        strict: stop at the first unreadable file in ``data`` (a UsageError naming it) instead of
            skipping it; skipped files are warned about on stderr and listed in
            ``result.meta["inputs"]["skipped_images"]`` (:meth:`vizkit.SkippedImages.summary`).
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
    if not isinstance(model, nn.Module):  # e.g. a spec string: load_model builds the module
        raise UsageError(
            f"vizkit.run expects a torch nn.Module (or None), not {type(model).__name__}; "
            f"build one with vizkit.load_model({model!r})"
            if isinstance(model, str)
            else f"vizkit.run expects a torch nn.Module (or None), not {type(model).__name__}"
        )
    if preprocess is not None and not isinstance(preprocess, Preprocess):
        raise UsageError(f"preprocess must be a vizkit.Preprocess, not {type(preprocess).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise UsageError(f"--batch-size must be a whole number, not {batch_size!r}")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise UsageError(f"--batch-size must be between 1 and {MAX_BATCH_SIZE}, not {batch_size}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:  # what both generators take
        raise UsageError(f"--seed must be a whole number from 0 to 2**63-1, not {seed}")
    preprocess = preprocess or getattr(model, "vizkit_preprocess", None) or Preprocess()
    if isinstance(labels, (str, os.PathLike)):  # a file, as load_model takes (a str is not a list of names)
        labels = read_labels(labels)
    labels = (
        (labels if isinstance(labels, Labels) else list(labels))
        if labels is not None
        else getattr(model, "vizkit_labels", None)
    )
    paths: list[Path] = []
    tensors = None
    if isinstance(images, Tensor):
        if images.dim() != 4 or not images.is_floating_point():
            raise UsageError(
                f"images as a tensor must be a preprocessed float batch [N, 3, H, W], not "
                f"{images.dtype} {list(images.shape)} (vizkit.load_images(paths, model) makes one)"
            )
        tensors = images
    elif isinstance(images, (str, os.PathLike)):  # one file, not a sequence of characters
        paths = [Path(images)]
    elif images:
        paths = [Path(p) for p in images]
    dataset = data if isinstance(data, ImageList) or data is None else image_list(data, preprocess)
    source = "" if dataset is None else (dataset.where if isinstance(data, ImageList) else str(data))
    skipped = SkippedImages(strict=strict, source=source)
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
            im.name_input = _image_namer(paths, tensors, dataset, preprocess)
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
                strict=strict,
                skipped=skipped,
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
        "data": (
            (data.source or f"an ImageList of {len(data)} images")
            if isinstance(data, ImageList)
            else (None if data is None else str(data))
        ),
        "preprocess": preprocess.to_dict(),
    }
    if dataset is not None:  # how many images --data held (a list or tree may be a subset of a folder)
        result.meta["inputs"]["data_images"] = len(dataset)
    if dataset is not None or skipped.count:  # what of --data could not be read (count 0: all of it was)
        result.meta["inputs"]["skipped_images"] = skipped.summary()
        skipped.report(spec.name)
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


def _image_namer(
    paths: list[Path], tensors: Tensor | None, dataset: ImageList | None, preprocess: Preprocess
) -> Callable[[Tensor], str | None]:
    """For NonFiniteActivation messages: the name of the input image a preprocessed row
    [3,H,W] is (an --image file, a row of the input tensor, or a --data file, searched for at
    most ``_NAMING_SECONDS``), or None (e.g. an occluded or transformed copy). Runs only when
    a forward has gone non-finite."""
    loaded: list[tuple[str, Tensor]] = []

    def candidates() -> Iterator[tuple[str, Tensor]]:
        yield from loaded
        if not loaded and tensors is not None:
            loaded.extend((f"{i} of the input tensor", t.detach().cpu().float()) for i, t in enumerate(tensors))
            yield from loaded
        if not loaded and paths:
            for path in paths:
                try:
                    loaded.append((path.name, load_images([path], preprocess)[0]))
                except Exception:  # an unreadable file cannot be the one
                    continue
            yield from loaded
        if dataset is not None:
            started = time.perf_counter()
            for index in range(len(dataset)):
                if time.perf_counter() - started > _NAMING_SECONDS:
                    return
                try:
                    image = dataset[index][0]
                except Exception:
                    continue
                yield str(dataset.paths[index]), image

    def name(row: Tensor) -> str | None:
        row = row.detach().cpu().float()
        for label, image in candidates():
            if image.shape == row.shape and torch.allclose(image.float(), row, rtol=0, atol=1e-5):
                return label
        return None

    return name


_NAMING_SECONDS = 20.0
