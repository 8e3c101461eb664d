"""The ``occlusion`` analysis: occlusion sensitivity maps (paper Fig. 7).

A square of ``--size`` pixels filled with ``--fill`` (default: the dataset mean, zero after
normalisation) slides over each preprocessed image with ``--stride``, kept inside the image
(the positions captum's ``Occlusion`` uses). For every position it records the total activation
of one feature map of ``--layer`` (the map with the strongest response in the unoccluded
image), the softmax probability of the target class and the most probable label.

``--mode batched`` runs many occluded copies per forward pass. ``--mode exact`` (default)
recomputes, for each position, only the window of each layer that the occluder can change and
patches it into the unoccluded image's cached activations (incremental inference, as in Krypton,
Nakandala et al. 2019); results equal the batched ones to float rounding. Graphs or ops whose
changed window cannot be bounded fall back to batched computation from that op on.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

import vizkit
from vizkit.data import parse_fill, resolve_target
from vizkit.toolkit.figures import new_figure, show
from vizkit.toolkit.report import per_image_view


# ------------------------------------------------------------------------ the grid and the maps
@dataclass(frozen=True)
class OcclusionGrid:
    """Occluder positions: squares of ``size`` px, ``stride`` apart, kept inside the image."""

    height: int
    width: int
    size: int
    stride: int

    @property
    def rows(self) -> int:
        return (self.height - self.size) // self.stride + 1

    @property
    def cols(self) -> int:
        return (self.width - self.size) // self.stride + 1

    @property
    def count(self) -> int:
        return self.rows * self.cols

    def top_left(self, row: int, col: int) -> tuple[int, int]:
        return row * self.stride, col * self.stride

    def corners(self) -> list[tuple[int, int]]:
        return [self.top_left(r, c) for r in range(self.rows) for c in range(self.cols)]

    def centers_y(self) -> np.ndarray:
        return (np.arange(self.rows) * self.stride + (self.size - 1) / 2).astype(np.float32)

    def centers_x(self) -> np.ndarray:
        return (np.arange(self.cols) * self.stride + (self.size - 1) / 2).astype(np.float32)

    def extent(self) -> tuple[float, float, float, float]:
        """imshow extent (left, right, bottom, top) placing each cell on its occluder's centre.

        A cell spans the stride between neighbouring positions; along an axis with a single
        position (the occluder as large as the image, or a stride past its edge) there is no
        neighbour, and the cell spans the occluder itself (not a stride-wide sliver, or a cell
        far wider than the image)."""
        half_y = (self.stride if self.rows > 1 else self.size) / 2
        half_x = (self.stride if self.cols > 1 else self.size) / 2
        cy, cx = self.centers_y(), self.centers_x()
        return (float(cx[0] - half_x), float(cx[-1] + half_x), float(cy[-1] + half_y), float(cy[0] - half_y))


def occluded_batch(x: Tensor, corners: list[tuple[int, int]], size: int, fill: Tensor) -> Tensor:
    """Copies of one image [3,H,W], each with the square at one of ``corners`` filled."""
    batch = x.unsqueeze(0).repeat(len(corners), 1, 1, 1)
    colour = fill.to(x.device, x.dtype).reshape(3, 1, 1)
    for k, (y0, x0) in enumerate(corners):
        batch[k, :, y0 : y0 + size, x0 : x0 + size] = colour
    return batch


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
        total=n * grid.count if drill_down >= 1 else None, desc="occlusion", enabled=progress
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


MODES = ("exact", "fast", "batched")
# Defaults from bench/occlusion.py on SqueezeNet (48 px, stride 8, twelve images): drill-down 0.15
# alone keeps the mean SSIM of p at 0.906 and runs 2.7x faster than exact; tau < 1 lowers SSIM and,
# at these 13-55 px maps, costs more in bookkeeping than it saves (tau 0.7: 1.24 s vs 0.98 s).
FAST_TAU = 1.0
FAST_DRILL_DOWN = 0.15


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


# ----------------------------------------------------------------------------------- analysis
def _logits_layer_and_map(ctx: vizkit.RunContext, x: Tensor, layer: str | None) -> tuple[Tensor, str, Tensor]:
    """One forward of ``x``: the logits, the layer whose map is tracked (``--layer``, else the
    default one) and each image's strongest map of it."""
    im = ctx.instrumented
    with im.configured(layers=[layer] if layer else "all"), torch.no_grad():
        logits = im(x)  # one forward gives the logits and the layer
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise vizkit.UsageError("occlusion needs a classifier: the model must output [N, classes] logits")
    num_classes = logits.shape[1]
    vizkit.data.check_labels(ctx.labels, num_classes)
    layer = im.resolve_alias(layer) if layer else vizkit.toolkit.default_layer(ctx.model, im, num_classes)
    activation = im.activation(layer)  # unknown layer -> clear error listing valid ones
    if activation.dim() != 4:
        raise vizkit.UsageError(f"layer '{layer}' has no spatial feature maps (shape {tuple(activation.shape)})")
    return logits, layer, activation.flatten(2).amax(2).argmax(1)  # the strongest map, per image


