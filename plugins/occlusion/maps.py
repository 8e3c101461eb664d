"""``occlusion``'s maps over the grid of positions: the tracked map's activity, the target's
probability and the top label, computed batched, exact (incremental) or fast (incremental with
projective field thresholding and adaptive drill-down)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import Tensor

import vizkit

from .grid import OcclusionGrid, occluded_batch

MODES = ("exact", "fast", "batched")
# Defaults from bench/occlusion.py --fidelity on SqueezeNet (twelve images, SSIM with the data
# range of the exact map, quiet 2-core machine, refinement ranked by the bend of the change):
# drill-down 0.25 keeps a mean SSIM of p of 0.916 at 16/4 at 18x captum; at 48/8 0.23 gave 0.905
# at 9.9x and 0.26 0.912 at 9.5x (0.2: 0.899 at 11.4x). tau < 1 lowers SSIM and, at these 13-55 px
# maps, costs more in bookkeeping than it saves (48/8, tau 0.7: 1.24 s vs 0.98 s).
FAST_TAU = 1.0
FAST_DRILL_DOWN = 0.25
# The coarsest drill-down pass samples the grid at least twice per occluder width: the maps are
# the image's sensitivity seen through the occluder, and at 16/4 on SqueezeNet a coarse pass 16 px
# apart (every 4th position) lost structure no refinement found again (Pomeranian, tennis ball:
# SSIM 0.77 with 37% of the positions evaluated vs 0.90 with 49% from every 2nd position).


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
    levels: int | None = None,
) -> dict[str, np.ndarray]:
    """Per image [N, rows, cols]: ``feature_activity`` (sum of map ``feature_maps[i]`` of
    ``layer``), ``true_class_prob`` (softmax of ``targets[i]``) and ``top_label``.

    ``mode="fast"`` is incremental with ``tau`` (projective field thresholding) and, for
    ``drill_down`` < 1, adaptive drill-down (:func:`drill_down_maps`): a pass over every
    ``2**levels``-th row and column of the grid (``levels``: :func:`drill_levels` of the grid
    unless given), then, halving the spacing level by level, only the ``drill_down`` fraction of
    each finer level's positions where the maps change most from the unoccluded image; the rest
    keeps values interpolated from the coarser levels. Each image's
    :class:`vizkit.engine.OcclusionCost` is appended to ``costs`` when given."""
    _check_settings(mode, tau, drill_down)
    if mode != "fast":
        tau, drill_down = 1.0, 1.0
    if levels is None:
        levels = drill_levels(grid)
    n = x.shape[0]
    activity = np.zeros((n, grid.rows, grid.cols), dtype=np.float32)
    probability = np.zeros((n, grid.rows, grid.cols), dtype=np.float32)
    top = np.zeros((n, grid.rows, grid.cols), dtype=np.int64)
    bar = vizkit.toolkit.progress_bar(
        total=n * grid.count if drill_down >= 1 else None, desc="occlusion", unit="positions", enabled=progress
    )
    if drill_down < 1:  # what drill-down measures change from: one forward of the unoccluded images
        with im.configured(layers=[layer], switches=False), torch.no_grad():
            unoccluded_p = im(x).float().softmax(dim=1).cpu().numpy()
            unoccluded_a = im.activation(layer).float().flatten(2).sum(2).cpu().numpy()
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
                unoccluded = (float(unoccluded_p[i, target]), float(unoccluded_a[i, channel]))
                drill_down_maps(compute, grid, drill_down, levels, activity[i], probability[i], top[i], unoccluded)
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


def drill_levels(grid: OcclusionGrid) -> int:
    """How many times drill-down halves the spacing of its positions: the coarsest pass takes
    every ``2**levels``-th position, the largest power of two that keeps those positions at most
    half the occluder's size apart and inside the grid, and at least 2 (every other one): one
    level at 16/4 and 48/8, two at 16/2 or 48/4."""
    levels = 1
    while 2 ** (levels + 1) * grid.stride * 2 <= grid.size and 2 ** (levels + 1) < max(grid.rows, grid.cols):
        levels += 1
    return levels


def drill_down_maps(
    compute: Callable[[list[tuple[int, int]]], None],
    grid: OcclusionGrid,
    fraction: float,
    levels: int,
    activity: np.ndarray,
    probability: np.ndarray,
    top: np.ndarray,
    unoccluded: tuple[float, float],
) -> np.ndarray:
    """One image's maps by adaptive drill-down, and which cells were computed (a boolean mask).

    ``compute`` fills the maps at the cells it is given. It runs over every ``2**levels``-th row
    and column (the grid's last row and column included), the rest interpolated from them; then,
    level by level, the spacing halves and ``compute`` runs over the ``fraction`` of the finer
    lattice's cells (less those already computed) where interpolating the change from the
    ``unoccluded`` (probability, activity) values errs most (:func:`_to_refine`), and the grid is
    interpolated again from the finer lattice. The change is measured as a size, drops and rises
    alike: for a target that is not the top class the structure is where its probability rises."""
    computed = np.zeros((grid.rows, grid.cols), dtype=bool)
    step = 2**levels
    rows, cols = _lattice(grid.rows, step), _lattice(grid.cols, step)
    compute([(r, c) for r in rows for c in cols])
    computed[np.ix_(rows, cols)] = True
    while step > 1:
        for values in (activity, probability):
            values[:] = _interpolate(values[np.ix_(rows, cols)], rows, cols, grid)
        top[:] = _nearest(top[np.ix_(rows, cols)], rows, cols, grid)
        step //= 2
        rows, cols = _lattice(grid.rows, step), _lattice(grid.cols, step)
        cells = _to_refine(_change(activity, probability, unoccluded), rows, cols, step, fraction, computed)
        if cells:
            compute(cells)
            computed[tuple(np.array(cells).T)] = True
    return computed


def _lattice(count: int, step: int) -> list[int]:
    """Every ``step``-th index of a grid axis, and the last one (so interpolation covers the edges)."""
    return sorted(set(range(0, count, step)) | {count - 1})


def _coarse(count: int) -> list[int]:
    """Every other index of a grid axis, and the last one: one level of drill-down's coarse pass."""
    return _lattice(count, 2)


def _interpolate(values: np.ndarray, rows: list[int], cols: list[int], grid: OcclusionGrid) -> np.ndarray:
    """A coarse map on ``rows`` x ``cols`` of the grid, linearly interpolated to the whole grid."""
    along_cols = np.stack([np.interp(np.arange(grid.cols), cols, row) for row in values])
    return np.stack([np.interp(np.arange(grid.rows), rows, column) for column in along_cols.T], axis=1)


def _nearest(values: np.ndarray, rows: list[int], cols: list[int], grid: OcclusionGrid) -> np.ndarray:
    """A coarse map on ``rows`` x ``cols``, each grid cell taking its nearest coarse cell's value."""
    near_row = np.abs(np.arange(grid.rows)[:, None] - np.array(rows)[None]).argmin(1)
    near_col = np.abs(np.arange(grid.cols)[:, None] - np.array(cols)[None]).argmin(1)
    return values[np.ix_(near_row, near_col)]


def _change(activity: np.ndarray, probability: np.ndarray, unoccluded: tuple[float, float]) -> np.ndarray:
    """Each cell's size of change from the unoccluded image: |p - p0| and |a - a0|, each relative
    to its largest over the grid (so a probability spanning 0-0.013 counts as much as one
    spanning 0-1), the larger of the two. Sizes, not signed drops: a target's probability can
    rise under the occluder (a class that is not the top one), and so can a map's activity.
    A map whose largest change is float rounding (1e-5 of its values' size or less) counts as
    unchanged, lest its rounding noise, scaled up, choose the cells to refine."""
    sizes = []
    for values, base in ((probability, unoccluded[0]), (activity, unoccluded[1])):
        size = np.abs(values.astype(np.float64) - base)
        largest = float(size.max())
        rounding = 1e-5 * max(abs(base), float(np.abs(values).max()))
        sizes.append(size / largest if largest > rounding else np.zeros_like(size))
    return np.maximum(*sizes)


def _to_refine(
    change: np.ndarray, rows: list[int], cols: list[int], step: int, fraction: float, computed: np.ndarray
) -> list[tuple[int, int]]:
    """The ``fraction`` of the ``rows`` x ``cols`` lattice's cells where interpolating the
    change errs most, less the cells already ``computed``. The change map was interpolated
    linearly from the coarser lattice (spacing ``2 * step``), which is exact where the change
    is a ramp and errs where it bends: at the top of a bump or a dip (drops and rises alike),
    at the edges of a plateau. Each cell's score is the bend within ``step`` cells of it: the
    largest absolute second difference of the change, at the coarser spacing, along rows and
    columns (offline, at 16/4 on three images, ranking by this bend instead of by the largest
    change around a cell gave a mean SSIM of p of 0.930 instead of 0.917 at the same cost)."""
    spacing = 2 * step
    padded = np.pad(change, spacing, mode="edge")
    inner = padded[spacing:-spacing, spacing:-spacing]
    bend = np.abs(padded[: -2 * spacing, spacing:-spacing] - 2 * inner + padded[2 * spacing :, spacing:-spacing])
    bend += np.abs(padded[spacing:-spacing, : -2 * spacing] - 2 * inner + padded[spacing:-spacing, 2 * spacing :])
    side = 2 * step + 1
    largest = sliding_window_view(np.pad(bend, step, mode="edge"), (side, side)).max(axis=(-2, -1))
    lattice = np.zeros(change.shape, dtype=bool)
    lattice[np.ix_(rows, cols)] = True
    count = round(fraction * int(lattice.sum()))
    order = np.argsort(-largest[lattice], kind="stable")[:count]
    return sorted((int(r), int(c)) for r, c in np.argwhere(lattice)[order] if not computed[r, c])


def _batched(
    im: vizkit.Instrumented, image: Tensor, layer: str, corners, size: int, fill: Tensor, channel: int
) -> tuple[Tensor, Tensor]:
    # channels-last: on CPU convolutions and max pooling run several times faster in that layout
    logits = im(occluded_batch(image, corners, size, fill).contiguous(memory_format=torch.channels_last))
    return logits, im.activation(layer)[:, channel].flatten(1).sum(1)
