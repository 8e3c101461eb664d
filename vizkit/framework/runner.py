"""Running an analysis on a model: :func:`run`, behind ``vizkit.run`` and ``vizkit run`` alike.

Three steps, one function each: :func:`normalise_inputs` turns what the caller gave (image paths
or a tensor, a dataset, labels, the preprocessing) into one checked :class:`RunInputs`;
:func:`build_context` makes the :class:`~vizkit.framework.RunContext` the analysis receives
(the shared instrumented model, seeded generators); :func:`annotate_result` records on the
:class:`~vizkit.framework.Result` what ran on what (model, parameters, inputs, timing). Every hook
is removed afterwards and the model is left in the mode it was in, also on error.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vizkit.data import (
    ImageList,
    Labels,
    Preprocess,
    SkippedImages,
    check_labels,
    dtype_name,
    ensure_device,
    image_list,
    load_images,
    model_dtype,
    preprocess_for,
    read_labels,
    to_model_dtype,
)
from vizkit.engine.instrumented import Instrumented, instrument
from vizkit.errors import UsageError
from vizkit.framework import loading
from vizkit.framework.analysis import Analysis, RunContext, applied_params
from vizkit.framework.registry import App, get_app
from vizkit.framework.results import Result
from vizkit.models import describe
from vizkit.models.info import model_info

MAX_BATCH_SIZE = 65536  # images per forward: far more would not fit in any memory (and torch's samplers refuse 10**30)


@dataclass(frozen=True)
class RunSettings:
    """How the analysis runs: the device, images per forward, the seed of its generators, progress
    bars, the folder its result goes to (for checkpoints; None: unknown) and whether an unreadable
    --data file stops the run."""

    device: torch.device
    batch_size: int
    seed: int
    progress: bool
    out: Path | None
    strict: bool


@dataclass
class RunInputs:
    """What the analysis runs on, normalised: the preprocessing, the class names (None: unknown),
    the --image files or an already-preprocessed tensor, the --data images, ``data`` as the caller
    gave it (for the record) and the tally of unreadable --data files."""

    preprocess: Preprocess
    labels: list[str] | None
    paths: list[Path]
    tensors: Tensor | None
    dataset: ImageList | None
    data: str | os.PathLike | ImageList | None
    skipped: SkippedImages


def run(
    analysis: str,
    model: nn.Module | None,
    images: str | os.PathLike | Sequence[str | os.PathLike] | Tensor | Sequence[Tensor] | None = None,
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
            tensor or a list of [3,H,W] ones of one size (``preprocess`` is then not applied to
            them; they are cast to the model's dtype), for analyses of single images.
        data: a folder, ImageFolder tree or text file of paths (see :func:`vizkit.data.image_list`), or
            an ImageList, for analyses over a dataset.
        labels: class names, one per model output, or a labels file (one name per line, or
            ``wnid<TAB>name``, as for :func:`vizkit.load_model`); None: those the model was loaded
            with, if any. A count other than the model's outputs is a UsageError.
        preprocess: a :class:`vizkit.Preprocess`, how image files are turned into tensors; None:
            the model's own (:func:`vizkit.data.preprocess_for`), else the ImageNet default.
        device: where the model and inputs run (``"cpu"``, ``"cuda"``, a ``torch.device``).
        batch_size: images per forward pass (at least 1).
        seed: seeds the run's own random generators (``ctx.generator``, ``ctx.rng``); the global
            ones are left alone.
        progress: show progress bars on stderr.
        out: the folder the result will be saved to, for analyses that checkpoint there; None:
            none is known.
        app: the plugin registry to consult; None: the installed plugins' (:func:`vizkit.framework.get_app`).
        strict: stop at the first unreadable file in ``data`` (a UsageError naming it) instead of
            skipping it; skipped files are warned about on stderr and listed in
            ``result.meta["inputs"]["skipped_images"]`` (:meth:`vizkit.data.SkippedImages.summary`).
        **options: the analysis's own options by name (its :class:`Option` s); unknown or missing
            required ones are a UsageError.
    """
    app = app or get_app()
    spec = app.analysis(analysis)
    opts = spec.resolve_options(options, app)
    device = ensure_device(str(device)) if not isinstance(device, torch.device) else device
    model = _model(spec, model, options, device, app)
    model_dtype(model)  # a model whose parameters mix dtypes is refused here, in one line
    _check_settings(preprocess, batch_size, seed)
    settings = RunSettings(device, batch_size, seed, progress, Path(out) if out else None, strict)
    inputs = normalise_inputs(model, images, data, labels, preprocess, strict)
    _check_inputs(spec, bool(inputs.paths) or inputs.tensors is not None, inputs.dataset is not None)

    _check_finite(model, inputs.tensors)
    was_training = model.training
    model = model.to(device).eval()
    try:
        _check_model_takes_images(model, inputs.labels, inputs.preprocess, device, inputs.tensors)
    except BaseException:
        model.train(was_training)
        raise
    started = time.perf_counter()
    try:
        with instrument(model) as im:
            im.name_input = _image_namer(inputs.paths, inputs.tensors, inputs.dataset, inputs.preprocess)
            result = spec.run(build_context(spec, model, im, inputs, settings, app), **opts)
    finally:
        model.train(was_training)
    annotate_result(result, spec, opts, model, inputs, settings, time.perf_counter() - started)
    return result