def run(
    ctx: vizkit.RunContext,
    target: str,
    layer: str | None,
    size: int,
    stride: int,
    fill: str,
    mode: str,
    tau: float,
    drill_down: float,
    check: int,
    explain: bool,
) -> vizkit.Result:
    x = ctx.images()
    im = ctx.instrumented
    height, width = x.shape[-2:]
    if size > min(height, width):  # the Option's range holds it at 1 or more
        raise vizkit.UsageError(f"--size must be between 1 and {min(height, width)}, not {size}")
    fill_value = parse_fill(fill, ctx.preprocess)
    logits, layer, strongest = _logits_layer_and_map(ctx, x, layer)
    fixed = resolve_target(target, ctx.labels, logits.shape[1])
    targets = logits.argmax(1) if fixed is None else torch.full((x.shape[0],), fixed, dtype=torch.long)

    grid = OcclusionGrid(height, width, size, stride)
    costs: list[vizkit.engine.OcclusionCost] = []
    started = time.perf_counter()
    maps = occlusion_maps(
        im,
        x,
        layer,
        strongest,
        targets,
        grid,
        fill_value,
        mode=mode,
        batch_size=ctx.batch_size,
        progress=ctx.progress,
        tau=tau,
        drill_down=drill_down,
        costs=costs,
    )
    seconds = time.perf_counter() - started
    fidelity = _fidelity(ctx, x, layer, strongest, targets, grid, fill_value, maps, check) if mode == "fast" else None
    if explain:
        for name, cost in zip(ctx.image_names(), costs):
            print(f"occlusion cost, {name}: {explain_cost(cost)}", file=sys.stderr)

    # projection.images[j, i]: the strongest map of image i, projected in image j
    projection = vizkit.project(im, x, layer, strongest.tolist())
    labels_seen = sorted({int(v) for v in np.unique(maps["top_label"])})
    result = vizkit.Result(
        summary={
            "strongest_map": strongest.tolist(),
            "target": targets.tolist(),
            "target_name": [ctx.label(t) for t in targets.tolist()],
            "labels_seen": {str(i): ctx.label(i) for i in labels_seen},
            "positions": grid.count,
            "grid": [grid.rows, grid.cols],
            "layer": layer,
            "mode": mode,
            "tau": tau if mode == "fast" else 1.0,
            "drill_down": drill_down if mode == "fast" else 1.0,
            "positions_evaluated": [cost.positions for cost in costs] if costs else [grid.count] * x.shape[0],
            "cost": [cost.as_dict() for cost in costs],
            "fidelity": fidelity,
            "seconds_maps": round(seconds, 3),  # the occlusion maps alone (result.json's seconds: the whole run)
            "unoccluded_probability": [float(p) for p in logits.softmax(1)[torch.arange(x.shape[0]), targets]],
            "min_probability": [float(m.min()) for m in maps["true_class_prob"]],
            "images": ctx.image_names(),
        },
        arrays={**maps, "centers_y": grid.centers_y(), "centers_x": grid.centers_x()},
    )
    for index in range(x.shape[0]):
        name = "occlusion" if x.shape[0] == 1 else f"occlusion_{index}"
        how = "exact" if mode != "fast" else f"fast, approximate: tau {tau:g}, drill-down {drill_down:g}"
        result.figures[name] = _figure(
            ctx, x, index, maps, grid, projection, strongest, targets, layer, fill_value, how
        )
    return result


def explain_cost(cost: vizkit.engine.OcclusionCost) -> str:
    """One line: the multiply-adds of a full forward, needed and executed per position, the bound."""
    numbers = cost.as_dict()
    return (
        f"full forward {numbers['macs_full_forward'] / 1e9:.3f} GMAC; per position needed "
        f"{numbers['macs_needed_per_position'] / 1e9:.3f} GMAC, executed {numbers['macs_executed_per_position'] / 1e9:.3f}"
        f" GMAC (padding x{numbers['padding_overhead']:.2f}); bound {numbers['bound']:.2f}x full forwards"
        f" over {cost.positions} positions"
    )


