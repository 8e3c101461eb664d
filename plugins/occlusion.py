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
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import vizkit
from vizkit import new_figure, parse_fill, resolve_target, show


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
        """imshow extent (left, right, bottom, top) placing each cell on its occluder's centre."""
        half = self.stride / 2
        cy, cx = self.centers_y(), self.centers_x()
        return (float(cx[0] - half), float(cx[-1] + half), float(cy[-1] + half), float(cy[0] - half))


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
) -> dict[str, np.ndarray]:
    """Per image [N, rows, cols]: ``feature_activity`` (sum of map ``feature_maps[i]`` of
    ``layer``), ``true_class_prob`` (softmax of ``targets[i]``) and ``top_label``."""
    if mode not in ("exact", "batched"):
        raise vizkit.UsageError(f"unknown occlusion mode '{mode}'; use exact or batched")
    n = x.shape[0]
    activity = np.zeros((n, grid.count), dtype=np.float32)
    probability = np.zeros((n, grid.count), dtype=np.float32)
    top = np.zeros((n, grid.count), dtype=np.int64)
    corners = grid.corners()
    bar = vizkit.progress_bar(total=n * grid.count, desc="occlusion", enabled=progress)
    # batched: full forwards that record the tracked layer only, and no switches
    scope = im.configured(layers=[layer], switches=False) if mode == "batched" else contextlib.nullcontext(im)
    with scope:
        for i in range(n):
            if mode == "exact":
                engine = vizkit.IncrementalOcclusion(im, x[i : i + 1], layer)
                evaluate = lambda part, engine=engine: engine.evaluate(part, grid.size, fill)
            else:
                evaluate = lambda part, i=i: _batched(im, x[i], layer, part, grid.size, fill)
            for start in range(0, grid.count, batch_size):
                part = corners[start : start + batch_size]
                with torch.no_grad():
                    logits, layer_out = evaluate(part)
                p = logits.float().softmax(dim=1)
                window = slice(start, start + len(part))
                activity[i, window] = layer_out[:, int(feature_maps[i])].sum(dim=(1, 2)).cpu().numpy()
                probability[i, window] = p[:, int(targets[i])].cpu().numpy()
                top[i, window] = p.argmax(dim=1).cpu().numpy()
                bar.update(len(part))
    bar.close()
    shape = (n, grid.rows, grid.cols)
    return {
        "feature_activity": activity.reshape(shape),
        "true_class_prob": probability.reshape(shape),
        "top_label": top.reshape(shape),
    }


def _batched(
    im: vizkit.Instrumented, image: Tensor, layer: str, corners, size: int, fill: Tensor
) -> tuple[Tensor, Tensor]:
    logits = im(occluded_batch(image, corners, size, fill))
    return logits, im.activation(layer)


# ----------------------------------------------------------------------------------- analysis


def default_layer(model: nn.Module, im: vizkit.Instrumented, num_classes: int) -> str:
    """The model's declared default (``vizkit_default_layer``), else the last named module with
    spatial feature maps before the classifier ("layer 5"); plain Sequential wrappers are skipped."""
    declared = getattr(model, "vizkit_default_layer", None)
    if declared:
        return declared
    candidates = [
        info.name
        for info in im.layer_infos()
        if info.shape is not None
        and len(info.shape) == 4
        and info.shape[2] > 1
        and info.shape[1] != num_classes
        and info.type not in ("Dropout", "Dropout2d", "Identity", "Sequential", "ModuleList")
    ]
    if not candidates:
        raise vizkit.UsageError("no layer with spatial feature maps found; pass --layer")
    return candidates[-1]


