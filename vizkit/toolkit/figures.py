"""Figure helpers shared by analyses: matplotlib Figures built without pyplot's global state.

Every figure is a :class:`matplotlib.figure.Figure` attached to its own Agg canvas, so no
display is needed and nothing switches the backend of the program that imports vizkit (a
notebook keeps its inline or widget backend).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor


def hwc(image: Tensor | np.ndarray) -> np.ndarray:
    """A [3,H,W] tensor or array in [0, 1] as an [H,W,3] float array for imshow.

    Args:
        image: a [3,H,W] or [1,H,W] (greyscale, repeated to RGB) tensor or array, or one already
            [H,W,3]; values outside [0, 1] are clipped.
    """
    array = image.detach().float().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = np.transpose(array, (1, 2, 0))
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.clip(array, 0.0, 1.0)


def new_figure(width: float, height: float, dpi: int = 100) -> Figure:
    """A ``width`` x ``height`` inch figure on its own Agg canvas (not registered with pyplot,
    so it needs no closing and is freed with its last reference).

    Args:
        width: the figure's width in inches.
        height: the figure's height in inches.
        dpi: dots per inch, which sets the saved PNG's pixel size.
    """
    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def tile_mosaic(tiles: np.ndarray, rows: int, gap: int = 2, fill: float = 1.0) -> np.ndarray:
    """[n, P, P, 3] tiles in [0,1] as one image of ``rows`` x ceil(n/rows) tiles, row by row,
    with ``fill``-coloured gaps (Fig. 2 tile blocks, Fig. 4 map x epoch grids).

    Args:
        tiles: the [n, P, P, 3] square tiles, values in [0, 1].
        rows: how many rows of tiles the mosaic has.
        gap: the gap between neighbouring tiles, in pixels.
        fill: the grey level of the gaps and of unused cells (1.0: white).
    """
    n, size = tiles.shape[0], tiles.shape[1]
    columns = max(1, math.ceil(max(n, 1) / rows))
    canvas = np.full((rows * size + (rows - 1) * gap, columns * size + (columns - 1) * gap, 3), fill, dtype=np.float32)
    for index in range(n):
        r, c = divmod(index, columns)
        canvas[r * (size + gap) : r * (size + gap) + size, c * (size + gap) : c * (size + gap) + size] = tiles[index]
    return canvas


def show(ax: Axes, image: Tensor | np.ndarray, title: str | None = None, fontsize: int = 8) -> None:
    """Draw an image on ``ax`` pixel for pixel (no smoothing, no ticks), as every figure's panels are.

    Args:
        ax: the axes to draw on.
        image: a [3,H,W] tensor or array in [0, 1] (anything :func:`hwc` accepts).
        title: the panel's title; None or empty: no title.
        fontsize: the title's font size, in points.
    """
    ax.imshow(hwc(image), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def grid_shape(count: int, max_columns: int | None = None) -> tuple[int, int]:
    """Rows and columns of a near-square grid holding ``count`` panels."""
    columns = max(1, math.ceil(math.sqrt(count)))
    if max_columns:
        columns = min(columns, max_columns)
    return math.ceil(count / columns), columns


def _draw_box(ax: Axes, box: Sequence[int], label: str, colour: str) -> None:
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = box
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.2))
    ax.text(
        x0,
        y0 - 1,
        label,
        color="white",
        fontsize=7,
        va="bottom",
        bbox={"facecolor": colour, "edgecolor": "none", "pad": 0.8},
    )


BOX_COLOURS = (
    "tab:red",
    "tab:blue",
    "tab:green",
    "tab:orange",
    "tab:purple",
    "tab:cyan",
    "tab:pink",
    "tab:olive",
    "tab:brown",
    "tab:gray",
)


def projections_beside_patches(
    image: Tensor,
    image_title: str,
    projections: Sequence[Tensor],
    boxes: Sequence[Sequence[int]],
    titles: Sequence[str],
    suptitle: str,
    panel_size: float = 1.6,
) -> Figure:
    """The input with each projection's support boxed and numbered, and for each projection the
    projection cropped to its box beside the image patch under it (the layout of paper Fig. 2).

    Args:
        image: the input image, [3,H,W] in [0, 1] (denormalised).
        image_title: the title over the input image.
        projections: one displayable [3,H,W] projection in [0, 1] per box (e.g. from :func:`to_image`).
        boxes: one (x0, y0, x1, y1) box per projection, exclusive ends, in input pixels.
        titles: one title per projection, shown numbered in its box's colour.
        suptitle: the figure's overall title.
        panel_size: the side of one small panel, in inches (the figure's size follows from it).
    """
    count = len(projections)
    rows, pairs = grid_shape(count, max_columns=4)
    side = max(2, rows)
    figure = new_figure(panel_size * (side + 2 * pairs) + 0.6, panel_size * max(rows, 2) * 1.12 + 0.9)
    outer = figure.add_gridspec(1, 2, width_ratios=[side, 2 * pairs], wspace=0.04)
    left = figure.add_subplot(outer[0])
    show(left, image, image_title, fontsize=9)
    inner = outer[1].subgridspec(rows, 2 * pairs, wspace=0.04, hspace=0.32)
    for index, (projection, box, title) in enumerate(zip(projections, boxes, titles)):
        colour = BOX_COLOURS[index % len(BOX_COLOURS)]
        _draw_box(left, box, str(index + 1), colour)
        x0, y0, x1, y1 = box
        row, pair = divmod(index, pairs)
        ax_projection = figure.add_subplot(inner[row, 2 * pair])
        ax_patch = figure.add_subplot(inner[row, 2 * pair + 1])
        show(ax_projection, projection[:, y0:y1, x0:x1])
        show(ax_patch, image[:, y0:y1, x0:x1])
        ax_projection.set_title(f"{index + 1}. {title}", fontsize=7, loc="left", color=colour)
        for spine in (*ax_projection.spines.values(), *ax_patch.spines.values()):
            spine.set_edgecolor(colour)
    figure.suptitle(suptitle, fontsize=10)
    return figure
