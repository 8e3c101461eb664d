"""``occlusion``'s maps over the grid of positions: the tracked map's activity, the target's
probability and the top label, computed batched, exact (incremental) or fast (incremental with
projective field thresholding and adaptive drill-down)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

import vizkit

from .grid import OcclusionGrid, occluded_batch

MODES = ("exact", "fast", "batched")
# Defaults from bench/occlusion.py on SqueezeNet (48 px, stride 8, twelve images): drill-down 0.15
# alone keeps the mean SSIM of p at 0.906 and runs 2.7x faster than exact; tau < 1 lowers SSIM and,
# at these 13-55 px maps, costs more in bookkeeping than it saves (tau 0.7: 1.24 s vs 0.98 s).
FAST_TAU = 1.0
FAST_DRILL_DOWN = 0.15


def occlusion_maps(
    im: vizkit.Instrumented,
    x: Tensor,
    layer: str,
    feature_maps: Tensor,
    targets: Tensor,
    grid: OcclusionGrid,
    fill: Tensor,
    mode: str = "exact",
    batch_size: int = 32,
    progress: bool = False,
    tau: float = 1.0,
    drill_down: float = 1.0,
    costs: list[vizkit.engine.OcclusionCost] | None = None,
) -> dict[str, np.ndarray]:
    """Per image [N, rows, cols]: ``feature_activity`` (sum of map ``feature_maps[i]`` of
    ``layer``), ``true_class_prob`` (softmax of ``targets[i]``) and ``top_label``.

    ``mode="fast"`` is incremental with ``tau`` (projective field thresholding) and, for
    ``drill_down`` < 1, adaptive drill-down: a pass over every other row and column of the
    grid, then the full grid only over the ``drill_down`` fraction of positions whose
    interpolated probability drop is largest; the rest keeps the interpolated coarse values.
    Each image's :class:`vizkit.engine.OcclusionCost` is appended to ``costs`` when given."""
    _check_settings(mode, tau, drill_down)
    if mode != "fast":
        tau, drill_down = 1.0, 1.0
    n = x.shape[0]
    activity = np.zeros((n, grid.rows, grid.cols), dtype=np.float32)
    probability = np.zeros((n, grid.rows, grid.cols), dtype=np.float32)
    top = np.zeros((n, grid.rows, grid.cols), dtype=np.int64)
    bar = vizkit.toolkit.progress_bar(
        total=n * grid.count if drill_down >= 1 else None, desc="occlusion", unit="positions", enabled=progress
    )
    # batched: full forwards that record the tracked layer only, and no switches
    scope = im.configured(layers=[layer], switches=False) if mode == "batched" else contextlib.nullcontext(im)
    with scope:
        for i in range(n):
            channel, target = int(feature_maps[i]), int(targets[i])
            if mode == "batched":
                evaluate = lambda part, i=i, channel=channel: _batched(im, x[i], layer, part, grid.size, fill, channel)
            else:
                engine = vizkit.engine.IncrementalOcclusion(im, x[i : i + 1], layer, tau=tau)
                evaluate = lambda part, engine=engine, channel=channel: engine.evaluate(
                    part, grid.size, fill, channel=channel
                )

            def compute(cells: list[tuple[int, int]], i: int = i, target: int = target, evaluate=evaluate) -> None:
                for start in range(0, len(cells), batch_size):
                    part = cells[start : start + batch_size]
                    with torch.no_grad():
                        logits, sums = evaluate([grid.top_left(r, c) for r, c in part])
                    p = logits.float().softmax(dim=1)
                    rows, cols = np.array(part).T
                    activity[i, rows, cols] = sums.float().cpu().numpy()
                    probability[i, rows, cols] = p[:, target].cpu().numpy()
                    top[i, rows, cols] = p.argmax(dim=1).cpu().numpy()
                    bar.update(len(part))

            if drill_down >= 1:
                compute([(r, c) for r in range(grid.rows) for c in range(grid.cols)])
            else:
                _drill_down(compute, grid, drill_down, activity[i], probability[i], top[i])
            if costs is not None and mode != "batched":
                costs.append(engine.cost)
    bar.close()
    return {"feature_activity": activity, "true_class_prob": probability, "top_label": top}