def run(
    ctx: vizkit.RunContext, target: str, layer: str | None, size: int, stride: int, fill: str, mode: str
) -> vizkit.Result:
    x = ctx.images()
    im = ctx.instrumented
    height, width = x.shape[-2:]
    if not 1 <= size <= min(height, width):
        raise vizkit.UsageError(f"--size must be between 1 and {min(height, width)}, not {size}")
    if stride < 1:
        raise vizkit.UsageError(f"--stride must be at least 1, not {stride}")
    fill_value = parse_fill(fill, ctx.preprocess)
    with im.configured(layers=[layer] if layer else "all"), torch.no_grad():
        logits = im(x)  # one forward gives the logits and the layer
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise vizkit.UsageError("occlusion needs a classifier: the model must output [N, classes] logits")
    num_classes = logits.shape[1]
    vizkit.check_labels(ctx.labels, num_classes)
    layer = im.resolve_alias(layer) if layer else default_layer(ctx.model, im, num_classes)
    activation = im.activation(layer)  # unknown layer -> clear error listing valid ones
    if activation.dim() != 4:
        raise vizkit.UsageError(f"layer '{layer}' has no spatial feature maps (shape {tuple(activation.shape)})")
    strongest = activation.flatten(2).amax(2).argmax(1)  # per image
    fixed = resolve_target(target, ctx.labels, num_classes)
    targets = logits.argmax(1) if fixed is None else torch.full((x.shape[0],), fixed, dtype=torch.long)

    grid = OcclusionGrid(height, width, size, stride)
    started = time.perf_counter()
    maps = occlusion_maps(
        im, x, layer, strongest, targets, grid, fill_value, mode=mode, batch_size=ctx.batch_size, progress=ctx.progress
    )
    seconds = time.perf_counter() - started

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
            "seconds_maps": round(seconds, 3),  # the occlusion maps alone (result.json's seconds: the whole run)
            "unoccluded_probability": [float(p) for p in logits.softmax(1)[torch.arange(x.shape[0]), targets]],
            "min_probability": [float(m.min()) for m in maps["true_class_prob"]],
            "images": ctx.image_names(),
        },
        arrays={**maps, "centers_y": grid.centers_y(), "centers_x": grid.centers_x()},
    )
    for index in range(x.shape[0]):
        name = "occlusion" if x.shape[0] == 1 else f"occlusion_{index}"
        result.figures[name] = _figure(ctx, x, index, maps, grid, projection, strongest, targets, layer, fill_value)
    return result


def _overlay(ax, image: np.ndarray, values: np.ndarray, grid: OcclusionGrid, title: str, **imshow: Any):
    ax.imshow(image, interpolation="bilinear")
    shown = ax.imshow(values, extent=grid.extent(), alpha=0.65, interpolation="nearest", **imshow)
    ax.set_xlim(0, image.shape[1]), ax.set_ylim(image.shape[0], 0)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    return shown


def _figure(ctx, x, index, maps, grid, projection, strongest, targets, layer, fill_value):
    from matplotlib import colormaps
    from matplotlib.patches import Patch, Rectangle

    image = vizkit.figures.hwc(ctx.preprocess.denormalize(x[index].cpu()))
    others = x.shape[0] - 1
    figure = new_figure(15 + 2.2 * others, 3.9)
    grid_spec = figure.add_gridspec(1, 5 + others, wspace=0.25)
    names = ctx.image_names()
    probability = maps["true_class_prob"][index]

    # (a) the image with the occluder at its most damaging position
    ax = figure.add_subplot(grid_spec[0])
    row, col = np.unravel_index(int(probability.argmin()), probability.shape)
    y0, x0 = grid.top_left(row, col)
    occluded = vizkit.figures.hwc(
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
    columns = [index] + [j for j in range(x.shape[0]) if j != index]
    for slot, j in enumerate(columns):
        ax = figure.add_subplot(grid_spec[2 + slot])
        where = "this image" if j == index else names[j]
        show(
            ax,
            vizkit.to_image(projection.images[j, index]),
            f"(c) map {int(strongest[index])} projected\n({where})",
            fontsize=8,
        )

    # (d) probability of the true class
    ax = figure.add_subplot(grid_spec[3 + others])
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
    ax = figure.add_subplot(grid_spec[4 + others])
    labels = maps["top_label"][index]
    seen, counts = np.unique(labels, return_counts=True)
    order = seen[np.argsort(-counts)]
    palette = colormaps["tab20"]
    lookup = {int(label): k for k, label in enumerate(order)}
    coded = np.vectorize(lambda v: lookup[int(v)])(labels)
    from matplotlib.colors import ListedColormap

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
    figure.suptitle(f"Occlusion sensitivity: {names[index]}, target {ctx.label(int(targets[index]))}", fontsize=10)
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
                vizkit.Option("size", int, 48, help="side of the grey square, in input pixels"),
                vizkit.Option("stride", int, 8, help="step between occluder positions, in input pixels"),
                vizkit.Option(
                    "fill", str, "mean", help="occluder colour: mean (dataset mean), zero (black), or R,G,B in 0-255"
                ),
                vizkit.Option(
                    "mode",
                    ("exact", "batched"),
                    "exact",
                    help="exact: incremental recomputation of changed windows; batched: full forward per position",
                ),
            ],
            demo={"size": 48, "stride": 16},
        )
    )
