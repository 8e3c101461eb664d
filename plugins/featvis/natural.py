"""The natural images a unit answers to most, the yardstick of a synthetic picture (Borowski et
al., ICLR 2021: people predict a unit better from natural exemplars than from synthetic ones).

Two sources, one answer (:class:`Natural`):

* :func:`scan_data`: every image of ``--data`` scored with the same objective the optimisation
  maximised, for every unit of the layer at once (:func:`objectives.every_unit`), keeping the
  strongest ``show`` images per unit (the top9 analysis's streaming top-k); exact, resumable.
* :func:`from_result`: the exemplars a top9 or atlas result recorded for the layer (``--exemplars``),
  re-scored with the objective. Those were chosen by their strongest single location, not by the
  objective, so the best of them is a lower bound of the best over their data set; the result
  says so (``exact`` False).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

import vizkit
from vizkit.toolkit import ProcessGroup, RunningTopK

from . import objectives

NO_IMAGE = -1
RESULT_FILE, ARRAYS_FILE = "result.json", "arrays.npz"  # a saved result's files (DESIGN.md)


@dataclass
class Natural:
    """Per optimised unit, its strongest natural exemplars under the objective.

    ``best`` [U]: the strongest exemplar's objective value (NaN: none); ``values``/``images`` [U, E]:
    the E strongest, their indices into ``paths`` (-1: none); ``thumbnails`` [U, E, T, T, 3] uint8;
    ``every_best`` [units of the layer]: each unit's best (only from ``--data``: the normalised
    rank needs it), else None.
    """

    source: str  # "data", "top9" or "atlas"
    where: str  # the data folder or the result folder
    exact: bool  # best is the maximum over every image of the source
    paths: list[str]
    n_images: int
    best: np.ndarray
    values: np.ndarray
    images: np.ndarray
    thumbnails: np.ndarray
    every_best: np.ndarray | None
    seconds: float


class _TopState:
    """A RunningTopK with the scan's ``state_dict`` / ``load_state_dict`` protocol."""

    def __init__(self, units: int, k: int) -> None:
        self.top = RunningTopK.empty(units, k)

    def state_dict(self) -> dict[str, Any]:
        return self.top.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.top = RunningTopK.from_state_dict(state)


def layer_values(
    im: vizkit.Instrumented, x: Tensor, layer: str | None, objective: str, directions: Tensor | None
) -> Tensor:
    """[B, units]: the objective of every unit of ``layer`` (None: the model output) on ``x``."""
    from .optimize import fast_layout

    x = fast_layout(x)
    output = im.run_capturing(x, layer) if layer is not None else im(x)
    if not isinstance(output, Tensor):
        raise vizkit.UsageError(f"'{layer or 'the model output'}' is not a tensor, so it has no units to visualise")
    return objectives.every_unit(objective, output, directions).float()