def _fidelity(ctx, x, layer, strongest, targets, grid, fill, maps, check: int) -> dict[str, Any] | None:
    """Fast mode against exact incremental occlusion at ``check`` random positions (all of them,
    and SSIM of the maps, when ``check`` covers the grid): what the approximation costs."""
    if check == 0:
        return None
    whole = check >= grid.count
    cells = np.arange(grid.count) if whole else np.sort(ctx.rng.choice(grid.count, size=check, replace=False))
    report: dict[str, Any] = {"positions_checked": len(cells), "per_image": []}
    for i in range(x.shape[0]):
        engine = vizkit.engine.IncrementalOcclusion(ctx.instrumented, x[i : i + 1], layer)
        exact_p, exact_a, exact_top = [], [], []
        for start in range(0, len(cells), ctx.batch_size):
            part = [grid.top_left(*divmod(int(k), grid.cols)) for k in cells[start : start + ctx.batch_size]]
            with torch.no_grad():
                logits, sums = engine.evaluate(part, grid.size, fill, channel=int(strongest[i]))
            p = logits.float().softmax(1)
            exact_p.append(p[:, int(targets[i])].cpu().numpy())
            exact_a.append(sums.float().cpu().numpy())
            exact_top.append(p.argmax(1).cpu().numpy())
        fast_p = maps["true_class_prob"][i].reshape(-1)[cells]
        fast_top = maps["top_label"][i].reshape(-1)[cells]
        delta = np.abs(fast_p - np.concatenate(exact_p))
        entry = {
            "max_abs_delta_p": round(float(delta.max()), 5),
            "mean_abs_delta_p": round(float(delta.mean()), 5),
            "top_label_agreement": round(float((fast_top == np.concatenate(exact_top)).mean()), 4),
        }
        if whole:
            shape = (grid.rows, grid.cols)
            entry["ssim_probability"] = round(
                vizkit.toolkit.ssim(maps["true_class_prob"][i], np.concatenate(exact_p).reshape(shape)), 4
            )
            entry["ssim_activity"] = round(
                vizkit.toolkit.ssim(maps["feature_activity"][i], np.concatenate(exact_a).reshape(shape)), 4
            )
        report["per_image"].append(entry)
    return report


def _overlay(ax, image: np.ndarray, values: np.ndarray, grid: OcclusionGrid, title: str, **imshow: Any):
    ax.imshow(image, interpolation="bilinear")
    shown = ax.imshow(values, extent=grid.extent(), alpha=0.65, interpolation="nearest", **imshow)
    ax.set_xlim(0, image.shape[1]), ax.set_ylim(image.shape[0], 0)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    return shown


MAX_OTHER_PROJECTIONS = 8  # projections of the strongest map in other images drawn per figure


def _other_projections(figure: Any, row: Any, names: list[str], index: int, projection: Any, what: str) -> None:
    """Panel (c)'s second row: the map of image ``index`` projected in each other image."""
    others = len(names) - 1
    shown_others = min(others, MAX_OTHER_PROJECTIONS)
    other_row = row.subgridspec(1, max(shown_others, 5), wspace=0.3)
    for slot, j in enumerate([j for j in range(len(names)) if j != index][:shown_others]):
        ax = figure.add_subplot(other_row[slot])
        show(
            ax,
            vizkit.to_image(projection.images[j, index]),
            f"in {vizkit.toolkit.figures.shorten(names[j])}",
            fontsize=7,
        )
    more = f" (first {shown_others} of {others})" if others > shown_others else ""
    figure.text(
        0.01,
        row.get_position(figure).y1 + 0.035,
        f"(c) {what} projected from its strongest activation in the other images{more}",
        fontsize=9,
        ha="left",
    )


