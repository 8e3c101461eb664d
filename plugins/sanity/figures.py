"""The sanity check's figures: Adebayo et al.'s Fig. 2 for each image (rows = methods, columns =
the trained model, then the model randomized from the top down, step by step), and the curves of
each similarity metric against the randomized depth."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

import vizkit
from vizkit.toolkit.figures import MAX_FIGURE_INCHES, hwc, label_colours, new_figure, shorten

from .similarity import METRICS, TITLES

if TYPE_CHECKING:  # only annotations: matplotlib loads when a figure is drawn
    from matplotlib.figure import Figure

PANEL = 1.05  # inches per map panel
CLIP_PERCENTILE = 99.0  # each |map| is drawn up to its own 99th percentile, as Adebayo et al. did


def shown(map_2d: np.ndarray) -> np.ndarray | None:
    """|map| scaled to [0, 1] by its own 99th percentile (None: an all-zero map)."""
    values = np.abs(np.asarray(map_2d, dtype=np.float64))
    top = float(np.percentile(values, CLIP_PERCENTILE))
    top = top if top > 0 else float(values.max())
    return np.clip(values / top, 0.0, 1.0) if top > 0 else None


def maps_figure(
    ctx: vizkit.RunContext,
    image: Tensor,
    name: str,
    methods: list[str],
    summary: dict[str, Any],
    maps: np.ndarray,
    mode: str,
) -> Figure:
    """One image's Fig. 2: a row per method, the trained model's |map| first, then one column
    per randomized model (``maps``: [K, S + 1, H, W]); each panel titled with its Spearman
    correlation (of |map|) to the trained map."""
    steps = summary["steps"]
    columns = 1 + maps.shape[1]
    width, height = PANEL * columns + 0.9, PANEL * len(methods) + 1.1
    scale = min(1.0, MAX_FIGURE_INCHES / max(width, height))
    figure = new_figure(width * scale, height * scale)
    grid = figure.add_gridspec(len(methods), columns, left=0.9 / width, right=0.99, top=1 - 0.75 / height, bottom=0.02)
    index = summary["images"].index(name)
    similarity = summary["similarity"]
    picture = hwc(ctx.preprocess.denormalize(image.cpu()))
    for row, method in enumerate(methods):
        ax = figure.add_subplot(grid[row, 0])
        ax.imshow(picture if row == 0 else picture.mean(axis=2), cmap=None if row == 0 else "gray", vmin=0, vmax=1)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_ylabel(method, fontsize=7, rotation=0, ha="right", va="center")
        if row == 0:
            ax.set_title("image", fontsize=7)
        for step in range(maps.shape[1]):
            ax = figure.add_subplot(grid[row, step + 1])
            values = shown(maps[row, step])
            if values is None:
                ax.text(
                    0.5, 0.5, "all zero", ha="center", va="center", fontsize=6, color="darkred", transform=ax.transAxes
                )
            else:
                ax.imshow(values, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if step > 0 and values is not None:
                rho = similarity[method]["spearman_abs"][index][step]
                ax.text(
                    0.03, 0.04, "n/a" if rho is None or not np.isfinite(rho) else f"{rho:.2f}",
                    transform=ax.transAxes, fontsize=5.5, color="yellow", va="bottom",
                )  # fmt: skip
            if row == 0:
                title = "trained" if step == 0 else shorten(steps[step - 1], 14)
                ax.set_title(title, fontsize=6, rotation=0 if step == 0 else 30, ha="center" if step == 0 else "left")
    target = summary["target_name"][index]
    how = (
        "cascading: each column re-draws one more step, from the logits down"
        if mode == "cascading"
        else ("independent: each column re-draws that step alone")
    )
    figure.suptitle(
        f"{shorten(name, 40)}, target '{shorten(target, 24)}': |map| (to its 99th percentile) as the model is randomized\n"
        f"{how}; corner number: Spearman rank correlation of |map| with the trained model's",
        fontsize=7.5,
    )
    return figure


def curves_figure(
    methods: list[str], steps: list[str], similarity: dict[str, dict[str, np.ndarray]], modes: list[str]
) -> Figure:
    """Each metric against the randomized depth (one panel per metric and mode), a line per
    method (the mean over images; the trained model at 1 by definition)."""
    colours = label_colours(len(methods))
    rows = len(modes)
    figure = new_figure(min(MAX_FIGURE_INCHES, 3.2 * len(METRICS) + 1.6), 3.0 * rows + 0.6)
    axes = figure.subplots(rows, len(METRICS), squeeze=False, sharey=True)
    positions = np.arange(len(steps) + 1)
    labels = ["trained", *[shorten(step, 16) for step in steps]]
    for r, mode in enumerate(modes):
        for c, metric in enumerate(METRICS):
            ax = axes[r, c]
            values = similarity[mode][metric]  # [N, K, S + 1]
            for k, method in enumerate(methods):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # a step where every map is constant: no mean
                    mean = np.nanmean(np.where(np.isfinite(values[:, k]), values[:, k], np.nan), axis=0)
                ax.plot(positions, mean, marker="o", markersize=2.5, linewidth=1.2, color=colours[k], label=method)
            ax.axhline(0, color="grey", linewidth=0.6, linestyle=":")
            ax.set_xticks(positions)
            ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=5.5)
            ax.set_ylim(-1.05, 1.05)
            ax.tick_params(axis="y", labelsize=7)
            ax.set_title(f"{TITLES[metric]} ({mode})", fontsize=8)
            if c == 0:
                ax.set_ylabel("similarity to the trained model's map", fontsize=7)
    axes[0, -1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    figure.suptitle(
        "How much each map depends on the model: similarity as layers are re-drawn from the logits down "
        "(mean over images; a map that stays near 1 does not depend on those weights)",
        fontsize=8,
    )
    figure.subplots_adjust(left=0.06, right=0.88, bottom=0.3 if rows == 1 else 0.16, top=0.86, wspace=0.12, hspace=0.8)
    return figure
