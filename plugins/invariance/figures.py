"""The ``invariance`` figures: Fig. 5 (a row per transformation: example images, distance per
layer, the target's probability) and the top-1 label along each transformation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import Tensor

import vizkit
from vizkit.toolkit.figures import new_figure

from .transforms import UNITS, Transform


def curves_figure(
    ctx: vizkit.RunContext,
    resized: Tensor,
    families: list[Transform],
    layers: list[str],
    arrays: dict[str, np.ndarray],
    names: list[str],
    normalize: str,
    fill: list[float],
) -> Any:
    """Fig. 5: a row per transformation: example images, distance per layer, P(true class)."""
    from torchvision.transforms.v2 import functional as tf

    rows, columns = len(families), len(layers) + 2
    figure = new_figure(3.1 * columns, 2.8 * rows + 0.6)
    grid = figure.add_gridspec(rows, columns, width_ratios=[1.7] + [1] * (columns - 1), wspace=0.32, hspace=0.45)
    preprocess = ctx.preprocess
    colours = [f"C{i}" for i in range(len(names))]
    for r, family in enumerate(families):
        t = family.name
        steps = arrays[f"{t}_steps"]
        # (a) a strip of the first image at five of the steps
        ax = figure.add_subplot(grid[r, 0])
        picks = np.unique(np.linspace(0, len(steps) - 1, 5).round().astype(int))
        tiles = [
            tf.center_crop(family.apply(resized, float(steps[k]), fill), [preprocess.crop, preprocess.crop])
            .permute(1, 2, 0)
            .clamp(0, 1)
            .numpy()
            for k in picks
        ]
        ax.imshow(vizkit.toolkit.figures.tile_mosaic(np.stack(tiles), rows=1), interpolation="bilinear")
        ax.set_xticks(
            [(k + 0.5) * (preprocess.crop + 2) for k in range(len(picks))],
            [f"{steps[k]:.3g}" for k in picks],
            fontsize=6,
        )
        ax.set_yticks([])
        ax.set_title(f"({'abc'[r % 3]}) {UNITS[t]}", fontsize=8, loc="left")
        for c, layer in enumerate(layers):
            ax = figure.add_subplot(grid[r, 1 + c])
            for i, name in enumerate(names):
                ax.plot(steps, arrays[f"{t}_distance_{layer}"][i], color=colours[i], linewidth=1.1, label=name)
            ax.set_title(f"{layer}: " + ("relative " if normalize == "norm" else "") + "Euclidean distance", fontsize=8)
            ax.set_xlabel(UNITS[t], fontsize=7)
            ax.tick_params(labelsize=6)
            ax.set_ylim(bottom=0)
        ax = figure.add_subplot(grid[r, columns - 1])
        for i, name in enumerate(names):
            ax.plot(steps, arrays[f"{t}_prob"][i], color=colours[i], linewidth=1.1, label=name)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("P(true class)", fontsize=8)
        ax.set_xlabel(UNITS[t], fontsize=7)
        ax.tick_params(labelsize=6)
        if r == 0:
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False)
    figure.suptitle(
        "Invariance (Fig. 5): feature distance to the original image and probability of the true class", fontsize=10
    )
    # margins in inches (a fraction of the height left a one-transform figure's suptitle on top of
    # the panels' titles): the suptitle and a row of titles above, tick labels and x label below
    height = figure.get_figheight()
    figure.subplots_adjust(left=0.03, right=0.86, top=1 - 0.75 / height, bottom=0.6 / height)
    return figure


def top1_figure(
    ctx: vizkit.RunContext, families: list[Transform], arrays: dict[str, np.ndarray], names: list[str]
) -> Any:
    """The top-1 label along each transformation, a coloured band per image; runs of three steps
    or more are labelled in place, every label has its own colour (up to 60)."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    labels, counts = np.unique(np.concatenate([arrays[f"{f.name}_top1"].ravel() for f in families]), return_counts=True)
    order = labels[np.argsort(-counts, kind="stable")]  # most frequent first: they get the first colours
    palette = [colormaps[name](k) for name in ("tab20", "tab20b", "tab20c") for k in range(20)]
    lookup = {int(label): k for k, label in enumerate(order)}
    colours = [palette[k] if k < len(palette) else (0.5, 0.5, 0.5, 1.0) for k in range(len(order))]
    figure = new_figure(12, 0.3 + (0.3 * len(names) + 0.6) * len(families))
    for r, family in enumerate(families):
        ax = figure.add_subplot(len(families), 1, r + 1)
        top1 = arrays[f"{family.name}_top1"]
        coded = np.vectorize(lambda v: lookup[int(v)])(top1)
        steps = arrays[f"{family.name}_steps"]
        ax.imshow(
            coded,
            aspect="auto",
            interpolation="nearest",
            cmap=ListedColormap(colours),
            vmin=-0.5,
            vmax=len(order) - 0.5,
            extent=(-0.5, len(steps) - 0.5, len(names) - 0.5, -0.5),
        )
        for i in range(len(names)):
            start = 0
            for s in range(1, len(steps) + 1):
                if s == len(steps) or top1[i, s] != top1[i, start]:
                    if s - start >= 3:
                        ax.text(
                            (start + s - 1) / 2,
                            i,
                            ctx.label(int(top1[i, start]))[:18],
                            ha="center",
                            va="center",
                            fontsize=5.5,
                            color="black",
                        )
                    start = s
        ticks = np.unique(np.linspace(0, len(steps) - 1, 7).round().astype(int))
        ax.set_xticks(ticks, [f"{steps[k]:.3g}" for k in ticks], fontsize=6)
        ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.set_xlabel(UNITS[family.name], fontsize=7)
    shown = order[:40]
    legend_rows = math.ceil(len(shown) / 5)
    height = figure.get_figheight() + 0.35 + 0.12 * legend_rows
    figure.set_figheight(height)
    more = f" ({len(order) - len(shown)} rarer labels not in the legend)" if len(order) > len(shown) else ""
    figure.suptitle(f"Top-1 label along each transformation, one band per image{more}", fontsize=9, y=1 - 0.1 / height)
    figure.legend(
        handles=[Patch(color=colours[lookup[int(v)]], label=ctx.label(int(v))[:22]) for v in shown],
        fontsize=5.5,
        loc="upper center",
        ncol=5,
        frameon=False,
        bbox_to_anchor=(0.55, 1 - 0.32 / height),
    )
    figure.subplots_adjust(
        left=0.14,
        right=0.98,
        top=1 - (0.45 + 0.12 * legend_rows) / height,
        bottom=0.45 / height,
        hspace=0.35 + 0.1 * len(families),
    )
    return figure