def _label_panel(ax: Any, ctx: vizkit.RunContext, image: np.ndarray, labels: np.ndarray, grid: OcclusionGrid) -> None:
    """Panel (e): the most probable label at each occluder position, the commonest first."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    seen, counts = np.unique(labels, return_counts=True)
    order = seen[np.argsort(-counts)]
    palette = colormaps["tab20"]
    lookup = {int(label): k for k, label in enumerate(order)}
    coded = np.vectorize(lambda v: lookup[int(v)])(labels)
    colours = [palette(k % 20) for k in range(len(order))]
    _overlay(
        ax,
        image,
        coded,
        grid,
        "(e) most probable label",
        cmap=ListedColormap(colours),
        vmin=-0.5,
        vmax=len(order) - 0.5,
    )
    shown_labels = order[:8]
    ax.legend(
        handles=[
            Patch(color=colours[lookup[int(v)]], label=f"{ctx.label(int(v))} ({int(c)})")
            for v, c in zip(shown_labels, counts[np.argsort(-counts)][:8])
        ],
        fontsize=6,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0,
        title="label (positions)",
        title_fontsize=6,
    )


def _figure(ctx, x, index, maps, grid, projection, strongest, targets, layer, fill_value, how):
    from matplotlib.patches import Rectangle

    image = vizkit.toolkit.figures.hwc(ctx.preprocess.denormalize(x[index].cpu()))
    others = x.shape[0] - 1
    # the paper's five panels (a)-(e) in one row; the same map projected in the other images, if
    # any, in a second row below (in one row they shrank every panel as images were added)
    figure = new_figure(17.0, 3.6 + (3.3 if others else 0.0))
    rows = figure.add_gridspec(
        2 if others else 1, 1, height_ratios=[1.0, 0.92] if others else None, hspace=0.38, top=0.86, bottom=0.03
    )
    grid_spec = rows[0].subgridspec(1, 5, wspace=0.3)
    names = ctx.image_names()
    probability = maps["true_class_prob"][index]

    # (a) the image with the occluder at its most damaging position
    ax = figure.add_subplot(grid_spec[0])
    row, col = np.unravel_index(int(probability.argmin()), probability.shape)
    y0, x0 = grid.top_left(row, col)
    occluded = vizkit.toolkit.figures.hwc(
        ctx.preprocess.denormalize(occluded_batch(x[index].cpu(), [(y0, x0)], grid.size, fill_value)[0])
    )
    show(ax, occluded, f"(a) {names[index]}\noccluder {grid.size}px at its most damaging place", fontsize=8)
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), grid.size, grid.size, fill=False, edgecolor="yellow", linewidth=1.2))

    # (b) total activity of the strongest feature map
    ax = figure.add_subplot(grid_spec[1])
    shown = _overlay(
        ax,
        image,
        maps["feature_activity"][index],
        grid,
        f"(b) total activity of {layer}\nmap {int(strongest[index])}",
        cmap="viridis",
    )
    figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)

    # (c) deconvnet projection of that map's strongest activation, and in the other images
    ax = figure.add_subplot(grid_spec[2])
    show(ax, vizkit.to_image(projection.images[index, index]), f"(c) map {int(strongest[index])} projected", fontsize=8)
    if others:
        _other_projections(figure, rows[1], names, index, projection, f"map {int(strongest[index])} of {layer}")

    # (d) probability of the true class
    ax = figure.add_subplot(grid_spec[3])
    shown = _overlay(
        ax,
        image,
        probability,
        grid,
        f"(d) p({ctx.label(int(targets[index]))})",
        cmap="magma",
        vmin=0.0,
        vmax=max(1e-6, float(probability.max())),
    )
    figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)

    # (e) most probable label
    _label_panel(figure.add_subplot(grid_spec[4]), ctx, image, maps["top_label"][index], grid)
    figure.suptitle(
        f"Occlusion sensitivity: {names[index]}, target {ctx.label(int(targets[index]))} ({how}, "
        f"{grid.size}px square, stride {grid.stride})",
        fontsize=10,
    )
    return figure


@vizkit.hookimpl
def register_analyses(register) -> None:
    register(
        vizkit.Analysis(
            name="occlusion",
            description="Occlusion sensitivity: feature activity, true-class probability and top label per occluder position (Fig. 7)",
            run=run,
            inputs="images",
            options=[
                vizkit.Option(
                    "target", str, "auto", help="true class: auto (the model's top-1), an index, or a label name"
                ),
                vizkit.Option(
                    "layer",
                    str,
                    None,
                    help="layer whose strongest map's activity is tracked (default: the last conv layer)",
                ),
                vizkit.Option(
                    "size", int, 48, help="side of the grey square, in input pixels", minimum=1, maximum=4096
                ),
                vizkit.Option(
                    "stride", int, 8, help="step between occluder positions, in input pixels", minimum=1, maximum=4096
                ),
                vizkit.Option(
                    "fill", str, "mean", help="occluder colour: mean (dataset mean), zero (black), or R,G,B in 0-255"
                ),
                vizkit.Option(
                    "mode",
                    MODES,
                    "exact",
                    help="exact: incremental recomputation of changed windows; fast: approximate incremental "
                    "(--tau, --drill-down); batched: full forward per position",
                ),
                vizkit.Option(
                    "tau",
                    float,
                    FAST_TAU,
                    help="fast mode: cap each layer's changed window at this fraction of the layer's size (1: off)",
                    minimum=0,
                    maximum=1,
                    exclusive_minimum=True,
                ),
                vizkit.Option(
                    "drill_down",
                    float,
                    FAST_DRILL_DOWN,
                    help="fast mode: coarse pass at twice the stride, then the stride only over this fraction of "
                    "positions with the largest probability drop (1: off)",
                    minimum=0,
                    maximum=1,
                ),
                vizkit.Option(
                    "check",
                    int,
                    32,
                    help="fast mode: positions recomputed exactly to report the approximation's error in "
                    "result.json (0: none; the grid size or more: all, with SSIM)",
                    minimum=0,
                ),
                vizkit.Option("explain", bool, False, help="print the multiply-add cost model and its bound"),
            ],
            demo={"size": 48, "stride": 16},
            view=per_image_view(  # the report's per-image rows
                [
                    "target_name",
                    "target",
                    "unoccluded_probability",
                    "min_probability",
                    "strongest_map",
                    "positions_evaluated",
                ]
            ),
        )
    )
