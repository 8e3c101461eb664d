"""The ``evolution`` figures: paper Fig. 4 (a block per layer, maps by snapshot epochs) and
the strength of each chosen map's strongest activation per snapshot."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import numpy as np
import torch

import vizkit
from vizkit.toolkit.figures import (
    LABEL_COLOURS,
    SILENT_FACE,
    mark_silent_tile,
    new_figure,
    silent_panel,
    tile_mosaic,
)

if TYPE_CHECKING:  # only an annotation: matplotlib loads when a figure is drawn
    from matplotlib.figure import Figure


MAX_WIDTH_INCHES = 20.0  # vizkit's figure cap: tiles shrink (down to MIN_TILE_INCHES) to stay within it
TILE_INCHES, MIN_TILE_INCHES = 0.55, 0.22
LABEL_FONT = 7  # points, the row (map) and column (epoch) labels
LEGEND_MAPS = 12  # the strength figure names the maps in a legend up to this many per layer


def evolution_figure(
    layers: list[str],
    channels: np.ndarray,
    epochs: list[int],
    projections: np.ndarray,
    n_images: int,
    values: np.ndarray | None = None,
) -> Figure:
    """Paper Fig. 4: a block per layer, rows = its maps, columns = snapshot epochs.

    Every block has the same tile size and is placed at explicit positions in inches, with a
    margin sized to its longest row label ("map 123") on its left, so labels never run into the
    neighbouring block whatever the number of maps or epochs (a grid of equal cells let the
    labels of one layer cover the tiles of the previous one when tiles were large). Tiles shrink
    to keep the figure within ``MAX_WIDTH_INCHES`` when there are many epochs and layers.
    ``values`` ([layers, maps, epochs], each map's strongest activation per snapshot), if given,
    marks the tiles of a map that does not fire at a snapshot (0) "silent" on a light grey tile
    instead of the mid-grey of an all-zero projection.
    """
    from matplotlib.colors import to_rgb

    cols, size, gap = len(epochs), projections.shape[-1], 2
    counts = [int((channels[l] >= 0).sum()) for l in range(len(layers))]
    labels = [[f"map {int(m)}" for m in channels[l, : counts[l]]] for l in range(len(layers))]
    longest = max((len(text) for row in labels for text in row), default=5)
    label_w = 0.12 + 0.62 * LABEL_FONT / 72 * longest  # a generous estimate of the label width
    block_gap, side_margin = 0.25, 0.15
    fixed_w = 2 * side_margin + len(layers) * (label_w + block_gap)
    mosaic_w = cols * size + (cols - 1) * gap  # pixels of the tile mosaic
    tile = max(MIN_TILE_INCHES, min(TILE_INCHES, (MAX_WIDTH_INCHES - fixed_w) * size / (len(layers) * mosaic_w)))
    scale = tile / size  # inches per mosaic pixel
    block_w = mosaic_w * scale
    tallest = max(counts, default=1)
    blocks_h = max(1, tallest) * size * scale + max(0, tallest - 1) * gap * scale
    width = max(6.0, fixed_w + len(layers) * block_w)
    title = "\n".join(
        textwrap.fill(line, width=max(40, int(width * 12)))
        for line in (
            "Feature evolution during training",
            f"each map's strongest activation over {n_images} training images, projected to pixels, per snapshot",
        )
    )
    top = 0.25 + 0.17 * (title.count("\n") + 1) + 0.3  # the title's lines, then the layer names
    bottom = 0.45  # epoch numbers and the "epoch" label
    height = top + blocks_h + bottom
    figure = new_figure(width, height)
    x = side_margin
    for l, layer in enumerate(layers):
        x += label_w
        count = counts[l]
        block_h = max(1, count) * size * scale + max(0, count - 1) * gap * scale
        ax = figure.add_axes((x / width, (height - top - block_h) / height, block_w / width, block_h / height))
        x += block_w + block_gap
        ax.set_title(layer, fontsize=9)
        ax.tick_params(length=0)
        if count == 0:  # no map of this layer was active at the last snapshot
            silent_panel(ax, "silent: no map\nof this layer fires\nat the last snapshot", fontsize=LABEL_FONT - 1)
            continue
        flat = torch.from_numpy(projections[l, :count].reshape(-1, 3, size, size).astype(np.float32))
        # [maps x epochs, P, P, 3], row by row
        shown = vizkit.to_image(flat, channels_last=False).permute(0, 2, 3, 1).numpy()
        silent = np.zeros(count * cols, dtype=bool) if values is None else (values[l, :count] == 0).reshape(-1)
        shown[silent] = to_rgb(SILENT_FACE)
        ax.imshow(tile_mosaic(shown, rows=count, gap=gap), interpolation="nearest")
        step = size + gap
        for tile_index in np.flatnonzero(silent):
            r, c = divmod(int(tile_index), cols)
            mark_silent_tile(ax, c * step + size / 2, r * step + size / 2, fontsize=min(6.0, 18 * tile))
        ax.set_xticks([c * step + size / 2 for c in range(cols)], [str(e) for e in epochs], fontsize=LABEL_FONT - 1)
        ax.set_yticks([r * step + size / 2 for r in range(count)], labels[l], fontsize=LABEL_FONT)
        ax.set_xlabel("epoch", fontsize=LABEL_FONT, labelpad=2)
    figure.suptitle(title, fontsize=9, y=1 - 0.1 / height, va="top")
    return figure


def strength_figure(layers: list[str], channels: np.ndarray, epochs: list[int], values: np.ndarray):
    figure = new_figure(max(6.0, 2.6 * len(layers)), 2.8)
    for l, layer in enumerate(layers):
        ax = figure.add_subplot(1, len(layers), l + 1)
        count = int((channels[l] >= 0).sum())
        for m in range(count):  # the label palette, its second round dashed
            ax.plot(
                epochs,
                values[l, m],
                marker="o",
                markersize=3,
                linewidth=1,
                label=f"map {channels[l, m]}",
                color=LABEL_COLOURS[m % len(LABEL_COLOURS)],
                linestyle="-" if m < len(LABEL_COLOURS) else "--",
            )
        ax.set_xscale("log")
        ax.set_xticks(epochs, [str(e) for e in epochs], fontsize=6)
        ax.minorticks_off()
        ax.set_xlabel("epoch", fontsize=7)
        if l == 0:
            ax.set_ylabel("strongest activation", fontsize=7)
        ax.tick_params(labelsize=6)
        if count == 0:  # no map of this layer was active at the last snapshot
            silent_panel(ax, "silent: no map of this layer\nfires at the last snapshot", fontsize=7)
        ax.set_title(layer if count <= LEGEND_MAPS else f"{layer} ({count} maps)", fontsize=9)
        if 0 < count <= LEGEND_MAPS:  # a longer legend would cover the plot and push the figure out of shape
            ax.legend(fontsize=5, loc="best", ncol=2, frameon=False)
    figure.suptitle("Strongest activation of each chosen map over the sample, per snapshot", fontsize=9)
    figure.tight_layout()
    return figure