def _check_settings(mode: str, tau: float, drill_down: float) -> None:
    """:func:`occlusion_maps`' own settings, for callers from Python (the analysis's options
    declare the same ranges)."""
    if mode not in MODES:
        raise vizkit.UsageError(f"unknown occlusion mode '{mode}'; use {', '.join(MODES)}")
    if not 0 < tau <= 1:
        raise vizkit.UsageError(f"--tau must be in (0, 1], not {tau}")
    if not 0 <= drill_down <= 1:
        raise vizkit.UsageError(f"--drill-down must be in [0, 1], not {drill_down}")


def _drill_down(
    compute: Callable[[list[tuple[int, int]]], None],
    grid: OcclusionGrid,
    fraction: float,
    activity: np.ndarray,
    probability: np.ndarray,
    top: np.ndarray,
) -> None:
    """One image's maps by adaptive drill-down: ``compute`` (which fills the maps at the cells
    it is given) over every other row and column, the rest interpolated, then ``compute`` again
    over the ``fraction`` of cells whose probability drop is largest."""
    coarse_rows, coarse_cols = _coarse(grid.rows), _coarse(grid.cols)
    compute([(r, c) for r in coarse_rows for c in coarse_cols])
    for maps in (activity, probability):
        maps[:] = _interpolate(maps[np.ix_(coarse_rows, coarse_cols)], coarse_rows, coarse_cols, grid)
    top[:] = _nearest(top[np.ix_(coarse_rows, coarse_cols)], coarse_rows, coarse_cols, grid)
    compute(_to_refine(probability, coarse_rows, coarse_cols, fraction))


def _coarse(count: int) -> list[int]:
    """Every other index of a grid axis, and the last one (so interpolation covers the edges)."""
    return sorted(set(range(0, count, 2)) | {count - 1})


def _interpolate(values: np.ndarray, rows: list[int], cols: list[int], grid: OcclusionGrid) -> np.ndarray:
    """A coarse map on ``rows`` x ``cols`` of the grid, linearly interpolated to the whole grid."""
    along_cols = np.stack([np.interp(np.arange(grid.cols), cols, row) for row in values])
    return np.stack([np.interp(np.arange(grid.rows), rows, column) for column in along_cols.T], axis=1)


def _nearest(values: np.ndarray, rows: list[int], cols: list[int], grid: OcclusionGrid) -> np.ndarray:
    """A coarse map on ``rows`` x ``cols``, each grid cell taking its nearest coarse cell's value."""
    near_row = np.abs(np.arange(grid.rows)[:, None] - np.array(rows)[None]).argmin(1)
    near_col = np.abs(np.arange(grid.cols)[:, None] - np.array(cols)[None]).argmin(1)
    return values[np.ix_(near_row, near_col)]


def _to_refine(probability: np.ndarray, rows: list[int], cols: list[int], fraction: float) -> list[tuple[int, int]]:
    """The ``fraction`` of grid cells with the largest (interpolated) probability drop in their 3x3
    neighbourhood, less the coarse cells already computed. Taking the neighbourhood's lowest
    probability refines the edges of a drop too, where interpolation errs most: on the twelve
    benchmark images it gives the SSIM of refining 25% by the cell's own drop at 20%."""
    padded = np.pad(probability, 1, mode="edge")
    height, width = probability.shape
    lowest = np.min([padded[i : i + height, j : j + width] for i in range(3) for j in range(3)], axis=0)
    count = round(fraction * probability.size)
    order = np.argsort(lowest, axis=None, kind="stable")[:count]
    computed = {(r, c) for r in rows for c in cols}
    cells = [divmod(int(k), width) for k in order]
    return sorted(cell for cell in cells if cell not in computed)


def _batched(
    im: vizkit.Instrumented, image: Tensor, layer: str, corners, size: int, fill: Tensor, channel: int
) -> tuple[Tensor, Tensor]:
    # channels-last: on CPU convolutions and max pooling run several times faster in that layout
    logits = im(occluded_batch(image, corners, size, fill).contiguous(memory_format=torch.channels_last))
    return logits, im.activation(layer)[:, channel].flatten(1).sum(1)