def _model(spec: Analysis, model: Any, options: dict[str, Any], device: torch.device, app: App) -> nn.Module:
    """The module to analyse: the one given, else the analysis's own default (see ``model_from``)."""
    if model is None:
        model = loading.load_model(spec.default_model(options), device=device, app=app)
    if not isinstance(model, nn.Module):  # e.g. a spec string: load_model builds the module
        raise UsageError(
            f"vizkit.run expects a torch nn.Module (or None), not {type(model).__name__}; "
            f"build one with vizkit.load_model({model!r})"
            if isinstance(model, str)
            else f"vizkit.run expects a torch nn.Module (or None), not {type(model).__name__}"
        )
    return model


def _check_settings(preprocess: Any, batch_size: Any, seed: Any) -> None:
    """Refuse a preprocessing that is not a :class:`Preprocess`, and a batch size or seed out of range."""
    if preprocess is not None and not isinstance(preprocess, Preprocess):
        raise UsageError(f"preprocess must be a vizkit.Preprocess, not {type(preprocess).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise UsageError(f"--batch-size must be a whole number, not {batch_size!r}")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise UsageError(f"--batch-size must be between 1 and {MAX_BATCH_SIZE}, not {batch_size}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:  # what both generators take
        raise UsageError(f"--seed must be a whole number from 0 to 2**63-1, not {seed}")


def normalise_inputs(
    model: nn.Module,
    images: str | os.PathLike | Sequence[str | os.PathLike] | Tensor | Sequence[Tensor] | None,
    data: str | os.PathLike | ImageList | None,
    labels: str | os.PathLike | Sequence[str] | None,
    preprocess: Preprocess | None,
    strict: bool,
) -> RunInputs:
    """What :func:`run` was given, as one :class:`RunInputs`: the preprocessing and labels the
    model carries where none are given, a labels file read, one image path taken as one image,
    a tensor (or a list of same-sized image tensors) checked to be a preprocessed float batch and
    cast to the model's dtype (:func:`vizkit.data.model_dtype`), a ``data`` path listed.

    Args:
        model: the model to analyse (its own preprocessing and labels are the defaults).
        images: as for :func:`run`.
        data: as for :func:`run`.
        labels: as for :func:`run`.
        preprocess: as for :func:`run`.
        strict: as for :func:`run`.
    """
    preprocess = preprocess or preprocess_for(model)
    if isinstance(labels, (str, os.PathLike)):  # a file, as load_model takes (a str is not a list of names)
        labels = read_labels(labels)
    names = (labels if isinstance(labels, Labels) else list(labels)) if labels is not None else model_info(model).labels
    paths: list[Path] = []
    tensors = None
    if isinstance(images, (list, tuple)) and images and all(isinstance(i, Tensor) for i in images):
        images = _stack_tensors(images)
    if isinstance(images, Tensor):
        if images.dim() != 4 or not images.is_floating_point():
            raise UsageError(
                f"images as a tensor must be a preprocessed float batch [N, 3, H, W], not "
                f"{images.dtype} {list(images.shape)} (vizkit.load_images(paths, model) makes one)"
            )
        tensors = _cast_images(images, model_dtype(model, strict=False))
    elif isinstance(images, (str, os.PathLike)):  # one file, not a sequence of characters
        paths = [Path(images)]
    elif images:
        paths = [_image_path(p) for p in images]
    dataset = data if isinstance(data, ImageList) or data is None else image_list(data, preprocess)
    source = "" if dataset is None else (dataset.where if isinstance(data, ImageList) else str(data))
    skipped = SkippedImages(strict=strict, source=source)
    return RunInputs(preprocess, names, paths, tensors, dataset, data, skipped)


def _stack_tensors(images: Sequence[Tensor]) -> Tensor:
    """A list of float image tensors ([3,H,W], or [N,3,H,W] batches) as one batch (float64 if
    any is, else float32: :func:`_cast_images` then brings it to the model's dtype); of several
    sizes, one line naming them, and on several devices or not float, one line too."""
    batches = [image if image.dim() == 4 else image.unsqueeze(0) for image in images]
    shapes = [list(image.shape[1:]) for image in batches]
    if any(image.dim() not in (3, 4) for image in images) or any(shape != shapes[0] for shape in shapes):
        sizes = ", ".join(str(list(image.shape)) for image in images[:6]) + (", ..." if len(images) > 6 else "")
        raise UsageError(
            f"images as a list of tensors must all be [3, H, W] of one size, not {sizes}; "
            "load image files with a Preprocess (vizkit.load_images) to bring them to one size"
        )
    if len({image.device for image in batches}) > 1:
        raise UsageError("images as a list of tensors must all be on one device")
    dtypes = {image.dtype for image in batches}
    if any(not image.is_floating_point() for image in batches):
        raise UsageError(
            f"images as tensors must be preprocessed float images, not {', '.join(sorted(map(dtype_name, dtypes)))}"
        )
    dtype = torch.float64 if torch.float64 in dtypes else torch.float32
    return torch.cat([image.to(dtype) for image in batches])


def _cast_images(images: Tensor, dtype: torch.dtype) -> Tensor:
    """``images`` in the model's ``dtype``; values beyond its range (finite before, infinite after)
    are refused in one line."""
    cast = to_model_dtype(images, dtype)
    if cast is not images and not bool(torch.isfinite(cast).all()) and bool(torch.isfinite(images).all()):
        largest = float(images.abs().max())
        raise UsageError(
            f"the input images hold values up to {largest:g}, beyond the range of the model's "
            f"{dtype_name(dtype)}; preprocess them (vizkit.load_images) or convert the model (model.float())"
        )
    return cast


def _image_path(image: Any) -> Path:
    """One ``images`` item as a path; a tensor among paths, or anything else, is one line."""
    if isinstance(image, (str, os.PathLike)):
        return Path(image)
    if isinstance(image, Tensor):
        raise UsageError("images must be all file paths or all tensors, not a mix of the two")
    raise UsageError(f"images must be file paths or tensors, not {type(image).__name__}")


def build_context(
    spec: Analysis, model: nn.Module, im: Instrumented, inputs: RunInputs, settings: RunSettings, app: App
) -> RunContext:
    """The :class:`RunContext` an analysis's ``run`` receives, its generators seeded with ``settings.seed``.

    Args:
        spec: the analysis about to run.
        model: the model, on the device and in eval mode.
        im: the model, instrumented.
        inputs: what it runs on.
        settings: how it runs.
        app: the registry (its projection rules are ``ctx.rule``'s).
    """
    return RunContext(
        model=model,
        instrumented=im,
        preprocess=inputs.preprocess,
        device=settings.device,
        labels=inputs.labels,
        image_paths=inputs.paths,
        image_tensors=inputs.tensors,
        data=inputs.dataset,
        batch_size=settings.batch_size,
        seed=settings.seed,
        progress=settings.progress,
        out=settings.out,
        analysis=spec.name,
        app=app,
        generator=torch.Generator().manual_seed(settings.seed),
        rng=np.random.default_rng(settings.seed),
        strict=settings.strict,
        skipped=inputs.skipped,
    )


def annotate_result(
    result: Result,
    spec: Analysis,
    opts: dict[str, Any],
    model: nn.Module,
    inputs: RunInputs,
    settings: RunSettings,
    seconds: float,
) -> None:
    """Record on ``result`` what ran on what: the analysis, its duration, the model (unless the
    analysis said which weights it loaded), the resolved options that applied (see
    :func:`~vizkit.framework.analysis.applied_params`) and the settings, and the inputs (with the
    count of --data images and those that could not be read); report the skipped ones.

    Args:
        result: what the analysis returned (changed in place).
        spec: the analysis that ran.
        opts: its resolved options.
        model: the model it ran on.
        inputs: what it ran on.
        settings: how it ran.
        seconds: how long it took.
    """
    data, dataset, skipped = inputs.data, inputs.dataset, inputs.skipped
    result.analysis = spec.name
    result.meta.setdefault("seconds", round(seconds, 3))
    result.meta.setdefault("model", describe(model))  # an analysis that loaded other weights says which
    # only the options that applied (vizkit.Option's ``applies``, the analysis's "not_applicable")
    result.meta["params"] = applied_params(spec.options, opts, result.meta.pop("not_applicable", ()))
    result.meta["params"].update(
        {"device": str(settings.device), "batch_size": settings.batch_size, "seed": settings.seed}
    )
    tensors = inputs.tensors
    result.meta["inputs"] = {
        "images": [str(p) for p in inputs.paths]
        if inputs.paths
        else (None if tensors is None else f"tensor{list(tensors.shape)}"),
        "data": (
            (data.source or f"an ImageList of {len(data)} images")
            if isinstance(data, ImageList)
            else (None if data is None else str(data))
        ),
        "preprocess": inputs.preprocess.to_dict(),
    }
    if dataset is not None:  # how many images --data held (a list or tree may be a subset of a folder)
        result.meta["inputs"]["data_images"] = len(dataset)
    if dataset is not None or skipped.count:  # what of --data could not be read (count 0: all of it was)
        result.meta["inputs"]["skipped_images"] = skipped.summary()
        skipped.report(spec.name)


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
    dtype = model_dtype(model)
    try:
        with torch.no_grad():
            output = model(torch.zeros(1, *shape, device=device, dtype=dtype))
    except (RuntimeError, ValueError, TypeError, IndexError, NotImplementedError) as error:  # bad shapes, dtypes
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if _is_dtype_error(first):
            raise UsageError(
                f"the model cannot run in {dtype_name(dtype)} on {device} ({first}); convert it with model.float()"
                + ("" if device.type == "cuda" or dtype == torch.float32 else " or run it with --device cuda")
            ) from None
        raise UsageError(f"the model cannot take {'x'.join(map(str, shape))} inputs ({first}); check --crop") from None
    if labels is not None and isinstance(output, Tensor) and output.dim() == 2:
        check_labels(labels, output.shape[1])


_DTYPE_WORDS = (
    "dtype",
    "type (",
    "not implemented for",
    "Half",
    "BFloat16",
    "Double",
    "scalar type",
    "expected scalar",
)


def _is_dtype_error(message: str) -> bool:
    """Whether torch's ``message`` is about a dtype (a kernel missing for it, or two that differ),
    not about the input's size."""
    return any(word in message for word in _DTYPE_WORDS)


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
    loaded: list[tuple[str, Tensor]] = []  # the given inputs, read once

    def candidates() -> Iterator[tuple[str, Tensor]]:
        if not loaded:
            loaded.extend(_given_inputs(paths, tensors, preprocess))
        yield from loaded
        if dataset is not None:
            yield from _dataset_images(dataset, _NAMING_SECONDS)

    def name(row: Tensor) -> str | None:
        row = row.detach().cpu().float()
        for label, image in candidates():
            if image.shape == row.shape and torch.allclose(image.float(), row, rtol=0, atol=1e-5):
                return label
        return None

    return name


def _given_inputs(paths: list[Path], tensors: Tensor | None, preprocess: Preprocess) -> list[tuple[str, Tensor]]:
    """The inputs the run was given, named for messages: the rows of the input tensor, else the
    --image files that can be read (an unreadable file cannot be the one)."""
    if tensors is not None and len(tensors):
        return [(f"{i} of the input tensor", t.detach().cpu().float()) for i, t in enumerate(tensors)]
    named: list[tuple[str, Tensor]] = []
    for path in paths:
        try:
            named.append((path.name, load_images([path], preprocess)[0]))
        except Exception:  # an unreadable file cannot be the one
            continue
    return named


def _dataset_images(dataset: ImageList, seconds: float) -> Iterator[tuple[str, Tensor]]:
    """The readable images of ``dataset`` with their paths, in order, for at most ``seconds``."""
    started = time.perf_counter()
    for index in range(len(dataset)):
        if time.perf_counter() - started > seconds:
            return
        try:
            image = dataset[index][0]
        except Exception:
            continue
        yield str(dataset.paths[index]), image


_NAMING_SECONDS = 20.0