def thumbnails(pictures: Tensor, side: int) -> np.ndarray:
    """[N, 3, H, W] in [0, 1] as uint8 [N, side, side, 3] (the centre square, resized)."""
    if pictures.shape[0] == 0:
        return np.zeros((0, side, side, 3), dtype=np.uint8)
    height, width = pictures.shape[-2:]
    edge = min(height, width)
    top, left = (height - edge) // 2, (width - edge) // 2
    square = pictures[..., top : top + edge, left : left + edge].float()
    small = F.interpolate(square, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return (small.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _fingerprint(ctx: vizkit.RunContext, *parts: Any) -> str:
    paths = "\n".join(str(p) for p in ctx.dataset().paths)
    model = vizkit.models.describe(ctx.model)
    text = repr((model["spec"], model["weights_sha256"], ctx.batch_size, ctx.preprocess, paths, parts))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class DataScan:
    """What :func:`scan_data` found for every unit of the layer: the ``show`` strongest images
    each (:class:`RunningTopK`, values = the objective), to be narrowed with :meth:`natural`."""

    top: RunningTopK
    source: str
    paths: list[str]
    n_images: int
    seconds: float

    @property
    def every_best(self) -> np.ndarray:
        """[units of the layer]: each unit's strongest objective value over the data (NaN: none)."""
        best = self.top.values[:, 0].numpy().astype(np.float32)
        best[self.top.images[:, 0].numpy() < 0] = np.nan
        return best

    def natural(self, ctx: vizkit.RunContext, units: list[int], side: int) -> Natural:
        """The :class:`Natural` of ``units`` (their exemplar images loaded as thumbnails)."""
        chosen = torch.as_tensor(units, dtype=torch.long)
        values = self.top.values[chosen].numpy().astype(np.float32)
        images = self.top.images[chosen].numpy()
        values[images < 0] = np.nan
        images = np.where(images < 0, NO_IMAGE, images)
        return Natural(
            source="data",
            where=self.source,
            exact=True,
            paths=self.paths,
            n_images=self.n_images,
            best=values[:, 0].copy(),
            values=values,
            images=images,
            thumbnails=_load_thumbnails(ctx, self.paths, images, side),
            every_best=self.every_best,
            seconds=self.seconds,
        )


def scan_data(
    ctx: vizkit.RunContext,
    layer: str | None,
    objective: str,
    directions: Tensor | None,
    show: int,
    resume: bool,
    workers: int,
) -> DataScan:
    """Score every ``--data`` image for every unit of the layer and keep each unit's ``show``
    strongest (ties: the lower image index); checkpointed in ``--out`` and resumable."""
    im = ctx.instrumented
    dataset = ctx.dataset()
    first, _ = ctx.first_image()  # the unit count, before a checkpoint can be loaded into the state
    with torch.no_grad():
        count = layer_values(im, first[None].to(ctx.device, ctx.dtype), layer, objective, directions).shape[1]
    state = _TopState(count, max(1, show))

    def step(images: Tensor, indices: Tensor) -> None:
        state.top.update(layer_values(im, images.to(ctx.device, ctx.dtype), layer, objective, directions), indices)

    vectors = None if directions is None else hashlib.sha256(directions.cpu().numpy().tobytes()).hexdigest()
    fingerprint = _fingerprint(ctx, "featvis natural", layer, objective, show, vectors)
    seconds = vizkit.toolkit.resumable_scan(
        "featvis",
        dataset,
        ctx.skipped,
        state,
        step,
        fingerprint,
        ctx.out,
        ProcessGroup(),
        ctx.batch_size,
        resume=resume,
        workers=workers,
        progress=ctx.progress,
    )
    listed = {str(p) for p in dataset.paths}
    unreadable = sum(1 for p in ctx.skipped.paths if str(p) in listed)
    return DataScan(state.top, dataset.source, [str(p) for p in dataset.paths], len(dataset) - unreadable, seconds)


def _load_thumbnails(ctx: vizkit.RunContext, paths: list[str], images: np.ndarray, side: int) -> np.ndarray:
    """uint8 [U, E, side, side, 3]: the exemplar images as the model saw them (black: none)."""
    out = np.zeros((*images.shape, side, side, 3), dtype=np.uint8)
    wanted = sorted({int(i) for i in images.ravel() if i >= 0})
    if not wanted:
        return out
    loaded = vizkit.data.load_images([paths[i] for i in wanted], ctx.preprocess)
    small = thumbnails(ctx.preprocess.denormalize(loaded), side)
    where = {index: row for row, index in enumerate(wanted)}
    for (unit, slot), index in np.ndenumerate(images):
        if index >= 0:
            out[unit, slot] = small[where[int(index)]]
    return out


def _read_result(folder: Path) -> tuple[dict[str, Any], Path]:
    document_path = folder / RESULT_FILE
    try:
        document = json.loads(document_path.read_text())
    except (OSError, ValueError) as error:
        raise vizkit.UsageError(f"--exemplars {folder} holds no readable result.json ({error})") from None
    if not isinstance(document, dict) or document.get("analysis") not in ("top9", "atlas"):
        found = document.get("analysis") if isinstance(document, dict) else None
        raise vizkit.UsageError(f"--exemplars needs a top9 or atlas result, and {folder} holds a {found} result")
    return document, folder / ARRAYS_FILE


def _image_path(text: str, folder: Path) -> str:
    path = Path(text)
    if path.is_absolute() or path.exists():
        return str(path)
    beside = folder / path  # a relative path written from another working directory
    return str(beside if beside.exists() else path)


def from_result(
    ctx: vizkit.RunContext,
    folder: str | Path,
    layer: str | None,
    objective: str,
    units: list[int],
    directions: Tensor | None,
    show: int,
    side: int,
) -> Natural:
    """The exemplars a top9 or atlas result in ``folder`` kept for ``units`` of ``layer``, scored
    with the objective (their patches are the thumbnails)."""
    import time

    started = time.perf_counter()
    folder = Path(folder)
    document, arrays_path = _read_result(folder)
    analysis = document["analysis"]
    if layer is None or objective == "direction":
        raise vizkit.UsageError(f"--exemplars serves the channel and neuron objectives, not {objective}: use --data")
    model = vizkit.models.describe(ctx.model)
    theirs = document.get("model") or {}
    if theirs.get("weights_sha256") != model.get("weights_sha256") or theirs.get("spec") != model.get("spec"):
        raise vizkit.UsageError(
            f"--exemplars {folder} was made with model {theirs.get('spec')} (other weights or spec); use the same model"
        )
    try:
        with np.load(arrays_path) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as error:
        raise vizkit.UsageError(f"--exemplars {folder}: cannot read {arrays_path.name} ({error})") from None
    if analysis == "top9":
        if document.get("layer") != layer:
            raise vizkit.UsageError(f"--exemplars {folder} describes layer {document.get('layer')}, not {layer}")
        channels = [int(c) for c in document.get("channels", [])]
        rows = {c: i for i, c in enumerate(channels)}
        indices, patches = arrays["image_index"], arrays.get("patches")
    else:
        if layer not in (document.get("layers") or []):
            raise vizkit.UsageError(f"--exemplars {folder} describes layers {document.get('layers')}, not {layer}")
        indices, patches = arrays[f"{layer}/top_images"], arrays.get(f"{layer}/patches")
        rows = {c: c for c in range(indices.shape[0])}
    missing = [u for u in units if u not in rows]
    if missing:
        raise vizkit.UsageError(
            f"--exemplars {folder} has no exemplars for unit(s) {', '.join(map(str, missing[:8]))} of {layer}"
        )
    paths = [_image_path(str(p), folder.parent) for p in document.get("images") or []]
    shown = min(show, indices.shape[1]) if show > 0 else 0
    chosen = np.stack([indices[rows[u]] for u in units]).astype(np.int64)  # [U, k]
    chosen = np.where(chosen < 0, NO_IMAGE, chosen)
    wanted = sorted({int(i) for i in chosen.ravel() if i >= 0})
    scores = np.full(chosen.shape, np.nan, dtype=np.float32)
    if wanted:
        try:
            loaded = vizkit.data.load_images([paths[i] for i in wanted], ctx.preprocess)
        except (IndexError, vizkit.UsageError) as error:
            raise vizkit.UsageError(f"--exemplars {folder}: its exemplar images cannot be read ({error})") from None
        with torch.no_grad():
            every = torch.cat(
                [
                    layer_values(ctx.instrumented, part.to(ctx.device, ctx.dtype), layer, objective, directions)
                    for part in loaded.split(ctx.batch_size)
                ]
            ).numpy()
        where = {index: row for row, index in enumerate(wanted)}
        for (row, slot), index in np.ndenumerate(chosen):
            if index >= 0:
                scores[row, slot] = every[where[int(index)], units[row]]
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), axis=1, kind="stable")
    values = np.take_along_axis(scores, order, axis=1)[:, :shown]
    images = np.take_along_axis(chosen, order, axis=1)[:, :shown]
    pictures = np.zeros((len(units), shown, side, side, 3), dtype=np.uint8)
    if patches is not None and shown:
        stored = np.stack([patches[rows[u]] for u in units])  # [U, k, P, P, 3], the top-k order
        taken = np.take_along_axis(stored, order[:, :shown, None, None, None], axis=1)
        flat = torch.from_numpy(taken.reshape(-1, *taken.shape[2:])).permute(0, 3, 1, 2).float() / 255
        pictures = thumbnails(flat, side).reshape(len(units), shown, side, side, 3)
    best = np.nanmax(np.where(np.isnan(scores), -np.inf, scores), axis=1).astype(np.float32)
    best[~np.isfinite(best)] = np.nan
    return Natural(
        source=analysis,
        where=str(folder),
        exact=False,
        paths=paths,
        n_images=int(document.get("n_images") or len(paths)),
        best=best,
        values=values.astype(np.float32),
        images=images,
        thumbnails=pictures,
        every_best=None,
        seconds=time.perf_counter() - started,
    )
