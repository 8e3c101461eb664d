"""The ``invariance`` figures: Fig. 5 (a row per transformation: example images, distance per
layer, the target's probability) and the top-1 label along each transformation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import Tensor

import vizkit
from vizkit.toolkit.figures import LABEL_COLOURS, label_key, new_figure, shorten, text_colour

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
    colours = [LABEL_COLOURS[i % len(LABEL_COLOURS)] for i in range(len(names))]  # one per image
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
            ax.plot(steps, arrays[f"{t}_prob"][i], color=colours[i], linewidth=1.1, label=shorten(name, 28))
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


LABEL_POINTS = 5.5  # the size of the labels written on the bands
PLOT_LEFT, PLOT_RIGHT = 0.14, 0.98  # the bands' horizontal extent, as fractions of the figure's width


def top1_figure(
    ctx: vizkit.RunContext, families: list[Transform], arrays: dict[str, np.ndarray], names: list[str]
) -> Any:
    """The top-1 label along each transformation, a coloured band per image. Labels have
    colour-blind-safe colours, the most frequent first, and the legend names every colour (the
    rarest labels beyond the palette share one grey, "other"); runs of three steps or more are
    also labelled in place, their names shortened to the run's width."""
    key = label_key(np.concatenate([arrays[f"{f.name}_top1"].ravel() for f in families]))
    width = 12.0
    char_inches = 0.6 * LABEL_POINTS / 72  # a generous estimate of one character's width
    figure = new_figure(width, 0.3 + (0.3 * len(names) + 0.6) * len(families))
    for r, family in enumerate(families):
        ax = figure.add_subplot(len(families), 1, r + 1)
        top1 = arrays[f"{family.name}_top1"]
        steps = arrays[f"{family.name}_steps"]
        ax.imshow(
            key.codes(top1),
            aspect="auto",
            interpolation="nearest",
            extent=(-0.5, len(steps) - 0.5, len(names) - 0.5, -0.5),
            **key.imshow_args(),
        )
        step_inches = (PLOT_RIGHT - PLOT_LEFT) * width / len(steps)
        for i in range(len(names)):
            start = 0
            for s in range(1, len(steps) + 1):
                if s == len(steps) or top1[i, s] != top1[i, start]:
                    room = int((s - start) * step_inches / char_inches) - 1
                    if s - start >= 3 and room >= 5:
                        label = int(top1[i, start])
                        ax.text(
                            (start + s - 1) / 2,
                            i,
                            shorten(ctx.label(label), room),
                            ha="center",
                            va="center",
                            fontsize=LABEL_POINTS,
                            color=text_colour(key.colour(label)),
                        )
                    start = s
        ticks = np.unique(np.linspace(0, len(steps) - 1, 7).round().astype(int))
        ax.set_xticks(ticks, [f"{steps[k]:.3g}" for k in ticks], fontsize=6)
        ax.set_yticks(range(len(names)), [shorten(name, 24) for name in names], fontsize=6)
        ax.set_xlabel(UNITS[family.name], fontsize=7)
    handles = key.legend_handles(ctx.label)
    legend_rows = math.ceil(len(handles) / 5)
    height = figure.get_figheight() + 0.35 + 0.12 * legend_rows
    figure.set_figheight(height)
    figure.suptitle("Top-1 label along each transformation, one band per image", fontsize=9, y=1 - 0.1 / height)
    figure.legend(
        handles=handles,
        fontsize=5.5,
        loc="upper center",
        ncol=5,
        frameon=False,
        bbox_to_anchor=(0.55, 1 - 0.32 / height),
    )
    figure.subplots_adjust(
        left=PLOT_LEFT,
        right=PLOT_RIGHT,
        top=1 - (0.45 + 0.12 * legend_rows) / height,
        bottom=0.45 / height,
        hspace=0.35 + 0.1 * len(families),
    )
    return figure
